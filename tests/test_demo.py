"""The embedded default: the offline end-to-end demo (--quick preset) and its report arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.demo import run as demo
from training.demo.run import DemoConfig, summary_table, verdict


def test_verdict_says_gain_loss_or_no_clear_difference():
    results = pd.DataFrame(
        [
            {"variant": "baseline", "seed": 0, "overall_acc": 0.80, "few_acc": 0.50, "medium_acc": 0.9},
            {"variant": "baseline", "seed": 1, "overall_acc": 0.82, "few_acc": 0.52, "medium_acc": 0.9},
            {"variant": "discl_fixed", "seed": 0, "overall_acc": 0.81, "few_acc": 0.70, "medium_acc": 0.9},
            {"variant": "discl_fixed", "seed": 1, "overall_acc": 0.82, "few_acc": 0.72, "medium_acc": 0.9},
            {"variant": "discl_adaptive", "seed": 0, "overall_acc": 0.60, "few_acc": 0.50, "medium_acc": 0.7},
            {"variant": "discl_adaptive", "seed": 1, "overall_acc": 0.62, "few_acc": 0.54, "medium_acc": 0.7},
        ]
    )
    s = summary_table(results)
    assert s["variant"].tolist() == ["baseline", "discl_fixed", "discl_adaptive"]
    row = s.set_index("variant").loc["discl_fixed"]
    assert row["few_acc_mean"] == pytest.approx(71.0) and row["few_acc_std"] == pytest.approx(np.std([70, 72], ddof=1))
    lines = verdict(s)
    assert any("discl_fixed vs baseline, few-class" in x and "+20.0 points" in x and "a gain" in x for x in lines)
    assert any("discl_fixed vs baseline, overall" in x and "no clear difference" in x for x in lines)
    assert any("discl_adaptive vs baseline, overall" in x and "a loss" in x for x in lines)
    assert any("discl_adaptive vs baseline, few-class" in x and "no clear difference" in x for x in lines)


@pytest.mark.slow
def test_quick_demo_runs_both_phases_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--out", str(out)]) == 0
    cfg = DemoConfig.quick()
    rep = out / "report"
    text = (rep / "report.md").read_text()
    for png in ("generator_samples.png", "spectrum_grid.png", "score_distributions.png"):
        assert (rep / png).stat().st_size > 1000 and f"({png})" in text
    # Phase 1 files: hard CSV (few-shot classes only), full spectrum manifest, scores with keep
    hard = pd.read_csv(out / "mining" / "hard.csv")
    table = pd.read_csv(out / "data" / "samples.csv")
    train_counts = table[table["split"] == "train"].groupby("label").size()
    assert len(hard) > 0 and set(hard["label"]) <= set(train_counts[train_counts < 20].index)
    manifest = pd.read_parquet(out / "synthetic" / "manifest.parquet")
    assert len(manifest) == len(hard) * len(cfg.strengths) * len(cfg.gen_seeds)
    scores = pd.read_parquet(out / "synthetic" / "clip_scores.parquet")
    assert scores["clip_txt_sim"].between(0, 1).all() and scores["keep"].any()
    assert (scores["keep"] == (scores["clip_txt_sim"] >= cfg.threshold)).all()
    assert (out / "mining" / "prototypes.safetensors").is_file()
    # Phase 2: every variant x seed ran; the adaptive schedule recorded its progress values
    results = pd.read_csv(rep / "results_per_seed.csv")
    assert len(results) == len(cfg.variants) * len(cfg.seeds)
    for col in ("overall_acc", "few_acc", "medium_acc"):
        assert results[col].map(math.isfinite).all() and results[col].between(0, 1).all()
    summary = pd.read_csv(rep / "results.csv")
    assert summary[[c for c in summary.columns if c.endswith(("_mean", "_std"))]].map(math.isfinite).all().all()
    sched = pd.read_csv(out / "phase2" / "discl_adaptive-seed0" / "schedule.csv")
    assert sched["progress"].astype(str).str.startswith("{").any()
    fixed = pd.read_csv(out / "phase2" / "discl_fixed-seed0" / "schedule.csv")
    assert fixed["level"].tolist()[: cfg.curriculum_epoch] == sorted(fixed["level"].tolist()[: cfg.curriculum_epoch])
    assert set(fixed["level"].tolist()[cfg.curriculum_epoch :]) == {100}
    # --quick is a smoke preset: it says so and draws no verdict (issue 17); the paired CIs are still shown
    assert "This is a smoke run" in text and "vs baseline" in text and "95% CI" in text
    assert "What the numbers show" not in text and " - a gain." not in text and " - a loss." not in text
    # the schedule lines are the schedules the runs followed (the random ablation's drawn level included)
    for variant in ("discl_adaptive", "discl_random"):
        sched = pd.read_csv(out / "phase2" / f"{variant}-seed0" / "schedule.csv")
        levels = " ".join(str(int(v)) for v in sched["level"])
        assert f"- **{variant}** (seed 0), level per epoch: {levels}" in text
        shown = [line for line in text.splitlines() if line.startswith("  - after epoch")]
        drawn = sched["next_level"].dropna().astype(int).tolist()[:6]
        mine = [line for line in shown if ("drawn at random" in line) == (variant == "discl_random")]
        assert [int(line.split("-> next ")[1].split()[0]) for line in mine] == drawn
    # a rerun finds every step done and only rewrites the report
    assert demo.main(["--quick", "--out", str(out)]) == 0
