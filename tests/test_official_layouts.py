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


# --------------------------------------------------------------------------------------------------------
# class names that are not folder names
@pytest.mark.parametrize(
    "name, folder",
    [
        ("baluster / handrail", "baluster %2F handrail"),
        ("cat", "cat"),
        ("American Staffordshire Terrier", "American Staffordshire Terrier"),
        ("50% off", "50%25 off"),
        ("a\\b", "a%5Cb"),
        ("..", "%2E%2E"),
        ("../x", "..%2Fx"),
    ],
)
def test_class_folder_names_are_safe_stable_and_reversible(name, folder):
    from curriculum.images import class_folder_name, class_from_folder_name, safe_component

    assert class_folder_name(name) == folder and safe_component(folder, "x") == folder
    assert class_from_folder_name(folder) == name


def test_every_imagenet_class_has_its_own_safe_folder():
    from curriculum.images import class_folder_name, class_from_folder_name
    from curriculum.tables import read_class_names

    names = read_class_names(Path(__file__).resolve().parent.parent / "assets" / "imagenet_class_names.csv")
    slash = sorted(k for k, v in names.items() if "/" in v)
    assert slash == [421, 478, 692, 789, 842]
    assert all(class_from_folder_name(class_folder_name(v)) == v for v in names.values())


def test_a_class_named_with_a_slash_gets_its_images_and_keeps_its_name(tmp_path, tiny_sd_dir, capsys):
    """gene_img on the official ImageNet-LT list: the "/" class is written to its %2F folder, the manifest keeps
    "baluster / handrail", and a folder walk of the output maps the folder back to the name."""
    from data_generation import gene_img
    from data_generation.scoring.index import walk_spectrum

    root = make_official_imagenet_lt(tmp_path / "ImageNet", {0: 2, SLASH_LABEL: 2}, val_per_class=0, test_per_class=0)
    out = tmp_path / "syn"
    argv = ["--data_csv", str(root / "ImageNet_LT_train.txt"), "--output_path", str(out), "--model_id"]
    argv += [str(tiny_sd_dir), "--strengths", "0.5", "--seeds", "1", "--steps", "2", "--no_progress", "--merge"]
    assert gene_img.main(argv) == 0
    assert "WARNING" not in capsys.readouterr().err
    m = pd.read_parquet(out / "manifest.parquet")
    assert len(m) == 4 and set(m["label_name"]) == {"tench", "baluster / handrail"}
    slash = m[m["label"] == SLASH_LABEL]
    assert all(p.startswith("baluster %2F handrail/Strength50_guidance10") for p in slash["path"])
    assert all((out / p).is_file() for p in m["path"])
    walked = walk_spectrum(out, "a photo of {name}")
    assert set(walked["label_name"]) == {"tench", "baluster / handrail"}
    assert "a photo of baluster / handrail" in set(walked["prompt"])
    # a row that cannot be generated: exit 0 (the run goes on) but a loud line with the counts on stderr
    with open(root / "ImageNet_LT_train.txt", "a") as f:
        f.write("train/n00000000/gone.JPEG 0\n")
    assert gene_img.main(argv) == 0
    err = capsys.readouterr().err
    assert "gene_img: WARNING: 1 of 5 planned images were NOT generated (missing source image x1)" in err
    assert gene_img.main(argv + ["--strict"]) == 1
