"""Hardening of gene_img (issue 16): a rerun with changed settings, prompt templates, symlinks, long names,
decompression bombs, corrupt --prompt_json, unreadable shard manifests, a disk that stops taking writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from data_generation import gene_img
from data_generation.generation.generate import GenerationConfig, run_generation

from .conftest import SAMPLE_PHOTO


def _table(tmp_path: Path, ids=("img0", "img1"), sizes=None) -> Path:
    photo = Image.open(SAMPLE_PHOTO).convert("RGB")
    rows = []
    for i, sid in enumerate(ids):
        rel = f"imgs/{i}.png"
        (tmp_path / "imgs").mkdir(exist_ok=True)
        photo.resize((sizes or {}).get(sid, (40, 24))).save(tmp_path / rel)
        rows.append({"sample_id": sid, "filepath": rel, "label": i % 2, "label_name": ["cat", "dog"][i % 2]})
    path = tmp_path / "samples.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _argv(tmp_path, model, out="out", *extra, table=None):
    return [
        "--data_csv", str(table or _table(tmp_path)), "--output_path", str(tmp_path / out), "--data_root",
        str(tmp_path), "--model_id", str(model), "--strengths", "0.5", "--seeds", "1", "--steps", "2",
        "--no_progress", *extra,
    ]  # fmt: skip


def test_rerun_with_changed_settings_is_refused_naming_them(tmp_path, tiny_sd_dir, capsys):
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir)) == 0
    manifest = tmp_path / "out" / "manifest-part1-of-1.parquet"
    before = manifest.read_bytes()
    image = tmp_path / "out" / "cat" / "Strength50_guidance100_seed1" / "img0.jpg"
    pixels = image.read_bytes()
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_sd_dir, other_model)
    for extra, named in (
        (["--steps", "4"], "--steps 2 -> 4"),
        (["--width", "32"], "--width None -> 32"),
        (["--prompt_template", "a {name} photo"], "the prompt"),
    ):
        assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", *extra)) == 2, extra
        err = capsys.readouterr().err
        assert named in err and "--overwrite" in err and str(tmp_path / "out") in err
    assert gene_img.main(_argv(tmp_path, other_model)) == 2
    assert "--model_id" in capsys.readouterr().err
    # nothing was relabelled or rewritten by the refused reruns
    assert manifest.read_bytes() == before and image.read_bytes() == pixels
    # a new output folder, or --overwrite, makes the images with the new settings
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out4", "--steps", "4")) == 0
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--steps", "4", "--overwrite")) == 0
    assert "generated 2, skipped as done 0" in capsys.readouterr().out
    m = pd.read_parquet(manifest)
    assert m["steps"].tolist() == [4, 4]
    assert image.read_bytes() == (tmp_path / "out4" / image.relative_to(tmp_path / "out")).read_bytes()
    # the same settings again: everything is done
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--steps", "4")) == 0
    assert "generated 0, skipped as done 2" in capsys.readouterr().out


def test_a_prompt_template_without_name_is_an_error(tmp_path, tiny_sd_dir, capsys):
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--prompt_template", "a photo in the wild")) == 2
    err = capsys.readouterr().err
    assert "--prompt_template" in err and "{name}" in err
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--prompt_template", "a {name} at {place}")) == 2
    assert "only {name} may be a field" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_symlinked_class_folder_long_names_and_bombs_are_counted_failures(tmp_path, tiny_sd_dir, monkeypatch):
    long_id = "x" * 300
    table = _table(tmp_path, ids=("img0", "img1", long_id, "bomb"), sizes={"bomb": (200, 200)})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dog").symlink_to(outside, target_is_directory=True)  # img1 and bomb are dogs
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 is a bomb; 40x24 is not
    cfg = GenerationConfig(
        data_csv=str(table),
        output_path=str(tmp_path / "out"),
        data_root=str(tmp_path),
        model_id=str(tiny_sd_dir),
        strengths=[0.5],
        seeds=[1],
        steps=2,
        progress=False,
    )
    summary = run_generation(cfg)
    assert (summary.planned, summary.generated, summary.failed) == (4, 1, 3)
    assert summary.failure_reasons == {"not a safe file name": 3}  # the long id, and both dogs (symlink)
    assert list(outside.iterdir()) == []  # nothing written outside the output folder
    reasons = pd.read_csv(summary.failures_path)["reason"].tolist()
    assert any("bytes, past the" in r for r in reasons) and any("outside --output_path" in r for r in reasons)
    # without the symlink, the bomb is one failed row, counted; the run goes on
    (tmp_path / "out" / "dog").unlink()
    summary = run_generation(cfg)
    assert summary.generated == 1 and summary.skipped_done == 1
    assert summary.failure_reasons == {"not a safe file name": 1, "unreadable source image": 1}
    assert "too many pixels" in " ".join(pd.read_csv(summary.failures_path)["reason"])


def test_corrupt_prompt_json_and_unreadable_shard_manifest_are_one_line_errors(tmp_path, tiny_sd_dir, capsys):
    bad = tmp_path / "prompts.json"
    bad.write_text('{"cat": ["a cat"')
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--prompt_json", str(bad))) == 2
    err = capsys.readouterr().err
    assert err.startswith("gene_img: error: --prompt_json") and str(bad) in err and "Traceback" not in err
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir)) == 0
    shard = tmp_path / "out" / "manifest-part1-of-1.parquet"
    shard.write_bytes(b"PAR1 garbage")
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir)) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "cannot read this shard manifest" in err


def test_a_write_error_keeps_what_is_done(tmp_path, tiny_sd_dir, capsys, monkeypatch):
    import data_generation.generation.generate as gen

    real_save, calls = gen.save_image_atomic, []

    def save_then_fail(image, path, quality=95):
        calls.append(path)
        if len(calls) > 1:
            raise PermissionError(13, "Permission denied", str(path))
        return real_save(image, path, quality=quality)

    monkeypatch.setattr(gen, "save_image_atomic", save_then_fail)
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--batch_size", "2")) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(calls[1]) in err and "1 image(s) done so far are kept" in err
    assert len(pd.read_parquet(tmp_path / "out" / "manifest-part1-of-1.parquet")) == 1
    monkeypatch.setattr(gen, "save_image_atomic", real_save)
    assert gene_img.main(_argv(tmp_path, tiny_sd_dir, "out", "--batch_size", "2")) == 0
    assert "generated 1, skipped as done 1" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["", "   "])
def test_template_check_is_used_by_the_library_too(tmp_path, value):
    cfg = GenerationConfig(data_csv="x", output_path=str(tmp_path), prompt_template=value)
    with pytest.raises(ValueError, match="--prompt_template"):
        cfg.validate()


def test_a_shard_removes_only_its_own_temporary_files(tmp_path, tiny_sd_dir):
    table = _table(tmp_path, ids=("img0", "img1"))
    folder = tmp_path / "out" / "cat" / "Strength50_guidance100_seed1"
    folder.mkdir(parents=True)
    mine, theirs = folder / ".img0.jpg.k1ll3d.tmp", folder / ".img9.jpg.inflight.tmp"
    mine.write_bytes(b"half")
    theirs.write_bytes(b"another shard's write in progress")
    own_manifest = tmp_path / "out" / ".manifest-part1-of-2.parquet.k1ll3d.tmp"
    other_manifest = tmp_path / "out" / ".manifest-part2-of-2.parquet.inflight.tmp"
    own_manifest.write_bytes(b"x")
    other_manifest.write_bytes(b"x")
    cfg = GenerationConfig(
        data_csv=str(table),
        output_path=str(tmp_path / "out"),
        data_root=str(tmp_path),
        model_id=str(tiny_sd_dir),
        strengths=[0.5],
        seeds=[1],
        steps=2,
        part=1,
        total_parts=2,
        progress=False,
    )
    assert run_generation(cfg).generated == 1
    assert not mine.exists() and not own_manifest.exists()
    assert theirs.exists() and other_manifest.exists()


def test_a_run_killed_before_its_first_manifest_flush_still_refuses_changed_settings(tmp_path, tiny_sd_dir):
    class Killed(Exception):
        pass

    def kill(n_written):
        raise Killed  # stands in for SIGKILL after the first batch: no manifest flush after it

    base = dict(
        data_csv=str(_table(tmp_path)),
        output_path=str(tmp_path / "out"),
        data_root=str(tmp_path),
        model_id=str(tiny_sd_dir),
        strengths=[0.5],
        seeds=[1],
        steps=2,
        batch_size=1,
        progress=False,
    )
    with pytest.raises(Killed):
        run_generation(GenerationConfig(**base), on_batch=kill)
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 1
    with pytest.raises(ValueError, match=r"--steps 2 -> 3"):
        run_generation(GenerationConfig(**dict(base, steps=3)))
    assert run_generation(GenerationConfig(**base)).skipped_done == 1
