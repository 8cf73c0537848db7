"""Channel-sparsity schedules for the timestep curriculum (DESIGN.md §4), as pure functions.

Two ways to keep capacity in reserve while the curriculum moves from noisy to clean timesteps:

* **CS** (hard masks): stage k of K keeps a fraction s_k of the bottleneck channels masked, with s_k falling
  linearly from `start` (0.8) to `end` (0):  s_k = start + (end − start)·k/(K−1).  At each stage change
  the channels to (re)grow are the masked ones with the largest accumulated gradient score, or random ones.
* **CR** (group-L1 regularisation): λ(π)·Σ_layers Σ_c ‖W_layer[c]‖₂, the sum over every conv layer of the
  L2 norms of its output-channel filters, with λ on a cosine schedule λ(π) = λ_min + ½(λ_max − λ_min)(1 + cos πt)
  from λ_max = 5e-5 at progress π = 0 to λ_min = 0 at π = 1.

The code that applies a mask to a particular network lives with the trainer; this module is the maths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .registry import Registry

DEFAULT_SPARSITY_START = 0.8
DEFAULT_SPARSITY_END = 0.0
DEFAULT_CR_LAMBDA_MAX = 5e-5

#: the channel-sparsity variants, name (or alias) -> canonical name: 'none' (C, curriculum only),
#: 'cs' (bottleneck channel masks with regrowth), 'cr' (group-L1 over conv output channels)
SPARSITY_VARIANTS: Registry = Registry("sparsity variant")
for _name, _alias in (("none", "c"), ("cs", "mask"), ("cr", "group_l1")):
    SPARSITY_VARIANTS.register(_name, _alias)(_name)

#: regrowth modes of CS: 'gradient' (largest accumulated score first) or 'random'
REGROWTH_MODES: Registry = Registry("regrowth mode")
for _name in ("gradient", "random"):
    REGROWTH_MODES.register(_name)(_name)


def stage_sparsities(
    n_stages: int, start: float = DEFAULT_SPARSITY_START, end: float = DEFAULT_SPARSITY_END
) -> list[float]:
    """Return the target sparsity of each stage: linear from `start` (stage 0) to `end` (last stage)."""
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1, got {n_stages}")
    if not (0.0 <= end <= start < 1.0):
        raise ValueError(f"--sparsity_start/--sparsity_end need 0 <= end <= start < 1, got {start}, {end}")
    if n_stages == 1:
        return [float(end)]
    return [start + (end - start) * k / (n_stages - 1) for k in range(n_stages)]


def n_active(n_channels: int, sparsity: float) -> int:
    """Return how many of `n_channels` stay active at `sparsity`: n − round(sparsity·n), at least 1."""
    return max(1, n_channels - int(round(sparsity * n_channels)))


def cosine_lambda(progress: float, lam_max: float = DEFAULT_CR_LAMBDA_MAX, lam_min: float = 0.0) -> float:
    """Return λ(π) = λ_min + ½(λ_max − λ_min)(1 + cos(π·progress)), progress clamped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return lam_min + 0.5 * (lam_max - lam_min) * (1.0 + math.cos(math.pi * p))


def group_l1(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Return Σ_W Σ_c ‖W[c]‖₂ over conv weights W (out_channels first): the group-L1 norm of output channels."""
    terms = [w.flatten(1).norm(dim=1).sum() for w in weights]
    if not terms:
        raise ValueError("group_l1 needs at least one weight tensor")
    return torch.stack(terms).sum()


def channel_norms(weight: torch.Tensor) -> torch.Tensor:
    """Return the L2 norm of each output channel's filter of a conv weight (out_channels first)."""
    return weight.detach().flatten(1).norm(dim=1)


def zero_channel_fraction(weights: Iterable[torch.Tensor], rel_tol: float = 1e-2) -> float:
    """Return the fraction of output channels whose filter norm is below `rel_tol` × their layer's largest norm."""
    dead = total = 0
    for w in weights:
        norms = channel_norms(w)
        dead += int((norms < rel_tol * norms.max()).sum())
        total += norms.numel()
    return dead / total if total else 0.0


def choose_regrowth(
    active: torch.Tensor,
    n_new: int,
    mode: str = "gradient",
    scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return the indices of `n_new` inactive channels to activate (sorted).

    `mode='gradient'` takes the inactive channels with the largest `scores` (ties broken by index);
    `mode='random'` draws them uniformly with `generator`.
    """
    REGROWTH_MODES.get(mode)
    inactive = (~active.bool()).nonzero().flatten()
    if n_new < 0 or n_new > inactive.numel():
        raise ValueError(f"cannot regrow {n_new} channels: {inactive.numel()} are inactive")
    if n_new == 0:
        return inactive[:0]
    if mode == "gradient":
        if scores is None:
            raise ValueError("--regrowth gradient needs channel scores")
        # stable sort on -score: equal scores keep index order, so the choice is deterministic
        order = torch.sort(-scores[inactive].double(), stable=True).indices
        chosen = inactive[order[:n_new]]
    else:
        chosen = inactive[torch.randperm(inactive.numel(), generator=generator)[:n_new]]
    return torch.sort(chosen).values
