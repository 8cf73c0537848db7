"""The offline demo's data: scikit-learn's bundled handwritten digits as a long-tailed image dataset.

1,797 real 8×8 grey images of 10 classes ship with scikit-learn, so nothing is downloaded. Per class c
(shuffled with the seed) the images are dealt out, in this order, to

* ``test``  - `test_per_class` images: a balanced test split (reported, never used for selection);
* ``val``   - `val_per_class` images: a balanced validation split (model selection);
* ``train`` - n_c = round(n_max · imbalance^(−c/(K−1))) images: the long-tailed training split, class 0
  the head (n_max) and class 9 the tail (n_max / imbalance);
* ``pool``  - up to `pool_per_class` of the rest: the broad, disjoint data that stands in for what a real
  generator (and CLIP) was pretrained on. The generator and the CLIP stand-in learn from it alone.

Images are written as RGB PNGs `{out}/{class name}/digit_XXXX.png` at `size`² (8 = the native resolution)
and listed in the canonical sample table `{out}/samples.csv` with a `split` column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from curriculum.tables import write_csv
from training.diffusion.data import DIGIT_NAMES, digit_image

SPLITS = ("test", "val", "train", "pool")


def long_tail_counts(n_max: int, imbalance: float, num_classes: int = 10) -> list[int]:
    """Return the training images per class, n_c = round(n_max · imbalance^(−c/(K−1))), at least 1."""
    if n_max < 1 or imbalance < 1:
        raise ValueError(f"need n_max >= 1 and imbalance >= 1, got {n_max}, {imbalance}")
    return [max(1, int(round(n_max * imbalance ** (-c / (num_classes - 1))))) for c in range(num_classes)]


def write_long_tailed_digits(
    out_dir: str | Path,
    size: int = 8,
    n_max: int = 80,
    imbalance: float = 20.0,
    test_per_class: int = 40,
    val_per_class: int = 15,
    pool_per_class: int = 60,
    seed: int = 0,
) -> Path:
    """Write the digits as PNGs with test/val/train/pool splits (see the module doc); return the table's path.

    Raises ValueError when a class has too few images for its test, val and train shares.
    """
    from sklearn.datasets import load_digits

    out = Path(out_dir)
    digits = load_digits()
    counts = long_tail_counts(n_max, imbalance, len(DIGIT_NAMES))
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(DIGIT_NAMES):
        idx = rng.permutation(np.flatnonzero(digits.target == c))
        need = test_per_class + val_per_class + counts[c]
        if len(idx) < need:
            raise ValueError(f"class {name}: {len(idx)} images, but test+val+train need {need}")
        shares = [test_per_class, val_per_class, counts[c], min(pool_per_class, len(idx) - need)]
        start = 0
        (out / name).mkdir(parents=True, exist_ok=True)
        for split, n in zip(SPLITS, shares):
            for i in idx[start : start + n]:
                rel = Path(name) / f"digit_{i:04d}.png"
                digit_image(digits.images[i], size).save(out / rel)
                rows.append(
                    {
                        "sample_id": f"digit_{i:04d}",
                        "filepath": rel.as_posix(),
                        "label": c,
                        "label_name": name,
                        "split": split,
                    }
                )
            start += n
    return write_csv(pd.DataFrame(rows), out / "samples.csv")


def split_counts(table: str | Path) -> pd.DataFrame:
    """Return images per class (rows) and split (columns) of a demo table."""
    df = pd.read_csv(table)
    return df.pivot_table(index="label_name", columns="split", values="sample_id", aggfunc="count", fill_value=0)[
        [s for s in SPLITS if s in set(df["split"])]
    ].reindex(DIGIT_NAMES)
