"""train_lt.py: long-tail classifier training (ImageNet-LT) with DisCL's synthetic curriculum on the tail.

    python training/train_lt.py --data_table imagenet_lt.parquet --data_root data/ImageNet \
        --syn_manifest runs/syn/scores.parquet --curriculum --loss balanced_softmax --run_dir runs/lt

Reference recipe (the defaults): Adam lr 1e-3, batch 128, cosine decay, 65 epochs with the curriculum over the
first 60; hard = the few-shot classes (< 20 training images); each epoch a fresh 30% of the non-tail real
images + all real tail images, topped up with tail synthetic images of the current level until the tail is
13.6% of the epoch; fixed levels 10 -> 30 -> 50 (lambda 0.1, 0.3, 0.5), then real only. Metrics: overall,
many (>100), medium (20-100), few (<20) accuracy; the best epoch is selected on `val`, never on test.

`--composition mixed` instead trains each epoch on every real training image plus the current level's kept
synthetic images (the engine's default composition); its real part can be drawn by prototype difficulty
(`--prototype_state`), which the reference composition, drawing its own real subset, cannot.
"""

from __future__ import annotations

import sys

import torch

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402
from training.trainers.classifier import AUGMENTATIONS, ClassifierTask, build_classifier, lt_epoch_composer  # noqa: E402
from training.trainers.cli import check_run_flags, common_parser, run_training, train_config  # noqa: E402
from training.trainers.losses import LOSSES  # noqa: E402
from training.trainers.runs import build_run_data  # noqa: E402

DEFAULTS = {
    "eval_splits": ["val", "test"],
    "curriculum_epoch": 60,
    "epochs": 65,
    "batch_size": 128,
    "lr": 1e-3,
    "wd": 5e-4,
    "levels": [10, 30, 50],
    "warmup_steps": 0,
}


def main(argv: list[str] | None = None) -> int:
    """Run long-tail training; return the exit code."""
    p = common_parser("train_lt.py", __doc__, DEFAULTS)
    m = p.add_argument_group("model")
    m.add_argument(
        "--arch",
        default="resnet10t",
        help="timm architecture (the reference: ResNet-10; resnet50 for the full setting)",
    )
    m.add_argument(
        "--weights", default=None, help="safetensors/state-dict file to start from (e.g. an ImageNet-LT ResNet-10)"
    )
    m.add_argument("--img_size", type=int, default=None, help="input size (default: the architecture's)")
    m.add_argument("--loss", default="ce", choices=LOSSES.names())
    m.add_argument(
        "--tail_max_count", type=int, default=19, help="classes with at most this many training images are the tail"
    )
    m.add_argument("--subset_frac", type=float, default=0.3, help="fraction of non-tail real images per epoch")
    m.add_argument("--tail_share", type=float, default=0.136, help="share of tail images in an epoch")
    m.add_argument(
        "--composition",
        default="reference",
        choices=["reference", "mixed"],
        help="epoch composition: reference (subset + tail top-up, --subset_frac/--tail_share) or mixed "
        "(every real image + the level's synthetic images; supports --prototype_state)",
    )
    m.add_argument(
        "--augment",
        default="timm",
        choices=AUGMENTATIONS,
        help="training augmentation: timm (the architecture's ImageNet transform), shift (small "
        "translations only: digits, text), none",
    )
    m.add_argument(
        "--metric_prefix", default="imagenet_lt", help="first part of the metric names (PREFIX/split/few_acc)"
    )
    m.add_argument(
        "--select_metric", default=None, help="metric that selects the best epoch (default PREFIX/val/overall_acc)"
    )
    args = parse_args(p, argv, "train_lt")
    if args.select_metric is None:
        args.select_metric = f"{args.metric_prefix}/val/overall_acc"
    try:
        check_run_flags(args)
        if args.prototype_state and args.composition == "reference":
            raise ValueError(
                "--prototype_state needs --composition mixed: the reference composition "
                "(--composition reference, the default) draws its own real subset each epoch"
            )
        data, levels = build_run_data(args, adaptive=args.progress_guid or args.random_guid)
        cfg = train_config(args, levels, optimizer="adam", select_metric=args.select_metric)
        counts = data.real["label"].value_counts().to_dict()
        n_classes = int(max(max(counts), *(int(s["label"].max()) for s in data.eval_splits.values()))) + 1
        torch.manual_seed(args.seed)  # a head or weights initialised here must not depend on the process
        model, train_tf, eval_tf = build_classifier(args.arch, n_classes, args.weights, args.img_size, args.augment)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"train_lt: error: {err}", file=sys.stderr)
        return 2
    if args.composition == "reference":
        tail = {int(c) for c, n in counts.items() if n <= args.tail_max_count}
        data.compose = lt_epoch_composer(data.real, data.synthetic, tail, args.subset_frac, args.tail_share)
    task = ClassifierTask(model, train_tf, eval_tf, counts, n_classes, loss=args.loss, name=args.metric_prefix)
    return run_training("train_lt", cfg, task, data)


if __name__ == "__main__":
    sys.exit(main())
