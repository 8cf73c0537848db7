"""CS: a hard channel mask at a UNet2DModel's bottleneck whose masked channels do not change at all.

The bottleneck is the mid block's output (C = block_out_channels[-1] channels). A masked channel c is:

* zeroed in the forward pass (the mid block's output is multiplied by a 0/1 gate);
* frozen in its *parameters*: those that produce it (the last mid resnet's `conv2` filter c and bias c) and
  those that consume it (the first up resnet's `norm1` scale/shift c, `conv1` and `conv_shortcut` input
  column c - the up block concatenates [mid output, skip], so c indexes the mid output). Their gradient
  slices are zeroed after backward and, because Adam's momentum and weight decay move a parameter even at
  zero gradient, their values are restored after each optimizer step and their Adam moments cleared.
  Masking only the activation (as the reference did) leaves the GroupNorm shift and conv1 column of a
  masked channel training: the normalised zero channel is not zero.

Regrowth score of a masked channel: the accumulated |∂L/∂gate_c| - how much the loss would change if the
channel were switched on (the producer still computes it behind the gate) - or random. Each channel
records the stage it was born in (−1 while it never was).

Devices: the gate, the regrowth scores and the frozen snapshots live on the device of the UNet's
parameters (the scores accumulate there, with no host sync per step); the bookkeeping tensors `active` and
`born` stay on the CPU. The mask may be built before the model moves (before `accelerator.prepare`):
`to(device)` moves its tensors, and the forward gate and `after_step` also follow the activation's /
parameter's device by themselves, so a CPU-built mask never mixes devices with a CUDA model.

The sparsity actually reached is measured, not read off the mask: `bottleneck_zero_fraction(unet, ...)` is
the fraction of bottleneck channels whose (gated) activation is exactly zero for every item and position of
a probe batch (any UNet, masked or not), and `BottleneckMask.unchanged_fraction()` the fraction whose
producer and consumer parameter slices are bit-identical to their values when the mask last changed (the
start of the stage).
"""

from __future__ import annotations

import torch

from curriculum.sparsity import choose_regrowth


# (module path under the UNet, parameter name, dim that indexes bottleneck channels)
def _bottleneck_slices(unet) -> list[tuple[str, torch.nn.Parameter, int]]:
    producer = unet.mid_block.resnets[-1]
    consumer = unet.up_blocks[0].resnets[0]
    slices = [
        ("mid.conv2.weight", producer.conv2.weight, 0),
        ("mid.conv2.bias", producer.conv2.bias, 0),
        ("up0.norm1.weight", consumer.norm1.weight, 0),
        ("up0.norm1.bias", consumer.norm1.bias, 0),
        ("up0.conv1.weight", consumer.conv1.weight, 1),
    ]
    if getattr(consumer, "conv_shortcut", None) is not None:
        slices.append(("up0.conv_shortcut.weight", consumer.conv_shortcut.weight, 1))
    return [(n, p, d) for n, p, d in slices if p is not None]


def _score_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def bottleneck_channels(unet) -> int:
    """Return the number of bottleneck (mid-block output) channels of a UNet2DModel."""
    return int(unet.config.block_out_channels[-1])


@torch.no_grad()
def bottleneck_zero_fraction(unet, sample: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor) -> float:
    """Return the fraction of bottleneck channels that are exactly zero everywhere on a probe batch.

    Runs `unet` once in eval mode on (`sample`, `timesteps`, `class_labels`) and looks at the mid block's
    output after every forward hook already on it (a CS gate included): a channel counts when it is 0 for
    every item and position. The UNet's train/eval mode is restored.
    """
    seen: dict[str, torch.Tensor] = {}

    def grab(_module, _inputs, output):
        seen["out"] = output

    handle = unet.mid_block.register_forward_hook(grab)  # registered last: sees the gated output
    was_training = unet.training
    try:
        unet.eval()
        unet(sample, timesteps, class_labels=class_labels)
    finally:
        handle.remove()
        unet.train(was_training)
    zero = (seen["out"] == 0).transpose(0, 1).flatten(1).all(dim=1)
    return float(zero.float().mean())


class BottleneckMask:
    """The CS mask on one UNet2DModel: gate in the forward pass, frozen producer/consumer parameter slices."""

    def __init__(self, unet, n_active: int, generator: torch.Generator | None = None, block_parameters: bool = True):
        self.n_channels = bottleneck_channels(unet)
        if not 1 <= n_active <= self.n_channels:
            raise ValueError(f"n_active must be in [1, {self.n_channels}], got {n_active}")
        first = torch.randperm(self.n_channels, generator=generator)[:n_active]
        self.active = torch.zeros(self.n_channels, dtype=torch.bool)
        self.active[first] = True
        self.born = torch.full((self.n_channels,), -1, dtype=torch.long)
        self.born[first] = 0
        self.stage = 0
        self.block_parameters = block_parameters
        self.unet = unet
        device = self._slices[0][1].device
        self.scores = torch.zeros(self.n_channels, dtype=_score_dtype(device), device=device)
        self.gate = torch.zeros(self.n_channels, device=device, requires_grad=True)
        self._handles: list = []
        self._frozen: dict[str, torch.Tensor] = {}
        self._sync()
        self.attach(unet)

    @property
    def _slices(self) -> list[tuple[str, torch.nn.Parameter, int]]:
        # looked up on every use, never cached: a move to some devices (meta, for one) replaces the Parameter objects
        return _bottleneck_slices(self.unet)

    # -- devices -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Return the device of the gate (and of the scores and frozen snapshots)."""
        return self.gate.device

    def to(self, device: str | torch.device) -> BottleneckMask:
        """Move the gate, scores and frozen snapshots to `device` (the model's, after it moved); return self."""
        device = torch.device(device)
        if self.gate.device != device:
            # a fresh leaf on the new device: `gate.grad` keeps collecting the regrowth scores there
            self.gate = self.gate.detach().to(device).requires_grad_(True)
        self.scores = self.scores.to(device, _score_dtype(device))
        self._frozen = {n: t.to(device) for n, t in self._frozen.items()}
        return self

    # -- forward gate ------------------------------------------------------------------------------------
    def attach(self, unet, keep: bool = True):
        """Gate the bottleneck of `unet` (also an EMA copy, for sampling) with this mask; return the hook handle.

        `keep=False` leaves removing the hook to the caller (for throw-away copies).
        """

        def hook(_module, _inputs, output):
            if self.gate.device != output.device:  # the model moved after the mask was built
                self.to(output.device)
            return output * self.gate.to(output.dtype).view(1, -1, 1, 1)

        handle = unet.mid_block.register_forward_hook(hook)
        if keep:
            self._handles.append(handle)
        return handle

    def detach(self) -> None:
        """Remove the forward gates from every UNet this mask was attached to."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- parameter freezing ------------------------------------------------------------------------------
    def _index(self, p: torch.Tensor, dim: int, channels: torch.Tensor):
        idx = [slice(None)] * p.ndim
        idx[dim] = channels
        return tuple(idx)

    def _sync(self) -> None:
        """Reset the gate to the mask and snapshot the frozen values (called whenever the mask changes)."""
        with torch.no_grad():
            self.gate.copy_(self.active.float())
        self._frozen = {n: p.detach().clone() for n, p, _ in self._slices}

    @property
    def sparsity(self) -> float:
        """Return the fraction of bottleneck channels masked now (the target, by construction)."""
        return 1.0 - float(self.active.float().mean())

    @torch.no_grad()
    def unchanged_fraction(self) -> float:
        """Return the fraction of bottleneck channels whose producer and consumer parameter slices are all
        bit-identical to their snapshot from the last mask change (construction or regrowth; a resumed run
        restores that snapshot from its checkpoint)."""
        same = torch.ones(self.n_channels, dtype=torch.bool)
        for name, p, dim in self._slices:
            eq = p.detach() == self._frozen[name].to(p.device)
            # the consumers see [mid output, skip]: their first n_channels entries along `dim` are the bottleneck
            same &= eq.movedim(dim, 0)[: self.n_channels].reshape(self.n_channels, -1).all(dim=1).cpu()
        return float(same.float().mean())

    def after_backward(self) -> None:
        """Accumulate regrowth scores from the gate's gradient and zero the masked channels' gradients."""
        if self.gate.grad is not None:
            self.scores += self.gate.grad.detach().abs().to(self.scores.device, self.scores.dtype)
            self.gate.grad = None
        if not self.block_parameters:
            return
        masked = (~self.active).nonzero().flatten()
        for _, p, dim in self._slices:
            if p.grad is not None and masked.numel():
                p.grad[self._index(p, dim, masked.to(p.device))] = 0

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Restore masked channels' parameter slices to their frozen values and clear their Adam moments."""
        if not self.block_parameters:
            return
        masked = (~self.active).nonzero().flatten()
        if not masked.numel():
            return
        for name, p, dim in self._slices:
            frozen = self._frozen[name]
            if frozen.device != p.device:  # the model moved after the snapshot: keep it with the parameter
                frozen = self._frozen[name] = frozen.to(p.device)
            ix = self._index(p, dim, masked.to(p.device))
            p[ix] = frozen[ix]
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in state and state[key] is not None:
                    state[key][ix] = 0

    def grow_to(
        self, n_active: int, stage: int, mode: str = "gradient", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Activate channels until `n_active` are on (born at `stage`); return the new channels' indices."""
        n_new = max(0, n_active - int(self.active.sum()))
        new = choose_regrowth(self.active, n_new, mode=mode, scores=self.scores.cpu(), generator=generator)
        self.active[new] = True
        self.born[new] = stage
        self.stage = stage
        self.scores.zero_()
        self._sync()
        return new

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Return the mask state as named tensors (for safetensors)."""
        out = {
            "active": self.active.to(torch.uint8),
            "born": self.born,
            "scores": self.scores,
            "stage": torch.tensor([self.stage]),
        }
        out.update({f"frozen.{n}": t for n, t in self._frozen.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the mask state written by `state_tensors`."""
        self.active = tensors["active"].bool().cpu().clone()
        self.born = tensors["born"].long().cpu().clone()
        self.stage = int(tensors["stage"][0])
        self._sync()
        self.scores = tensors["scores"].to(self.device, _score_dtype(self.device)).clone()
        self._frozen = {n: tensors[f"frozen.{n}"].to(p.device).clone() for n, p, _ in self._slices}
