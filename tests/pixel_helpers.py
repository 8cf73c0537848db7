"""Tiny real pixel-space diffusion components for the tests (built from configs, 16 px, a few steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from training.diffusion.data import PixelDataset, load_pixel_dataset, write_digits
from training.diffusion.trainer import DiffusionTrainConfig, train_diffusion

TINY = dict(
    image_size=16,
    block_out_channels=(16, 32),
    norm_num_groups=8,
    batch_size=16,
    learning_rate=2e-3,
    sample_steps=5,
    samples_per_class=2,
    progress=False,
    device="cpu",
)


def digits_subset(root: Path, n: int = 64) -> tuple[Path, PixelDataset]:
    """Write the digits to `root` and return (table path, the first `n` training images in memory)."""
    table = write_digits(root, size=16)
    ds = load_pixel_dataset(table, 16, split="train")
    return table, PixelDataset(ds.images[:n], ds.labels[:n], ds.class_names, ds.sample_ids[:n])


def digits_in_memory(n: int = 64) -> PixelDataset:
    """Return the first `n` scikit-learn digits as a 16 px RGB dataset without writing files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from training.diffusion.data import DIGIT_NAMES

    d = load_digits()
    arrs = []
    for img in d.images[:n]:
        gray = Image.fromarray(np.clip(img * 255 / 16, 0, 255).astype(np.uint8), mode="L")
        arrs.append(np.asarray(gray.resize((16, 16), Image.BICUBIC).convert("RGB"), dtype=np.float32) / 127.5 - 1)
    images = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
    return PixelDataset(
        images,
        torch.as_tensor(d.target[:n], dtype=torch.long),
        dict(enumerate(DIGIT_NAMES)),
        [f"digit_{i:04d}" for i in range(n)],
    )


def tiny_config(out: Path, **kw) -> DiffusionTrainConfig:
    """Return a tiny training config writing to `out` (overrides in `kw`)."""
    base = dict(TINY, data="unused", output_dir=str(out), stage_starts=(0.5, 0.0), stage_epochs=(1, 1))
    base.update(kw)
    return DiffusionTrainConfig(**base)


def train_tiny(out: Path, ds: PixelDataset, **kw):
    """Train a tiny model on `ds` into `out`; return the DiffusionTrainResult."""
    torch.manual_seed(0)
    return train_diffusion(tiny_config(out, **kw), ds)
