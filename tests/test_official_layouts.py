"""ImageNet-LT's official lists read as they are (curriculum/imagenet_lt.py) by every command that takes a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from curriculum.tables import TableError, read_parquet_metadata, read_sample_table

from .fake_trees import SLASH_LABEL, make_official_imagenet_lt

COUNTS = {0: 30, 1: 12, SLASH_LABEL: 4}  # many-ish, few, few (the "/" class)


@pytest.fixture
def lt_root(tmp_path):
    return make_official_imagenet_lt(tmp_path / "ImageNet", COUNTS)


def test_root_folder_is_one_table_with_a_split_column(lt_root):
    df = read_sample_table(lt_root)
    assert df["split"].value_counts().to_dict() == {"train": 46, "val": 6, "test": 6}
    assert df.attrs["layout"] == "imagenet_lt" and df.attrs["data_root"] == str(lt_root)
    # train counts come from the training list for every split; the official paths are kept as they are
    assert df.groupby("label")["train_count"].first().to_dict() == COUNTS
    assert df.loc[df["split"] == "test", "shot"].tolist() == ["medium"] * 2 + ["few"] * 4
    assert df.loc[df["label"] == SLASH_LABEL, "label_name"].iloc[0] == "baluster / handrail"
    first = (lt_root / "ImageNet_LT_train.txt").read_text().splitlines()[0].split()[0]
    assert df["filepath"].iloc[0] == first
    assert all(Path(p).is_file() for p in df["source_path"])


def test_one_list_file_takes_its_split_and_the_sibling_training_counts(lt_root):
    df = read_sample_table(lt_root / "ImageNet_LT_test.txt")
    assert set(df["split"]) == {"test"} and len(df) == 6
    assert df.groupby("label")["train_count"].first().to_dict() == COUNTS  # from ImageNet_LT_train.txt beside it


def test_a_bad_line_names_the_file_and_line(lt_root):
    (lt_root / "ImageNet_LT_val.txt").write_text("train/a.JPEG 0\nno_label_here\n")
    with pytest.raises(TableError, match=r"ImageNet_LT_val.txt: line 2: expected 'relative/path label'"):
        read_sample_table(lt_root)


def test_make_table_writes_the_one_table_and_train_lt_reads_the_root(lt_root, tmp_path):
    from data_generation import make_table

    out = tmp_path / "inlt.parquet"
    assert make_table.main(["--dataset", "imagenet_lt", "--data", str(lt_root), "--out", str(out)]) == 0
    t = pd.read_parquet(out)
    assert t["split"].value_counts().to_dict() == {"train": 46, "val": 6, "test": 6}
    assert read_parquet_metadata(out)["data_root"] == str(lt_root)
    # the trainer's reader takes the written table and the root folder alike, with the same rows
    again = read_sample_table(out, data_root=lt_root)
    direct = read_sample_table(lt_root)
    assert again["sample_id"].tolist() == direct["sample_id"].tolist()
    assert again["source_path"].tolist() == direct["source_path"].tolist()
