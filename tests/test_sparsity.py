"""Channel-sparsity maths: the stage schedule, the cosine λ, the group-L1 penalty and regrowth choices."""

from __future__ import annotations

import math

import pytest
import torch

from curriculum.sparsity import (
    choose_regrowth,
    cosine_lambda,
    group_l1,
    n_active,
    stage_sparsities,
    zero_channel_fraction,
)


def test_stage_sparsities_fall_linearly_from_start_to_zero():
    assert stage_sparsities(5) == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0], abs=1e-12)
    assert stage_sparsities(3, start=0.5) == pytest.approx([0.5, 0.25, 0.0], abs=1e-12)
    assert stage_sparsities(1) == [0.0]
    with pytest.raises(ValueError, match="--sparsity_start"):
        stage_sparsities(3, start=1.0)


def test_n_active_rounds_the_masked_count():
    assert [n_active(64, s) for s in (0.8, 0.6, 0.4, 0.2, 0.0)] == [13, 26, 38, 51, 64]
    assert n_active(4, 0.99) == 1


def test_cosine_lambda_schedule():
    assert cosine_lambda(0.0) == 5e-5
    assert cosine_lambda(1.0) == 0.0
    assert cosine_lambda(0.5) == pytest.approx(2.5e-5, rel=1e-12)
    assert cosine_lambda(0.25) == pytest.approx(5e-5 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    vals = [cosine_lambda(p / 20) for p in range(21)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    assert cosine_lambda(-1.0) == cosine_lambda(0.0) and cosine_lambda(2.0) == 0.0


def test_group_l1_equals_its_formula_and_gradient():
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(8, 3, 3, 3, generator=g), torch.randn(16, 8, 1, 1, generator=g)]
    expected = 0.0
    for w in weights:
        for c in range(w.shape[0]):
            expected += math.sqrt(sum(float(v) ** 2 for v in w[c].flatten()))
    assert float(group_l1(weights)) == pytest.approx(expected, rel=1e-6)
    # d/dW ‖W_c‖ = W_c / ‖W_c‖: the penalty shrinks every filter along itself
    w = weights[0].clone().requires_grad_(True)
    group_l1([w]).backward()
    unit = weights[0] / weights[0].flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(w.grad, unit, atol=1e-6)


def test_zero_channel_fraction_counts_dead_filters():
    w = torch.randn(8, 4, 3, 3)
    w[[1, 5]] = 0
    assert zero_channel_fraction([w]) == 0.25
    assert zero_channel_fraction([w, torch.ones(8, 2, 1, 1)]) == 2 / 16


def test_gradient_regrowth_takes_the_best_inactive_channels():
    active = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)
    scores = torch.tensor([9.0, 0.1, 5.0, 8.0, 3.0, 5.0])
    # channel 0 and 3 are active (never chosen); ties (2 and 5) are broken by index
    assert choose_regrowth(active, 2, "gradient", scores).tolist() == [2, 5]
    assert choose_regrowth(active, 3, "gradient", scores).tolist() == [2, 4, 5]
    assert choose_regrowth(active, 0, "gradient", scores).tolist() == []
    with pytest.raises(ValueError, match="4 are inactive"):
        choose_regrowth(active, 5, "gradient", scores)


def test_random_regrowth_is_seeded_and_only_inactive():
    active = torch.zeros(32, dtype=torch.bool)
    active[:8] = True
    a = choose_regrowth(active, 10, "random", generator=torch.Generator().manual_seed(3))
    b = choose_regrowth(active, 10, "random", generator=torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10 and int(a.min()) >= 8


def test_variant_aliases_resolve_to_canonical_names():
    from curriculum.sparsity import SPARSITY_VARIANTS

    assert [SPARSITY_VARIANTS.get(n) for n in ("c", "none", "mask", "cs", "group_l1", "cr")] == [
        "none",
        "none",
        "cs",
        "cs",
        "cr",
        "cr",
    ]
