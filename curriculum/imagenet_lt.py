"""ImageNet-LT as users have it: the official list files `ImageNet_LT_{train,val,test}.txt` (lines
`train/n01440764/n01440764_10026.JPEG 0`, paths relative to the ImageNet root that holds them), read as they are.

`read_imagenet_lt(source)` takes the root folder (-> one table of the three lists with a `split` column) or one
list file (its split from the official file name, when it has one) and returns the canonical sample table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

#: the official list file of each split (OLTR's release), relative to the ImageNet root
OFFICIAL_LISTS = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
CLASS_NAMES = Path(__file__).resolve().parent.parent / "assets" / "imagenet_class_names.csv"


def is_imagenet_lt_root(path: str | os.PathLike) -> bool:
    """Return True for a folder holding the official training list (`ImageNet_LT_train.txt`)."""
    return Path(path).is_dir() and (Path(path) / OFFICIAL_LISTS["train"]).is_file()


def is_list_file(path: str | os.PathLike) -> bool:
    """Return True for a whitespace list file (`relative/path label` lines; the `.txt` suffix)."""
    return Path(path).suffix.lower() == ".txt" and Path(path).is_file()


def shot_groups(train_counts: pd.Series) -> pd.Series:
    """Return 'many' (>= 100 training images), 'medium' (20-99) or 'few' (< 20) per class label (the reference's
    groups, as training/trainers/metrics.py:lt_accuracy reports them)."""
    return pd.cut(train_counts, bins=[-1, 19, 99, np.inf], labels=["few", "medium", "many"]).astype(str)


def read_list(path: str | os.PathLike) -> pd.DataFrame:
    """Return a list file's `filepath, label` rows; raise ValueError naming the file and line when one is not
    `relative/path label` (the path may hold spaces: the label is the last field)."""
    from curriculum.tables import TableError

    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit() or len(parts[1]) > 18:
            raise TableError(
                f"{path}: line {i + 1}: expected 'relative/path label' with an integer label >= 0, got {line!r}"
            )
        rows.append((parts[0], int(parts[1])))
    if not rows:
        raise TableError(f"{path}: the list has no entries")
    return pd.DataFrame(rows, columns=["filepath", "label"])


def _split_of(list_file: Path) -> str | None:
    return next((s for s, name in OFFICIAL_LISTS.items() if list_file.name == name), None)


def read_imagenet_lt(
    source: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
    class_names: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Return the canonical sample table of an ImageNet-LT root folder or one list file.

    Columns: `sample_id` (file stem), `filepath`, `label`, `label_name` (assets/imagenet_class_names.csv, or
    `class_names`), `source_path`, `split` (root: train/val/test for each list present, train required; a list
    file: from its official name, else none), `image_name`, `train_count` and `shot` (many > 100, medium 20-100,
    few < 20 training images, counted from `train_list`, else the root's / the sibling official training list,
    else the list itself). `data_root` defaults to the root folder, or the list file's folder.
    """
    from curriculum.tables import TableError, read_class_names

    source = Path(source)
    if source.is_dir():
        if not is_imagenet_lt_root(source):
            raise TableError(f"{source}: not an ImageNet-LT root (no {OFFICIAL_LISTS['train']} in it)")
        parts = []
        for split, name in OFFICIAL_LISTS.items():
            if (source / name).is_file():
                parts.append(read_list(source / name).assign(split=split))
        df = pd.concat(parts, ignore_index=True)
        root = source
        train = df.loc[df["split"] == "train", ["filepath", "label"]]
    else:
        df = read_list(source)
        split = _split_of(source)
        if split is not None:
            df["split"] = split
        root = source.parent
        sibling = source.parent / OFFICIAL_LISTS["train"]
        train = read_list(sibling) if (train_list is None and sibling.is_file() and sibling != source) else df
    if train_list is not None:
        train = read_list(train_list)
    counts = train["label"].value_counts()
    names = read_class_names(class_names or CLASS_NAMES)
    df["image_name"] = df["filepath"].map(lambda p: Path(p).name)
    df["sample_id"] = df["filepath"].map(lambda p: Path(p).stem)
    df["label_name"] = [names.get(int(y), str(int(y))) for y in df["label"]]
    df["train_count"] = df["label"].map(counts).fillna(0).astype("int64")
    df["shot"] = shot_groups(df["train_count"]).to_numpy()
    dup = df["sample_id"].duplicated(keep=False)
    if dup.any():
        rows = df.loc[dup, ["filepath"] + (["split"] if "split" in df else [])].head(2).to_dict("records")
        raise TableError(f"{source}: sample ids (file stems) repeat, e.g. {rows}")
    root = Path(data_root) if data_root is not None else root
    df["source_path"] = [str(p if Path(p).is_absolute() else root / p) for p in df["filepath"]]
    front = ["sample_id", "filepath", "label", "label_name", "source_path"]
    df = df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)
    df.attrs.update(data_root=str(root), layout="imagenet_lt", path=str(source), n_duplicates_dropped=0)
    return df
