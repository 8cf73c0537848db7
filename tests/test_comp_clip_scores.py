"""comp_clip_scores.py run in-process through main(argv), and once as a script from the checkout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from curriculum.tables import read_parquet_metadata
from data_generation import comp_clip_scores

REPO = Path(__file__).resolve().parent.parent


def test_cli_scores_filters_and_reports(spectrum_copy, tiny_open_clip_dir, capsys):
    sp = spectrum_copy
    out = sp["root"] / "scores"
    argv = [
        "--syn_path",
        str(sp["syn"]),
        "--real_path",
        str(sp["data"]),
        "--clip_backend",
        "open_clip",
        "--clip_model",
        str(tiny_open_clip_dir),
        "--threshold",
        "0.0",
        "--img_threshold",
        "0.5",
        "--batch_size",
        "4",
        "--output_dir",
        str(out),
        "--no_progress",
    ]
    assert comp_clip_scores.main(argv) == 0
    printed = capsys.readouterr().out
    scores = pd.read_parquet(out / "clip_scores.parquet")
    kept = int(((scores["clip_txt_sim"] >= 0.0) & (scores["clip_img_sim"] >= 0.5)).sum())
    assert scores["keep"].sum() == kept and f"kept {kept} of 12" in printed
    assert "per strength:" in printed and "per class:" in printed
    assert len(pd.read_parquet(out / "manifest-filtered.parquet")) == kept
    meta = read_parquet_metadata(out / "manifest-filtered.parquet")["scoring"]
    assert meta["img_threshold"] == 0.5 and meta["scorer"]["model_id"] == f"local-dir:{tiny_open_clip_dir}"
    for name in ("clip_summary.csv", "clip_score_distributions.png", "clip_spectrum_grid.png"):
        assert (out / name).stat().st_size > 0
    assert any((sp["syn"] / "clip_cache").rglob("chunk-*.safetensors"))  # the default cache beside the images
    assert not list((sp["syn"] / "clip_cache").rglob("*.pkl"))


def test_cli_strict_exits_1_when_an_image_cannot_be_scored(spectrum_copy, tiny_open_clip_dir, capsys):
    sp = spectrum_copy
    victim = next(sp["syn"].rglob("*.jpg"))
    victim.write_bytes(b"not a jpeg")
    argv = [
        "--syn_path",
        str(sp["syn"]),
        "--clip_backend",
        "open_clip",
        "--clip_model",
        str(tiny_open_clip_dir),
        "--no_progress",
        "--no_plots",
        "--no_cache",
    ]
    assert comp_clip_scores.main(argv) == 0  # reported and marked, not fatal
    assert "1 not scorable" in capsys.readouterr().out
    assert comp_clip_scores.main(argv + ["--strict"]) == 1
    fails = pd.read_csv(sp["syn"] / "clip_failures.csv")
    assert fails["reason"].str.contains(str(victim)).all() and len(fails) == 1


def test_cli_bad_input_exits_2_fast_with_a_message(spectrum_copy, tmp_path, capsys):
    t0 = time.perf_counter()
    code = comp_clip_scores.main(
        ["--syn_path", str(spectrum_copy["syn"]), "--clip_model", "someone/absent-clip", "--no_progress"]
    )
    assert code == 2 and time.perf_counter() - t0 < 10
    assert "someone/absent-clip" in capsys.readouterr().err
    assert comp_clip_scores.main(["--syn_path", str(tmp_path / "nowhere")]) == 2
    assert "--syn_path" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert comp_clip_scores.main(["--syn_path", str(tmp_path / "empty")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_script_runs_from_a_checkout():
    res = subprocess.run(
        [sys.executable, "data_generation/comp_clip_scores.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and "--img_threshold" in res.stdout and "--syn_path" in res.stdout
