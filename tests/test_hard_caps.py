"""Capping the hard set (--max_hard, --max_hard_per_class): the hardest by mean difficulty rank, deterministic,
reported before any generation is planned."""

from __future__ import annotations

import pandas as pd
import pytest

from data_generation.mining.rules import HardRule, select_hard

from .fake_trees import SLASH_LABEL, make_official_imagenet_lt


def _scores() -> pd.DataFrame:
    # 8 samples, two classes; true_prob: smaller = harder; loss: larger = harder (they agree here)
    sid = [f"s{i}" for i in range(8)]
    tp = [0.9, 0.1, 0.5, 0.3, 0.05, 0.7, 0.2, 0.2]
    df = pd.DataFrame({"label": [0, 0, 0, 0, 1, 1, 1, 1], "true_prob": tp, "loss": [1 - t for t in tp]}, index=sid)
    return df.rename_axis("sample_id")


def test_caps_keep_the_hardest_deterministically():
    s = _scores()
    every = select_hard(s, HardRule())
    assert every.sum() == 8
    top3 = select_hard(s, HardRule(max_hard=3))
    assert sorted(top3[top3].index) == ["s1", "s4", "s6"]  # 0.05, 0.1 and the first of the 0.2 tie by sample_id
    per1 = select_hard(s, HardRule(max_per_class=1))
    assert sorted(per1[per1].index) == ["s1", "s4"]
    both = select_hard(s, HardRule(max_per_class=2, max_hard=3))
    assert sorted(both[both].index) == ["s1", "s4", "s6"]
    # the same answer whatever the row order
    shuffled = s.sample(frac=1.0, random_state=3)
    again = select_hard(shuffled, HardRule(max_hard=3))
    assert sorted(again[again].index) == ["s1", "s4", "s6"]
    assert "capped (at most 2 per class, at most 3 in all)" in HardRule(max_per_class=2, max_hard=3).describe()
    with pytest.raises(ValueError, match="--max_hard must be >= 1"):
        select_hard(s, HardRule(max_hard=0))


def test_mine_hard_caps_and_reports_the_size(tmp_path, capsys):
    from data_generation import mine_hard

    root = make_official_imagenet_lt(tmp_path / "ImageNet", {0: 30, 1: 12, SLASH_LABEL: 4})
    argv = ["--preset", "imagenet_lt", "--data", str(root), "--output_csv", str(tmp_path / "hard.csv")]
    argv += ["--scores_parquet", str(tmp_path / "scores.parquet")]
    assert mine_hard.main(argv) == 0
    out = capsys.readouterr().out
    assert "hard: 16 of 46 samples ->" in out  # every training image of the two few-shot classes (12 + 4)
    assert mine_hard.main(argv + ["--max_hard", "10", "--max_hard_per_class", "7"]) == 0
    out = capsys.readouterr().out
    assert "hard: 10 of 46 samples (the rule alone: 16; capped by --max_hard/--max_hard_per_class)" in out
    full = pd.read_parquet(tmp_path / "scores.parquet")
    per_class = full.loc[full["hard"], "label"].value_counts()
    assert full["hard"].sum() == 10 and per_class.max() <= 7 and set(per_class.index) == {1, SLASH_LABEL}
    # the kept ones are the hardest by the random scorer's value (larger = harder), per class at most 7
    kept = full[full["hard"]]
    dropped = full[~full["hard"] & full["label"].isin([1, SLASH_LABEL])]
    for y in (1, SLASH_LABEL):
        if per_class[y] < 7 and len(dropped[dropped["label"] == y]):
            assert kept["random"].min() >= dropped.loc[dropped["label"] == y, "random"].max()
    hard = pd.read_csv(tmp_path / "hard.csv")
    assert len(hard) == 10 and list(hard.columns) == ["filepath", "image_name", "label", "classname"]
