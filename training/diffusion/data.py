"""Small labelled image datasets for pixel-space diffusion training, held in memory as tensors.

Two inputs: an image folder ``root/class_name/*.png`` (`curriculum.tables.read_image_folder`: classes sorted by
name get ids 0..K−1, sample ids are file stems, `class__stem` where stems repeat) or a sample table (the
canonical CSV/Parquet of `curriculum.tables.read_sample_table`). `write_digits` turns scikit-learn's bundled
8×8 digits into both, upscaled to RGB images - the offline demo's data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from curriculum.images import SourceImageError, crop_resize, load_rgb, to_signed_array
from curriculum.tables import read_image_folder, read_sample_table, select_split, write_csv

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class PixelDataset:
    """Images (N×3×S×S float32 in [-1, 1]), integer labels (N) and `{id: name}` of the classes."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: dict[int, str]
    sample_ids: list[str]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        """Return the number of classes (max label + 1, at least the named ones)."""
        return max(int(self.labels.max()) + 1, max(self.class_names, default=-1) + 1)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Return the image at `path` as RGB, center-cropped to a square and resized to size×size (bicubic), as an
    HxWx3 float32 array in [-1, 1] (`curriculum.images.crop_resize`, the crop pixel-ddpm applies to generation
    sources, so never squashed); read by `curriculum.images.load_rgb` (EXIF rotation, alpha on white, 16-bit data
    scaled). An unreadable image is a ValueError naming `--data` and the file."""
    try:
        im = load_rgb(path)
    except SourceImageError as err:
        raise ValueError(f"--data: {err}") from None
    return to_signed_array(crop_resize(im, (size, size)))


def _stack(paths: list[str], size: int) -> torch.Tensor:
    arr = np.stack([load_image(p, size) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def load_pixel_dataset(
    data: str | Path, image_size: int, data_root: str | Path | None = None, split: str | None = None
) -> PixelDataset:
    """Return the dataset at `data`: an image folder (root/class_name/*) or a sample table.

    For a table, relative file paths resolve against `data_root` (default: the table's folder) and `split`
    keeps only rows whose `split` column equals it.
    """
    data = Path(data)
    if data.is_dir():
        if split is not None:
            raise ValueError(f"--split applies to a sample table, but --data {data} is an image folder")
        df = read_image_folder(data)  # sample ids: the file stem, `class__stem` where stems repeat
    elif data.is_file():
        df = select_split(read_sample_table(data, data_root if data_root is not None else data.parent), split, data)
        missing = [p for p in df["source_path"] if not Path(p).is_file()]
        if missing:
            raise ValueError(
                f"--data {data}: {len(missing)} image file(s) missing, e.g. {missing[0]} (check --data_root)"
            )
    else:
        raise ValueError(f"--data {data}: no such folder or sample table")
    paths, labels, ids = list(df["source_path"]), [int(v) for v in df["label"]], list(df["sample_id"])
    names = {int(k): str(v) for k, v in df.groupby("label")["label_name"].first().items()}
    return PixelDataset(_stack(paths, image_size), torch.tensor(labels, dtype=torch.long), names, ids)


def digit_image(values: np.ndarray, size: int) -> Image.Image:
    """Return one of scikit-learn's 8×8 digits (values 0-16) as an RGB image of size×size (bicubic if resized)."""
    gray = Image.fromarray(np.clip(values * 255.0 / 16.0, 0, 255).astype(np.uint8), mode="L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.BICUBIC)
    return gray.convert("RGB")


def write_digits(out_dir: str | Path, size: int = 16, test_fraction: float = 0.3, seed: int = 0) -> Path:
    """Write scikit-learn's digits as RGB PNGs (`out_dir/<name>/digit_XXXX.png`, upscaled to size×size) and a
    canonical sample table `out_dir/samples.csv` (sample_id, filepath relative to out_dir, label, label_name,
    split = train/test, stratified by class); return the table's path.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out = Path(out_dir)
    digits = load_digits()
    n = len(digits.target)
    split = np.array(["train"] * n, dtype=object)
    if test_fraction > 0:
        _, test_idx = train_test_split(np.arange(n), test_size=test_fraction, random_state=seed, stratify=digits.target)
        split[test_idx] = "test"
    rows = []
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        name = DIGIT_NAMES[int(y)]
        rel = Path(name) / f"digit_{i:04d}.png"
        (out / name).mkdir(parents=True, exist_ok=True)
        digit_image(img, size).save(out / rel)
        rows.append(
            {
                "sample_id": f"digit_{i:04d}",
                "filepath": rel.as_posix(),
                "label": int(y),
                "label_name": name,
                "split": split[i],
            }
        )
    return write_csv(pd.DataFrame(rows), out / "samples.csv")
