"""Tiny real pixel-space diffusion components for the tests (built from configs, 16 px, a few steps)."""
from __future__ import annotations

from pathlib import Path

import torch

from training.diffusion_trainer import DiffusionTrainConfig, train_diffusion
from training.pixel_data import PixelDataset, load_pixel_dataset, write_digits

TINY = dict(image_size=16, block_out_channels=(16, 32), norm_num_groups=8, batch_size=16, learning_rate=2e-3,
            sample_steps=5, samples_per_class=2, progress=False, device="cpu")


def digits_subset(root: Path, n: int = 64) -> tuple[Path, PixelDataset]:
    """Write the digits to `root` and return (table path, the first `n` training images in memory)."""
    table = write_digits(root, size=16)
    ds = load_pixel_dataset(table, 16, split="train")
    return table, PixelDataset(ds.images[:n], ds.labels[:n], ds.class_names, ds.sample_ids[:n])


def tiny_config(out: Path, **kw) -> DiffusionTrainConfig:
    """Return a tiny training config writing to `out` (overrides in `kw`)."""
    base = dict(TINY, data="unused", output_dir=str(out), stage_starts=(0.5, 0.0), stage_epochs=(1, 1))
    base.update(kw)
    return DiffusionTrainConfig(**base)


def train_tiny(out: Path, ds: PixelDataset, **kw):
    """Train a tiny model on `ds` into `out`; return the DiffusionTrainResult."""
    torch.manual_seed(0)
    return train_diffusion(tiny_config(out, **kw), ds)
