"""The registered difficulty scorers: each takes the sample table and options and returns score columns keyed
by sample_id (see difficulty.py for the maths)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from data_generation.mining.difficulty import (
    DIFFICULTY_SCORERS,
    checkpoint_probs,
    classifier_scores,
    dynamics_scores,
    load_checkpoint_classifier,
    predefined_scores,
    random_scores,
    zero_shot_probs,
)


@dataclass(frozen=True)
class ScorerOptions:
    """Options of the scorers (the flags of mine_hard.py)."""

    num_classes: int
    class_names: tuple[str, ...]
    templates: tuple[str, ...] = ("a photo of a {name}.",)
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0
    classifier_arch: str | None = None
    classifier_weights: str | None = None
    classifier_img_size: int | None = None
    clip_backend: str = "open_clip"
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    feature_model: str = "dino_vits16"
    feature_weights: str | None = None
    feature_img_size: int | None = None
    n_clusters: int | None = None
    use_labels: bool = False
    predefined_column: str | None = None
    dynamics: str | None = None


def _ids(table: pd.DataFrame) -> list[str]:
    return table["sample_id"].tolist()


@DIFFICULTY_SCORERS.register("checkpoint")
def score_checkpoint(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return classifier scores from a timm architecture + weights file.

    The number of classes is the weights file's head size (the mined table may be a subset of the classes);
    a table label the head does not have is an error naming the file and both class counts. Without a
    weights file (tests only) the head is random with `opts.num_classes` outputs.
    """
    if not opts.classifier_arch:
        raise ValueError("the checkpoint scorer needs --classifier_arch (a timm name) and --classifier_weights")
    weights = opts.classifier_weights
    model, transform = load_checkpoint_classifier(
        opts.classifier_arch, weights, None if weights else opts.num_classes, opts.classifier_img_size
    )
    top = int(table["label"].max())
    if top >= model.num_classes:
        raise ValueError(
            f"{weights}: the classifier head has {model.num_classes} classes, but the table has labels up "
            f"to {top} ({top + 1} classes); pass the weights trained on this label set"
        )
    probs = checkpoint_probs(model, transform, table, opts.batch_size, opts.device)
    return classifier_scores(probs, table["label"].to_numpy(), index=_ids(table))


@DIFFICULTY_SCORERS.register("zero_shot_clip")
def score_zero_shot_clip(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return classifier scores from a zero-shot CLIP classifier (class prompts from the templates)."""
    from data_generation.scoring.backends import load_scorer

    pretrained = opts.clip_pretrained if opts.clip_backend == "open_clip" else None  # transformers: in the folder
    embedder = load_scorer(opts.clip_backend, opts.clip_model, pretrained=pretrained, device=opts.device)
    prompts = [[t.format(name=n) for t in opts.templates] for n in opts.class_names]
    probs = zero_shot_probs(embedder, table, prompts, opts.batch_size)
    return classifier_scores(probs, table["label"].to_numpy(), index=_ids(table))


@DIFFICULTY_SCORERS.register("prototype")
def score_prototype(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return `prototype_distance`: the distance of each embedding to its k-means centroid (curriculum.prototypes)."""
    from data_generation.mining.prototype_scores import prototype_distance_scores

    return prototype_distance_scores(table, opts)


@DIFFICULTY_SCORERS.register("predefined")
def score_predefined(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return the user's column (`--predefined_column`) as a score."""
    if not opts.predefined_column:
        raise ValueError("the predefined scorer needs --predefined_column")
    return predefined_scores(table, opts.predefined_column)


@DIFFICULTY_SCORERS.register("dynamics")
def score_dynamics(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return training-dynamics difficulty (cumulative accuracy, confidence, variability, first-learned epoch,
    forgetting) from a Phase 2 run's `dynamics.parquet` (`--dynamics`; `train_lt.py/finetune_flyp.py
    --log_dynamics` writes it), for the table's samples (joined by sample_id)."""
    if not opts.dynamics:
        raise ValueError("the dynamics scorer needs --dynamics RUN_DIR/dynamics.parquet (a run with --log_dynamics)")
    frame = dynamics_scores(pd.read_parquet(opts.dynamics), opts.dynamics)
    ids = set(_ids(table))
    return frame[frame.index.isin(ids)]


@DIFFICULTY_SCORERS.register("random")
def score_random(table: pd.DataFrame, opts: ScorerOptions) -> pd.DataFrame:
    """Return a seeded random score (a baseline)."""
    return random_scores(_ids(table), seed=opts.seed)


def run_scorers(names: list[str], table: pd.DataFrame, opts: ScorerOptions) -> list[pd.DataFrame]:
    """Return the score frames of the named scorers (keyed by sample_id), in order.

    A column that an earlier scorer already wrote is renamed `<scorer>_<column>` (e.g. `checkpoint_true_prob`
    when zero_shot_clip ran first); ranking and rules resolve it by its base name (difficulty.base_score_name).
    """
    frames = []
    for name in names:
        frame = DIFFICULTY_SCORERS.get(name)(table, opts)
        clash = [c for c in frame.columns if any(c in f.columns for f in frames)]
        if clash:
            frame = frame.rename(columns={c: f"{name}_{c}" for c in clash})
        frames.append(frame)
    return frames


def class_name_list(table: pd.DataFrame, names: dict[int, str] | None) -> tuple[int, tuple[str, ...]]:
    """Return (number of classes, a prompt name per class id) from the table and an optional map."""
    n = int(max(table["label"].max(), max(names) if names else 0)) + 1
    by_label = dict(zip(table["label"].astype(int), table["label_name"].astype(str)))
    out = tuple((names or {}).get(c, by_label.get(c, str(c))) for c in range(n))
    return n, out
