"""Sampling schedules: objects that map a training step to a probability vector over the dataset.

A schedule has `num_samples` and `probabilities(step) -> float64 array summing to 1`, and is a pure
function of the step, so a resumed run that restores the step follows the same curriculum. Two kinds:

- `SoftPacingSchedule` (temperature sampling): the target effective size rises from `start` to `end`
  (default: the maximum, 1 - (1 - 1/N)^N) along a pacing shape over `final_iteration` steps;
  p = softmax(-+d / T) with T read from a `TemperatureTable`; uniform from `final_iteration` on.
- `HardPacingSchedule` (subsets): uniform over the ceil(f N) most favoured samples of the ranking, with the
  fraction f = start + (1 - start) h(progress) from a pacing shape.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from .pacing import PACING, pacing_fraction, progress
from .weighting import MODES, TemperatureTable, canonical_mode


class Schedule(Protocol):
    """What `CurriculumSampler` needs: the dataset size and a distribution per step."""

    num_samples: int

    def probabilities(self, step: int) -> np.ndarray: ...


class StaticSchedule:
    """A fixed distribution for every step (normalised on construction)."""

    def __init__(self, weights):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be a non-empty 1-d array of finite non-negative numbers, not all 0")
        self.p = w / w.sum()
        self.num_samples = w.size

    def probabilities(self, step: int) -> np.ndarray:
        """Return the fixed probability vector."""
        return self.p


class SoftPacingSchedule:
    """Temperature sampling whose target effective size follows a pacing shape (see module doc)."""

    def __init__(
        self,
        distances,
        final_iteration: int,
        pacing: str = "linear",
        start: float = 0.3,
        end: float | None = None,
        mode: str = "prototypes_first",
        table: TemperatureTable | None = None,
        **pacing_params: Any,
    ):
        PACING.get(pacing)
        self.mode = canonical_mode(mode)
        self.distances = np.asarray(distances, dtype=np.float64)
        self.table = table if table is not None else TemperatureTable(self.distances, self.mode, min_target=start)
        if self.table.n != self.distances.size or self.table.mode != self.mode:
            raise ValueError("table was built for other distances or another mode")
        self.num_samples = self.distances.size
        self.end = self.table.max if end is None else float(end)
        self.start = float(start)
        if not 0 < self.start <= self.end <= self.table.max + 1e-12:
            raise ValueError(
                f"need 0 < start <= end <= max effective size {self.table.max:.6g}; got start={start!r}, end={end!r}"
            )
        self.table._check_target(self.start)
        self.final_iteration, self.pacing, self.pacing_params = int(final_iteration), pacing, pacing_params

    def target(self, step: int) -> float:
        """Return the target effective size at `step` (the maximum from final_iteration on)."""
        if step >= self.final_iteration:
            return self.table.max
        frac = pacing_fraction(self.pacing, progress(step, self.final_iteration), **self.pacing_params)
        return self.start + (self.end - self.start) * frac

    def temperature(self, step: int) -> float:
        """Return the temperature used at `step` (inf = uniform)."""
        if step >= self.final_iteration:
            return math.inf
        return self.table.interpolate(self.target(step))

    def probabilities(self, step: int) -> np.ndarray:
        """Return p at `step`: one softmax pass over the distances (uniform after final_iteration)."""
        return self.table.probabilities(self.temperature(step))


def hard_subset(difficulty, fraction: float, mode: str = "prototypes_first") -> np.ndarray:
    """Return the indices of the ceil(fraction N) (at least 1) most favoured samples, most favoured first.

    prototypes_first favours small difficulty, hard_first large; ties keep dataset order (stable sort).
    """
    d = np.asarray(difficulty, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"difficulty must be a non-empty 1-d array, got shape {d.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    order = np.argsort(-MODES.get(mode).sign * d, kind="stable")
    return order[: max(1, math.ceil(fraction * d.size - 1e-9))]


class HardPacingSchedule:
    """Uniform sampling over a growing prefix of the difficulty ranking (see module doc)."""

    def __init__(
        self,
        difficulty,
        final_iteration: int,
        pacing: str = "linear",
        start: float = 0.1,
        mode: str = "prototypes_first",
        **pacing_params: Any,
    ):
        PACING.get(pacing)
        d = np.asarray(difficulty, dtype=np.float64)
        self.order = hard_subset(d, 1.0, mode)  # the full ranking, computed once
        self.num_samples = d.size
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start must lie in (0, 1], got {start!r}")
        self.start, self.final_iteration = float(start), int(final_iteration)
        self.pacing, self.pacing_params = pacing, pacing_params

    def fraction(self, step: int) -> float:
        """Return the fraction of the ranking in use at `step`."""
        t = progress(step, self.final_iteration)
        return pacing_fraction(self.pacing, t, start=self.start, **self.pacing_params)

    def subset(self, step: int) -> np.ndarray:
        """Return the indices in use at `step`."""
        n = max(1, math.ceil(self.fraction(step) * self.num_samples - 1e-9))
        return self.order[:n]

    def probabilities(self, step: int) -> np.ndarray:
        """Return the uniform distribution over `subset(step)`."""
        idx = self.subset(step)
        p = np.zeros(self.num_samples)
        p[idx] = 1.0 / len(idx)
        return p
