"""train_lt.py: long-tail classifier training (ImageNet-LT) with DisCL's synthetic curriculum on the tail.

    python training/train_lt.py --data_table imagenet_lt.parquet --data_root data/ImageNet \
        --syn_manifest runs/syn/clip_scores.parquet --curriculum --loss balanced_softmax --run_dir runs/lt

Reference recipe (the defaults; training/README.md "Fidelity to the reference" lists each): a torchvision-style
ResNet-10 (--arch resnet10; --weights: the LDMLR/OLTR stage-1 checkpoint) at 224 px (eval: Resize 256 +
CenterCrop 224), Adam lr 1e-3, weight decay 1e-5, batch 128, per-step cosine over 65 x the first epoch's steps,
65 epochs with the curriculum over the first 60; hard = the few-shot classes (< 20 training images); each epoch
a fresh 30% of the non-tail real images + all real tail images, topped up with tail synthetic images of the
current level until the tail is 13.6% of the epoch; fixed levels 10 (epochs 0-13), 30 (14-28), 50 (29-43), then
real only (44-64). Metrics: overall, many (>= 100), medium (20-99), few (< 20) accuracy; the best epoch is
selected on `val`, never on test. Any timm architecture is available by name (--arch resnet50, resnet10t, ...).

`--composition mixed` instead trains each epoch on every real training image plus the current level's kept
synthetic images (the engine's default composition); its real part can be drawn by prototype difficulty
(`--prototype_state`), which the reference composition, drawing its own real subset, cannot.
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names; torch and timm are imported by main() once the arguments are parsed
from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from training.cli_names import AUGMENTATION_NAMES, LOSS_NAMES  # noqa: E402
from training.trainers.cli import check_run_flags, common_parser, run_training, train_config  # noqa: E402

DEFAULTS = {
    "eval_splits": ["val", "test"],
    "curriculum_epoch": 60,
    "epochs": 65,
    "batch_size": 128,
    "lr": 1e-3,
    "wd": 1e-5,
    "levels": [10, 30, 50],
    "warmup_steps": 0,
    "curriculum_val_size": 100,
    "uniform_set_size": 5000,
    "uniform_set_help": "real tail images drawn (with replacement) into the uniform set, beside every non-tail "
    "real image (the reference: 5000)",
    "uniform_baseline_batch": 0,
    "progress_baseline": "initial",
    "stage_unit": "epoch",
    "fixed_stages": "reference",
    "lr_extra_epochs": 0,
}


def build_parser() -> argparse.ArgumentParser:
    """Return the script's argument parser (its defaults are the fidelity table's "ours" column)."""
    p = common_parser("train_lt.py", __doc__, DEFAULTS)
    m = p.add_argument_group("model")
    m.add_argument(
        "--arch",
        default="resnet10",
        help="resnet10: the reference's torchvision-style ResNet-10 (BasicBlock [1,1,1,1]); any other name is a "
        "timm architecture (e.g. resnet50, resnet10t)",
    )
    m.add_argument(
        "--weights",
        default=None,
        help="checkpoint to start from: for resnet10 a flat state dict (safetensors/torch), LDMLR's stage-1 "
        "{'state_dict': {'model': ...}} or OLTR's {'state_dict': {'feat_model': ..., 'classifier': ...}} "
        "(a 'module.' prefix is removed; another head size is re-initialised); for timm a state-dict file",
    )
    m.add_argument(
        "--img_size", type=int, default=None, help="input size (default: 224 for resnet10, else the architecture's)"
    )
    m.add_argument("--loss", default="ce", choices=LOSS_NAMES)
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
        default="reference",
        choices=("reference", *AUGMENTATION_NAMES),
        help="training augmentation: reference (resnet10: RandomResizedCrop, flip, ColorJitter 0.4; for a timm "
        "architecture its ImageNet transform), timm, shift (small translations only: digits, text), none",
    )
    m.add_argument(
        "--sync_bn",
        action="store_true",
        help="synchronise BatchNorm statistics across processes (torch's SyncBatchNorm on GPUs, the same maths "
        "over gloo on CPU), so several processes normalise like one on the global batch",
    )
    m.add_argument(
        "--metric_prefix", default="imagenet_lt", help="first part of the metric names (PREFIX/split/few_acc)"
    )
    m.add_argument(
        "--select_metric", default=None, help="metric that selects the best epoch (default PREFIX/val/overall_acc)"
    )
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def main(argv: list[str] | None = None) -> int:
    """Run long-tail training; return the exit code."""
    p = build_parser()
    args = parse_args(p, argv, "train_lt")
    import torch

    from training.trainers.classifier import ClassifierTask, build_classifier, lt_epoch_composer, lt_uniform_set
    from training.trainers.resnet import TORCHVISION_ARCHS, build_resnet10
    from training.trainers.runs import build_run_data

    if args.select_metric is None:
        args.select_metric = f"{args.metric_prefix}/val/overall_acc"
    try:
        check_run_flags(args)
        if args.prototype_state and args.composition == "reference":
            raise ValueError(
                "--prototype_state needs --composition mixed: the reference composition "
                "(--composition reference, the default) draws its own real subset each epoch"
            )
        if args.uniform_set and args.stage_unit == "epoch":
            print("train_lt: note: --uniform_set alternates passes: --stage_unit pass", file=sys.stderr)
            args.stage_unit = "pass"
        data, levels = build_run_data(args, adaptive=args.progress_guid or args.random_guid)
        counts = data.real["label"].value_counts().to_dict()
        tail = {int(c) for c, n in counts.items() if n <= args.tail_max_count}
        data.uniform_compose = lt_uniform_set(data.real, tail, args.uniform_set_size)
        resolved = {
            "model": "torchvision resnet10 (BasicBlock [1,1,1,1])"
            if args.arch in TORCHVISION_ARCHS
            else f"timm {args.arch}",
            "img_size": args.img_size or (224 if args.arch in TORCHVISION_ARCHS else None),
            "tail_classes": len(tail),
        }
        cfg = train_config(
            args, levels, "adam", args.select_metric, lr_extra_epochs=DEFAULTS["lr_extra_epochs"], resolved=resolved
        )
        n_classes = int(max(max(counts), *(int(s["label"].max()) for s in data.eval_splits.values()))) + 1
        torch.manual_seed(args.seed)  # a head or weights initialised here must not depend on the process
        if args.arch in TORCHVISION_ARCHS:
            model, train_tf, eval_tf = build_resnet10(n_classes, args.weights, args.img_size, args.augment)
        else:
            augment = "timm" if args.augment == "reference" else args.augment
            model, train_tf, eval_tf = build_classifier(args.arch, n_classes, args.weights, args.img_size, augment)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"train_lt: error: {err}", file=sys.stderr)
        return 2
    if args.composition == "reference":
        data.compose = lt_epoch_composer(data.real, data.synthetic, tail, args.subset_frac, args.tail_share)
    task = ClassifierTask(model, train_tf, eval_tf, counts, n_classes, loss=args.loss, name=args.metric_prefix)
    return run_training("train_lt", cfg, task, data)


if __name__ == "__main__":
    sys.exit(main())
