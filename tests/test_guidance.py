"""Guidance-level schedules: exact non-adaptive shares, the adaptive rule with outliers, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from curriculum.guidance import (
    ALL_LEVELS,
    REAL_LEVEL,
    AdaptiveSchedule,
    FixedSchedule,
    guidance_level,
    level_progress,
    robust_mean,
)


def test_level_vocabulary():
    assert [guidance_level(s) for s in (0.1, 0.3, 0.5, 0.9, 1.0)] == [90, 70, 50, 10, 0]


def test_fixed_schedule_order_and_exact_shares():
    # ImageNet-LT recipe: lambda 0.1 -> 0.3 -> 0.5, curriculum over the first 60 of 65 epochs
    sched = FixedSchedule(levels=[10, 30, 50], curriculum_epochs=60)
    per_epoch = [sched.level_at(e) for e in range(65)]
    assert per_epoch == [10] * 20 + [30] * 20 + [50] * 20 + [REAL_LEVEL] * 5
    assert sched.stage_bounds()[:3] == [(10, 0.0, 20.0), (30, 20.0, 40.0), (50, 40.0, 60.0)]
    # fractional epochs (per-step queries) and a share that does not divide evenly
    odd = FixedSchedule(levels=[0, 50], curriculum_epochs=3)
    assert [odd.level_at(e) for e in (0, 1.49, 1.5, 2.99, 3.0)] == [0, 0, 50, 50, REAL_LEVEL]
    with pytest.raises(ValueError, match="levels must be in"):
        FixedSchedule(levels=[100], curriculum_epochs=3)


def test_robust_mean_drops_iqr_outliers():
    v = np.array([0.10, 0.11, 0.09, 0.10, 0.12, 5.0])
    assert robust_mean(v) == pytest.approx(np.mean(v[:5]))
    assert np.isnan(robust_mean(np.array([])))


def test_adaptive_picks_largest_progress_and_ignores_an_outlier():
    levels = np.array([10] * 6 + [50] * 6 + [90] * 6)
    prev = np.zeros(18)
    cur = np.concatenate(
        [
            [0.02, 0.03, 0.02, 0.01, 0.03, 3.0],  # level 10: one huge outlier would win a plain mean
            [0.10, 0.12, 0.11, 0.09, 0.10, 0.11],  # level 50: the real largest progress
            [0.05, 0.04, 0.06, 0.05, 0.05, 0.04],
        ]
    )
    progress = level_progress(prev, cur, levels)
    assert np.mean(cur[:6]) > np.mean(cur[6:12])  # the plain mean is fooled ...
    sched = AdaptiveSchedule(levels=[10, 50, 90], curriculum_epochs=15)
    assert sched.level_at(0) == 10  # starts at the synthetic end
    assert sched.choose(progress, epoch=1.0, step=40) == 50  # ... the robust rule is not
    assert sched.level_at(2) == 50 and sched.level_at(15) == REAL_LEVEL
    assert sched.history[0]["level"] == 50 and sched.history[0]["step"] == 40


def test_adaptive_options_and_state_round_trip():
    uni = AdaptiveSchedule(levels=[10, 50], curriculum_epochs=5, uniform_first=True)
    assert uni.level_at(0) == ALL_LEVELS
    rnd = AdaptiveSchedule(levels=[10, 30, 50, 70], curriculum_epochs=5, random_choice=True, seed=3)
    picks = [rnd.choose({10: 1.0, 30: 0.0}) for _ in range(20)]
    assert set(picks) > {10}  # random, not greedy
    again = AdaptiveSchedule(levels=[10, 30, 50, 70], curriculum_epochs=5, random_choice=True, seed=3)
    assert [again.choose({}) for _ in range(20)] == picks  # seeded: the same sequence
    resumed = AdaptiveSchedule(levels=[10, 30, 50, 70], curriculum_epochs=5, random_choice=True, seed=3)
    half = AdaptiveSchedule(levels=[10, 30, 50, 70], curriculum_epochs=5, random_choice=True, seed=3)
    for _ in range(10):
        half.choose({})
    resumed.load_state_dict(half.state_dict())
    assert [resumed.choose({}) for _ in range(10)] == picks[10:]
