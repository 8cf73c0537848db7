"""CurriculumSampler: distribution, refresh, DDP slices, resume."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from curriculum.samplers import CurriculumSampler, draw
from curriculum.schedules import HardPacingSchedule, SoftPacingSchedule


class RecordingSchedule:
    """A schedule that remembers which steps it was asked for (uniform over the first step+1 items)."""

    def __init__(self, n):
        self.num_samples, self.asked = n, []

    def probabilities(self, step):
        self.asked.append(step)
        p = np.zeros(self.num_samples)
        p[: min(self.num_samples, step + 1)] = 1.0
        return p / p.sum()


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_draws_follow_the_distribution_and_never_zero_mass():
    p = np.array([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    idx = draw(p, np.random.default_rng(0).random(200_000))
    freq = np.bincount(idx, minlength=6) / len(idx)
    np.testing.assert_allclose(freq, p, atol=0.005)
    assert freq[[0, 2, 5]].sum() == 0


def test_refreshes_every_k_steps_from_the_schedule():
    sched = RecordingSchedule(1000)
    s = CurriculumSampler(sched, batch_size=4, num_samples=4 * 25, refresh_every=10)
    idx = np.array(list(s)).reshape(25, 4)
    assert sched.asked == [0, 10, 20]
    assert idx[:10].max() == 0 and idx[10:20].max() <= 10 and idx[20:].max() <= 20
    assert s.step == 25


def test_ranks_take_disjoint_slices_of_one_global_stream():
    p = np.random.default_rng(0).random(500)
    single = CurriculumSampler(p, batch_size=6, num_samples=60, refresh_every=3, seed=7)
    glob = np.array(list(single)).reshape(10, 6)
    ranks = [
        CurriculumSampler(p, batch_size=3, num_samples=30, refresh_every=3, seed=7, num_replicas=2, rank=r)
        for r in range(2)
    ]
    per_rank = [np.array(list(s)).reshape(10, 3) for s in ranks]
    np.testing.assert_array_equal(np.concatenate(per_rank, axis=1), glob)
    assert not np.array_equal(per_rank[0], per_rank[1])
    with pytest.raises(ValueError, match="rank"):
        CurriculumSampler(p, batch_size=3, num_replicas=2, rank=2)


def test_resume_continues_the_same_curriculum(tmp_path):
    d = np.random.default_rng(1).random(400)

    def make():
        return CurriculumSampler(
            SoftPacingSchedule(d, final_iteration=40, start=0.2), batch_size=8, num_samples=80, refresh_every=5, seed=3
        )

    full = make()
    reference = list(full) + list(full) + list(full)  # three epochs, 30 steps
    first = make()
    got = list(first) + take(first, 37)  # interrupted mid-epoch, mid-batch
    (tmp_path / "s.json").write_text(json.dumps(first.state_dict()))
    resumed = make()
    resumed.load_state_dict(json.loads((tmp_path / "s.json").read_text()))
    rest = list(resumed)  # finishes the interrupted epoch ...
    assert len(rest) == 80 - 37
    rest += list(resumed)  # ... then a full one
    assert got + rest == reference
    other = CurriculumSampler(d, batch_size=4, refresh_every=5, seed=3)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(first.state_dict())


def test_set_step_for_prefetching_loaders_and_dataloader_integration():
    p = np.ones(50)
    s = CurriculumSampler(p, batch_size=5, num_samples=50, refresh_every=2, seed=0)
    steps = np.array(list(s)).reshape(10, 5)
    s2 = CurriculumSampler(p, batch_size=5, num_samples=50, refresh_every=2, seed=0)
    s2.set_step(7)
    np.testing.assert_array_equal(np.array(take(s2, 15)).reshape(3, 5), steps[7:10])
    ds = TensorDataset(torch.arange(50))
    loader = DataLoader(
        ds, batch_size=5, sampler=CurriculumSampler(p, batch_size=5, num_samples=50, refresh_every=2, seed=0)
    )
    batches = torch.stack([b[0] for b in loader]).numpy()
    np.testing.assert_array_equal(batches, steps)


def test_hard_schedule_draws_only_from_its_subset():
    d = np.arange(100.0)
    sched = HardPacingSchedule(d, final_iteration=10, start=0.1)
    s = CurriculumSampler(sched, batch_size=10, num_samples=10 * 20, refresh_every=1, seed=0)
    idx = np.array(list(s)).reshape(20, 10)
    for step in range(20):
        assert idx[step].max() < len(sched.subset(step))
    assert idx[-5:].max() > 50  # the full data is in use after final_iteration


def test_throughput_is_millions_per_second_order():
    import time

    s = CurriculumSampler(
        np.random.default_rng(0).random(100_000), batch_size=256, num_samples=200_000, refresh_every=100
    )
    t = time.perf_counter()
    n = sum(1 for _ in s)
    rate = n / (time.perf_counter() - t)
    assert n == 200_000 and rate > 2e5  # a shared 2-core machine still does > 1e6 in practice


def test_rank_and_world_size_come_from_torch_distributed(monkeypatch):
    p = np.random.default_rng(2).random(100)
    explicit = list(CurriculumSampler(p, batch_size=4, num_samples=40, seed=1, num_replicas=4, rank=2))
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a: 2)
    auto = CurriculumSampler(p, batch_size=4, num_samples=40, seed=1)
    assert (auto.num_replicas, auto.rank) == (4, 2)
    assert list(auto) == explicit
    assert len(CurriculumSampler(p, batch_size=4)) == 25  # ceil(N / world size) per rank by default


def test_take_matches_the_stream_from_any_position():
    """`take(position, n)` returns exactly what iteration hands out from that position, across blocks."""
    from curriculum import CurriculumSampler, SoftPacingSchedule

    sched = SoftPacingSchedule(np.linspace(0, 1, 50), final_iteration=30, start=0.3)
    s = CurriculumSampler(sched, batch_size=4, num_samples=50, refresh_every=3, seed=5, num_replicas=1, rank=0)
    stream = np.concatenate([np.fromiter(iter(s), dtype=np.int64) for _ in range(6)])  # 6 epochs = 300 draws
    for pos, n in ((0, 50), (7, 33), (11, 120), (250, 50)):
        np.testing.assert_array_equal(s.take(pos, n), stream[pos : pos + n])
