"""Pacing functions (the aucurriculum family): how much of the data a curriculum uses as training proceeds.

A pacing *shape* h maps progress t in [0, 1] to [0, 1], with h(0) = 0, h(1) = 1 and h non-decreasing. The
fraction of data in use is then `start + (1 - start) * h(t)`. Progress is `iteration / final_iteration`,
clamped to [0, 1]; a `final_iteration` of 0 or less means "already finished" (t = 1), so no shape ever
divides by the schedule length (aucurriculum's exponential pacing divides by zero there).

Shapes, chosen by name from `PACING`:

    linear        t
    quadratic     t^2
    root          sqrt(t)
    polynomial    t^power                                   (power > 0; default 2)
    exponential   expm1(alpha t) / expm1(alpha)             (alpha -> 0 gives linear; default 10)
    logarithmic   (log(t + e^-alpha) + alpha) / (log(1 + e^-alpha) + alpha)   (default alpha 10)
    one_step      0 for t < at, else 1                      (alias `step`; default at = 0.5)
    cosine        (1 - cos(pi t)) / 2

`PatiencePacing` is the metric-driven member: it adds `increment` to the fraction each time a validation
metric has not improved for `patience` evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .registry import Registry

PACING: Registry[Callable[..., float]] = Registry("pacing function")


def progress(iteration: float, final_iteration: float) -> float:
    """Return iteration / final_iteration clamped to [0, 1]; 1.0 when final_iteration <= 0."""
    if not math.isfinite(iteration):
        raise ValueError(f"iteration must be finite, got {iteration!r}")
    if final_iteration <= 0:
        return 1.0
    return min(1.0, max(0.0, iteration / final_iteration))


def _check(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise ValueError(f"progress must lie in [0, 1], got {t!r}")
    return t


@PACING.register("linear")
def linear(t: float) -> float:
    """Return t."""
    return _check(t)


@PACING.register("quadratic")
def quadratic(t: float) -> float:
    """Return t**2 (slow start)."""
    return _check(t) ** 2


@PACING.register("root")
def root(t: float) -> float:
    """Return sqrt(t) (fast start)."""
    return math.sqrt(_check(t))


@PACING.register("polynomial")
def polynomial(t: float, power: float = 2.0) -> float:
    """Return t**power (power > 0)."""
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    return _check(t) ** power


@PACING.register("exponential")
def exponential(t: float, alpha: float = 10.0) -> float:
    """Return expm1(alpha t) / expm1(alpha); the limit alpha -> 0 is linear."""
    t = _check(t)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if alpha < 1e-12:
        return t
    # (e^{at} - 1)/(e^a - 1) rewritten as e^{a(t-1)} (1 - e^{-at})/(1 - e^{-a}): no overflow for any alpha
    return min(1.0, math.exp(alpha * (t - 1.0)) * (-math.expm1(-alpha * t)) / (-math.expm1(-alpha)))


@PACING.register("logarithmic")
def logarithmic(t: float, alpha: float = 10.0) -> float:
    """Return (log(t + e^-alpha) + alpha) / (log(1 + e^-alpha) + alpha): 0 at t=0, 1 at t=1."""
    t = _check(t)
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
    eps = math.exp(-alpha)
    return min(1.0, (math.log(t + eps) + alpha) / (math.log1p(eps) + alpha))


@PACING.register("one_step", "step")
def one_step(t: float, at: float = 0.5) -> float:
    """Return 0 before progress `at` and 1 from `at` on."""
    if not 0.0 <= at <= 1.0:
        raise ValueError(f"at must lie in [0, 1], got {at!r}")
    return 0.0 if _check(t) < at else 1.0


@PACING.register("cosine")
def cosine(t: float) -> float:
    """Return (1 - cos(pi t)) / 2."""
    return 0.5 * (1.0 - math.cos(math.pi * _check(t)))


def pacing_fraction(name: str, t: float, start: float = 0.0, **params: Any) -> float:
    """Return the fraction of data in use at progress t: start + (1 - start) * h_name(t), in [start, 1]."""
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start must lie in [0, 1], got {start!r}")
    h = PACING.get(name)(t, **params)
    return start + (1.0 - start) * h


class PatiencePacing:
    """Metric-driven pacing: the fraction grows by `increment` whenever the metric stalls for `patience` evals.

    `update(metric)` returns the fraction to use next. The state is a handful of numbers (`state_dict`), and
    replaying the same metric history from a fresh object gives the same fraction.
    """

    def __init__(
        self, start: float = 0.1, increment: float = 0.1, patience: int = 3, mode: str = "max", min_delta: float = 0.0
    ):
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start must lie in (0, 1], got {start!r}")
        if not increment > 0:
            raise ValueError(f"increment must be > 0, got {increment!r}")
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.start, self.increment, self.patience = float(start), float(increment), int(patience)
        self.mode, self.min_delta = mode, float(min_delta)
        self.fraction = self.start
        self.best: float | None = None
        self.wait = 0

    def _improved(self, metric: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return metric > self.best + self.min_delta
        return metric < self.best - self.min_delta

    def update(self, metric: float) -> float:
        """Record one evaluation of the metric; return the fraction of data to use from now on."""
        metric = float(metric)
        if math.isnan(metric):
            raise ValueError("metric is NaN")
        if self._improved(metric):
            self.best, self.wait = metric, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                # a stall means the current subset is learnt: move on and give the new data a fresh patience
                self.fraction = min(1.0, self.fraction + self.increment)
                self.wait = 0
        return self.fraction

    def replay(self, metrics: Iterable[float]) -> float:
        """Feed a whole metric history; return the resulting fraction."""
        for m in metrics:
            self.update(m)
        return self.fraction

    def state_dict(self) -> dict[str, Any]:
        """Return the state needed to resume (JSON-serialisable)."""
        return {"fraction": self.fraction, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict`."""
        self.fraction, self.best, self.wait = float(state["fraction"]), state["best"], int(state["wait"])
