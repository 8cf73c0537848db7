"""Per-sample difficulty scores, each a column keyed by `sample_id` (never by row position).

Scorers (registry `DIFFICULTY_SCORERS`, chosen by name in mine_hard.py):

* classifier-based (`zero_shot_clip`, `checkpoint`): from class probabilities p (N x C) and labels y,
  `true_prob` = p[y], `loss` = -log p[y], `margin` = p[y] - max_{c != y} p[c], `correct` = argmax p == y;
* `prototype`: distance of each sample's embedding to its k-means centroid (curriculum.prototypes);
* `predefined` (a column of the user's table) and `random` (seeded) baselines.

Plus rank normalisation to [0, 1], an ensemble (mean of ranks) and a Spearman correlation table.

When two scorers write the same column (two classifier scorers both write `true_prob`, ...), run_scorers keeps
the first one's name and prefixes the later one's with its scorer name (`checkpoint_true_prob`); such a column
takes the direction of its base score (`base_score_name`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from curriculum.images import load_rgb
from curriculum.registry import Registry
from curriculum.weights_io import create_timm_classifier

DIFFICULTY_SCORERS: Registry = Registry("difficulty scorer")

#: for each score column, whether a larger value means harder (used by rank normalisation and rules)
HARDER_IF_LARGER = {
    "true_prob": False,
    "loss": True,
    "margin": False,
    "correct": False,
    "prototype_distance": True,
    "random": True,
    # training dynamics (Phase 2's dynamics.parquet): see dynamics_scores
    "cum_accuracy": False,
    "mean_true_prob": False,
    "true_prob_std": True,
    "first_learned": True,
    "forgetting": True,
}
#: columns scorers write that are not difficulties (kept in the outputs, never ranked or correlated)
NON_SCORE_COLUMNS = {"prototype_cluster"}


def base_score_name(column: str) -> str:
    """Return the score a column holds: `column`, or `base` for `<scorer>_<base>` (e.g. `checkpoint_true_prob`).

    Only a registered scorer's name followed by a known score (or non-score) column is stripped, so a user's
    own column (`--predefined_column`) keeps its name.
    """
    if column in HARDER_IF_LARGER or column in NON_SCORE_COLUMNS:
        return column
    from data_generation.mining import scorer_runs  # noqa: F401  (registers the scorers whose names prefix clashing columns)

    for scorer in sorted(DIFFICULTY_SCORERS.names(), key=len, reverse=True):
        rest = column[len(scorer) + 1 :]
        if column.startswith(scorer + "_") and (rest in HARDER_IF_LARGER or rest in NON_SCORE_COLUMNS):
            return rest
    return column


def harder_if_larger(column: str) -> bool:
    """Return whether a larger value of `column` means harder, by its base score (unknown columns: True)."""
    return HARDER_IF_LARGER.get(base_score_name(column), True)


def is_score_column(column: str) -> bool:
    """Return whether `column` is a known difficulty score (or a prefixed copy of one), not e.g. a cluster id."""
    return base_score_name(column) in HARDER_IF_LARGER


def correctness_columns(columns: Iterable[str]) -> list[str]:
    """Return the classifier-correctness columns among `columns` (`correct`, `checkpoint_correct`, ...), in order."""
    return [c for c in columns if base_score_name(c) == "correct"]


# --------------------------------------------------------------------------------------------------------
# pure maths
def classifier_scores(probs: np.ndarray, labels: np.ndarray, index: Sequence[str] | None = None) -> pd.DataFrame:
    """Return `true_prob, loss, margin, correct` per sample from class probabilities and true labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be N x C with N = len(labels); got {probs.shape} and {len(labels)} labels")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= probs.shape[1]:
        raise ValueError(f"labels must be in [0, {probs.shape[1]}); got min {labels.min()} max {labels.max()}")
    rows = np.arange(len(labels))
    true = probs[rows, labels]
    other = probs.copy()
    other[rows, labels] = -np.inf
    best_other = other.max(axis=1) if probs.shape[1] > 1 else np.zeros_like(true)
    return pd.DataFrame(
        {
            "true_prob": true,
            "loss": -np.log(np.clip(true, 1e-12, None)),
            "margin": true - best_other,
            "correct": probs.argmax(axis=1) == labels,
        },
        index=pd.Index(index, name="sample_id") if index is not None else None,
    )


def rank_normalise(scores: pd.DataFrame, directions: dict[str, bool] | None = None) -> pd.DataFrame:
    """Return each column as a difficulty rank in [0, 1] (1 = hardest; ties share their mean rank).

    A column's direction (does larger mean harder?) comes from `directions`, else from its base score name
    (`harder_if_larger`), so `checkpoint_true_prob` ranks like `true_prob`.
    """
    directions = directions or {}
    out = {}
    for col in scores.columns:
        s = scores[col].astype(float)
        r = s.rank(method="average", ascending=directions.get(col, harder_if_larger(col)))
        out[f"{col}_rank"] = (r - 1) / max(len(s) - 1, 1)
    return pd.DataFrame(out, index=scores.index)


def ensemble(ranks: pd.DataFrame) -> pd.Series:
    """Return the mean of the rank columns (the ensemble difficulty, in [0, 1])."""
    return ranks.mean(axis=1).rename("ensemble")


def spearman_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Return the Spearman rank correlation between every pair of score columns."""
    return scores.astype(float).corr(method="spearman")


def dynamics_scores(dynamics: pd.DataFrame, source: str = "dynamics") -> pd.DataFrame:
    """Return training-dynamics difficulty per sample_id from per-epoch (epoch, sample_id, true_prob, correct) rows.

    Over the logged epochs, in epoch order: `cum_accuracy` (fraction of epochs classified correctly),
    `mean_true_prob` and `true_prob_std` (dataset cartography's confidence and variability), `first_learned`
    (the first epoch from which the sample stays correct to the end; the number of epochs if it never does)
    and `forgetting` (correct -> incorrect transitions between consecutive epochs). A missing column is a
    ValueError naming `source`.
    """
    need = {"epoch", "sample_id", "true_prob", "correct"}
    missing = sorted(need - set(dynamics.columns))
    if missing:
        raise ValueError(f"{source}: training dynamics need columns {sorted(need)}; missing {missing}")
    if dynamics.empty:
        raise ValueError(f"{source}: no training-dynamics rows")
    d = dynamics.sort_values(["sample_id", "epoch"], kind="stable")
    epochs = np.sort(d["epoch"].unique())
    rows = {}
    for sid, g in d.groupby("sample_id", sort=True):
        correct = g["correct"].astype(bool).to_numpy()
        if len(g) != len(epochs):
            raise ValueError(f"{source}: sample {sid!r} has {len(g)} epochs of dynamics, others {len(epochs)}")
        wrong = np.flatnonzero(~correct)
        first = 0 if len(wrong) == 0 else int(wrong[-1]) + 1  # stays correct from here on (len: never)
        rows[str(sid)] = {
            "cum_accuracy": float(correct.mean()),
            "mean_true_prob": float(g["true_prob"].mean()),
            "true_prob_std": float(g["true_prob"].std(ddof=0)),
            "first_learned": float(first),
            "forgetting": float(np.sum(correct[:-1] & ~correct[1:])),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "sample_id"
    return out


def random_scores(sample_ids: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Return a seeded uniform `random` score per sample (a baseline), keyed by sample_id."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"random": rng.random(len(sample_ids))}, index=pd.Index(sample_ids, name="sample_id"))


def predefined_scores(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Return the user's `column` of the sample table as a score, keyed by sample_id."""
    if column not in table.columns:
        raise KeyError(
            f"--predefined_column {column!r} is not a column of the sample table; columns: {list(table.columns)}"
        )
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().any():
        bad = int(values.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"column {column!r}: row {bad + 1} is not a number ({table[column].iloc[bad]!r})")
    return pd.DataFrame({column: values.to_numpy()}, index=pd.Index(table["sample_id"], name="sample_id"))


# --------------------------------------------------------------------------------------------------------
# images -> model outputs
class SampleImages(torch.utils.data.Dataset):
    """The images of a sample table, decoded to RGB and passed through `transform`."""

    def __init__(self, table: pd.DataFrame, transform: Callable | None = None):
        self.paths = table["source_path"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        img = load_rgb(self.paths[i])
        return self.transform(img) if self.transform is not None else img


def iterate_batches(dataset, batch_size: int, num_workers: int = 0, desc: str = "") -> Iterable:
    """Yield batches of a dataset with a progress bar (PIL images are kept as lists)."""
    collate = None
    if len(dataset) and not torch.is_tensor(dataset[0]):
        collate = list
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    yield from tqdm(loader, desc=desc, unit="batch", leave=False)


@torch.no_grad()
def model_outputs(
    model: torch.nn.Module,
    table: pd.DataFrame,
    transform: Callable,
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
    desc: str = "forward",
) -> np.ndarray:
    """Return the stacked outputs of `model` on every image of the table, in table order (float32)."""
    model.eval().to(device)
    outs = [
        model(x.to(device)).float().cpu()
        for x in iterate_batches(SampleImages(table, transform), batch_size, num_workers, desc)
    ]
    return torch.cat(outs).numpy()


class ImageTextEmbedder(Protocol):
    """What a zero-shot classifier needs: L2-normalised image and text embeddings in one space."""

    def embed_images(self, images: list) -> np.ndarray: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


def zero_shot_probs(
    embedder: ImageTextEmbedder,
    table: pd.DataFrame,
    class_prompts: Sequence[Sequence[str]],
    batch_size: int = 64,
    logit_scale: float = 100.0,
) -> np.ndarray:
    """Return N x C zero-shot class probabilities: softmax(scale * image . mean class-prompt embedding).

    `class_prompts[c]` lists the prompts (templates) of class c; their embeddings are averaged and
    re-normalised, as in CLIP's zero-shot evaluation.
    """
    heads = []
    for prompts in class_prompts:
        e = np.asarray(embedder.embed_texts(list(prompts)), dtype=np.float64).mean(axis=0)
        heads.append(e / np.linalg.norm(e))
    head = np.stack(heads)
    feats = [
        np.asarray(embedder.embed_images(b), dtype=np.float64)
        for b in iterate_batches(SampleImages(table), batch_size, desc="zero-shot")
    ]
    logits = logit_scale * np.concatenate(feats) @ head.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def load_checkpoint_classifier(
    arch: str, weights: str | None, num_classes: int | None = None, img_size: int | None = None
) -> tuple[torch.nn.Module, Callable]:
    """Return (timm model `arch` with `weights` loaded, its eval transform).

    Weights: safetensors or a torch state dict, read without unpickling objects; none = random (tests).
    `num_classes` None takes the class count from the weights file's head. The head must fit: a head for
    another number of classes, or none at all, is an error naming the file (scores from a random head mean
    nothing). `img_size` sets the eval transform's input size (default: the architecture's).
    """
    model, _, eval_transform = create_timm_classifier(arch, num_classes, weights, img_size, allow_new_head=False)
    return model, eval_transform


def checkpoint_probs(
    model: torch.nn.Module, transform: Callable, table: pd.DataFrame, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Return N x C softmax probabilities of a classifier on the table's images."""
    logits = model_outputs(model, table, transform, batch_size, device, desc="classifier")
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
