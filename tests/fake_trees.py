"""Fake datasets in their official on-disk layouts (a few classes, long-tailed, tiny JPEGs), for tests that read
data the way users have it.

- `make_official_imagenet_lt(root, train_counts)`: an ImageNet root with `train/`, `val/` and the official lists
  `ImageNet_LT_{train,val,test}.txt` (lines `train/n01440764/n01440764_10026.JPEG 0`).
- WILDS iWildCam: `tests.fakes.make_fake_iwildcam` writes `iwildcam_v2.0/` (metadata.csv, train/, RELEASE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: ImageNet labels whose names hold "/" (421 is "baluster / handrail"): a fake tree with one of them exercises
#: the safe class-folder names
SLASH_LABEL = 421


def wnid(label: int) -> str:
    """Return the fake WordNet id of a label (n + 8 digits, the official folder-name form)."""
    return f"n{label:08d}"


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, size=3)
    arr = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype("uint8")
    Image.fromarray(arr).save(path, quality=90)


def make_official_imagenet_lt(
    root: Path,
    train_counts: dict[int, int],
    val_per_class: int = 2,
    test_per_class: int = 2,
    size: tuple[int, int] = (24, 16),
    seed: int = 0,
) -> Path:
    """Write a fake ImageNet-LT root: `train_counts[label]` training images per class, `val_per_class` val images
    (from the ImageNet train set, as in the official release) and `test_per_class` test images (from ImageNet's
    val set, `val/{wnid}/ILSVRC2012_val_*.JPEG`), with the three official lists; return the root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    test_idx = 0
    for label, n in train_counts.items():
        w = wnid(label)
        for k in range(n):
            rel = f"train/{w}/{w}_{k}.JPEG"
            _jpeg(root / rel, rng, size)
            lists["train"].append(f"{rel} {label}")
        for k in range(val_per_class):
            rel = f"train/{w}/{w}_{10000 + k}.JPEG"
            _jpeg(root / rel, rng, size)
            lists["val"].append(f"{rel} {label}")
        for _ in range(test_per_class):
            test_idx += 1
            rel = f"val/{w}/ILSVRC2012_val_{test_idx:08d}.JPEG"
            _jpeg(root / rel, rng, size)
            lists["test"].append(f"{rel} {label}")
    for split, lines in lists.items():
        if lines:  # a split with no images has no list (the root still has the training list)
            (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    return root
