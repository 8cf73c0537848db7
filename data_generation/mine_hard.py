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
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402
from curriculum.tables import read_class_names, read_prompt_templates, write_csv  # noqa: E402
from data_generation.mining.datasets import DATASETS  # noqa: E402
from data_generation.mining.difficulty import DIFFICULTY_SCORERS, NON_SCORE_COLUMNS, base_score_name  # noqa: E402
from data_generation.mining.rules import HardRule, join_scores, select_hard, write_mining_outputs  # noqa: E402
from data_generation.mining.scorer_runs import ScorerOptions, class_name_list, run_scorers  # noqa: E402

#: the per-sample column holding its class's training count (the ImageNet-LT loader writes it)
TRAIN_COUNT = "train_count"


def _pairs(values: list[str] | None, flag: str) -> dict[str, float]:
    out = {}
    for v in values or []:
        col, sep, q = v.partition("=")
        try:
            out[col] = float(q)
        except ValueError:
            raise ValueError(f"{flag} expects COLUMN=FRACTION (e.g. true_prob=0.1), got {v!r}") from None
        if not sep:
            raise ValueError(f"{flag} expects COLUMN=FRACTION (e.g. true_prob=0.1), got {v!r}")
    return out


def load_dataset(args) -> pd.DataFrame:  # noqa: F821
    """Return the sample table the dataset flags describe (restricted to --split when given)."""
    if args.dataset == "table":
        df = DATASETS.get("table")(args.data, args.data_root)
    elif args.dataset == "folder":
        df = DATASETS.get("folder")(args.data)
    elif args.dataset == "iwildcam":
        df = DATASETS.get("iwildcam")(args.data, splits=(args.split,) if args.split else None)
    else:
        df = DATASETS.get("imagenet_lt")(args.data, args.data_root, train_list=args.train_list)
    if args.split and "split" in df.columns and args.dataset != "iwildcam":
        df = df[df["split"].astype(str) == args.split].reset_index(drop=True)
    return df


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of mine_hard.py."""
    p = argparse.ArgumentParser(
        prog="mine_hard.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, choices=DATASETS.names())
    d.add_argument("--data", required=True, help="table file / image folder / WILDS root / ImageNet-LT list file")
    d.add_argument("--data_root", default=None, help="root of relative paths (table, imagenet_lt)")
    d.add_argument("--train_list", default=None, help="ImageNet-LT: the training list that defines class counts")
    d.add_argument("--split", default="train", help="which split to mine (default train; '' for all rows)")
    d.add_argument("--class_names", default=None, help="label -> name CSV for prompts (default: the table's names)")
    s = p.add_argument_group("scorers")
    s.add_argument("--scorers", nargs="+", default=["zero_shot_clip"], choices=DIFFICULTY_SCORERS.names())
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
    return p


def main(argv: list[str] | None = None) -> int:
    """Run mining; return the exit code."""
    args = parse_args(build_parser(), argv, "mine_hard")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        for flag in ("--output_csv", "--scores_parquet"):
            out = Path(getattr(args, flag[2:]))
            if Path(args.data).is_file() and out.resolve() == Path(args.data).resolve():
                raise ValueError(f"{flag} {out} is the input table (--data): it would be overwritten")
        rule = HardRule(
            misclassified=args.misclassified is not None,
            misclassified_by=tuple(args.misclassified or ()),
            bottom_q=_pairs(args.bottom_q, "--bottom_q"),
            top_q=_pairs(args.top_q, "--top_q"),
            flag_column=args.flag_column,
            tail_only=args.tail_only,
            tail_max_count=args.tail_max_count,
            combine=args.combine,
            max_hard=args.max_hard,
            max_per_class=args.max_hard_per_class,
        )
        table = load_dataset(args)
        if rule.tail_only and TRAIN_COUNT in table.columns:
            rule = replace(rule, count_column=TRAIN_COUNT)
        names = read_class_names(args.class_names) if args.class_names else None
        n_classes, class_names = class_name_list(table, names)
        templates = read_prompt_templates(args.templates or ("iwildcam" if args.dataset == "iwildcam" else "imagenet"))
        opts = ScorerOptions(
            num_classes=n_classes,
            class_names=class_names,
            templates=tuple(templates),
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            classifier_arch=args.classifier_arch,
            classifier_weights=args.classifier_weights,
            classifier_img_size=args.classifier_img_size,
            clip_backend=args.clip_backend,
            clip_model=args.clip_model,
            clip_pretrained=args.clip_pretrained or None,
            feature_model=args.feature_model,
            feature_weights=args.feature_weights,
            feature_img_size=args.feature_img_size,
            n_clusters=args.n_clusters,
            use_labels=args.use_labels,
            predefined_column=args.predefined_column,
            dynamics=args.dynamics,
        )
        frames = run_scorers(args.scorers, table, opts)
        scored = join_scores(table, *frames)
        if args.prototype_state and "prototype" not in args.scorers:
            raise ValueError("--prototype_state needs the prototype scorer (--scorers ... prototype)")
        rule = rule.resolve(scored.columns)
        uncapped = select_hard(scored, replace(rule, max_hard=None, max_per_class=None))
        hard = select_hard(scored, rule)
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        print(f"mine_hard: error: {err}", file=sys.stderr)
        return 2
    layout = table.attrs.get("layout", "canonical") if args.layout == "auto" else args.layout
    config = {k: v for k, v in vars(args).items()}
    config["n_hard_uncapped"] = int(uncapped.sum())
    config["score_columns"] = [c for f in frames for c in f.columns if base_score_name(c) not in NON_SCORE_COLUMNS]
    res = write_mining_outputs(table, scored, hard, rule, args.output_csv, args.scores_parquet, layout, config)
    summary_path = Path(args.scores_parquet).with_suffix(".per_class.csv")
    write_csv(res.summary, summary_path)
    print(f"rule: {rule.describe()}")
    capped = f" (the rule alone: {int(uncapped.sum())}; capped by --max_hard/--max_hard_per_class)"
    print(
        f"hard: {int(hard.sum())} of {len(hard)} samples{capped if int(uncapped.sum()) != int(hard.sum()) else ''}"
        f" -> {res.hard_csv} ({layout} layout)"
    )
    print(res.summary.head(20).to_string(index=False))
    written = f"all scores: {res.scores_parquet}; per-class summary: {summary_path}"
    if not res.correlations.empty:
        spearman_path = Path(args.scores_parquet).with_suffix(".spearman.csv")
        write_csv(res.correlations.rename_axis("score"), spearman_path, index=True)
        print("\nSpearman correlation between scorers:\n" + res.correlations.round(3).to_string())
        written += f"; Spearman table: {spearman_path}"
    if args.prototype_state:
        arrays, _ = save_prototype_state(
            args.prototype_state, frames[args.scorers.index("prototype")], args.prototype_scaling, config
        )
        written += f"; prototype curriculum state: {arrays}"
    print("\n" + written)
    return 0


def save_prototype_state(path: str, frame: pd.DataFrame, scaling: str, config: dict):  # noqa: F821
    """Save the prototype scorer's distances as a curriculum state (difficulty = scaled distances, the
    `CurriculumLearning.save_weights` format Phase 2 reads); return the two paths written."""
    from curriculum.prototypes import scale_distances
    from curriculum.state import save_curriculum_state

    dist_col = next(c for c in frame.columns if base_score_name(c) == "prototype_distance")
    clus_col = next(c for c in frame.columns if base_score_name(c) == "prototype_cluster")
    d, clusters = frame[dist_col].to_numpy(), frame[clus_col].to_numpy()
    arrays = {
        "difficulty": scale_distances(d, clusters, scaling),
        "distances": d.astype("float64"),
        "assignments": clusters.astype("int64"),
    }
    cfg = {
        "source": "mine_hard.py",
        "distance_scaling": scaling,
        "optimal_clusters": int(len(set(clusters.tolist()))),
        "feature_model": config.get("feature_model"),
        "feature_weights": config.get("feature_weights"),
        "use_labels": config.get("use_labels"),
        "seed": config.get("seed"),
    }
    return save_curriculum_state(path, frame.index.astype(str).tolist(), arrays, cfg)


if __name__ == "__main__":
    sys.exit(main())
