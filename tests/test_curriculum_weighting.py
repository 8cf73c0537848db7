"""Sampling distributions, effective size and temperatures: properties (hypothesis) and the seed's defects."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from curriculum.weighting import (
    MODES,
    TemperatureTable,
    canonical_mode,
    effective_size,
    max_effective_size,
    sampling_probabilities,
    temperature_for,
    temperature_table,
    warmup_target,
)

distances = arrays(np.float64, st.integers(2, 60), elements=st.floats(0.0, 1.0, allow_nan=False))
temps = st.floats(1e-3, 1e3)
modes = st.sampled_from(["prototypes_first", "hard_first"])


@settings(max_examples=60, deadline=None)
@given(d=distances, t1=temps, t2=temps, mode=modes)
def test_effective_size_is_monotone_in_temperature_and_bounded(d, t1, t2, mode):
    lo, hi = sorted((t1, t2))
    e_lo = effective_size(sampling_probabilities(d, lo, mode))
    e_hi = effective_size(sampling_probabilities(d, hi, mode))
    n = len(d)
    assert e_lo <= e_hi + 1e-12
    for e in (e_lo, e_hi):
        assert 1.0 / n - 1e-12 <= e <= max_effective_size(n) + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    d=distances,
    t=st.one_of(temps, st.just(math.inf)),
    mode=st.sampled_from(["prototypes_first", "hard_first", "difficulty", "easy"]),
)
def test_probabilities_are_a_probability_vector(d, t, mode):
    p = sampling_probabilities(d, t, mode)
    assert p.dtype == np.float64 and p.shape == d.shape
    assert (p >= 0).all()
    assert abs(p.sum() - 1.0) < 1e-12


@settings(max_examples=60, deadline=None)
@given(d=distances, t=temps)
def test_prototypes_first_puts_more_mass_on_smaller_distances(d, t):
    p = sampling_probabilities(d, t, "prototypes_first")
    q = sampling_probabilities(d, t, "hard_first")
    i, j = int(np.argmin(d)), int(np.argmax(d))
    assert p[i] >= p[j]
    assert q[j] >= q[i]
    # strictly ordered pairs get strictly ordered mass, unless both underflow to the same value
    order = np.argsort(d, kind="stable")
    assert (np.diff(p[order]) <= 1e-15).all()


@settings(max_examples=40, deadline=None)
@given(d=distances, frac=st.floats(0.0, 1.0), mode=modes)
def test_bisection_hits_its_target_within_tolerance(d, frac, mode):
    table = TemperatureTable(d, mode)
    if table.min == table.max:  # (numerically) constant distances: only uniform sampling exists
        assert np.ptp(d) < 1e-100 and table.solve(table.max) == math.inf
        return
    target = table.min + frac * (table.max - table.min)
    t = table.solve(target, tol=1e-6)
    achieved = table.max if math.isinf(t) else effective_size(sampling_probabilities(d, t, mode))
    assert abs(achieved - target) <= 1e-6 or (target <= table.min + 1e-6 and achieved <= table.min + 1e-6)
    # the O(1) interpolated temperature is close too
    ti = table.interpolate(target)
    achieved_i = table.max if math.isinf(ti) else effective_size(sampling_probabilities(d, ti, mode))
    assert abs(achieved_i - target) <= 2e-4


def test_effective_size_is_stable_in_float64_for_a_million_samples():
    from decimal import Decimal, getcontext

    import torch

    n = 1_000_000
    getcontext().prec = 50
    exact = float(1 - (Decimal(1) - Decimal(1) / n) ** n)  # 50-digit reference value
    assert effective_size(np.full(n, 1.0 / n)) == pytest.approx(exact, abs=1e-13)
    assert max_effective_size(n) == pytest.approx(exact, abs=1e-15)
    # the seed library's float32 (1 - p)^N is far off at this size; float64 is what makes targets meaningful
    p32 = torch.full((n,), 1.0 / n, dtype=torch.float32)
    seed_value = float(torch.sum(1 - (1 - p32) ** n) / n)
    assert abs(seed_value - exact) > 1e-4
    one_hot = np.zeros(n)
    one_hot[3] = 1.0
    assert effective_size(one_hot) == pytest.approx(1.0 / n)


def test_maximum_is_uniform_and_targets_above_it_fail_clearly():
    d = np.linspace(0, 1, 500)
    m = max_effective_size(500)
    assert m == pytest.approx(1 - (1 - 1 / 500) ** 500)
    assert temperature_for(d, m) == math.inf
    np.testing.assert_allclose(sampling_probabilities(d, math.inf), np.full(500, 1 / 500))
    with pytest.raises(ValueError, match="outside the reachable range"):
        temperature_for(d, m + 0.01)
    with pytest.raises(ValueError, match="outside the reachable range"):
        temperature_for(d, 0.9)


def test_aliases_are_exactly_the_named_modes():
    d = np.random.default_rng(0).random(100)
    assert canonical_mode("difficulty") == "prototypes_first"
    assert canonical_mode("easy") == "hard_first"
    np.testing.assert_array_equal(
        sampling_probabilities(d, 0.1, "difficulty"), sampling_probabilities(d, 0.1, "prototypes_first")
    )
    np.testing.assert_array_equal(sampling_probabilities(d, 0.1, "easy"), sampling_probabilities(d, 0.1, "hard_first"))
    # the seed's 'difficulty' is exp(-d/T): it favours prototypes (small d), as its maths always did
    p = sampling_probabilities(d, 0.1, "difficulty")
    assert p[np.argmin(d)] > p[np.argmax(d)]
    with pytest.raises(KeyError, match="hard_first"):
        MODES.get("hard_frist")


def test_temperature_is_solved_once_and_cached():
    d = np.random.default_rng(1).random(2000)
    table = temperature_table(d, "prototypes_first")
    assert temperature_table(d.copy(), "difficulty") is table  # same content, same mode: same table
    t1 = temperature_for(d, 0.4)
    n_eval = table.n_evaluations
    t2 = temperature_for(d, 0.4)
    assert t1 == t2 and table.n_evaluations == n_eval
    for target in np.linspace(0.3, 0.6, 50):  # interpolation never evaluates Neff again
        table.interpolate(target)
    assert table.n_evaluations == n_eval


def test_constant_distances_allow_only_uniform_sampling():
    table = TemperatureTable(np.full(10, 0.5))
    assert table.min == table.max == max_effective_size(10)
    assert table.interpolate(table.max) == math.inf
    with pytest.raises(ValueError, match="reachable range"):
        table.solve(0.3)


def test_warmup_ramps_linear_and_cosine():
    assert warmup_target(0, 100, 0.3, 0.6) == pytest.approx(0.3)
    assert warmup_target(50, 100, 0.3, 0.6) == pytest.approx(0.45)
    assert warmup_target(100, 100, 0.3, 0.6) == pytest.approx(0.6)
    assert warmup_target(25, 100, 0.3, 0.6, "cosine") < warmup_target(25, 100, 0.3, 0.6, "linear")
    assert warmup_target(50, 100, 0.3, 0.6, "cosine") == pytest.approx(0.45)
    assert warmup_target(5, 0, 0.3, 0.6) == pytest.approx(0.6)  # no warm-up: already at the end
    with pytest.raises(ValueError, match="ramp"):
        warmup_target(0, 10, 0.3, 0.6, "quadratic")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_temperature_names_the_argument(bad):
    with pytest.raises(ValueError, match="temperature"):
        sampling_probabilities([0.1, 0.2], bad)


@settings(max_examples=40, deadline=None)
@given(d=distances, t=temps, mode=modes)
def test_table_probabilities_equal_the_reference_softmax(d, t, mode):
    table = TemperatureTable(d, mode)
    np.testing.assert_allclose(table.probabilities(t), sampling_probabilities(d, t, mode), rtol=1e-12, atol=1e-300)
    assert table.probabilities(math.inf).sum() == pytest.approx(1.0)


def test_a_warmup_table_covers_its_targets_with_fewer_passes():
    d = np.random.default_rng(3).random(5000)
    full, warm = TemperatureTable(d), TemperatureTable(d, min_target=0.3)
    assert warm.n_evaluations < full.n_evaluations
    assert full.min < warm.min <= 0.3
    for target in (0.3, 0.45, 0.6):
        assert warm.interpolate(target) == pytest.approx(full.interpolate(target), rel=1e-3)
    with pytest.raises(ValueError, match="reachable range"):
        warm.interpolate(warm.min / 2)
