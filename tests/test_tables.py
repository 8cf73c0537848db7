"""The sample-table contract: both DisCL layouts verbatim, canonical CSV/Parquet, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from curriculum.tables import (
    TableError,
    atomic_path,
    read_class_names,
    read_parquet_metadata,
    read_sample_table,
    to_discl_layout,
    write_parquet,
)

from .conftest import ASSETS


def test_reads_discl_iwildcam_layout_verbatim(tmp_path):
    df = read_sample_table(ASSETS / "sample_iwildcam.csv", data_root=tmp_path)
    assert df.attrs["layout"] == "iwildcam"
    assert list(df.columns[:5]) == ["sample_id", "filepath", "label", "label_name", "source_path"]
    row = df.iloc[0]
    assert row.sample_id == "8b5d271c-21bc-11ea-a13a-137349068a90"
    assert row.label == 58 and row.label_name == "Cheetah"
    assert row.source_path == str(
        tmp_path / "data_generation/iWildCam/sample_imgs/8b5d271c-21bc-11ea-a13a-137349068a90.jpg"
    )


def test_reads_discl_imagenet_lt_layout_verbatim():
    df = read_sample_table(ASSETS / "sample_imagenet_lt.csv")
    assert df.attrs["layout"] == "imagenet_lt"
    row = df.iloc[0]
    assert (row.sample_id, row.label, row.label_name) == ("n02093428_672", 180, "American Staffordshire Terrier")
    assert row.image_name == "n02093428_672.JPEG"
    # default data root is the current directory, as in DisCL
    assert row.source_path == str(Path.cwd() / row.filepath)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_canonical_table_csv_and_parquet_with_duplicates_dropped(tmp_path, suffix):
    src = pd.DataFrame(
        {
            "sample_id": ["a", "b", "a"],
            "filepath": ["x/a.jpg", "/abs/b.jpg", "x/a.jpg"],
            "label": [1, 2, 1],
            "label_name": ["cat", "dog", "cat"],
            "split": ["train"] * 3,
        }
    )
    path = tmp_path / f"t{suffix}"
    src.to_csv(path, index=False) if suffix == ".csv" else src.to_parquet(path)
    df = read_sample_table(path, data_root="/root")
    assert df["sample_id"].tolist() == ["a", "b"]
    assert df.attrs["n_duplicates_dropped"] == 1
    assert df["source_path"].tolist() == ["/root/x/a.jpg", "/abs/b.jpg"]
    assert df["split"].tolist() == ["train", "train"]


def test_sample_id_from_path_when_absent(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"filepath": ["d/img1.png"], "label": [3], "label_name": ["x"]}).to_csv(path, index=False)
    assert read_sample_table(path)["sample_id"].tolist() == ["img1"]


def _write(tmp_path, text):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    return p


def test_errors_name_the_file_column_and_row(tmp_path):
    with pytest.raises(TableError, match=r"bad\.csv.*unknown sample-table layout"):
        read_sample_table(_write(tmp_path, "filepath,classname\na.jpg,cat\n"))
    with pytest.raises(TableError, match=r"bad\.csv: the table has no rows"):
        read_sample_table(_write(tmp_path, "filepath,image_name,label,classname\n"))
    with pytest.raises(TableError, match=r"bad\.csv: row 2: column 'label' must be an integer, got 'seven'"):
        read_sample_table(
            _write(tmp_path, "filepath,image_name,label,classname\na.jpg,a.jpg,1,x\nb.jpg,b.jpg,seven,y\n")
        )
    with pytest.raises(TableError, match=r"row 1: empty 'filepath'"):
        read_sample_table(_write(tmp_path, "sample_id,filepath,label,label_name\na,,1,x\n"))
    with pytest.raises(TableError, match=r"sample_id 'a' names different rows"):
        read_sample_table(_write(tmp_path, "sample_id,filepath,label,label_name\na,1.jpg,1,x\na,2.jpg,1,x\n"))
    with pytest.raises(TableError, match=r"no such file"):
        read_sample_table(tmp_path / "nope.csv")


def test_almost_discl_layouts_name_the_file_closest_layout_and_missing_columns(tmp_path):
    """A DisCL header with a column dropped or misspelt: the error says which layout and which column."""
    iwildcam = (ASSETS / "sample_iwildcam.csv").read_text().splitlines()
    dropped = pd.read_csv(ASSETS / "sample_iwildcam.csv", index_col=0).drop(columns=["img_name"])
    path = tmp_path / "hard_iwildcam.csv"
    dropped.to_csv(path)  # keeps DisCL's leading unnamed index column
    with pytest.raises(TableError) as err:
        read_sample_table(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: unknown sample-table layout: closest is DisCL's iWildCam layout")
    assert "missing column(s) ['img_name']" in msg and "'label id'" in msg

    lt = tmp_path / "ImageNet_LT_hard.csv"
    lt.write_text("filepath,image_name,label\ntrain/n01/a.JPEG,a.JPEG,3\n")
    with pytest.raises(
        TableError,
        match=r"ImageNet_LT_hard\.csv: unknown sample-table layout: closest is DisCL's "
        r"ImageNet-LT layout \(filepath,image_name,label,classname\); "
        r"missing column\(s\) \['classname'\]",
    ):
        read_sample_table(lt)
    # a near-miss column name is pointed out
    typo = tmp_path / "typo.csv"
    typo.write_text(iwildcam[0].replace("img_name", "img name") + "\n" + iwildcam[1] + "\n")
    with pytest.raises(
        TableError, match=r"typo\.csv: .*iWildCam.*\['img_name'\] \(is 'img name' meant to be 'img_name'\?\)"
    ):
        read_sample_table(typo)
    canonical = tmp_path / "c.parquet"
    pd.DataFrame({"sample_id": ["a"], "filepath": ["a.jpg"], "label_name": ["cat"]}).to_parquet(canonical)
    with pytest.raises(
        TableError, match=r"c\.parquet: .*closest is the canonical layout .*missing column\(s\) \['label'\]"
    ):
        read_sample_table(canonical)
    # nothing in common with any layout: the three expected headers are listed
    with pytest.raises(TableError, match=r"none\.csv: unknown sample-table layout; expected the canonical columns"):
        read_sample_table(_write(tmp_path, "a,b\n1,2\n").rename(tmp_path / "none.csv"))


def test_label_missing_from_the_class_name_map_is_reported_with_its_sample_and_map(tmp_path):
    """gene_img's planner: a label the --class_names map lacks fails that sample, naming it, the label and the map."""
    from data_generation.generation.plan import plan_variants

    table = read_sample_table(ASSETS / "sample_iwildcam.csv", data_root=tmp_path)
    names_csv = tmp_path / "names.csv"
    pd.DataFrame({"label": [0, 1], "classname": ["empty", "peccary"]}).to_csv(names_csv, index=False)
    plan, failures = plan_variants(
        table,
        [0.5],
        [10.0],
        [10],
        "a photo of {name} in the wild",
        class_names=read_class_names(names_csv),
        class_names_source=str(names_csv),
    )
    assert len(plan) == 0 and len(failures) == 1
    sid = "8b5d271c-21bc-11ea-a13a-137349068a90"
    assert failures[0].sample_id == sid
    assert failures[0].reason == f"sample {sid!r}: label 58 ('Cheetah') has no name in the class-name map {names_csv}"
    # with the bundled map the same row plans
    plan, failures = plan_variants(
        table,
        [0.5],
        [10.0],
        [10],
        "a photo of {name} in the wild",
        class_names=read_class_names(ASSETS / "iwildcam_class_names.csv"),
    )
    assert failures == [] and plan["prompt"].tolist() == ["a photo of cheetah in the wild"]


def test_class_name_maps():
    imagenet = read_class_names(ASSETS / "imagenet_class_names.csv")
    assert len(imagenet) == 1000 and imagenet[0] == "tench"
    labels = read_class_names(ASSETS / "iwildcam_labels.csv")
    assert labels[58] == "Cheetah" and 99999 not in labels  # y=99999 has many names: ambiguous, left out
    common = read_class_names(ASSETS / "iwildcam_class_names.csv")
    assert common[58] == "cheetah" and sorted(common) == sorted(labels)


@pytest.mark.parametrize(
    "layout,asset", [("iwildcam", "sample_iwildcam.csv"), ("imagenet_lt", "sample_imagenet_lt.csv")]
)
def test_discl_layout_round_trip(tmp_path, layout, asset):
    original = read_sample_table(ASSETS / asset)
    out = tmp_path / "hard.csv"
    to_discl_layout(original, layout).to_csv(out, index=(layout == "iwildcam"))
    assert out.read_text().splitlines()[0] == (ASSETS / asset).read_text().splitlines()[0]
    again = read_sample_table(out)
    pd.testing.assert_frame_equal(
        again[["sample_id", "filepath", "label", "label_name"]],
        original[["sample_id", "filepath", "label", "label_name"]],
    )


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "f.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_parquet_metadata_round_trip(tmp_path):
    path = write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "x.parquet", {"threshold": 0.25, "model": "m"})
    assert read_parquet_metadata(path) == {"model": "m", "threshold": 0.25}
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]
