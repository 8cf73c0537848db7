"""Prototype sampling distributions: p(T), effective size, the temperature for a target size, warm-up ramps.

For distances d_i (small = prototypical) and temperature T > 0:

    prototypes_first:  p_i(T) = exp(-d_i / T) / sum_j exp(-d_j / T)    (the paper's curriculum)
    hard_first:        p_i(T) = exp(+d_i / T) / sum_j exp(+d_j / T)

`difficulty` is an alias of `prototypes_first` and `easy` an alias of `hard_first`: those are the names of
the seed library, whose maths did exactly this despite the names. T = inf is uniform sampling.

Effective size (a fraction of the dataset): the expected fraction of *distinct* samples among N draws with
replacement from p, N = len(p):

    Neff(p) = (1/N) * sum_i [1 - (1 - p_i)^N] = (1/N) * sum_i -expm1(N * log1p(-p_i))

computed in float64. It grows with T, from the fraction reached when all mass sits on the most favoured
samples, up to its maximum 1 - (1 - 1/N)^N (~ 1 - 1/e = 0.632 for large N), reached by uniform sampling.
Because Neff is monotone in T, the temperature for a target is found by bisection (`TemperatureTable.solve`,
cached per target) or, for a call per training step, read off a monotone interpolant of Neff(log T) that
is tabulated once per distance vector (`TemperatureTable.interpolate`, O(1)).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .pacing import pacing_fraction, progress
from .registry import Registry

MIN_SPAN = 1e-100  # below this distance span, temperatures would under/overflow float64: treat as constant


@dataclass(frozen=True)
class Mode:
    """A sampling mode: its canonical name and the sign applied to distances before the softmax."""

    name: str
    sign: float


MODES: Registry[Mode] = Registry("sampling mode")
MODES.register("prototypes_first", "difficulty")(Mode("prototypes_first", -1.0))
MODES.register("hard_first", "easy")(Mode("hard_first", +1.0))


def canonical_mode(mode: str) -> str:
    """Return the canonical mode name ('prototypes_first' or 'hard_first') for a mode or alias."""
    return MODES.get(mode).name


def _as_distances(d) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"distances must be a non-empty 1-d array, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("distances contain NaN or inf")
    return d


def sampling_probabilities(d, temperature: float, mode: str = "prototypes_first") -> np.ndarray:
    """Return p(T) as a float64 probability vector (sums to 1); T = inf gives the uniform vector."""
    d = _as_distances(d)
    sign = MODES.get(mode).sign
    temperature = float(temperature)
    if math.isinf(temperature) and temperature > 0:
        return np.full(d.size, 1.0 / d.size)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    x = (sign * d) / temperature
    if not np.isfinite(x).all():
        raise ValueError(f"temperature {temperature!r} is too small for distances of this size (logits overflow)")
    x -= x.max()  # softmax shift: the largest logit becomes 0, so exp never overflows
    np.exp(x, out=x)
    x /= x.sum()
    return x


def effective_size(p) -> float:
    """Return the expected fraction of distinct samples among N = len(p) draws from p (float64)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p must be a non-empty 1-d array, got shape {p.shape}")
    n = p.size
    # 1 - (1 - p)^N without cancellation: -expm1(N log1p(-p)); exact also for p ~ 1e-12
    with np.errstate(divide="ignore"):  # p_i = 1 gives log1p(-1) = -inf, and correctly 1 - 0 = 1
        return float(-np.expm1(n * np.log1p(-np.clip(p, 0.0, 1.0))).mean())


def max_effective_size(n: int) -> float:
    """Return the largest effective size over all p of length n: 1 - (1 - 1/n)^n (uniform p)."""
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    n = int(n)
    return float(-math.expm1(n * math.log1p(-1.0 / n))) if n > 1 else 1.0


def _neff_of_shifted(s: np.ndarray, temperature: float) -> float:
    # s = sign*d - max(sign*d) <= 0, so exp(s/T) <= 1 and the softmax needs no further shift
    x = np.multiply(s, 1.0 / temperature)
    with np.errstate(under="ignore", divide="ignore"):
        np.exp(x, out=x)
        x *= 1.0 / x.sum()
        # effective_size(x), in place: -mean(expm1(N log1p(-p))); p <= 1 holds by construction
        np.log1p(np.negative(x, out=x), out=x)
        x *= s.size
        np.expm1(x, out=x)
    return float(-x.mean())


class TemperatureTable:
    """Neff(T) for one distance vector and mode, tabulated once; inverts it for any target effective size.

    `interpolate(target)` is O(1) in N (a root of a monotone PCHIP interpolant of Neff against log T on an
    adaptive grid whose neighbouring points differ by at most `max_step` in Neff); `solve(target, tol)` bisects in log T
    inside the bracketing grid cell until |Neff - target| <= tol, and caches the answer per target.

    Distances whose span (max - min) is below MIN_SPAN = 1e-100 count as constant: only the maximum
    (uniform sampling, T = inf) is reachable. Otherwise reachable targets lie in [`min`, `max`]:
    `max` = 1 - (1 - 1/N)^N (T = inf, uniform) and `min` = Neff at the smallest tabulated T (the T -> 0
    limit, all mass on the most favoured samples, or Neff at T = 1e-12 x the distance span if that limit is
    not reached there; with `min_target`, the table stops at the first decade of T whose Neff is at most
    `min_target`). Other targets raise ValueError.
    """

    def __init__(
        self,
        d,
        mode: str = "prototypes_first",
        min_target: float | None = None,
        max_step: float = 0.02,
        lin_tol: float = 1e-4,
        max_points: int = 400,
    ):
        d = _as_distances(d)
        self.mode = canonical_mode(mode)
        s = MODES.get(self.mode).sign * d
        self._s = s - s.max()
        self.n = d.size
        self.max = max_effective_size(self.n)
        m = int(np.count_nonzero(self._s == 0.0))
        # T -> 0 puts all mass uniformly on the m most favoured samples
        self.min = (m / self.n) * max_effective_size(m) if m < self.n else self.max
        span = float(-self._s.min())
        self._cache: dict[float, float] = {}
        self.n_evaluations = 0
        if span < MIN_SPAN:  # (numerically) constant distances: only uniform sampling exists
            self.min = self.max
            self._t = np.array([np.inf])
            self._v = np.array([self.max])
            self._interp = None
            return
        t_lo, t_hi = span, span
        v_lo = self._eval(t_lo)
        # With min_target, tabulate only down to it (a warm-up never asks for less), which skips the long
        # low-T tail; below T = 1e-12 * span we stop: the reachable range starts at Neff there (`min`)
        floor = self.min if min_target is None else max(self.min, float(min_target))
        while v_lo - floor > 1e-9 and t_lo > span * 1e-12:
            t_lo /= 10.0
            v_lo = self._eval(t_lo)
        self.min = float(v_lo)
        v_hi = self._eval(t_hi)
        while self.max - v_hi > 1e-9 and t_hi < span * 1e12:
            t_hi *= 10.0
            v_hi = self._eval(t_hi)
        grid = {float(u): self._eval(math.exp(u)) for u in np.linspace(math.log(t_lo), math.log(t_hi), 24)}
        # Adaptive refinement: split a cell while Neff moves by more than max_step across it or its midpoint
        # is off the chord by more than lin_tol; the cubic through the final points is far closer still.
        keys = sorted(grid)
        stack = list(itertools.pairwise(keys))
        while stack and len(grid) < max_points:
            ul, ur = stack.pop()
            vl, vr = grid[ul], grid[ur]
            if vr - vl < 1e-9:
                continue
            um = 0.5 * (ul + ur)
            vm = grid[um] = self._eval(math.exp(um))
            if vr - vl > max_step or abs(vm - 0.5 * (vl + vr)) > lin_tol:
                stack += [(ul, um), (um, ur)]
        logt = sorted(grid)
        vals = [grid[u] for u in logt]
        v = np.maximum.accumulate(np.array(vals))
        keep = np.concatenate([[True], np.diff(v) > 1e-13])  # strictly increasing for the inverse
        self._t = np.exp(np.array(logt)[keep])
        self._v = v[keep]
        from scipy.interpolate import PchipInterpolator  # monotone cubic through the tabulated points

        # interpolate forwards, Neff(log T), and invert numerically: the inverse has infinite slope at the
        # plateaus (T -> 0, T -> inf), where a direct interpolant of log T(Neff) would be poor
        self._interp = PchipInterpolator(np.log(self._t), self._v) if self._v.size > 1 else None

    def _eval(self, temperature: float) -> float:
        self.n_evaluations += 1
        return _neff_of_shifted(self._s, temperature)

    def probabilities(self, temperature: float) -> np.ndarray:
        """Return p(T) for this table's distances and mode (float64, sums to 1; T = inf: uniform).

        Equals `sampling_probabilities(d, T, mode)`, in fewer passes: the shifted logits are kept from
        construction, so a call is one scale, one exp and one normalisation over N.
        """
        temperature = float(temperature)
        if math.isinf(temperature) and temperature > 0:
            return np.full(self.n, 1.0 / self.n)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        x = np.multiply(self._s, 1.0 / temperature)
        with np.errstate(under="ignore"):
            np.exp(x, out=x)
        x /= x.sum()  # the largest logit is 0, so the sum is >= 1 and never underflows
        return x

    def effective_size(self, temperature: float) -> float:
        """Return Neff at `temperature` (T = inf: the maximum)."""
        if math.isinf(temperature):
            return self.max
        return self._eval(float(temperature))

    def _check_target(self, target: float) -> float:
        target = float(target)
        if not self.min - 1e-12 <= target <= self.max + 1e-12:
            raise ValueError(
                f"target effective size {target!r} is outside the reachable range [{self.min:.6g}, "
                f"{self.max:.6g}] for N={self.n} ({self.mode}); the maximum 1-(1-1/N)^N is uniform sampling"
            )
        return target

    def interpolate(self, target: float) -> float:
        """Return T with Neff(T) ~= target from the table (O(1)); inf at the maximum."""
        target = self._check_target(target)
        if target >= self.max - 1e-12 or self._interp is None:
            return math.inf
        if target >= self._v[-1]:
            return float(self._t[-1])
        if target <= self._v[0]:
            return float(self._t[0])
        from scipy.optimize import brentq

        i = int(np.searchsorted(self._v, target))  # _v[i-1] < target <= _v[i]
        lo, hi = math.log(self._t[i - 1]), math.log(self._t[i])
        u = brentq(lambda x: float(self._interp(x)) - target, lo, hi, xtol=1e-12)
        return float(math.exp(u))

    def solve(self, target: float, tol: float = 1e-6) -> float:
        """Return T with |Neff(T) - target| <= tol by bisection in log T (cached per (target, tol))."""
        target = self._check_target(target)
        key = (target, tol)
        if key in self._cache:
            return self._cache[key]
        if target >= self.max - tol or self._interp is None:
            t = math.inf
        elif target <= self._v[0]:
            t = float(self._t[0])
        else:
            i = int(np.searchsorted(self._v, target))  # _v[i-1] < target <= _v[i]
            lo, hi = math.log(self._t[i - 1]), math.log(self._t[min(i, self._t.size - 1)])
            t = math.exp(hi)
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                v = self._eval(math.exp(mid))
                t = math.exp(mid)
                if abs(v - target) <= tol:
                    break
                if v > target:
                    hi = mid
                else:
                    lo = mid
        self._cache[key] = t
        return t


_TABLES: OrderedDict[tuple[str, str], TemperatureTable] = OrderedDict()


def temperature_table(d, mode: str = "prototypes_first") -> TemperatureTable:
    """Return the (cached) TemperatureTable for distances `d` and `mode`, keyed by the bytes of `d`."""
    d = _as_distances(d)
    key = (hashlib.blake2b(d.tobytes(), digest_size=16).hexdigest(), canonical_mode(mode))
    if key in _TABLES:
        _TABLES.move_to_end(key)
        return _TABLES[key]
    table = TemperatureTable(d, mode)
    _TABLES[key] = table
    while len(_TABLES) > 8:
        _TABLES.popitem(last=False)
    return table


def temperature_for(d, target: float, mode: str = "prototypes_first", tol: float = 1e-6) -> float:
    """Return T with |Neff(p(T)) - target| <= tol (inf at the maximum); found once by bisection, then cached."""
    return temperature_table(d, mode).solve(target, tol)


def warmup_target(
    iteration: float, warmup_iterations: float, initial: float, final: float, ramp: str = "linear"
) -> float:
    """Return the target effective size at `iteration`: initial -> final along the ramp ('linear', 'cosine')."""
    if ramp not in ("linear", "cosine"):
        raise ValueError(f"ramp must be 'linear' or 'cosine', got {ramp!r}")
    if not 0 < initial <= final:
        raise ValueError(f"need 0 < initial <= final, got initial={initial!r}, final={final!r}")
    frac = pacing_fraction(ramp, progress(iteration, warmup_iterations))
    return initial + (final - initial) * frac
