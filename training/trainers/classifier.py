"""Long-tail classifier training (ImageNet-LT): a timm/torchvision architecture with cross-entropy or balanced
softmax, and the reference's epoch composition."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from curriculum.guidance import ALL_LEVELS, REAL_LEVEL
from curriculum.weights_io import create_timm_classifier
from training.trainers.data import real_items, synthetic_items
from training.trainers.losses import LOSSES, log_class_prior
from training.trainers.metrics import shot_accuracies

AUGMENTATIONS = ("timm", "shift", "none")


def build_classifier(
    arch: str, num_classes: int, weights: str | None = None, img_size: int | None = None, augment: str = "timm"
):
    """Return (timm model, train transform, eval transform); see curriculum.weights_io.create_timm_classifier.

    Training may start from weights with another head (e.g. ImageNet's 1000 classes): the head is then
    re-initialised for `num_classes` with a logged warning. `augment`: `timm` = the architecture's ImageNet
    training transform (random resized crop, flip, colour jitter); `shift` = the eval transform after a random
    translation of up to 1/8 of the side (for digits, text or other images a flip or a crop changes the class);
    `none` = the eval transform.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"--augment must be one of {AUGMENTATIONS}, got {augment!r}")
    model, train_tf, eval_tf = create_timm_classifier(arch, num_classes, weights, img_size, allow_new_head=True)
    if augment == "none":
        train_tf = eval_tf
    elif augment == "shift":
        from torchvision import transforms as T

        train_tf = T.Compose([T.RandomAffine(degrees=0, translate=(0.125, 0.125)), eval_tf])
    return model, train_tf, eval_tf


class ClassifierTask:
    """Cross-entropy or balanced-softmax training of a classifier; shot-group accuracies for evaluation."""

    def __init__(
        self,
        model,
        train_transform,
        eval_transform,
        train_counts: dict[int, int],
        num_classes: int,
        loss: str = "ce",
        name: str = "imagenet_lt",
    ):
        self.model, self.train_transform, self.eval_transform = model, train_transform, eval_transform
        self.loss_fn = LOSSES.get(loss)
        counts = torch.zeros(num_classes)
        for c, n in train_counts.items():
            counts[int(c)] = n
        self.log_prior = log_class_prior(counts)
        self.train_counts = dict(train_counts)
        self.name = name

    def training_loss(self, model, images, labels):
        """Return the configured loss on the model's logits (balanced softmax adds log p(y) here only)."""
        return self.loss_fn(model(images), labels, self.log_prior)

    def prepare_eval(self, model) -> None:
        """Nothing to prepare: test-time logits are the plain logits."""

    def class_logits(self, model, images):
        """Return the plain logits."""
        return model(images)

    def split_metrics(self, split: str, y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
        """Return `{name}/{split}/overall_acc`, `many_acc`, `medium_acc`, `few_acc`."""
        return {f"{self.name}/{split}/{k}": v for k, v in shot_accuracies(y_pred, y_true, self.train_counts).items()}


def lt_epoch_composer(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    tail_labels: set[int],
    subset_frac: float = 0.3,
    tail_share: float = 0.136,
) -> Callable:
    """Return the reference ImageNet-LT epoch composition as a `compose(epoch, level, rng)` function.

    Each epoch: a fresh `subset_frac` subset of the non-tail real images, all real tail images, topped up with
    tail synthetic images of the current level until the tail is `tail_share` of the epoch; after the
    curriculum (level 100) the real tail images are up-sampled to that share instead.
    """
    items = real_items(real)
    is_tail = items["label"].isin(tail_labels).to_numpy()
    head, tail = items[~is_tail], items[is_tail]
    syn = synthetic[synthetic["label"].isin(tail_labels)]

    note = {}

    def compose(epoch: int, level: int, rng: np.random.Generator) -> pd.DataFrame:
        # the reference's counts: floor(r * N_nt) non-tail, N_tail = floor(s / (1 - s) * that)
        head_part = head.iloc[np.sort(rng.choice(len(head), size=int(subset_frac * len(head)), replace=False))]
        want_tail = int(tail_share / (1 - tail_share) * len(head_part))
        extra_n = max(0, want_tail - len(tail))
        note["text"] = (
            f"the {len(tail)} real tail images already fill the tail target {want_tail} "
            f"(--tail_share {tail_share} of {len(head_part)} non-tail images, --subset_frac {subset_frac})"
            if extra_n == 0
            else ""
        )
        pool = synthetic_items(syn, level) if level not in (REAL_LEVEL,) else tail
        if level == ALL_LEVELS:
            pool = synthetic_items(syn, ALL_LEVELS)
        extra = (
            pool.iloc[rng.choice(len(pool), size=extra_n, replace=len(pool) < extra_n)]
            if extra_n and len(pool)
            else pool.iloc[:0]
        )
        return pd.concat([head_part, tail, extra], ignore_index=True)

    compose.last_note = lambda: note.get("text", "")  # why the last epoch had no synthetic top-up, if it had none
    return compose


def lt_uniform_set(real: pd.DataFrame, tail_labels: set[int], tail_draws: int = 5000) -> Callable:
    """Return `rng -> items`: the reference's ImageNet-LT uniform set, every non-tail real image plus
    `tail_draws` real tail images drawn with replacement (fresh for each uniform pass)."""
    items = real_items(real)
    is_tail = items["label"].isin(tail_labels).to_numpy()
    head, tail = items[~is_tail], items[is_tail]

    def compose(rng: np.random.Generator) -> pd.DataFrame:
        draws = tail.iloc[rng.choice(len(tail), size=tail_draws, replace=True)] if len(tail) else tail
        return pd.concat([head, draws], ignore_index=True)

    return compose
