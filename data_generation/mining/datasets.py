"""Loaders that turn a dataset into the sample table (DESIGN.md §3): a table file, an image folder, WILDS
iWildCam and ImageNet-LT list files.

Every loader returns a DataFrame with the canonical columns `sample_id, filepath, label, label_name,
source_path` (plus `split`, `domain`, `shot`, ... where the dataset has them) and sets `df.attrs['data_root']`
(the folder `filepath` is relative to) and `df.attrs['layout']` (which DisCL CSV layout suits it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from curriculum.imagenet_lt import read_imagenet_lt, shot_groups  # noqa: F401  (shot_groups: re-exported)
from curriculum.registry import Registry
from curriculum.tables import TableError, read_class_names, read_image_folder, read_sample_table

ASSETS = Path(__file__).resolve().parents[2] / "assets"
WILDS_SPLITS = ("train", "val", "test", "id_val", "id_test")

DATASETS: Registry = Registry("dataset")


def _finish(df: pd.DataFrame, data_root: Path, layout: str) -> pd.DataFrame:
    df["source_path"] = [str(p if Path(p).is_absolute() else data_root / p) for p in df["filepath"]]
    front = ["sample_id", "filepath", "label", "label_name", "source_path"]
    df = df[front + [c for c in df.columns if c not in front]].reset_index(drop=True)
    df.attrs.update(data_root=str(data_root), layout=layout)
    return df


@DATASETS.register("table")
def load_table(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return the sample table of a CSV/Parquet file (canonical or a DisCL layout)."""
    root = Path(data_root) if data_root is not None else Path.cwd()
    df = read_sample_table(path, data_root=root)
    df.attrs["data_root"] = str(root)
    return df


@DATASETS.register("folder")
def load_image_folder(root: str | os.PathLike) -> pd.DataFrame:
    """Return the sample table of `root/class_name/*.jpg` (`curriculum.tables.read_image_folder`: labels = sorted
    class folders, `sample_id` = the file stem, `class__stem` when stems repeat across classes)."""
    df = read_image_folder(root)
    return _finish(df.drop(columns="source_path"), Path(root), "canonical")


@DATASETS.register("iwildcam")
def load_wilds_iwildcam(
    root: str | os.PathLike, splits: tuple[str, ...] | None = None, download: bool = False
) -> pd.DataFrame:
    """Return the sample table of WILDS iWildCam v2.0 under `root` (the folder that holds `iwildcam_v2.0/`).

    Goes through the `wilds` package (`download=False` by default: the data must be there). Columns add
    `split` (train, val, test, id_val, id_test), `domain` (camera location), `sequence` and `train_count` (the
    class's images in the train split); `label_name` is the English name; `filepath` is relative to
    `root/iwildcam_v2.0`.
    """
    import wilds

    try:
        ds = wilds.get_dataset("iwildcam", root_dir=str(root), download=download)
    except Exception as err:
        raise TableError(
            f"{root}: cannot open WILDS iWildCam ({err}); expected {Path(root) / 'iwildcam_v2.0'} with "
            "RELEASE_v2.0.txt, metadata.csv and train/; to fetch it (about 11 GB), run the same command once with "
            "--download where the internet is reachable (mine_hard.py / make_table.py --dataset iwildcam)"
        ) from err
    inv_split = {v: k for k, v in ds.split_dict.items()}
    names = read_class_names(ASSETS / "iwildcam_labels.csv")
    meta = pd.read_csv(Path(ds.data_dir) / "metadata.csv")
    df = pd.DataFrame(
        {
            "sample_id": [Path(f).stem for f in ds._input_array],
            "filepath": [f"train/{f}" for f in ds._input_array],
            "label": ds.y_array.numpy().astype("int64"),
            "split": [inv_split[int(s)] for s in ds.split_array],
            "domain": meta["location_remapped"].to_numpy(),
            "sequence": meta["sequence_remapped"].to_numpy(),
        }
    )
    df["label_name"] = [names.get(int(y), str(int(y))) for y in df["label"]]
    # training images per class, counted before any split is selected: the tail rule of mining needs the
    # training counts also when it mines another split
    counts = df.loc[df["split"] == "train", "label"].value_counts()
    df["train_count"] = df["label"].map(counts).fillna(0).astype("int64")
    if splits is not None:
        bad = sorted(set(splits) - set(WILDS_SPLITS))
        if bad:
            raise ValueError(f"unknown iWildCam split(s) {bad}; choose from {list(WILDS_SPLITS)}")
        df = df[df["split"].isin(splits)]
    return _finish(df, Path(ds.data_dir), "iwildcam")


@DATASETS.register("imagenet_lt")
def load_imagenet_lt(
    list_file: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
    class_names: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Return the sample table of ImageNet-LT: its root folder (the official `ImageNet_LT_{train,val,test}.txt`
    read as they are, one table with a `split` column) or one list file (`ImageNet_LT_train.txt`-style lines).

    Adds `image_name` (as in DisCL's CSV), `train_count` and `shot` (many > 100, medium 20-100, few < 20
    training images of the class, counted from `train_list`, default: the root's or sibling training list, else
    `list_file` itself). Relative paths resolve against `data_root` (default: the root / the list's folder).
    """
    return read_imagenet_lt(list_file, data_root, train_list=train_list, class_names=class_names)


def load_dataset(
    dataset: str,
    data: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    split: str | None = None,
    train_list: str | os.PathLike | None = None,
    download: bool = False,
) -> pd.DataFrame:
    """Return the sample table of registered `dataset` ('table', 'folder', 'iwildcam', 'imagenet_lt') at `data`.

    `split` keeps only that split's rows (iWildCam: the WILDS split is loaded alone); `data_root` resolves a
    table's or ImageNet-LT list's relative paths; `train_list` is ImageNet-LT's training list (class counts);
    `download` lets WILDS fetch iWildCam into `data` (`--download`; the other datasets ignore it).
    """
    if dataset == "table":
        df = DATASETS.get("table")(data, data_root)
    elif dataset == "folder":
        df = DATASETS.get("folder")(data)
    elif dataset == "iwildcam":
        df = DATASETS.get("iwildcam")(data, splits=(split,) if split else None, download=download)
    else:
        df = DATASETS.get(dataset)(data, data_root, train_list=train_list)
    if split and "split" in df.columns and dataset != "iwildcam":
        df = df[df["split"].astype(str) == split].reset_index(drop=True)
    return df
