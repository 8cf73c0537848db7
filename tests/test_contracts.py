"""curriculum.contracts: names and parsers of the files between stages, one level vocabulary; the one
image-folder walker; config dataclasses from flags."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from curriculum.config import add_list_flag, dataclass_from_args
from curriculum.contracts import (
    REAL_LEVEL,
    guidance_level,
    is_image_file,
    parse_shard_name,
    parse_variant_dirname,
    shard_failures_name,
    shard_manifest_name,
    shard_manifests,
    strength_percent,
    synthetic_id,
    variant_dirname,
)
from curriculum.tables import TableError, read_image_folder


@given(
    s=st.integers(1, 100).map(lambda k: k / 100),
    g=st.integers(0, 300).map(lambda k: k / 10),
    seed=st.integers(-5, 10**6),
)
def test_variant_folder_name_parses_back(s, g, seed):
    name = variant_dirname(s, g, seed)
    assert parse_variant_dirname(name) == (pytest.approx(s), pytest.approx(g), seed)
    assert synthetic_id("img_1", s, g, seed) == f"img_1/{name}"


def test_one_level_vocabulary():
    # the folder name carries the strength in percent; the level is the image guidance in percent
    assert variant_dirname(0.3, 10, 42) == "Strength30_guidance100_seed42"
    assert [strength_percent(s) for s in (0.1, 0.29, 1.0)] == [10, 29, 100]
    assert [guidance_level(s) for s in (0.1, 0.29, 1.0)] == [90, 71, 0]
    assert REAL_LEVEL == 100
    assert parse_variant_dirname("Strength30_guidance100") is None


def test_shard_names_parse_back_and_are_found(tmp_path):
    assert shard_manifest_name(3, 8) == "manifest-part3-of-8.parquet"
    assert shard_failures_name(3, 8) == "failures-part3-of-8.csv"
    assert parse_shard_name("x/manifest-part3-of-8.parquet") == (3, 8) and parse_shard_name("manifest.parquet") is None
    for name in (shard_manifest_name(2, 2), shard_manifest_name(1, 2), "manifest.parquet", "manifest-part1-of-2.csv"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in shard_manifests(tmp_path)] == ["manifest-part1-of-2.parquet", "manifest-part2-of-2.parquet"]


def test_image_files_by_extension_case_insensitive_never_hidden():
    assert [is_image_file(n) for n in ("a.jpg", "b.JPEG", "c.png", "d.tif", "e.txt", ".f.jpg.tmp", ".g.jpg")] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def _folder(root, files):
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / rel)
    return root


def test_image_folder_ids_are_stems_with_the_class_where_stems_repeat(tmp_path):
    root = _folder(tmp_path / "data", ["cat/x.png", "cat/y.png", "dog/x.png", "dog/sub/z.jpg"])
    (root / "dog" / ".hidden.png").write_bytes(b"")
    df = read_image_folder(root)
    assert df["sample_id"].tolist() == ["cat__x", "y", "z", "dog__x"]  # sorted paths within each class
    assert df["label"].tolist() == [0, 0, 1, 1] and df["label_name"].tolist() == ["cat", "cat", "dog", "dog"]
    assert df["filepath"].tolist() == ["cat/x.png", "cat/y.png", "dog/sub/z.jpg", "dog/x.png"]
    assert df["source_path"].tolist() == [str(root / p) for p in df["filepath"]]
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(TableError, match="no images"):
        read_image_folder(tmp_path / "empty")


def test_pixel_dataset_of_a_folder_uses_the_same_ids(tmp_path):
    from training.diffusion.data import load_pixel_dataset

    root = _folder(tmp_path / "data", ["cat/x.png", "dog/x.png", "dog/w.png"])
    ds = load_pixel_dataset(root, image_size=4)
    assert ds.sample_ids == ["cat__x", "w", "dog__x"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.class_names == {0: "cat", 1: "dog"} and tuple(ds.images.shape) == (3, 3, 4, 4)


@dataclasses.dataclass
class _Cfg:
    data: str
    values: tuple = ()
    weight_decay: float = 0.0
    untouched: int = 7


def test_dataclass_from_args_takes_same_named_flags_and_overrides():
    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--wd", type=float, default=0.1)
    add_list_flag(p, "--values", int, (1, 2), "values")
    args = p.parse_args(["--data", "d"])
    assert args.values == [1, 2]
    cfg = dataclass_from_args(_Cfg, args, values=tuple(args.values), weight_decay=args.wd)
    assert cfg == _Cfg(data="d", values=(1, 2), weight_decay=0.1, untouched=7)
    with pytest.raises(TypeError, match="no field"):
        dataclass_from_args(_Cfg, args, wd=1.0)
