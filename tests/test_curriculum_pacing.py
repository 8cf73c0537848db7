"""Pacing functions and pacing schedules (hard subsets and soft temperature sampling)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curriculum.pacing import PACING, PatiencePacing, pacing_fraction, progress
from curriculum.schedules import HardPacingSchedule, SoftPacingSchedule, hard_subset
from curriculum.weighting import effective_size, max_effective_size

ALL = ["linear", "quadratic", "root", "polynomial", "exponential", "logarithmic", "one_step", "cosine"]


def test_registry_has_the_aucurriculum_family():
    assert set(ALL) <= set(PACING.names())
    assert PACING.get("step") is PACING.get("one_step")


@pytest.mark.parametrize("name", ALL)
def test_edges_are_zero_and_one(name):
    assert PACING.get(name)(0.0) == pytest.approx(0.0, abs=1e-12) or name == "one_step" and PACING.get(name)(0.0) == 0
    assert PACING.get(name)(1.0) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(ALL), a=st.floats(0, 1), b=st.floats(0, 1), start=st.floats(0, 1))
def test_monotone_and_within_start_and_one(name, a, b, start):
    lo, hi = sorted((a, b))
    f_lo, f_hi = pacing_fraction(name, lo, start), pacing_fraction(name, hi, start)
    assert f_lo <= f_hi + 1e-12
    assert start - 1e-12 <= f_lo <= 1.0 + 1e-12


def test_shapes_order_as_named():
    t = 0.3
    assert PACING.get("root")(t) > PACING.get("linear")(t) > PACING.get("quadratic")(t)
    assert PACING.get("polynomial")(t, power=3) == pytest.approx(t**3)
    assert PACING.get("exponential")(t) < PACING.get("linear")(t) < PACING.get("logarithmic")(t)
    assert PACING.get("exponential")(t, alpha=0.0) == t  # alpha -> 0 is linear
    assert PACING.get("exponential")(t, alpha=1e-9) == pytest.approx(t, abs=1e-6)
    assert PACING.get("exponential")(0.999, alpha=5000.0) <= 1.0  # no overflow for large alpha
    assert PACING.get("one_step")(0.49) == 0.0 and PACING.get("one_step")(0.5) == 1.0


def test_progress_is_defined_for_tiny_and_zero_final_iteration():
    # aucurriculum's exponential pacing divides by final_iteration; progress() never does
    assert progress(0, 0) == 1.0 and progress(5, -1) == 1.0
    assert progress(0, 1e-300) == 0.0 and progress(1, 1e-300) == 1.0
    assert progress(-3, 10) == 0.0 and progress(30, 10) == 1.0
    for name in ALL:
        assert pacing_fraction(name, progress(0, 0), start=0.2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="progress"):
        PACING.get("linear")(1.5)
    with pytest.raises(KeyError, match="linear"):
        PACING.get("lnear")


def test_patience_advances_only_when_the_metric_stalls_and_replays():
    pace = PatiencePacing(start=0.2, increment=0.3, patience=2, mode="max")
    history = [0.1, 0.2, 0.2, 0.19, 0.5, 0.5, 0.5, 0.5, 0.5]
    fracs = [pace.update(m) for m in history]
    assert fracs[:3] == [0.2, 0.2, 0.2]
    assert fracs[3] == pytest.approx(0.5)  # two evaluations without improvement
    assert fracs[4] == pytest.approx(0.5)  # improvement resets the wait
    assert fracs[6] == pytest.approx(0.8) and fracs[8] == pytest.approx(1.0)  # capped at 1
    fresh = PatiencePacing(start=0.2, increment=0.3, patience=2, mode="max")
    assert fresh.replay(history) == fracs[-1]
    resumed = PatiencePacing(start=0.2, increment=0.3, patience=2, mode="max")
    resumed.replay(history[:5])
    again = PatiencePacing(start=0.2, increment=0.3, patience=2, mode="max")
    again.load_state_dict(resumed.state_dict())
    assert [again.update(m) for m in history[5:]] == fracs[5:]
    with pytest.raises(ValueError, match="patience"):
        PatiencePacing(patience=0)


def test_hard_subsets_grow_along_the_ranking():
    d = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.0, 0.6, 0.4])
    np.testing.assert_array_equal(hard_subset(d, 0.3), [7, 1, 5])
    np.testing.assert_array_equal(hard_subset(d, 0.3, "hard_first"), [2, 6, 4])
    sched = HardPacingSchedule(d, final_iteration=100, pacing="linear", start=0.2)
    sizes = [len(sched.subset(s)) for s in (0, 50, 100, 500)]
    assert sizes == [2, 6, 10, 10]
    p = sched.probabilities(50)
    assert p.sum() == pytest.approx(1.0) and set(np.nonzero(p)[0]) == set(hard_subset(d, 0.6))
    assert len(HardPacingSchedule(d, final_iteration=0, start=0.2).subset(0)) == 10


def test_soft_schedule_follows_its_target_then_turns_uniform():
    d = np.random.default_rng(0).random(3000)
    sched = SoftPacingSchedule(d, final_iteration=100, pacing="cosine", start=0.3)
    for step in (0, 30, 70, 99):
        assert effective_size(sched.probabilities(step)) == pytest.approx(sched.target(step), abs=2e-4)
    targets = [sched.target(s) for s in range(100)]
    assert targets == sorted(targets) and targets[0] == pytest.approx(0.3)
    assert sched.temperature(100) == math.inf
    np.testing.assert_allclose(sched.probabilities(100), 1 / 3000)
    assert sched.target(100) == pytest.approx(max_effective_size(3000))
    with pytest.raises(ValueError, match="start"):
        SoftPacingSchedule(d, 10, start=0.7)
