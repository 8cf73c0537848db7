"""CS masks: masked bottleneck channels are gated off and their parameters stay bit-identical under AdamW."""

from __future__ import annotations

import torch

from training.diffusion.channel_mask import BottleneckMask, _bottleneck_slices
from training.diffusion.trainer import DiffusionTrainConfig, build_unet


def _unet():
    torch.manual_seed(0)
    cfg = DiffusionTrainConfig(data="x", output_dir="x", block_out_channels=(16, 32), image_size=16)
    return build_unet(cfg, num_classes=3).train()


def _train(unet, mask, steps=4):
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-2, weight_decay=0.1)  # decay moves params even at zero grad
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 16, 16, generator=g)
        t = torch.randint(0, 1000, (4,), generator=g)
        y = torch.randint(0, 4, (4,), generator=g)
        loss = (unet(x, t, class_labels=y).sample - x).pow(2).mean()
        loss.backward()
        mask.after_backward()
        opt.step()
        mask.after_step(opt)
        opt.zero_grad()
    return opt


def _masked_slices(unet, mask):
    masked = (~mask.active).nonzero().flatten()
    out = {}
    for name, p, dim in _bottleneck_slices(unet):
        out[name] = p.detach().index_select(dim, masked).clone()
    return out


def test_masked_channels_stay_bit_identical_while_active_ones_train():
    unet = _unet()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    assert mask.sparsity == 0.75
    before = _masked_slices(unet, mask)
    active = mask.active.nonzero().flatten()
    prod = unet.mid_block.resnets[-1].conv2.weight
    active_before = prod.detach()[active].clone()
    _train(unet, mask)
    after = _masked_slices(unet, mask)
    assert set(before) >= {
        "mid.conv2.weight",
        "mid.conv2.bias",
        "up0.norm1.weight",
        "up0.norm1.bias",
        "up0.conv1.weight",
    }
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(active_before, prod.detach()[active])


def test_an_activation_only_mask_lets_reserved_channels_train():
    # the reference's bug: gating the activation alone leaves the consumers' slices of the channel training
    unet = _unet()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0), block_parameters=False)
    before = _masked_slices(unet, mask)
    _train(unet, mask)
    after = _masked_slices(unet, mask)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert "up0.norm1.bias" in changed and "up0.conv1.weight" in changed


def test_output_ignores_the_producer_of_a_masked_channel():
    unet = _unet().eval()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.tensor([0, 1])
    with torch.no_grad():
        ref = unet(x, t, class_labels=y).sample
        c_masked = int((~mask.active).nonzero()[0])
        c_active = int(mask.active.nonzero()[0])
        unet.mid_block.resnets[-1].conv2.weight[c_masked] += 1.0
        assert torch.equal(unet(x, t, class_labels=y).sample, ref)
        unet.mid_block.resnets[-1].conv2.weight[c_active] += 1.0
        assert not torch.allclose(unet(x, t, class_labels=y).sample, ref)


def test_regrowth_by_gradient_picks_the_highest_gate_gradients_and_records_birth():
    unet = _unet()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    _train(unet, mask, steps=2)
    scores = mask.scores.clone()
    assert float(scores[~mask.active].sum()) > 0  # masked channels get a score from the gate's gradient
    inactive = (~mask.active).nonzero().flatten()
    best = inactive[torch.argsort(-scores[inactive], stable=True)[:8]].sort().values
    new = mask.grow_to(16, stage=1, mode="gradient")
    assert new.tolist() == best.tolist()
    assert int(mask.active.sum()) == 16 and mask.sparsity == 0.5
    assert (mask.born[new] == 1).all() and int((mask.born == 0).sum()) == 8 and int((mask.born == -1).sum()) == 16
    # the newly born channels now train; the still-masked ones stay frozen
    before = _masked_slices(unet, mask)
    _train(unet, mask, steps=2)
    assert all(torch.equal(before[n], v) for n, v in _masked_slices(unet, mask).items())


def _probe(device="cpu"):
    g = torch.Generator().manual_seed(3)
    x, t, y = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 300, 600, 999]), torch.tensor([0, 1, 2, 3])
    return x.to(device), t.to(device), y.to(device)


def test_a_cpu_built_mask_follows_the_model_to_another_device():
    # the trainer builds the mask before accelerate moves the model; 'meta' stands in for a GPU here: a CPU gate
    # times a meta activation raises just as a CPU gate times a CUDA activation does
    unet = _unet()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    assert mask.device.type == "cpu" and all(t.device.type == "cpu" for t in mask._frozen.values())
    unet.to("meta")
    out = unet(*_probe("meta")[:2], class_labels=_probe("meta")[2]).sample  # the gate follows the activation
    assert out.device.type == "meta" and mask.gate.device.type == "meta" and mask.gate.is_leaf
    out.sum().backward()
    mask.after_backward()
    assert mask.scores.device.type == "meta" and mask.active.device.type == "cpu"  # bookkeeping stays on the CPU
    mask.after_step(torch.optim.SGD(unet.parameters(), lr=0.1))
    assert {t.device.type for t in mask._frozen.values()} == {"meta"}  # snapshots live with their parameters


def test_mask_to_moves_gate_scores_and_snapshots_and_resumed_state_lands_on_the_model_device():
    unet = _unet()
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    assert mask.to("cpu") is mask and torch.equal(mask.gate, mask.active.float())  # same device: unchanged
    assert mask.to("meta") is mask
    assert mask.device.type == "meta" and mask.gate.requires_grad and mask.gate.is_leaf
    assert {t.device.type for t in mask._frozen.values()} == {"meta"} and mask.scores.device.type == "meta"
    # a resumed mask (tensors loaded on the CPU) lands on the parameters' device
    unet.to("meta")
    mask.load_state_tensors({k: v.cpu() for k, v in BottleneckMask(_unet(), 8).state_tensors().items()})
    assert {t.device.type for t in mask._frozen.values()} == {"meta"} and mask.scores.device.type == "meta"


def test_reached_sparsity_is_measured_not_read_off_the_mask():
    from training.diffusion.channel_mask import bottleneck_zero_fraction

    unet = _unet()
    x, t, y = _probe()
    assert bottleneck_zero_fraction(unet, x, t, y) == 0.0  # no mask: no channel is exactly zero
    assert unet.training  # the probe restores train mode
    mask = BottleneckMask(unet, n_active=8, generator=torch.Generator().manual_seed(0))
    _train(unet, mask)
    assert bottleneck_zero_fraction(unet, x, t, y) == mask.sparsity == 0.75
    assert mask.unchanged_fraction() == 0.75  # the 24 masked channels, and no active one, kept their parameters
    # with the reference's activation-only mask the activations are still zero, but the parameters moved
    leaky_unet = _unet()
    leaky = BottleneckMask(leaky_unet, n_active=8, generator=torch.Generator().manual_seed(0), block_parameters=False)
    _train(leaky_unet, leaky)
    assert bottleneck_zero_fraction(leaky_unet, x, t, y) == 0.75 and leaky.unchanged_fraction() == 0.0
