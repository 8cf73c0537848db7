"""One mining run, the library behind mine_hard.py: sample table -> difficulty scores -> hard samples -> files.

`run_mining(args)` takes mine_hard.py's parsed flags (`build_parser()` there documents each) and returns what
it wrote; the CLI only parses, calls it and prints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from curriculum.config import dataclass_from_args
from curriculum.distributed import init_process_group
from curriculum.tables import read_class_names, read_prompt_templates, write_csv
from data_generation.mining.datasets import load_dataset
from data_generation.mining.difficulty import NON_SCORE_COLUMNS, base_score_name
from data_generation.mining.rules import HardRule, MiningResult, join_scores, select_hard, write_mining_outputs
from data_generation.mining.scorer_runs import ScorerOptions, class_name_list, run_scorers

#: the per-sample column holding its class's training count (the ImageNet-LT loader writes it)
TRAIN_COUNT = "train_count"


@dataclass
class MiningRun:
    """What `run_mining` did: the resolved `rule`, the `hard` flags, the DisCL `layout` of the hard CSV, the
    written `outputs` (scores, hard CSV, per-class summary, Spearman table), the extra files' paths and the
    size of the hard set before its caps."""

    rule: HardRule
    hard: pd.Series
    layout: str
    outputs: MiningResult
    summary_path: Path
    spearman_path: Path | None
    prototype_state: Path | None
    #: how many samples the rule alone selects, before --max_hard/--max_hard_per_class
    n_uncapped: int


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


def hard_rule(args) -> HardRule:
    """Return the HardRule the rule flags describe (before it is resolved against the score columns)."""
    return HardRule(
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


def scorer_options(args, table: pd.DataFrame) -> ScorerOptions:
    """Return the scorers' options from the flags and the sample table (its classes name the prompts)."""
    names = read_class_names(args.class_names) if args.class_names else None
    n_classes, class_names = class_name_list(table, names)
    templates = read_prompt_templates(args.templates or ("iwildcam" if args.dataset == "iwildcam" else "imagenet"))
    return dataclass_from_args(
        ScorerOptions,
        args,
        num_classes=n_classes,
        class_names=class_names,
        templates=tuple(templates),
        clip_pretrained=args.clip_pretrained or None,
    )


def run_mining(args) -> MiningRun | None:
    """Score every sample of the table the flags name, select the hard ones and write every output; return them.

    Under several processes (torchrun, accelerate, srun) the scorers' forward passes are shared and gathered;
    every process holds the same scores and only the main process writes: the others return None.

    Raises ValueError/KeyError/OSError/RuntimeError naming the flag or file for input that cannot be used.
    """
    # 1. check the flags: no output may overwrite the input table
    for flag in ("--output_csv", "--scores_parquet"):
        out = Path(getattr(args, flag[2:]))
        if Path(args.data).is_file() and out.resolve() == Path(args.data).resolve():
            raise ValueError(f"{flag} {out} is the input table (--data): it would be overwritten")
    rule = hard_rule(args)
    # several processes (torchrun, accelerate, srun): the scorers' forward passes are shared and gathered
    process = init_process_group()
    # 2. the sample table (a tail rule counts a class's images from the loader's train_count when there is one)
    table = load_dataset(
        args.dataset, args.data, args.data_root, args.split, args.train_list, download=getattr(args, "download", False)
    )
    if rule.tail_only and TRAIN_COUNT in table.columns:
        rule = replace(rule, count_column=TRAIN_COUNT)
    # 3. the difficulty scores, joined by sample_id
    frames = run_scorers(args.scorers, table, scorer_options(args, table))
    scored = join_scores(table, *frames)
    if args.prototype_state and "prototype" not in args.scorers:
        raise ValueError("--prototype_state needs the prototype scorer (--scorers ... prototype)")
    # 4. the rule -> the hard samples
    rule = rule.resolve(scored.columns)
    uncapped = select_hard(scored, replace(rule, max_hard=None, max_per_class=None))
    hard = select_hard(scored, rule)
    if not process.is_main:  # every process holds the same scores; the main process writes them
        return None
    # 5. the outputs: hard CSV (DisCL layout), all scores, per-class summary, Spearman table, curriculum state
    layout = table.attrs.get("layout", "canonical") if args.layout == "auto" else args.layout
    config = {k: v for k, v in vars(args).items()}
    config["n_hard_uncapped"] = int(uncapped.sum())
    config["score_columns"] = [c for f in frames for c in f.columns if base_score_name(c) not in NON_SCORE_COLUMNS]
    summary_path = Path(args.scores_parquet).with_suffix(".per_class.csv")
    spearman_path = None
    try:
        res = write_mining_outputs(table, scored, hard, rule, args.output_csv, args.scores_parquet, layout, config)
        write_csv(res.summary, summary_path)
        if not res.correlations.empty:
            spearman_path = Path(args.scores_parquet).with_suffix(".spearman.csv")
            write_csv(res.correlations.rename_axis("score"), spearman_path, index=True)
    except OSError as err:  # a read-only or missing output folder, a full disk: one line naming the flags
        raise OSError(f"cannot write the outputs (--output_csv/--scores_parquet): {err}") from err
    state = None
    if args.prototype_state:
        state, _ = save_prototype_state(
            args.prototype_state, frames[args.scorers.index("prototype")], args.prototype_scaling, config
        )
    return MiningRun(rule, hard, layout, res, summary_path, spearman_path, state, int(uncapped.sum()))


def save_prototype_state(path: str, frame: pd.DataFrame, scaling: str, config: dict):
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
