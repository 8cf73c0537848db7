"""Timestep curricula for diffusion training (DESIGN.md §4 "Timestep curriculum").

Training draws a timestep t per example. A *curriculum* restricts which t are drawn as training goes on:

* ``stages``: stage k allows the fractional range [lo_k, 1] of the T training timesteps (default
  lo = 0.8, 0.6, 0.4, 0.2, 0 for 5, 10, 15, 20, 30 epochs, the seed recipe) and t is uniform on the integers
  ``floor(lo*T) .. ceil(hi*T) - 1`` of that range;
* ``soft``: an annealed distribution p(t) ∝ exp(κ·(1−π)·(t/(T−1) − 1)) over all t, where π ∈ [0, 1] is the
  training progress: at π = 0 the noisy end is favoured by a factor e^κ, at π = 1 it is uniform;
* ``uniform``: the usual baseline, t uniform on 0..T−1 for the whole run.

Sampling (generation) always runs the full chain; only training sees the curriculum. Everything here is a
pure function of (epoch, progress, generator), so resuming a run is restoring the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .registry import Registry

DEFAULT_STAGE_STARTS = (0.8, 0.6, 0.4, 0.2, 0.0)
DEFAULT_STAGE_EPOCHS = (5, 10, 15, 20, 30)
_EPS = 1e-9  # 0.2 * 1000 is 200.00000000000003 in floats: snap such products to the integer they mean

TIMESTEP_SAMPLERS: Registry = Registry("timestep sampler")


def stage_ranges(starts: Sequence[float] = DEFAULT_STAGE_STARTS, end: float = 1.0) -> list[tuple[float, float]]:
    """Return the fractional (lo, hi) range of each stage: ``[(s, end) for s in starts]``.

    Raises ValueError unless 0 <= start < end <= 1 for every stage and the starts do not increase (a stage
    never removes timesteps the previous one allowed).
    """
    if not starts:
        raise ValueError("--stage_starts needs at least one stage")
    if not 0.0 < end <= 1.0:
        raise ValueError(f"the stage end must be in (0, 1], got {end}")
    for s in starts:
        if not 0.0 <= s < end:
            raise ValueError(f"--stage_starts must lie in [0, {end}), got {list(starts)}")
    if any(b > a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"--stage_starts must not increase (t_min moves towards 0), got {list(starts)}")
    return [(float(s), float(end)) for s in starts]


def integer_range(lo: float, hi: float, num_train_timesteps: int) -> tuple[int, int]:
    """Return the inclusive integer timestep range ``(floor(lo*T), ceil(hi*T) - 1)`` of a fractional range."""
    first = int(math.floor(lo * num_train_timesteps + _EPS))
    last = int(math.ceil(hi * num_train_timesteps - _EPS)) - 1
    if last < first:
        raise ValueError(f"range ({lo}, {hi}) holds no timestep of {num_train_timesteps}")
    return first, last


@dataclass(frozen=True)
class StageSchedule:
    """Stages of allowed timestep ranges, each lasting a number of epochs."""

    starts: tuple[float, ...] = DEFAULT_STAGE_STARTS
    epochs: tuple[int, ...] = DEFAULT_STAGE_EPOCHS

    def __post_init__(self) -> None:
        stage_ranges(self.starts)
        if len(self.epochs) != len(self.starts):
            raise ValueError(f"--stage_epochs has {len(self.epochs)} entries but --stage_starts has {len(self.starts)}")
        if any(int(e) < 1 for e in self.epochs):
            raise ValueError(f"--stage_epochs must all be >= 1, got {list(self.epochs)}")

    @property
    def n_stages(self) -> int:
        """Return the number of stages."""
        return len(self.starts)

    @property
    def total_epochs(self) -> int:
        """Return the number of epochs of all stages together."""
        return int(sum(self.epochs))

    def ranges(self) -> list[tuple[float, float]]:
        """Return the fractional (lo, hi) range of every stage."""
        return stage_ranges(self.starts)

    def stage_of_epoch(self, epoch: int) -> int:
        """Return the 0-based stage of 0-based `epoch` (epochs past the end stay in the last stage)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        done = 0
        for k, n in enumerate(self.epochs):
            done += int(n)
            if epoch < done:
                return k
        return self.n_stages - 1

    def first_epoch(self, stage: int) -> int:
        """Return the first epoch of `stage`."""
        return int(sum(self.epochs[:stage]))


def soft_timestep_weights(progress: float, num_train_timesteps: int, kappa: float = 4.0) -> torch.Tensor:
    """Return p(t) for t = 0..T−1: ∝ exp(κ·(1−π)·(t/(T−1) − 1)), float64, summing to 1 (uniform at π = 1)."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if kappa < 0:
        raise ValueError(f"--soft_kappa must be >= 0, got {kappa}")
    pi = min(max(float(progress), 0.0), 1.0)
    pos = torch.arange(num_train_timesteps, dtype=torch.float64) / max(num_train_timesteps - 1, 1)
    logits = kappa * (1.0 - pi) * (pos - 1.0)
    return torch.softmax(logits, dim=0)


class TimestepSampler:
    """Draws training timesteps; `sample` returns a LongTensor of n timesteps in [0, T)."""

    name = "base"

    def sample(
        self, n: int, num_train_timesteps: int, *, epoch: int, progress: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return n timesteps for an example batch drawn at (`epoch`, `progress`)."""
        raise NotImplementedError

    def allowed_range(self, num_train_timesteps: int, epoch: int) -> tuple[int, int]:
        """Return the inclusive integer range of t that can be drawn at `epoch`."""
        return 0, num_train_timesteps - 1


@TIMESTEP_SAMPLERS.register("uniform")
class UniformTimesteps(TimestepSampler):
    """The baseline: t uniform on 0..T−1 throughout."""

    name = "uniform"

    def __init__(self, schedule: StageSchedule | None = None, **_: object):
        self.schedule = schedule

    def sample(self, n, num_train_timesteps, *, epoch, progress, generator=None):
        """Return n timesteps uniform on 0..T−1."""
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)


@TIMESTEP_SAMPLERS.register("stages", "curriculum")
class StagedTimesteps(TimestepSampler):
    """Hard stages: t uniform on the integer range of the current stage."""

    name = "stages"

    def __init__(self, schedule: StageSchedule, **_: object):
        self.schedule = schedule

    def allowed_range(self, num_train_timesteps, epoch):
        """Return the inclusive integer range of the stage `epoch` is in."""
        lo, hi = self.schedule.ranges()[self.schedule.stage_of_epoch(epoch)]
        return integer_range(lo, hi, num_train_timesteps)

    def sample(self, n, num_train_timesteps, *, epoch, progress, generator=None):
        """Return n timesteps uniform on the stage's integer range."""
        first, last = self.allowed_range(num_train_timesteps, epoch)
        return torch.randint(first, last + 1, (n,), generator=generator)


@TIMESTEP_SAMPLERS.register("soft")
class SoftTimesteps(TimestepSampler):
    """Soft curriculum: t drawn from `soft_timestep_weights(progress)` (annealed towards uniform)."""

    name = "soft"

    def __init__(self, schedule: StageSchedule | None = None, kappa: float = 4.0, **_: object):
        self.schedule = schedule
        self.kappa = float(kappa)

    def sample(self, n, num_train_timesteps, *, epoch, progress, generator=None):
        """Return n timesteps drawn from the annealed distribution at `progress`."""
        p = soft_timestep_weights(progress, num_train_timesteps, self.kappa)
        return torch.multinomial(p, n, replacement=True, generator=generator)


def make_timestep_sampler(name: str, schedule: StageSchedule, kappa: float = 4.0) -> TimestepSampler:
    """Return the registered timestep sampler `name` ('uniform', 'stages', 'soft') built for `schedule`."""
    return TIMESTEP_SAMPLERS.get(name)(schedule=schedule, kappa=kappa)
