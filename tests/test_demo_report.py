"""The demo report says what the run did: schedule lines from schedule.csv, paired CIs, no verdict from a smoke run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from training.demo.run import DemoConfig, labelled_sample_grid, paired_differences, schedule_lines, verdict


def _schedule(levels, progress, next_levels):
    rows = []
    for e, lvl in enumerate(levels):
        row = {"epoch": e, "step": 10 * (e + 1), "level": lvl, "progress": "", "next_level": np.nan}
        if e < len(progress):
            row["progress"] = json.dumps(progress[e])
            row["next_level"] = next_levels[e]
        rows.append(row)
    return pd.DataFrame(rows)


def test_random_ablation_lines_name_the_drawn_level_not_the_largest_progress(tmp_path):
    # epoch 0: level 40 has the largest progress but the run drew 0; epoch 1: drew 80
    prog = [{"0": 0.01, "40": 0.30, "80": -0.1}, {"0": 0.2, "40": 0.1, "80": 0.0}]
    sched = _schedule([0, 0, 80, 100], prog, [0, 80])
    sched.to_csv(tmp_path / "schedule.csv", index=False)
    read = pd.read_csv(tmp_path / "schedule.csv")  # as the report reads it
    lines = schedule_lines("discl_random", 0, read)
    assert lines[0] == "- **discl_random** (seed 0), level per epoch: 0 0 80 100"
    nexts = [int(x.split("-> next ")[1].split()[0]) for x in lines[1:]]
    assert nexts == read["next_level"].dropna().astype(int).tolist() == [0, 80]
    assert "drawn at random; largest progress 40" in lines[1]


def test_schedule_without_next_level_column_uses_the_following_epoch(tmp_path):
    sched = _schedule([0, 40, 100], [{"0": 0.1, "40": 0.3}], [40]).drop(columns="next_level")
    lines = schedule_lines("discl_adaptive", 1, sched)
    assert lines[1].endswith("-> next 40 (largest progress)")


def test_paired_difference_is_a_t_interval_over_seeds():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        base = 0.5 + 0.05 * rng.standard_normal()
        rows.append({"variant": "baseline", "seed": seed, "overall_acc": base, "few_acc": base, "medium_acc": base})
        up = base + 0.02 + 0.01 * rng.standard_normal()
        rows.append({"variant": "discl_fixed", "seed": seed, "overall_acc": up, "few_acc": up, "medium_acc": up})
    res = pd.DataFrame(rows)
    d = (
        paired_differences(res)
        .set_index(["variant", "reference", "metric"])
        .loc[("discl_fixed", "baseline", "few_acc")]
    )
    wide = res.pivot(index="seed", columns="variant", values="few_acc")
    diff = (wide["discl_fixed"] - wide["baseline"]).to_numpy() * 100
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)
    assert d["mean_diff"] == pytest.approx(diff.mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    # the paired interval is much narrower than the spread of either variant: the seeds' shared noise cancels
    from training.demo.run import summary_table

    lines = verdict(summary_table(res), res)
    few = next(x for x in lines if "few-class" in x)
    assert "95% CI of the paired difference over 5 seeds" in few and few.endswith("a gain.")


def test_quick_preset_is_a_smoke_run_and_full_is_not():
    assert DemoConfig.quick().smoke and not DemoConfig.full().smoke


def test_generator_samples_get_labels_and_gaps(tmp_path):
    from PIL import Image

    cell = 8
    grid = np.zeros((10 * cell, 4 * cell, 3), dtype=np.uint8)
    grid[:, :, 0] = 255
    Image.fromarray(grid).save(tmp_path / "stage4.png")
    out = labelled_sample_grid(tmp_path / "stage4.png", tmp_path / "g.png", [str(i) for i in range(10)])
    with Image.open(out) as im:
        w, h = im.size
        arr = np.asarray(im.convert("RGB"))
    assert w > 4 * cell * 4 and h > 10 * cell * 4  # drawn large, with margins for the labels
    white = (arr == 255).all(axis=2)
    red = (arr[..., 0] > 200) & (arr[..., 1] < 60) & (arr[..., 2] < 60)
    # along a row through the cells, red cells are separated by white gaps: 4 runs of red
    row = red[np.argmax(red.sum(axis=1))]
    runs = np.count_nonzero(np.diff(row.astype(int)) == 1) + int(row[0])
    assert runs == 4 and white.any()


def test_score_units_follow_the_scorer_description():
    from data_generation.scoring.report import score_units

    probe = {"clip_txt_sim": "probe probability of the prompt's class", "clip_img_sim": "cosine of features"}
    assert score_units(probe) == {"clip_txt_sim": "probability", "clip_img_sim": "cosine"}
    assert score_units({"backend": "open_clip"}) == {"clip_txt_sim": "cosine", "clip_img_sim": "cosine"}
