"""finetune_flyp.py: FLYP fine-tuning of CLIP (open_clip) on iWildCam with DisCL's guidance curriculum.

    python training/finetune_flyp.py --data_table iwildcam.parquet --data_root data/iwildcam_v2.0 \
        --syn_manifest runs/syn/scores.parquet --curriculum --progress_guid --run_dir runs/flyp

Reference settings: ViT-B-16 (openai), lr 1e-5, wd 0.2, batch 256, 20 epochs, curriculum for 15, levels >= 50.
Metrics (accuracy, macro-F1 via WILDS) on id_val, id_test (ID) and val, test (OOD) per epoch in metrics.csv;
the best epoch is selected on id_val macro-F1, never on test.
"""

from __future__ import annotations

import sys

import torch

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402
from curriculum.tables import read_class_names, read_prompt_templates  # noqa: E402
from training.trainers.cli import check_run_flags, common_parser, run_training, train_config  # noqa: E402
from training.trainers.flyp import FLYPTask, load_open_clip  # noqa: E402
from training.trainers.runs import build_run_data  # noqa: E402

DEFAULTS = {
    "eval_splits": ["id_val", "id_test", "val", "test"],
    "curriculum_epoch": 15,
    "epochs": 20,
    "batch_size": 256,
    "lr": 1e-5,
    "wd": 0.2,
    "min_level": 50,
}


def main(argv: list[str] | None = None) -> int:
    """Run FLYP fine-tuning; return the exit code."""
    p = common_parser("finetune_flyp.py", __doc__, DEFAULTS)
    m = p.add_argument_group("model")
    m.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    m.add_argument("--pretrained", default="openai", help="open_clip tag or a local weights file")
    m.add_argument("--templates", default="iwildcam", help="prompt templates (assets/prompt_templates.json key)")
    m.add_argument("--class_names", default=None, help="label -> prompt name CSV (default: the table's label names)")
    m.add_argument("--select_metric", default="iwildcam/id_val/macro_f1")
    args = parse_args(p, argv, "finetune_flyp")
    try:
        check_run_flags(args)
        data, levels = build_run_data(args, adaptive=args.progress_guid or args.random_guid)
        cfg = train_config(args, levels, optimizer="adamw", select_metric=args.select_metric)
        torch.manual_seed(args.seed)  # a head or weights initialised here must not depend on the process
        model, train_tf, eval_tf, tok = load_open_clip(args.model, args.pretrained, device=cfg.device or "cpu")
    except (ValueError, OSError, RuntimeError) as err:
        print(f"finetune_flyp: error: {err}", file=sys.stderr)
        return 2
    table_names = dict(zip(data.real["label"], data.real["label_name"]))
    for items in data.eval_splits.values():
        table_names.update({int(k): str(k) for k in items["label"] if int(k) not in table_names})
    names = read_class_names(args.class_names) if args.class_names else {int(k): v for k, v in table_names.items()}
    n_classes = max(names) + 1
    class_names = [names.get(c, str(c)) for c in range(n_classes)]
    task = FLYPTask(model, train_tf, eval_tf, tok, class_names, read_prompt_templates(args.templates), seed=args.seed)
    return run_training("finetune_flyp", cfg, task, data)


if __name__ == "__main__":
    sys.exit(main())
