"""Metrics with names that say what they are (`iwildcam/ood_test/macro_f1`, `imagenet_lt/val/few_acc`)."""

from __future__ import annotations

import numpy as np
import torch


def accuracy_and_macro_f1(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Return accuracy and macro-F1 computed by WILDS' own metric classes (F1 over the labels present)."""
    from wilds.common.metrics.all_metrics import F1, Accuracy

    yp, yt = torch.tensor(np.asarray(y_pred)), torch.tensor(np.asarray(y_true))
    return {
        "acc": float(Accuracy().compute(yp, yt, return_dict=False)),
        "macro_f1": float(F1(average="macro").compute(yp, yt, return_dict=False)),
    }


def shot_accuracies(y_pred: np.ndarray, y_true: np.ndarray, train_counts: dict[int, int]) -> dict[str, float]:
    """Return overall, many (>= 100 training images), medium (20-99) and few (< 20) top-1 accuracy (the
    reference's split, `model/metrics.py`; OLTR's usual "many > 100" puts classes of exactly 100 in medium)."""
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    correct = y_pred == y_true
    counts = np.array([train_counts.get(int(y), 0) for y in y_true])
    out = {"overall_acc": float(correct.mean()) if len(correct) else float("nan")}
    for name, mask in (("many", counts >= 100), ("medium", (counts >= 20) & (counts < 100)), ("few", counts < 20)):
        out[f"{name}_acc"] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out
