"""`CurriculumSampler`: a torch Sampler that draws indices from a schedule's distribution, resumably.

The sampler defines one infinite global stream of draws (with replacement). Training step s draws a global
batch of `num_replicas * batch_size` indices; rank r takes its own slice `[r*B, (r+1)*B)` of it, so the ranks'
streams are disjoint slices of one global stream and the union over ranks is the single-process stream with
the global batch. The distribution is refreshed every `refresh_every` steps: block b (steps
[b*k, (b+1)*k)) samples from `schedule.probabilities(b*k)` with a random generator seeded by (seed, b) only.
Every index is therefore a pure function of (seed, step, rank, position in batch), and resuming is restoring
a counter: `state_dict()` / `load_state_dict()`.

Epochs are windows of `num_samples` consecutive indices of this rank's stream (default ceil(N / replicas));
an iteration started mid-epoch (after a resume) runs to the end of that epoch.
With a DataLoader that prefetches, the sampler runs ahead of training; call `set_step(trained_steps)` (or
save `state_dict()` with the step your loop has finished) so that a resume starts at the right place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from .schedules import Schedule, StaticSchedule


def _dist_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Return the indices i with cdf[i-1] <= u < cdf[i] (inverse-CDF sampling; zero-mass entries never drawn)."""
    cdf = np.cumsum(p, dtype=np.float64)
    cdf /= cdf[-1]  # the last edge is exactly 1, so u in [0, 1) never falls past the end
    return np.searchsorted(cdf, u, side="right")


class CurriculumSampler(Sampler[int]):
    """Draw dataset indices from `schedule.probabilities(step)`, refreshed every `refresh_every` steps."""

    def __init__(
        self,
        schedule: Schedule | np.ndarray,
        batch_size: int,
        num_samples: int | None = None,
        refresh_every: int = 100,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if not hasattr(schedule, "probabilities"):
            schedule = StaticSchedule(schedule)
        self.schedule = schedule
        world, this_rank = _dist_world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = this_rank if rank is None else int(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas!r}, {rank!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every!r}")
        self.batch_size, self.refresh_every, self.seed = int(batch_size), int(refresh_every), int(seed)
        n = int(schedule.num_samples)
        self.num_samples = math.ceil(n / self.num_replicas) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
        self.position = 0  # indices of this rank's stream handed out so far
        self._block_id: int | None = None
        self._block: np.ndarray | None = None

    # ---------------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Return the training step of the next index (position // batch_size)."""
        return self.position // self.batch_size

    def set_step(self, step: int) -> None:
        """Continue the stream at the start of training step `step`."""
        if int(step) < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        self.position = int(step) * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Accepted for DistributedSampler compatibility; the stream is continuous, so epochs need no seed."""

    def block(self, b: int) -> np.ndarray:
        """Return this rank's indices for refresh block `b` (refresh_every * batch_size of them)."""
        if self._block_id != b:
            k, w, bs = self.refresh_every, self.num_replicas, self.batch_size
            p = np.asarray(self.schedule.probabilities(b * k), dtype=np.float64)
            if p.shape != (self.schedule.num_samples,):
                raise ValueError(f"schedule returned shape {p.shape}, expected ({self.schedule.num_samples},)")
            u = np.random.default_rng(np.random.SeedSequence([self.seed, b])).random(k * w * bs)
            self._block = draw(p, u).reshape(k, w, bs)[:, self.rank, :].reshape(-1)
            self._block_id = b
        return self._block

    def take(self, position: int, n: int) -> np.ndarray:
        """Return `n` consecutive indices of this rank's stream starting at `position` (stateless).

        For loops that compose their own epochs (e.g. real data mixed with synthetic): the draws at stream
        position q come from the distribution at step q // batch_size, exactly as `__iter__` hands them out.
        """
        per_block = self.refresh_every * self.batch_size
        out = np.empty(int(n), dtype=np.int64)
        filled, pos = 0, int(position)
        while filled < n:
            b, off = divmod(pos, per_block)
            chunk = self.block(b)[off : off + (n - filled)]
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            pos += len(chunk)
        return out

    def __iter__(self) -> Iterator[int]:
        per_block = self.refresh_every * self.batch_size
        # an epoch ends at the next multiple of num_samples, so a resumed epoch finishes where it would have
        end = (self.position // self.num_samples + 1) * self.num_samples
        while self.position < end:
            b, off = divmod(self.position, per_block)
            chunk = self.block(b)[off : off + (end - self.position)]
            for i in chunk.tolist():
                self.position += 1  # advanced per index handed out, so a state taken mid-epoch is exact
                yield i

    def __len__(self) -> int:
        return self.num_samples

    # ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Return the resumable state (JSON-serialisable): the position and the settings that fix the stream."""
        return {
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "refresh_every": self.refresh_every,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; settings that would change the stream must match (else ValueError)."""
        for key in ("seed", "batch_size", "refresh_every", "num_replicas"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"cannot resume: state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}")
        self.position = int(state["position"])
