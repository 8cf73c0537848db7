"""mine_hard.py: score every training sample's difficulty and select the hard ones by a recorded rule.

    # iWildCam (WILDS): misclassified by zero-shot CLIP, or among the 10% farthest from their prototype
    python data_generation/mine_hard.py --dataset iwildcam --data data/ --split train \
        --scorers zero_shot_clip prototype --misclassified --top_q prototype_distance=0.1 \
        --output_csv hard_iwildcam.csv --scores_parquet scores_iwildcam.parquet

    # ImageNet-LT, the reference's hard set: every image of the few-shot classes (< 20 training images)
    python data_generation/mine_hard.py --dataset imagenet_lt --data ImageNet_LT_train.txt --data_root data/ImageNet \
        --scorers random --tail_only --tail_max_count 19 --output_csv hard_lt.csv --scores_parquet scores_lt.parquet

Writes the hard-sample CSV in the DisCL layout the dataset calls for (gene_img.py reads it unchanged), a
Parquet table of every sample with all scores, their ranks, the ensemble and a `hard` flag (the rule in its
metadata), `<scores_parquet stem>.per_class.csv` (hard / total per class) and, with at least two score
columns, `<scores_parquet stem>.spearman.csv` (the Spearman correlation between them, also printed).

`--misclassified` alone: wrong under any classifier scorer's correctness column (`correct`, and e.g.
`checkpoint_correct` when a second classifier scorer ran); `--misclassified checkpoint_correct` uses only the
named column(s). `--tail_only` counts a class's training samples from the table's `train_count` column when
it has one (ImageNet-LT: from `--train_list`), else in the table being mined.
"""

from __future__ import annotations

import argparse
import logging
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names; the scorers (torch, timm, open_clip) are imported by main() after parsing
from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from data_generation.cli_names import DATASET_NAMES, DIFFICULTY_SCORER_NAMES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of mine_hard.py."""
    p = argparse.ArgumentParser(
        prog="mine_hard.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    d.add_argument("--data", required=True, help="table file / image folder / WILDS root / ImageNet-LT list file")
    d.add_argument("--data_root", default=None, help="root of relative paths (table, imagenet_lt)")
    d.add_argument("--train_list", default=None, help="ImageNet-LT: the training list that defines class counts")
    d.add_argument(
        "--download", action="store_true", help="iwildcam: let WILDS download iWildCam v2.0 into --data (about 11 GB)"
    )
    d.add_argument("--split", default="train", help="which split to mine (default train; '' for all rows)")
    d.add_argument("--class_names", default=None, help="label -> name CSV for prompts (default: the table's names)")
    s = p.add_argument_group("scorers")
    s.add_argument("--scorers", nargs="+", default=["zero_shot_clip"], choices=DIFFICULTY_SCORER_NAMES)
    s.add_argument(
        "--templates", default=None, help="prompt template set (default: iwildcam for iWildCam, imagenet otherwise)"
    )
    s.add_argument("--clip_backend", default="open_clip", choices=["open_clip", "transformers"])
    s.add_argument("--clip_model", default="ViT-B-32")
    s.add_argument("--clip_pretrained", default="openai", help="open_clip tag or local weights file")
    s.add_argument("--classifier_arch", default=None, help="timm architecture of the checkpoint scorer")
    s.add_argument("--classifier_weights", default=None, help="its weights (safetensors or state dict)")
    s.add_argument(
        "--classifier_img_size",
        type=int,
        default=None,
        help="input size of the checkpoint classifier (default: the architecture's); use the size it was trained at",
    )
    s.add_argument("--feature_model", default="dino_vits16", help="DINO name or timm id of the prototype embedder")
    s.add_argument("--feature_weights", default=None, help="local weights for the feature model")
    s.add_argument("--feature_img_size", type=int, default=None)
    s.add_argument("--n_clusters", type=int, default=None, help="k-means clusters (default: chosen by Davies-Bouldin)")
    s.add_argument("--use_labels", action="store_true", help="cluster within each class")
    s.add_argument(
        "--prototype_scaling",
        default="minmax",
        choices=["minmax", "rank", "global", "none"],
        help="how --prototype_state scales distances into difficulty (default per-cluster min-max)",
    )
    s.add_argument("--predefined_column", default=None)
    s.add_argument(
        "--dynamics",
        default=None,
        metavar="PARQUET",
        help="dynamics scorer: a Phase 2 run's dynamics.parquet (train_lt.py/finetune_flyp.py --log_dynamics)",
    )
    s.add_argument("--batch_size", type=int, default=64)
    s.add_argument("--device", default="cpu")
    s.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("rule (criteria combine with --combine among the candidates)")
    r.add_argument(
        "--misclassified",
        nargs="*",
        default=None,
        metavar="CORRECT_COL",
        help="wrong under any of these correctness columns (none given: every classifier scorer's)",
    )
    r.add_argument("--bottom_q", nargs="+", metavar="COL=Q", help="the fraction Q with the smallest COL")
    r.add_argument("--top_q", nargs="+", metavar="COL=Q", help="the fraction Q with the largest COL")
    r.add_argument("--flag_column", default=None, help="a boolean column of the table that marks hard samples")
    r.add_argument("--tail_only", action="store_true", help="candidates are the tail classes only")
    r.add_argument(
        "--tail_max_count",
        type=int,
        default=19,
        help="tail = classes with at most this many training samples (the table's train_count column "
        "when it has one, else counted in the mined table)",
    )
    r.add_argument("--combine", default="any", choices=["any", "all"])
    r.add_argument(
        "--max_hard",
        type=int,
        default=None,
        help="cap the hard set at the N hardest (largest mean difficulty rank over the scores; ties by sample_id): "
        "generation cost grows with it (strengths x seeds x guidance scales images each)",
    )
    r.add_argument(
        "--max_hard_per_class", type=int, default=None, help="cap each class's hard samples at its K hardest"
    )
    o = p.add_argument_group("output")
    o.add_argument("--output_csv", required=True, help="hard-sample CSV for gene_img.py")
    o.add_argument("--scores_parquet", required=True, help="every sample with scores and the hard flag")
    o.add_argument(
        "--prototype_state",
        default=None,
        metavar="PATH",
        help="also save the prototype difficulty as a curriculum state (PATH.safetensors + PATH.json, keyed "
        "by sample id) for Phase 2's --prototype_state (needs the prototype scorer)",
    )
    o.add_argument("--layout", default="auto", choices=["auto", "iwildcam", "imagenet_lt", "canonical"])
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def main(argv: list[str] | None = None) -> int:
    """Run mining (`data_generation.mining.mine.run_mining`); return the exit code (2: input that cannot be used)."""
    args = parse_args(build_parser(), argv, "mine_hard")
    from data_generation.mining.mine import run_mining

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        run = run_mining(args)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"mine_hard: error: {err}", file=sys.stderr)
        return 2
    if run is None:  # not the main process: every process holds the same scores, the main process wrote them
        return 0
    res = run.outputs
    print(f"rule: {run.rule.describe()}")
    n_hard = int(run.hard.sum())
    capped = f" (the rule alone: {run.n_uncapped}; capped by --max_hard/--max_hard_per_class)"
    print(
        f"hard: {n_hard} of {len(run.hard)} samples{capped if run.n_uncapped != n_hard else ''}"
        f" -> {res.hard_csv} ({run.layout} layout)"
    )
    print(res.summary.head(20).to_string(index=False))
    written = f"all scores: {res.scores_parquet}; per-class summary: {run.summary_path}"
    if run.spearman_path is not None:
        print("\nSpearman correlation between scorers:\n" + res.correlations.round(3).to_string())
        written += f"; Spearman table: {run.spearman_path}"
    if run.prototype_state is not None:
        written += f"; prototype curriculum state: {run.prototype_state}"
    print("\n" + written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
