"""Timestep curriculum: stage ranges, the epoch -> stage map and the samplers' distributions, exactly."""

from __future__ import annotations

import math

import pytest
import torch

from curriculum.timestep import (
    TIMESTEP_SAMPLERS,
    StageSchedule,
    integer_range,
    make_timestep_sampler,
    soft_timestep_weights,
    stage_ranges,
)


def test_default_stage_ranges_are_the_seed_recipe():
    assert stage_ranges() == [(0.8, 1.0), (0.6, 1.0), (0.4, 1.0), (0.2, 1.0), (0.0, 1.0)]
    s = StageSchedule()
    assert s.epochs == (5, 10, 15, 20, 30) and s.total_epochs == 80 and s.n_stages == 5


@pytest.mark.parametrize(
    "lo,expected", [(0.8, (800, 999)), (0.6, (600, 999)), (0.4, (400, 999)), (0.2, (200, 999)), (0.0, (0, 999))]
)
def test_integer_ranges_of_the_default_stages(lo, expected):
    # 0.2 * 1000 is 200.00000000000003 in floats: the range must still start at 200, not 201
    assert integer_range(lo, 1.0, 1000) == expected


def test_stage_of_epoch_follows_the_cumulative_epochs():
    s = StageSchedule()
    expected = [0] * 5 + [1] * 10 + [2] * 15 + [3] * 20 + [4] * 30
    assert [s.stage_of_epoch(e) for e in range(80)] == expected
    assert s.stage_of_epoch(500) == 4  # past the end: the full range
    assert [s.first_epoch(k) for k in range(5)] == [0, 5, 15, 30, 50]


def test_staged_sampler_draws_uniformly_inside_the_stage_range_only():
    sampler = make_timestep_sampler("stages", StageSchedule())
    g = torch.Generator().manual_seed(0)
    for epoch, (first, last) in [(0, (800, 999)), (7, (600, 999)), (20, (400, 999)), (35, (200, 999)), (79, (0, 999))]:
        t = sampler.sample(40_000, 1000, epoch=epoch, progress=0.0, generator=g)
        assert t.dtype == torch.long
        assert int(t.min()) == first and int(t.max()) == last
        assert sampler.allowed_range(1000, epoch) == (first, last)
        n = last - first + 1
        sd_of_mean = math.sqrt((n * n - 1) / 12 / t.numel())
        assert abs(float(t.double().mean()) - (first + last) / 2) < 5 * sd_of_mean


def test_uniform_sampler_covers_all_timesteps_in_every_epoch():
    sampler = make_timestep_sampler("uniform", StageSchedule())
    t = sampler.sample(20_000, 50, epoch=0, progress=0.0, generator=torch.Generator().manual_seed(1))
    assert set(t.tolist()) == set(range(50))
    assert sampler.allowed_range(50, 0) == (0, 49)


def test_soft_weights_anneal_from_noisy_first_to_uniform():
    T, kappa = 1000, 4.0
    p0 = soft_timestep_weights(0.0, T, kappa)
    assert p0.dtype == torch.float64 and float(p0.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p0[-1] / p0[0]) == pytest.approx(math.exp(kappa), rel=1e-9)
    assert torch.allclose(soft_timestep_weights(1.0, T, kappa), torch.full((T,), 1.0 / T, dtype=torch.float64))
    t = torch.arange(T, dtype=torch.float64)
    means = [float((soft_timestep_weights(pi, T, kappa) * t).sum()) for pi in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(means, means[1:]))
    assert means[-1] == pytest.approx((T - 1) / 2)


def test_soft_sampler_matches_its_distribution():
    sampler = make_timestep_sampler("soft", StageSchedule(), kappa=3.0)
    t = sampler.sample(100_000, 10, epoch=0, progress=0.0, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(t, minlength=10).double() / t.numel()
    assert torch.allclose(freq, soft_timestep_weights(0.0, 10, 3.0), atol=0.006)


def test_bad_schedules_fail_naming_the_flag():
    with pytest.raises(ValueError, match="--stage_starts must not increase"):
        StageSchedule(starts=(0.2, 0.6), epochs=(1, 1))
    with pytest.raises(ValueError, match="--stage_epochs has 2 entries"):
        StageSchedule(starts=(0.8, 0.4, 0.0), epochs=(1, 1))
    with pytest.raises(ValueError, match="--stage_epochs must all be >= 1"):
        StageSchedule(starts=(0.5, 0.0), epochs=(1, 0))
    with pytest.raises(KeyError, match="Did you mean 'stages'"):
        TIMESTEP_SAMPLERS.get("stage")
