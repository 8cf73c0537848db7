"""`python -m training.reproduce`: the ImageNet-LT pipeline end to end on a fake official tree with tiny models
(a preset with `base: imagenet_lt` points the hub-model steps at local folders), the dry run's exact counts, a
rerun that skips finished steps, and the results table next to the paper's numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from training.reproduce import run as reproduce

from .fake_trees import SLASH_LABEL, make_official_imagenet_lt

COUNTS = {0: 150, 1: 110, 2: 3, SLASH_LABEL: 3}  # two many/medium classes, two few-shot ones (one with a "/")


def _tiny_preset(tmp_path, sd_dir, clip_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""base: imagenet_lt
get_text_prompt:
  backend: template
gene_img:
  model_id: {sd_dir}
  retry_clip_model: {clip_dir}
  retry_attempts: 2
  dtype: fp32
  device: cpu
  strengths: [0.5, 1.0]
  seeds: [1]
  steps: 2
comp_clip_scores:
  clip_model: {clip_dir}
  device: cpu
  threshold: -1.0
  num_workers: 0
  no_plots: true
train_lt:
  arch: test_resnet
  img_size: 16
  augment: none
  epochs: 2
  curriculum_epoch: 1
  fixed_stages: equal  # the reference's stage boundaries need more curriculum epochs than this tiny run has
  levels: [0, 50]
  batch_size: 16
  num_workers: 0
  device: cpu
reproduce:
  sec_per_step: 0.5
"""
    )
    return path


@pytest.fixture
def lt_root(tmp_path):
    return make_official_imagenet_lt(tmp_path / "ImageNet", COUNTS, val_per_class=2, test_per_class=2)


def test_dry_run_prints_every_command_and_exact_counts(lt_root, tmp_path, capsys):
    out = tmp_path / "runs"
    assert reproduce.main(["--setup", "imagenet_lt", "--data_root", str(lt_root), "--out", str(out), "--dry_run"]) == 0
    text = capsys.readouterr().out
    # the reference grid: 10 strengths x 8 seeds x CFG 10; 5+10+...+50 = 275 denoising steps per seed
    assert "hard images: 6 (exact: every sample, among classes with <= 19 training samples" in text
    assert "synthetic images to generate: 480 (80 per hard image); denoising steps: 13200" in text
    assert f"{6 * 8 * 275 * 0.03 / 3600:.2f} GPU-hours at 0.03 GPU-s per step" in text
    for script in ("make_table.py", "mine_hard.py", "get_text_prompt.py", "gene_img.py", "comp_clip_scores.py"):
        assert f"python data_generation/{script} --preset imagenet_lt" in text
    assert "python training/train_lt.py --preset imagenet_lt" in text and "--curriculum --run_dir" in text
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.slow
def test_reproduce_end_to_end_and_rerun_skips(lt_root, tmp_path, tiny_sd_dir, tiny_hf_clip_dir, capsys):
    preset = _tiny_preset(tmp_path, tiny_sd_dir, tiny_hf_clip_dir)
    out = tmp_path / "runs"
    argv = ["--setup", "imagenet_lt", "--data_root", str(lt_root), "--out", str(out), "--preset", str(preset)]
    dry = _dry(argv, capsys)
    assert "hard images: 6 " in dry and "synthetic images to generate: 12 (2 per hard image)" in dry
    assert reproduce.main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    # every step's files
    table = pd.read_parquet(out / "data" / "table.parquet")
    assert table["split"].value_counts().to_dict() == {"train": 266, "val": 8, "test": 8}
    hard = pd.read_csv(out / "mining" / "hard.csv")
    assert len(hard) == 6 and set(hard["label"]) == {2, SLASH_LABEL}
    prompts = json.loads((out / "prompts" / "prompts.json").read_text())
    assert set(prompts) == set(hard["classname"]) and "baluster / handrail" in prompts
    m = pd.read_parquet(out / "synthetic" / "manifest.parquet")
    assert len(m) == 12 and all((out / "synthetic" / p).is_file() for p in m["path"])
    assert m["prompt"].str.startswith("a 8k real photo: ").all()
    assert (m.loc[m["label"] == SLASH_LABEL, "label_name"] == "baluster / handrail").all()
    scores = pd.read_parquet(out / "synthetic" / "clip_scores.parquet")
    assert len(scores) == 12 and scores["keep"].all()
    assert set(scores["scored_text"]) == {f"a photo of {n}" for n in hard["classname"]}
    for run in ("baseline", "discl"):
        assert (out / "phase2" / run / "final_model.safetensors").is_file()
    sched = pd.read_csv(out / "phase2" / "discl" / "schedule.csv")
    assert 0 in set(sched["level"]) or 50 in set(sched["level"])
    cfg = json.loads((out / "phase2" / "discl" / "config.json").read_text())
    assert cfg["cli_args"]["preset_record"]["file"] == str(preset.resolve())
    # the results table: the paper's rows and this run's, in percent
    res = pd.read_csv(out / "results.csv")
    assert res["Method"].tolist() == ["CE (paper)", "CE + DisCL (paper)", "CE (this run)", "CE + DisCL (this run)"]
    assert res.loc[0, "Overall"] == 35.80 and res.loc[1, "Few"] == 23.64 and res.loc[1, "Overall"] == 39.82
    metrics = pd.read_csv(out / "phase2" / "baseline" / "metrics.csv")
    best = metrics.loc[metrics["imagenet_lt/val/overall_acc"].idxmax()]
    assert res.loc[2, "Overall"] == pytest.approx(100 * best["imagenet_lt/test/overall_acc"])
    md = (out / "results.md").read_text()
    assert "| CE + DisCL (paper) | 56.78 | 30.73 | 23.64 | 39.82 | - |" in md
    assert f"| CE (this run) | {100 * best['imagenet_lt/test/many_acc']:.2f} |" in md
    assert "[report]" in text
    # a rerun skips every finished step and writes the same table
    assert reproduce.main(argv) == 0
    again = capsys.readouterr().out
    for step in ("table", "mine", "prompts", "generate", "merge", "filter", "baseline", "discl"):
        assert f"[{step}] done earlier, skipped" in again
    assert pd.read_csv(out / "results.csv").equals(res)


def _dry(argv, capsys) -> str:
    assert reproduce.main(argv + ["--dry_run"]) == 0
    return capsys.readouterr().out


def test_iwildcam_dry_run_states_what_mining_decides(tmp_path, capsys):
    from .fakes import make_fake_iwildcam

    root = make_fake_iwildcam(tmp_path / "wilds")
    out = tmp_path / "runs"
    argv = ["--setup", "iwildcam", "--data_root", str(root), "--out", str(out), "--dry_run"]
    assert reproduce.main(argv + ["--steps", "generate", "--part", "3", "--total_parts", "8"]) == 0
    text = capsys.readouterr().out
    assert "hard images: not known before mining (decided by the mining model (zero_shot_clip); at most 7715" in text
    assert f"{8 * 275 * 0.025 / 3600:.4f} GPU-hours per hard image" in text
    gen = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert len(gen) == 1 and gen[0].startswith("[generate] python data_generation/gene_img.py --preset iwildcam")
    assert f"--data_root {root / 'iwildcam_v2.0'}" in gen[0] and "--part 3 --total_parts 8" in gen[0]
    assert reproduce.main(argv) == 0
    text = capsys.readouterr().out
    assert "[prompts]" not in text and "python training/finetune_flyp.py --preset iwildcam" in text
    assert "--curriculum --progress_guid --run_dir" in text
    with pytest.raises(SystemExit) as exc:
        reproduce.main(argv + ["--steps", "prompts"])
    assert exc.value.code == 2 and "--steps prompts: not a step of iwildcam" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_iwildcam_end_to_end(tmp_path, tiny_sd_dir, tiny_hf_clip_dir, capsys):
    """The iWildCam pipeline on a fake WILDS tree: zero-shot mining and FLYP with a tiny open_clip model, the
    tiny SD pipeline and tiny HF CLIP filter; the table has the OOD/ID macro-F1 and accuracy columns."""
    from .fakes import make_fake_iwildcam, register_tiny_open_clip

    root = make_fake_iwildcam(tmp_path / "wilds")
    clip_name = register_tiny_open_clip(tmp_path / "clipcfg")
    preset = tmp_path / "tiny-iwildcam.yaml"
    preset.write_text(
        f"""base: iwildcam
mine_hard:
  clip_model: {clip_name}
  clip_pretrained: ""
  max_hard: 4
gene_img:
  model_id: {tiny_sd_dir}
  dtype: fp32
  device: cpu
  strengths: [0.5, 0.3]
  seeds: [1]
  steps: 4
  width: 32
  height: 24
comp_clip_scores:
  clip_model: {tiny_hf_clip_dir}
  device: cpu
  threshold: -1.0
  num_workers: 0
  no_plots: true
finetune_flyp:
  model: {clip_name}
  pretrained: ""
  epochs: 2
  curriculum_epoch: 1
  batch_size: 8
  lr: 0.0001
  warmup_steps: 2
  curriculum_val_size: 2
  num_workers: 0
  device: cpu
"""
    )
    out = tmp_path / "runs"
    argv = ["--setup", "iwildcam", "--data_root", str(root), "--out", str(out), "--preset", str(preset)]
    assert reproduce.main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "hard images: 4 (from the finished mining step" in text  # the plan, restated once mining has run
    hard = pd.read_csv(out / "mining" / "hard.csv", index_col=0)
    assert len(hard) == 4 and list(hard.columns) == ["label id", "label name", "filepath", "img_name"]
    m = pd.read_parquet(out / "synthetic" / "manifest.parquet")
    assert len(m) == 8 and m["prompt"].str.endswith(" in the wild").all()
    assert (out / "phase2" / "discl" / "schedule.csv").is_file()
    res = pd.read_csv(out / "results.csv")
    assert res["Method"].tolist() == [
        "FLYP (paper)",
        "FLYP + DisCL (paper)",
        "FLYP (this run)",
        "FLYP + DisCL (this run)",
    ]
    assert res.loc[0, "OOD F1"] == 35.5 and res.loc[1, "OOD F1"] == 38.2 and res.loc[1, "ID F1"] == 54.3
    metrics = pd.read_csv(out / "phase2" / "discl" / "metrics.csv")
    best = metrics.loc[metrics["iwildcam/id_val/macro_f1"].idxmax()]
    assert res.loc[3, "OOD F1"] == pytest.approx(100 * best["iwildcam/test/macro_f1"])
    assert res.loc[3, "ID acc"] == pytest.approx(100 * best["iwildcam/id_test/acc"])
