"""finetune_flyp.py: FLYP fine-tuning of CLIP (open_clip) on iWildCam with DisCL's guidance curriculum.

    python training/finetune_flyp.py --data_table iwildcam.parquet --data_root data/iwildcam_v2.0 \
        --syn_manifest runs/syn/clip_scores.parquet --curriculum --progress_guid --run_dir runs/flyp

Reference settings (the defaults; training/README.md "Fidelity to the reference" lists each): ViT-B-16 with
the openai weights and QuickGELU, lr 1e-5, wd 0.2, batch 256, warm-up 500 then a cosine over
(epochs + 1) x the curriculum epoch's steps, 20 epochs, curriculum for 15, levels >= 50; one training row per
(image, caption template) with the two iWildCam templates; adaptive stages are passes over the level's loader
while a curriculum epoch is floor(real rows / batch) steps; real data (100) is a candidate level; 2000 held-out
source images (their real image too) measure progress, the first check against 0.
Metrics (accuracy, macro-F1 via WILDS) on id_val, id_test (ID) and val, test (OOD) per epoch in metrics.csv;
the best epoch is selected on id_val macro-F1, never on test.
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from curriculum.tables import read_class_names, read_prompt_templates  # noqa: E402
from training.cli_names import ACTIVATION_NAMES  # noqa: E402
from training.trainers.cli import check_run_flags, common_parser, run_training, train_config  # noqa: E402

DEFAULTS = {
    "eval_splits": ["id_val", "id_test", "val", "test"],
    "curriculum_epoch": 15,
    "epochs": 20,
    "batch_size": 256,
    "lr": 1e-5,
    "wd": 0.2,
    "min_level": 50,
    "curriculum_val_size": 2000,
    "uniform_set_size": 30000,
    "uniform_set_help": "training rows (image x caption template) of the uniform set of real images "
    "(the reference: 30000 guidance-100 rows)",
    "uniform_baseline_batch": 2,
    "progress_baseline": "zero",
    "stage_unit": "pass",
    "fixed_stages": "equal",
    "lr_extra_epochs": 1,
}


def build_parser() -> argparse.ArgumentParser:
    """Return the script's argument parser (its defaults are the fidelity table's "ours" column)."""
    p = common_parser("finetune_flyp.py", __doc__, DEFAULTS)
    m = p.add_argument_group("model")
    m.add_argument("--model", default="ViT-B-16", help="open_clip architecture name")
    m.add_argument("--pretrained", default="openai", help="open_clip tag or a local weights file")
    m.add_argument(
        "--activation",
        default="auto",
        choices=ACTIVATION_NAMES,
        help="the towers' activation: auto (the one the weights were trained with: QuickGELU for openai, see "
        "training/README.md), quickgelu, gelu",
    )
    m.add_argument(
        "--captions",
        default="per_template",
        choices=["per_template", "random_template"],
        help="per_template: one training row per (image, template), as the reference; random_template: one row "
        "per image with a seeded random template (half the epoch length)",
    )
    m.add_argument("--templates", default="iwildcam", help="prompt templates (assets/prompt_templates.json key)")
    m.add_argument("--class_names", default=None, help="label -> prompt name CSV (default: the table's label names)")
    m.add_argument("--select_metric", default="iwildcam/id_val/macro_f1")
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def main(argv: list[str] | None = None) -> int:
    """Run FLYP fine-tuning; return the exit code."""
    p = build_parser()
    args = parse_args(p, argv, "finetune_flyp")
    import torch  # torch and open_clip: after the arguments, so --help answers at once

    from training.trainers.flyp import FLYPTask, clip_activation, load_open_clip
    from training.trainers.runs import build_run_data, uniform_real_set

    try:
        check_run_flags(args)
        quick_gelu, rule = clip_activation(args.model, args.pretrained, args.activation)
        data, levels = build_run_data(args, adaptive=args.progress_guid or args.random_guid)
        class_names = flyp_class_names(data, args.class_names)
        try:
            templates = read_prompt_templates(args.templates)
        except KeyError as err:
            raise ValueError(f"--templates: {err.args[0]}") from None
        if args.captions == "per_template":
            data.templates_per_item = len(templates)
        data.uniform_compose = uniform_real_set(data.real, args.uniform_set_size // max(1, data.templates_per_item))
        resolved = {"activation": "quickgelu" if quick_gelu else "gelu", "activation_rule": rule}
        cfg = train_config(
            args, levels, "adamw", args.select_metric, lr_extra_epochs=DEFAULTS["lr_extra_epochs"], resolved=resolved
        )
        torch.manual_seed(args.seed)  # a head or weights initialised here must not depend on the process
        model, train_tf, eval_tf, tok = load_open_clip(
            args.model, args.pretrained, device=cfg.device or "cpu", quick_gelu=quick_gelu
        )
    except (ValueError, OSError, RuntimeError) as err:
        print(f"finetune_flyp: error: {err}", file=sys.stderr)
        return 2
    task = FLYPTask(model, train_tf, eval_tf, tok, class_names, templates, seed=args.seed)
    return run_training("finetune_flyp", cfg, task, data)


def flyp_class_names(data, class_names_path: str | None) -> list[str]:
    """Return the prompt name of every class 0..max label (training and evaluation labels).

    Names come from `class_names_path` (a class-name map) when given, else from the table's label names; a
    label that the map does not name is a ValueError naming the map and the labels (a class trained under
    its number as its name would be a silently different prompt).
    """
    labels = set(int(k) for k in data.real["label"])
    for items in data.eval_splits.values():
        labels |= {int(k) for k in items["label"]}
    if class_names_path:
        names = read_class_names(class_names_path)
        missing = sorted(labels - set(names))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(
                f"--class_names {class_names_path}: no name for {len(missing)} label(s) of the data: {shown}"
            )
    else:
        names = {int(k): str(v) for k, v in zip(data.real["label"], data.real["label_name"])}
    n_classes = max(max(labels), max(names, default=0)) + 1
    return [names.get(c, str(c)) for c in range(n_classes)]


if __name__ == "__main__":
    sys.exit(main())
