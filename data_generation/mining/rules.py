"""Hard-sample selection: a recorded rule over difficulty scores, and the files gene_img reads.

The reference's two hard sets are rules here:
* ImageNet-LT: every image of the few-shot classes -> `HardRule(tail_only=True, tail_max_count=19)`;
* iWildCam's hand-made list -> `HardRule(flag_column="hard")` over the user's table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from curriculum.tables import parse_bool_column, to_discl_layout, write_csv, write_parquet
from data_generation.mining.difficulty import (
    NON_SCORE_COLUMNS,
    base_score_name,
    correctness_columns,
    ensemble,
    is_score_column,
    rank_normalise,
    spearman_table,
)


@dataclass(frozen=True)
class HardRule:
    """Which samples are hard. Criteria are combined with `combine` ('any' or 'all') among the candidates.

    Candidates are all samples, or only those of tail classes (`tail_only`: classes with at most
    `tail_max_count` training samples). A class's count is read from `count_column` (a per-sample column
    holding its class's training count, e.g. the ImageNet-LT loader's `train_count`); without one the
    samples of the table being mined are counted. With no criterion every candidate is hard.
    `misclassified`: wrong under at least one of the correctness columns `misclassified_by` (empty: every
    correctness column of the table, i.e. misclassified by any classifier scorer). `bottom_q`/`top_q` map a
    score column to a fraction q: the ceil(q * n) candidates with the smallest/largest values (ties broken
    by sample_id, so the choice is deterministic).
    """

    misclassified: bool = False
    misclassified_by: tuple[str, ...] = ()
    bottom_q: dict[str, float] = field(default_factory=dict)
    top_q: dict[str, float] = field(default_factory=dict)
    flag_column: str | None = None
    tail_only: bool = False
    tail_max_count: int = 19
    count_column: str | None = None
    combine: str = "any"
    #: caps on the hard set (None: no cap): the `max_per_class` hardest of each class, then the `max_hard`
    #: hardest overall; hardest = the largest mean difficulty rank over the score columns (ties: sample_id)
    max_hard: int | None = None
    max_per_class: int | None = None

    def validate(self, columns) -> None:
        """Raise ValueError naming the flag when the rule refers to something that is not there."""
        columns = list(columns)
        if self.combine not in {"any", "all"}:
            raise ValueError(f"--combine must be 'any' or 'all', got {self.combine!r}")
        for flag, spec in (("--bottom_q", self.bottom_q), ("--top_q", self.top_q)):
            for col, q in spec.items():
                if col not in columns:
                    raise ValueError(f"{flag} {col}={q}: no score column {col!r}; available: {sorted(columns)}")
                if not 0.0 < q <= 1.0:
                    raise ValueError(f"{flag} {col}={q}: q must be in (0, 1]")
        if self.misclassified:
            correct = correctness_columns(columns)
            if not correct:
                raise ValueError("--misclassified needs a classifier scorer (zero_shot_clip or checkpoint)")
            bad = [c for c in self.misclassified_by if c not in correct]
            if bad:
                raise ValueError(f"--misclassified {' '.join(bad)}: not a correctness column; available: {correct}")
        if self.flag_column and self.flag_column not in columns:
            raise ValueError(f"--flag_column {self.flag_column!r} is not a column of the table")
        for flag, cap in (("--max_hard", self.max_hard), ("--max_hard_per_class", self.max_per_class)):
            if cap is not None and cap < 1:
                raise ValueError(f"{flag} must be >= 1, got {cap}")
        if self.tail_only and self.count_column and self.count_column not in columns:
            raise ValueError(f"--tail_only: class-count column {self.count_column!r} is not a column of the table")

    def resolve(self, columns) -> HardRule:
        """Return the rule with `misclassified_by` naming the correctness columns it uses (so it is recorded)."""
        if self.misclassified and not self.misclassified_by:
            return replace(self, misclassified_by=tuple(correctness_columns(columns)))
        return self

    def describe(self) -> str:
        """Return the rule in words (recorded in the outputs)."""
        parts = []
        if self.misclassified:
            by = self.misclassified_by
            parts.append(
                "misclassified (by any classifier scorer)"
                if not by
                else f"misclassified ({by[0]} is false)"
                if len(by) == 1
                else f"misclassified (any of {', '.join(by)} is false)"
            )
        parts += [f"bottom {q:g} of {c}" for c, q in self.bottom_q.items()]
        parts += [f"top {q:g} of {c}" for c, q in self.top_q.items()]
        if self.flag_column:
            parts.append(f"{self.flag_column} is true")
        crit = f" {'or' if self.combine == 'any' else 'and'} ".join(parts) or "every sample"
        if self.tail_only:
            where = f"training samples ({self.count_column})" if self.count_column else "samples in the mined table"
            crit += f", among classes with <= {self.tail_max_count} {where}"
        caps = [f"at most {self.max_per_class} per class"] if self.max_per_class else []
        caps += [f"at most {self.max_hard} in all"] if self.max_hard else []
        if caps:
            crit += f"; capped ({', '.join(caps)}) to the hardest by mean difficulty rank"
        return crit


def class_counts_from_column(scores: pd.DataFrame, column: str) -> pd.Series:
    """Return label -> class count read from a per-sample count column; a label with two counts is an error."""
    per_label = scores.groupby("label")[column]
    spread = per_label.nunique()
    if (spread > 1).any():
        y = spread.index[spread > 1][0]
        raise ValueError(
            f"column {column!r} gives label {y} different class counts: "
            f"{sorted(scores.loc[scores['label'] == y, column].unique().tolist())}"
        )
    return per_label.first()


def _extreme(values: pd.Series, q: float, largest: bool) -> pd.Series:
    n = len(values)
    k = max(1, math.ceil(q * n)) if n else 0
    order = values.sort_index(kind="stable").rank(method="first", ascending=not largest)
    return (order <= k).reindex(values.index)


def select_hard(scores: pd.DataFrame, rule: HardRule, class_counts: pd.Series | None = None) -> pd.Series:
    """Return a boolean Series (index: sample_id) marking the hard samples under `rule`.

    `scores` is indexed by sample_id with a `label` column and the score columns. `class_counts` maps a
    label to its number of training samples (default: `rule.count_column`, else counted in `scores`).
    """
    rule.validate(scores.columns)
    rule = rule.resolve(scores.columns)
    candidates = scores
    if rule.tail_only:
        if class_counts is not None:
            counts = class_counts
        elif rule.count_column:
            counts = class_counts_from_column(scores, rule.count_column)
        else:
            counts = scores["label"].value_counts()
        candidates = scores[scores["label"].map(counts).fillna(0) <= rule.tail_max_count]
    masks = []
    if rule.misclassified:
        correct = pd.concat(
            [parse_bool_column(candidates[c], "the score table", c) for c in rule.misclassified_by], axis=1
        )
        masks.append(~correct.all(axis=1))
    for col, q in rule.bottom_q.items():
        masks.append(_extreme(candidates[col].astype(float), q, largest=False))
    for col, q in rule.top_q.items():
        masks.append(_extreme(candidates[col].astype(float), q, largest=True))
    if rule.flag_column:
        masks.append(parse_bool_column(candidates[rule.flag_column], "the sample table", rule.flag_column))
    if masks:
        chosen = pd.concat(masks, axis=1)
        hard_c = chosen.any(axis=1) if rule.combine == "any" else chosen.all(axis=1)
    else:
        hard_c = pd.Series(True, index=candidates.index)
    hard = hard_c.reindex(scores.index, fill_value=False).astype(bool).rename("hard")
    return cap_hard(scores, hard, rule.max_hard, rule.max_per_class)


def difficulty_order(scores: pd.DataFrame) -> pd.Series:
    """Return each sample's position from hardest (0) to easiest: by the mean difficulty rank of the score
    columns (`rank_normalise`), ties and a table without scores by sample_id (so the order is deterministic)."""
    cols = [c for c in scores.columns if is_score_column(c)]
    key = rank_normalise(scores[cols]).mean(axis=1) if cols else pd.Series(0.0, index=scores.index)
    frame = pd.DataFrame({"key": -key.to_numpy(), "sid": scores.index.astype(str)}, index=scores.index)
    ordered = frame.sort_values(["key", "sid"], kind="stable").index
    return pd.Series(range(len(ordered)), index=ordered).reindex(scores.index)


def cap_hard(scores: pd.DataFrame, hard: pd.Series, max_hard: int | None, max_per_class: int | None) -> pd.Series:
    """Return `hard` limited to the `max_per_class` hardest of each class, then the `max_hard` hardest overall
    (`difficulty_order`); unchanged without caps."""
    if not max_hard and not max_per_class:
        return hard
    order = difficulty_order(scores[hard])
    keep = pd.Series(True, index=order.index)
    if max_per_class:
        per_class = order.groupby(scores.loc[hard, "label"]).rank(method="first")
        keep &= per_class <= max_per_class
    if max_hard:
        keep &= order[keep].rank(method="first").reindex(order.index).fillna(float("inf")) <= max_hard
    return keep.reindex(scores.index, fill_value=False).astype(bool).rename("hard")


def join_scores(table: pd.DataFrame, *score_frames: pd.DataFrame) -> pd.DataFrame:
    """Return the table indexed by sample_id with every score frame joined on sample_id (never by position).

    A score frame that lacks a sample of the table, or names one the table does not have, is an error.
    """
    out = table.set_index("sample_id", drop=False).rename_axis("sample_id_index")
    for frame in score_frames:
        missing = out.index.difference(frame.index)
        extra = frame.index.difference(out.index)
        if len(missing) or len(extra):
            raise ValueError(
                f"scores {list(frame.columns)} do not match the table: {len(missing)} sample(s) without a "
                f"score (e.g. {list(missing[:3])}), {len(extra)} unknown (e.g. {list(extra[:3])})"
            )
        out = out.join(frame, how="left")
    return out


@dataclass
class MiningResult:
    """What write_mining_outputs wrote and computed.

    `scores`: every sample with its scores, ranks, `ensemble` and `hard`; `hard_csv`, `scores_parquet`: the
    files written; `summary`: hard / total per class; `correlations`: the Spearman table between score
    columns (empty with fewer than two).
    """

    scores: pd.DataFrame
    hard_csv: Path
    scores_parquet: Path
    summary: pd.DataFrame
    correlations: pd.DataFrame


def write_mining_outputs(
    table: pd.DataFrame,
    scored: pd.DataFrame,
    hard: pd.Series,
    rule: HardRule,
    out_csv: str | Path,
    out_parquet: str | Path,
    layout: str,
    config: dict,
) -> MiningResult:
    """Write the hard-sample CSV (DisCL layout) and the Parquet table of every sample with scores and `hard`.

    Returns the scored table, paths, the per-class summary (hard / total) and the Spearman table. The rule is
    recorded resolved (`HardRule.resolve`: which correctness columns `misclassified` used).
    """
    rule = rule.resolve(scored.columns)
    listed = set(config.get("score_columns", []))
    score_cols = [
        c for c in scored.columns if is_score_column(c) or (c in listed and base_score_name(c) not in NON_SCORE_COLUMNS)
    ]
    ranks = rank_normalise(scored[score_cols]) if score_cols else pd.DataFrame(index=scored.index)
    full = scored.join(ranks)
    if len(ranks.columns) > 1:
        full["ensemble"] = ensemble(ranks)
    full["hard"] = hard
    full = full.reset_index(drop=True)
    hard_rows = full[full["hard"]]
    if layout == "canonical":
        hard_table = hard_rows[["sample_id", "filepath", "label", "label_name"]]
        write_csv(hard_table, out_csv)
    else:
        write_csv(to_discl_layout(hard_rows, layout), out_csv, index=(layout == "iwildcam"))
    meta = {
        "rule": asdict(rule),
        "rule_text": rule.describe(),
        "config": config,
        "layout": layout,
        "n_hard": int(full["hard"].sum()),
        "n_samples": len(full),
    }
    write_parquet(full.drop(columns=["source_path"], errors="ignore"), out_parquet, meta)
    summary = (
        full.groupby(["label", "label_name"])["hard"]
        .agg(hard="sum", total="size")
        .reset_index()
        .sort_values(["hard", "label"], ascending=[False, True])
    )
    summary["hard"] = summary["hard"].astype(int)
    corr = spearman_table(scored[score_cols]) if len(score_cols) > 1 else pd.DataFrame()
    return MiningResult(full, Path(out_csv), Path(out_parquet), summary, corr)
