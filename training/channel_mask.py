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
"""
from __future__ import annotations

import torch

from curriculum.sparsity import choose_regrowth

# (module path under the UNet, parameter name, dim that indexes bottleneck channels)
def _bottleneck_slices(unet) -> list[tuple[str, torch.nn.Parameter, int]]:
    producer = unet.mid_block.resnets[-1]
    consumer = unet.up_blocks[0].resnets[0]
    slices = [("mid.conv2.weight", producer.conv2.weight, 0), ("mid.conv2.bias", producer.conv2.bias, 0),
              ("up0.norm1.weight", consumer.norm1.weight, 0), ("up0.norm1.bias", consumer.norm1.bias, 0),
              ("up0.conv1.weight", consumer.conv1.weight, 1)]
    if getattr(consumer, "conv_shortcut", None) is not None:
        slices.append(("up0.conv_shortcut.weight", consumer.conv_shortcut.weight, 1))
    return [(n, p, d) for n, p, d in slices if p is not None]


def bottleneck_channels(unet) -> int:
    """Return the number of bottleneck (mid-block output) channels of a UNet2DModel."""
    return int(unet.config.block_out_channels[-1])


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
        self.scores = torch.zeros(self.n_channels, dtype=torch.float64)
        self.stage = 0
        self.block_parameters = block_parameters
        self.gate = torch.zeros(self.n_channels, requires_grad=True)
        self._handles: list = []
        self.unet = unet
        self._slices = _bottleneck_slices(unet)
        self._frozen: dict[str, torch.Tensor] = {}
        self._sync()
        self.attach(unet)

    # -- forward gate ------------------------------------------------------------------------------------
    def attach(self, unet, keep: bool = True):
        """Gate the bottleneck of `unet` (also an EMA copy, for sampling) with this mask; return the hook handle.

        `keep=False` leaves removing the hook to the caller (for throw-away copies).
        """

        def hook(_module, _inputs, output):
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
        """Return the fraction of bottleneck channels masked now."""
        return 1.0 - float(self.active.float().mean())

    def after_backward(self) -> None:
        """Accumulate regrowth scores from the gate's gradient and zero the masked channels' gradients."""
        if self.gate.grad is not None:
            self.scores += self.gate.grad.detach().abs().double()
            self.gate.grad = None
        if not self.block_parameters:
            return
        masked = (~self.active).nonzero().flatten()
        for _, p, dim in self._slices:
            if p.grad is not None and masked.numel():
                p.grad[self._index(p, dim, masked)] = 0

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Restore masked channels' parameter slices to their frozen values and clear their Adam moments."""
        if not self.block_parameters:
            return
        masked = (~self.active).nonzero().flatten()
        if not masked.numel():
            return
        for name, p, dim in self._slices:
            ix = self._index(p, dim, masked)
            p[ix] = self._frozen[name][ix]
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in state and state[key] is not None:
                    state[key][ix] = 0

    def grow_to(self, n_active: int, stage: int, mode: str = "gradient", generator: torch.Generator | None = None) -> torch.Tensor:
        """Activate channels until `n_active` are on (born at `stage`); return the new channels' indices."""
        n_new = max(0, n_active - int(self.active.sum()))
        new = choose_regrowth(self.active, n_new, mode=mode, scores=self.scores, generator=generator)
        self.active[new] = True
        self.born[new] = stage
        self.stage = stage
        self.scores.zero_()
        self._sync()
        return new

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Return the mask state as named tensors (for safetensors)."""
        out = {"active": self.active.to(torch.uint8), "born": self.born, "scores": self.scores,
               "stage": torch.tensor([self.stage])}
        out.update({f"frozen.{n}": t for n, t in self._frozen.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the mask state written by `state_tensors`."""
        self.active = tensors["active"].bool().clone()
        self.born = tensors["born"].long().clone()
        self.stage = int(tensors["stage"][0])
        self._sync()
        self.scores = tensors["scores"].double().clone()
        self._frozen = {n: tensors[f"frozen.{n}"].clone() for n, _, _ in self._slices}
