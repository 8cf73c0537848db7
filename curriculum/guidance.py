"""Guidance-level schedules for Phase 2: which synthetic level to mix with real data at each stage.

One level vocabulary everywhere: **level = image guidance in percent = 100 - round(100 * strength)**;
level 100 is real data. Low levels are far from the real image (synthetic), high levels close to it.

* `FixedSchedule` (non-adaptive): a fixed order of levels, synthetic to real, each for an equal share of the
  curriculum epochs, then real only.
* `AdaptiveSchedule` (DisCL's iWildCam setting): when the current loader is exhausted the trainer evaluates
  the model on a curriculum validation set grouped by level; a level's progress is the mean, after removing
  outliers outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR], of the per-image increase in true-class probability since the
  previous evaluation; the next level is the one with the largest progress. Options: a uniform mix of all
  levels first (`uniform_first`), random choice (`random_choice`, an ablation).

Schedules are small state machines whose whole state is a JSON-able dict, so a resumed run continues the
same curriculum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from curriculum.contracts import REAL_LEVEL, guidance_level

ALL_LEVELS = -1  # "a uniform mix of every synthetic level"

__all__ = ["ALL_LEVELS", "REAL_LEVEL", "AdaptiveSchedule", "FixedSchedule", "guidance_level", "level_progress"]


def _check_levels(levels: Sequence[int]) -> list[int]:
    levels = [int(v) for v in levels]
    if not levels:
        raise ValueError("a guidance schedule needs at least one level")
    bad = [v for v in levels if not 0 <= v < REAL_LEVEL]
    if bad:
        raise ValueError(f"synthetic levels must be in [0, 100) (100 is real data); got {bad}")
    return levels


FIXED_BOUNDARIES = ("reference", "equal")


@dataclass
class FixedSchedule:
    """A fixed order of levels, then real data only.

    `boundaries="equal"`: each level for an equal share of `curriculum_epochs` (E), real from E.
    `boundaries="reference"` (DisCL's ImageNet-LT `seq_curri_guid`): the candidate list is the k levels plus
    real, each loop ⌊E/(k+1)⌋ = L epochs long, with the reference's off-by-one (its counter starts at 1 and is
    incremented before use): level j covers epochs [max(0, jL - 1), (j+1)L - 1), real from kL - 1. For
    E = 60 and levels 10, 30, 50: 10 for 0-13, 30 for 14-28, 50 for 29-43, real from 44.
    """

    levels: Sequence[int]
    curriculum_epochs: float
    boundaries: str = "equal"

    def __post_init__(self):
        self.levels = _check_levels(self.levels)
        if self.curriculum_epochs < 0:
            raise ValueError(f"--curriculum_epoch must be >= 0, got {self.curriculum_epochs}")
        if self.boundaries not in FIXED_BOUNDARIES:
            raise ValueError(f"--fixed_stages must be one of {FIXED_BOUNDARIES}, got {self.boundaries!r}")
        if self.boundaries == "reference" and self._loop() < 1:
            raise ValueError(
                f"--fixed_stages reference: --curriculum_epoch {self.curriculum_epochs} is too short for "
                f"{len(self.levels)} levels + real (each stage is floor(E/{len(self.levels) + 1}) epochs); "
                "give more curriculum epochs or --fixed_stages equal"
            )

    def _loop(self) -> int:
        return int(np.floor(self.curriculum_epochs / (len(self.levels) + 1)))

    def level_at(self, epoch: float) -> int:
        """Return the level for (fractional) `epoch` (see the class docstring), 100 once the stages are over."""
        for lv, start, end in self.stage_bounds()[:-1]:
            if start <= epoch < end:
                return lv
        return REAL_LEVEL

    def stage_bounds(self) -> list[tuple[int, float, float]]:
        """Return (level, start epoch, end epoch) for each stage, the real-only stage last (end = inf)."""
        k, e = len(self.levels), self.curriculum_epochs
        if self.boundaries == "reference":
            loop = self._loop()
            bounds = [(lv, float(max(0, i * loop - 1)), float((i + 1) * loop - 1)) for i, lv in enumerate(self.levels)]
            return bounds + [(REAL_LEVEL, float(k * loop - 1), float("inf"))]
        return [(lv, i * e / k, (i + 1) * e / k) for i, lv in enumerate(self.levels)] + [(REAL_LEVEL, e, float("inf"))]


def robust_mean(values: np.ndarray, whisker: float = 1.5) -> float:
    """Return the mean of `values` inside [Q1 - w IQR, Q3 + w IQR] (NaN for an empty array)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    kept = v[(v >= q1 - whisker * iqr) & (v <= q3 + whisker * iqr)]
    return float(kept.mean())


def level_progress(
    previous: np.ndarray, current: np.ndarray, levels: np.ndarray, whisker: float = 1.5
) -> dict[int, float]:
    """Return {level: robust mean of (current - previous) true-class probability} over the images of each level."""
    previous, current, levels = map(np.asarray, (previous, current, levels))
    if not (previous.shape == current.shape == levels.shape):
        raise ValueError(
            f"previous, current and levels must have one entry per image; got {previous.shape}, "
            f"{current.shape}, {levels.shape}"
        )
    delta = current - previous
    return {int(lv): robust_mean(delta[levels == lv], whisker) for lv in np.unique(levels)}


@dataclass
class AdaptiveSchedule:
    """Chooses the next level from validation progress (see the module docstring)."""

    levels: Sequence[int]
    curriculum_epochs: float
    uniform_first: bool = False
    random_choice: bool = False
    seed: int = 0
    whisker: float = 1.5
    #: real data (level 100) is a candidate too, as in DisCL's iWildCam code (its guidance list ends with 100)
    include_real: bool = False
    current: int | None = None
    n_choices: int = 0
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.levels = _check_levels(self.levels)
        if self.include_real:
            self.levels = self.levels + [REAL_LEVEL]
        if self.current is None:
            # before any evaluation there is no progress to compare: start from the uniform mix, or from the
            # level farthest from real (the synthetic end of the spectrum)
            self.current = ALL_LEVELS if self.uniform_first else min(self.levels)

    @property
    def candidates(self) -> list[int]:
        """Return the levels `choose` picks from (the synthetic levels, plus 100 with `include_real`)."""
        return list(self.levels)

    def level_at(self, epoch: float) -> int:
        """Return the level to train on now (100 after the curriculum epochs)."""
        return REAL_LEVEL if epoch >= self.curriculum_epochs else int(self.current)

    def choose(self, progress: Mapping[int, float], epoch: float = 0.0, step: int = 0) -> int:
        """Record `progress` and return the next level: the largest progress, or a seeded random level."""
        candidates = {int(k): float(v) for k, v in progress.items() if int(k) in self.levels and np.isfinite(v)}
        if self.random_choice or not candidates:
            rng = np.random.default_rng([self.seed, self.n_choices])
            nxt = int(rng.choice(self.levels))
        else:
            # ties go to the lower (more synthetic) level, deterministically
            nxt = max(sorted(candidates), key=lambda lv: candidates[lv])
        self.n_choices += 1
        self.history.append(
            {
                "step": int(step),
                "epoch": float(epoch),
                "previous": int(self.current),
                "level": nxt,
                "progress": {str(k): (float(v) if np.isfinite(v) else None) for k, v in progress.items()},
            }
        )
        self.current = nxt
        return nxt

    def state_dict(self) -> dict:
        """Return the JSON-able state (current level, count, history)."""
        return {"current": int(self.current), "n_choices": self.n_choices, "history": list(self.history)}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the state written by `state_dict`."""
        self.current = int(state["current"])
        self.n_choices = int(state["n_choices"])
        self.history = list(state["history"])
