"""Training data for Phase 2: real samples mixed with filtered synthetic images of a guidance level.

Reads Phase 1 only as files: a sample table (canonical columns, plus `split` and `hard`) and a synthetic
manifest (gene_img's, or the scored one with `keep`). The synthetic level of an image is its image guidance in
percent, `curriculum.contracts.guidance_level(strength)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from curriculum.contracts import FILTERED_FILE, KEEP, REAL_LEVEL, SCORES_FILE, guidance_level
from curriculum.guidance import ALL_LEVELS
from curriculum.images import SourceImageError, load_rgb
from curriculum.tables import check_labels, parse_bool_column, read_parquet_metadata, read_sample_table, read_table

# one row per training item: where the image is, its class, where it came from
ITEM_COLUMNS = ["item_id", "sample_id", "path", "label", "level", "source"]


def load_real(
    table_path: str | Path, data_root: str | Path | None = None, split: str | None = "train", hard_column: str = "hard"
) -> pd.DataFrame:
    """Return the real samples (canonical table) of `split` with a boolean `hard` column (False if absent).

    A table without a `split` column is taken whole.
    """
    df = read_sample_table(table_path, data_root)
    if split is not None and "split" in df.columns:
        df = df[df["split"].astype(str) == split].reset_index(drop=True)
        if df.empty:
            raise ValueError(f"{table_path}: no rows with split == {split!r}")
    if hard_column in df.columns:
        df["hard"] = parse_bool_column(df[hard_column], table_path, hard_column).to_numpy()
    else:
        df["hard"] = False
    return df


def load_synthetic(
    manifest: str | Path,
    syn_root: str | Path | None = None,
    known_labels: Sequence[int] | None = None,
    min_level: int = 0,
) -> pd.DataFrame:
    """Return the kept synthetic images of a manifest with absolute `path` and integer `level`.

    Rows with `keep == False` (the CLIP filter) are dropped; `syn_root` defaults to the folder of the
    generation output recorded in the manifest metadata, else the manifest's folder. A row whose label is not
    a class of the real data is an error naming it; levels below `min_level` are left out.
    """
    manifest = Path(manifest)
    df = read_table(manifest)
    need = {"synthetic_id", "sample_id", "label", "strength", "path"}
    missing = need - set(df.columns)
    if missing:
        raise ValueError(f"{manifest}: not a synthetic manifest, missing column(s) {sorted(missing)}")
    if KEEP in df.columns:  # strictly: a CSV's (or a string column's) "False" is False
        df = df[parse_bool_column(df[KEEP], manifest, KEEP).to_numpy()]
    meta = read_parquet_metadata(manifest) if manifest.suffix == ".parquet" else {}
    check_scoring_unit(manifest, meta)
    if syn_root is None:
        syn_root = meta.get("syn_path") or meta.get("config", {}).get("output_path") or manifest.parent
        if not Path(syn_root).is_dir():
            syn_root = manifest.parent
    df = df.copy()
    df["label"] = check_labels(df["label"], manifest).to_numpy()
    df["level"] = [guidance_level(s) for s in df["strength"].astype(float)]
    df["path"] = [str(p if Path(p).is_absolute() else Path(syn_root) / p) for p in df["path"]]
    if known_labels is not None:
        unknown = ~df["label"].isin(set(int(x) for x in known_labels))
        if unknown.any():
            row = df[unknown].iloc[0]
            raise ValueError(
                f"{manifest}: synthetic image {row.synthetic_id!r} has label {row.label}, "
                "which is not a class of the real training data"
            )
    return df[df["level"] >= min_level].reset_index(drop=True)


#: comp_clip_scores's two outputs, written as one unit with the same `scoring_id` in their metadata
SCORING_UNIT = (SCORES_FILE, FILTERED_FILE)


def check_scoring_unit(manifest: Path, meta: dict) -> None:
    """Return None unless `manifest` is one of comp_clip_scores's two outputs and its sibling carries another
    `scoring_id` (a kill between their renames): then raise ValueError naming both and the fix."""
    if manifest.name not in SCORING_UNIT or "scoring_id" not in meta:
        return
    other = manifest.with_name(SCORING_UNIT[1 - SCORING_UNIT.index(manifest.name)])
    if other.is_file():
        theirs = read_parquet_metadata(other).get("scoring_id")
        if theirs is not None and theirs != meta["scoring_id"]:
            raise ValueError(
                f"{manifest} and {other} come from different comp_clip_scores runs (scoring_id {meta['scoring_id']} "
                f"vs {theirs}; an interrupted run?): rerun comp_clip_scores on that folder"
            )


def curriculum_validation_split(
    synthetic: pd.DataFrame, levels: Sequence[int], n_sources: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (training synthetic rows, curriculum-validation rows).

    The validation rows are the synthetic images of up to `n_sources` source images that have every level in
    `levels`; all their synthetic images leave training (the trainers' `build_run_data` removes their real
    image from training too, as the reference does).
    """
    have = synthetic[synthetic["level"].isin(levels)].groupby("sample_id")["level"].nunique()
    complete = sorted(have[have == len(set(levels))].index)
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(complete)[:n_sources].tolist()) if complete else set()
    is_val = synthetic["sample_id"].isin(chosen)
    val = synthetic[is_val & synthetic["level"].isin(levels)].reset_index(drop=True)
    return synthetic[~is_val].reset_index(drop=True), val


def real_items(real: pd.DataFrame) -> pd.DataFrame:
    """Return the real samples as training items (level 100, source 'real')."""
    return pd.DataFrame(
        {
            "item_id": "real:" + real["sample_id"],
            "sample_id": real["sample_id"],
            "path": real["source_path"],
            "label": real["label"].astype("int64"),
            "level": REAL_LEVEL,
            "source": "real",
        }
    )


def synthetic_items(synthetic: pd.DataFrame, level: int) -> pd.DataFrame:
    """Return the synthetic images of `level` (every level for ALL_LEVELS, none for REAL_LEVEL) as items."""
    if level == REAL_LEVEL or synthetic.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("label", "level") else object) for c in ITEM_COLUMNS})
    if level == ALL_LEVELS:
        rows = synthetic
    else:
        rows = synthetic[synthetic["level"] == level]
    return pd.DataFrame(
        {
            "item_id": "syn:" + rows["synthetic_id"],
            "sample_id": rows["sample_id"],
            "path": rows["path"],
            "label": rows["label"].astype("int64"),
            "level": rows["level"].astype("int64"),
            "source": "synthetic",
        }
    )


def stage_items(real: pd.DataFrame, synthetic: pd.DataFrame, level: int) -> pd.DataFrame:
    """Return the training items of one stage: every real sample (non-hard and hard) plus the level's synthetic.

    Non-hard real data is part of every stage (the reference's iWildCam loader silently dropped it).
    """
    return pd.concat([real_items(real), synthetic_items(synthetic, level)], ignore_index=True)[ITEM_COLUMNS]


def check_images_exist(paths: Sequence[str], where: str, show: int = 3) -> None:
    """Return None when every path is a file; else raise FileNotFoundError naming the count, the first
    missing files and `where` they come from (the table/manifest and the flag that resolves them)."""
    paths = [str(p) for p in paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        first = ", ".join(missing[:show]) + (", ..." if len(missing) > show else "")
        raise FileNotFoundError(f"{where}: {len(missing)} of {len(paths)} image file(s) do not exist, first: {first}")


def load_image(path: str) -> Image.Image:
    """Return the image at `path` as 8-bit RGB (`curriculum.images.load_rgb`: EXIF rotation applied, alpha on white,
    16-bit data scaled, not clipped to white).

    Raises OSError naming the path when it is missing or unreadable (the training CLIs turn it into exit code 2).
    """
    try:
        return load_rgb(path)
    except SourceImageError as err:
        raise OSError(f"cannot read training image {path}: {err}") from err


class ItemDataset(torch.utils.data.Dataset):
    """Items (path, label) -> (transformed image, label, index)."""

    def __init__(self, items: pd.DataFrame, transform: Callable):
        self.paths = items["path"].tolist()
        self.labels = items["label"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i])), int(self.labels[i]), i
