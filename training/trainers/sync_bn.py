"""Synchronised BatchNorm (`--sync_bn`): batch statistics over the global batch, not each process's slice.

On GPUs torch's `SyncBatchNorm` (NCCL) is used; torch's refuses CPU tensors, so on CPU (gloo) every
`BatchNorm{1,2,3}d` becomes `GlobalBatchNorm`, the same maths: the mean and the biased variance of the
global batch from two all-reduces with gradients (sum of x, then sum of (x - mean)^2, as in a two-pass
variance), the running statistics updated with the unbiased global variance. A run on P processes then
normalises exactly as one process does on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): each process's input receives the sum of every process's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Return the sum of `x` over the processes of the default group, with gradients (x itself without one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllReduceSum.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across processes (any device)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised `x`; in training, with the global batch's mean and variance."""
        self._check_input_dim(x)
        many = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and many):
            return super().forward(x)
        if self.momentum is None:
            factor = None  # cumulative average, set below
        else:
            factor = self.momentum
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        total = all_reduce_sum(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                if factor is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        return y


def convert_sync_batchnorm(model: nn.Module, device: str | torch.device) -> tuple[nn.Module, int]:
    """Return (model with synchronised BatchNorm layers, how many were converted).

    CUDA: torch's `SyncBatchNorm.convert_sync_batchnorm` (timm's norm+activation layers through timm's
    converter). CPU: plain `BatchNorm{1,2,3}d` layers become `GlobalBatchNorm` with their parameters and
    running statistics; a BatchNorm subclass with extra behaviour (e.g. timm's BatchNormAct2d) is an error
    naming it, not a silent drop of its activation.
    """
    before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if torch.device(device).type == "cuda":
        try:
            from timm.layers import convert_sync_batchnorm as timm_convert

            model = timm_convert(model)
        except ImportError:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, before
    return _convert_cpu(model), before


def _convert_cpu(module: nn.Module) -> nn.Module:
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        if type(module) not in plain:
            raise ValueError(
                f"--sync_bn on CPU converts plain BatchNorm1d/2d/3d layers; {type(module).__name__} is not one "
                "(run on GPUs, where timm's converter handles it, or drop --sync_bn)"
            )
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in list(module.named_children()):
        module._modules[name] = _convert_cpu(child)
    return module


__all__ = ["GlobalBatchNorm", "all_reduce_sum", "convert_sync_batchnorm"]
