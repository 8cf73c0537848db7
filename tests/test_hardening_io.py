"""Hardening of the file-level CLIs (issue 16): shard merging, comp_clip_scores's outputs as one unit, --walk
counts, pixel values in every loader, file modes, make_table, inspect_scores, get_text_prompt."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curriculum.tables import read_parquet_metadata, write_csv, write_parquets
from data_generation import comp_clip_scores, get_text_prompt, inspect_scores, make_table, merge_manifests
from training.trainers.data import load_synthetic


def _gradient16(path, exif_orientation=None):
    """A 16-bit grayscale PNG (values up to 40000 of 65535) or an 8-bit JPEG with an EXIF orientation."""
    arr = np.tile(np.linspace(0, 40000, 24), (16, 1)).astype(np.uint16)  # left to right
    if exif_orientation is None:
        Image.fromarray(arr).save(path)
        return arr
    im = Image.fromarray((arr // 257).astype(np.uint8)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = exif_orientation
    im.save(path, exif=exif, quality=100)
    return arr


def test_16bit_png_and_exif_orientation_in_phase2_and_diffusion_loaders(tmp_path):
    from curriculum.images import load_rgb
    from training.diffusion.data import load_image as diffusion_image
    from training.trainers.data import load_image as training_image

    arr = _gradient16(tmp_path / "deep.png")
    expected = np.asarray(load_rgb(tmp_path / "deep.png"))
    got = np.asarray(training_image(str(tmp_path / "deep.png")))
    assert np.array_equal(got, expected)  # the one reader: scaled, not white
    assert abs(int(got[..., 0].max()) - round(40000 / 65535 * 255)) <= 1 and got.mean() < 200
    d = diffusion_image(tmp_path / "deep.png", 16)  # centre crop 16x16 of the 24x16 gradient, in [-1, 1]
    assert d.shape == (16, 16, 3) and d.max() < 0.3 and d.min() < -0.7
    assert arr.dtype == np.uint16
    # EXIF orientation 6 (rotate 90°): a 24x16 file is a 16x24 (portrait) image in both loaders
    _gradient16(tmp_path / "rot.jpg", exif_orientation=6)
    assert training_image(str(tmp_path / "rot.jpg")).size == (16, 24)
    plain = diffusion_image(tmp_path / "deep.png", 16)
    rotated = diffusion_image(tmp_path / "rot.jpg", 16)
    # rotated: the gradient runs down the rows instead of along the columns
    assert np.abs(np.diff(rotated[..., 0], axis=0)).mean() > np.abs(np.diff(rotated[..., 0], axis=1)).mean()
    assert np.abs(np.diff(plain[..., 0], axis=1)).mean() > np.abs(np.diff(plain[..., 0], axis=0)).mean()


def test_merge_refuses_unreadable_shards_and_shards_without_synthetic_id(tmp_path, capsys):
    good = pd.DataFrame({"synthetic_id": ["a/S", "b/S"], "sample_id": ["a", "b"], "path": ["x", "y"]})
    good.to_parquet(tmp_path / "manifest-part1-of-2.parquet")
    good.drop(columns="synthetic_id").assign(sample_id=["c", "d"]).to_parquet(tmp_path / "manifest-part2-of-2.parquet")
    assert merge_manifests.main(["--output_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest-part2-of-2.parquet" in err and "synthetic_id" in err
    assert not (tmp_path / "manifest.parquet").exists()
    (tmp_path / "manifest-part2-of-2.parquet").write_bytes(b"PAR1 broken")
    assert merge_manifests.main(["--output_path", str(tmp_path)]) == 2
    assert "manifest-part2-of-2.parquet: cannot read this shard manifest" in capsys.readouterr().err


def test_scoring_index_refuses_a_shard_without_synthetic_id(tmp_path):
    from data_generation.scoring.index import SpectrumError, read_manifest

    cols = {"synthetic_id": ["a/S"], "sample_id": ["a"], "prompt": ["p"], "strength": [0.5], "path": ["x"]}
    pd.DataFrame(cols).to_parquet(tmp_path / "manifest-part1-of-2.parquet")
    pd.DataFrame(cols).drop(columns="synthetic_id").to_parquet(tmp_path / "manifest-part2-of-2.parquet")
    with pytest.raises(SpectrumError, match=r"part2-of-2\.parquet: manifest lacks column\(s\) \['synthetic_id'\]"):
        read_manifest(tmp_path)


def test_clip_scores_outputs_are_one_unit_and_walk_counts_hidden_files(spectrum_copy, tiny_open_clip_dir, capsys):
    sp = spectrum_copy
    hidden = next(sp["syn"].glob("*/Strength*/*.jpg"))
    shutil.copy(hidden, hidden.with_name(".hidden.jpg"))
    argv = [
        "--syn_path", str(sp["syn"]), "--real_path", str(sp["data"]), "--clip_backend", "open_clip",
        "--clip_model", str(tiny_open_clip_dir), "--threshold", "0.0", "--no_plots", "--no_progress", "--walk",
        "--data_csv", str(sp["csv"]),
    ]  # fmt: skip
    assert comp_clip_scores.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 hidden image file(s) (name starting with '.') skipped by --walk" in out
    scores, filtered = sp["syn"] / "clip_scores.parquet", sp["syn"] / "manifest-filtered.parquet"
    sid = read_parquet_metadata(scores)["scoring_id"]
    assert sid == read_parquet_metadata(filtered)["scoring_id"] and len(sid) == 16
    assert len(load_synthetic(filtered)) == len(pd.read_parquet(filtered))
    # a kill between the two renames: a filtered manifest of another run beside the scores is detected
    old = pd.read_parquet(filtered)
    write_parquets([(old, filtered, dict(read_parquet_metadata(filtered), scoring_id="0" * 16))])
    with pytest.raises(ValueError, match=r"come from different comp_clip_scores runs.*rerun comp_clip_scores"):
        load_synthetic(filtered)
    assert comp_clip_scores.main(argv) == 0  # the rerun rewrites both as one unit
    assert read_parquet_metadata(filtered)["scoring_id"] == read_parquet_metadata(scores)["scoring_id"]


def test_write_parquets_leaves_every_target_as_it_was_on_failure(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_parquets([(pd.DataFrame({"x": [1]}), a, {"v": 1}), (pd.DataFrame({"x": [1]}), b, {"v": 1})])
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot write this
    with pytest.raises(Exception):  # noqa: B017  (pyarrow's own error type)
        write_parquets([(pd.DataFrame({"x": [2]}), a, {"v": 2}), (bad, b, {"v": 2})])
    assert read_parquet_metadata(a) == {"v": 1} and read_parquet_metadata(b) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # no temporary files left


def test_output_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_csv(pd.DataFrame({"x": [1]}), tmp_path / "t.csv")
        assert (path.stat().st_mode & 0o777) == 0o644
        os.umask(0o002)
        path = write_csv(pd.DataFrame({"x": [1]}), tmp_path / "t.csv")
        assert (path.stat().st_mode & 0o777) == 0o664
    finally:
        os.umask(old)


def test_make_table_refuses_to_overwrite_its_input(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("sample_id,filepath,label,label_name\na,a.jpg,0,cat\n")
    before = table.read_bytes()
    assert make_table.main(["--dataset", "table", "--data", str(table), "--out", str(table)]) == 2
    assert "--out" in capsys.readouterr().err and table.read_bytes() == before


def test_inspect_scores_prints_the_report(spectrum_copy, tiny_open_clip_dir, tmp_path, capsys):
    sp = spectrum_copy
    argv = [
        "--syn_path", str(sp["syn"]), "--real_path", str(sp["data"]), "--clip_backend", "open_clip",
        "--clip_model", str(tiny_open_clip_dir), "--threshold", "0.0", "--no_plots", "--no_progress",
    ]  # fmt: skip
    assert comp_clip_scores.main(argv) == 0
    capsys.readouterr()
    assert inspect_scores.main(["--scores", str(sp["syn"]), "--plots_dir", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "per strength:" in out and "all:" in out and "recorded thresholds: clip_txt_sim >= 0.0" in out
    assert (tmp_path / "plots" / "clip_score_distributions.png").is_file()
    assert inspect_scores.main(["--scores", str(sp["syn"]), "--threshold", "2.0"]) == 0
    out = capsys.readouterr().out
    assert "re-applied: clip_txt_sim >= 2.0" in out
    all_line = out.split("all:")[1].splitlines()[2].split()
    assert all_line[0] == "all" and all_line[2] == "0"  # nothing reaches a cosine of 2
    assert inspect_scores.main(["--scores", str(tmp_path / "none.parquet")]) == 2
    assert "none.parquet: no such file" in capsys.readouterr().err


def _names_csv(tmp_path):
    p = tmp_path / "hard.csv"
    p.write_text("sample_id,filepath,label,label_name\na,a.jpg,0,cat\nb,b.jpg,1,dog\n")
    return p


def test_get_text_prompt_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad_table = tmp_path / "bad.csv"
    bad_table.write_text("foo,bar\n1,2\n")
    out = tmp_path / "prompts.json"
    argv = ["--backend", "openai", "--api_base", "http://127.0.0.1:9", "--prompt_json", str(out)]
    assert get_text_prompt.main(["--data_csv", str(bad_table), *argv]) == 2
    assert "bad.csv" in capsys.readouterr().err
    out.write_text('{"cat": ["a cat"')
    assert get_text_prompt.main(["--data_csv", str(_names_csv(tmp_path)), *argv]) == 2
    err = capsys.readouterr().err
    assert "--prompt_json" in err and "not valid JSON" in err and out.read_text() == '{"cat": ["a cat"'


def test_a_dead_prompt_server_costs_one_timeout(tmp_path, capsys):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts connections, never answers
    stop = threading.Event()
    conns = []

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        (tmp_path / "prompts.json").write_text(json.dumps({"cat": ["a cat " * 20]}))
        argv = [
            "--data_csv", str(_names_csv(tmp_path)), "--prompt_json", str(tmp_path / "prompts.json"),
            "--backend", "openai", "--api_base", f"http://127.0.0.1:{srv.getsockname()[1]}", "--timeout", "0.5",
        ]  # fmt: skip
        t0 = time.perf_counter()
        assert get_text_prompt.main(argv) == 2
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
    err = capsys.readouterr().err
    assert "did not answer within --timeout 0.5s" in err and "saved in" in err
    assert elapsed < 0.5 * 3  # one request's timeout, not --timeout x --max_tries x classes
    assert json.loads((tmp_path / "prompts.json").read_text()) == {"cat": ["a cat " * 20]}


def test_damaged_diffusion_checkpoints_are_one_line_errors(tmp_path, capsys):
    from training import train_diffusion

    root = tmp_path / "folder"
    g = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(g.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    argv = [
        "--data", str(root), "--output_dir", str(out), "--image_size", "16", "--block_out_channels", "16", "32",
        "--batch_size", "4", "--stage_starts", "0.5", "0", "--stage_epochs", "1", "1", "--sample_steps", "2",
        "--samples_per_class", "1", "--no_progress", "--device", "cpu",
    ]  # fmt: skip
    assert train_diffusion.main(argv + ["--stop_after_epoch", "1"]) == 0
    ckpt = out / "checkpoints" / "epoch-0001"
    (out / "checkpoints" / ".epoch-0002.k1ll3d").mkdir()  # a save killed half-way
    (out / "checkpoints" / ".epoch-0002.k1ll3d" / "unet.safetensors").write_bytes(b"half")
    raw = (ckpt / "unet.safetensors").read_bytes()
    (ckpt / "unet.safetensors").write_bytes(raw[: len(raw) // 3])
    assert train_diffusion.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{ckpt}: the checkpoint is damaged" in err and "--no_resume" in err
    assert not (out / "checkpoints" / ".epoch-0002.k1ll3d").exists()  # cleaned on the next run
    (ckpt / "unet.safetensors").write_bytes(raw)
    (ckpt / "state.json").write_text("{")
    assert train_diffusion.main(argv) == 2
    assert f"{ckpt / 'state.json'}: the checkpoint is damaged" in capsys.readouterr().err


def test_mine_hard_unwritable_outputs_are_one_line_errors(tmp_path, capsys):
    from data_generation import mine_hard

    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append({"sample_id": f"s{i}", "filepath": f"imgs/{i}.png", "label": i % 2, "label_name": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "afile").write_text("x")  # a path below a regular file cannot be created (even by root)
    argv = [
        "--dataset", "table", "--data", str(tmp_path / "t.csv"), "--data_root", str(tmp_path), "--scorers", "random",
        "--output_csv", str(tmp_path / "afile" / "h.csv"), "--scores_parquet", str(tmp_path / "afile" / "s.parquet"),
    ]  # fmt: skip
    assert mine_hard.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mine_hard: error: cannot write the outputs") and "afile" in err


def test_prompt_file_resume_with_changed_settings_is_refused(tmp_path):
    from data_generation.prompting.text_prompts import generate_prompt_file, settings_path

    def ask(prompt):
        return json.dumps([f"scene {i} with many words in it for the check" for i in range(3)])

    out = tmp_path / "prompts.json"
    settings = {"backend": "fake", "model": None, "n_prompts": 2, "min_words": 5, "hint": ""}
    run = generate_prompt_file(["cat"], out, ask, n=2, min_words=5, progress=False, settings=settings)
    assert run.written == 1 and json.loads(settings_path(out).read_text()) == settings
    before = out.read_text()
    changed = dict(settings, n_prompts=3, hint="camera trap")
    with pytest.raises(ValueError, match=r"other settings \(--hint '' -> 'camera trap', --n_prompts 2 -> 3\)"):
        generate_prompt_file(["cat", "dog"], out, ask, n=3, min_words=5, progress=False, settings=changed)
    assert out.read_text() == before
    # the same settings resume (dog is added, cat kept); --overwrite asks every class again
    run = generate_prompt_file(["cat", "dog"], out, ask, n=2, min_words=5, progress=False, settings=settings)
    assert (run.written, run.skipped_done) == (1, 1)
    run = generate_prompt_file(["cat"], out, ask, n=3, progress=False, min_words=5, settings=changed, overwrite=True)
    assert run.written == 1 and len(json.loads(out.read_text())["cat"]) == 3
    assert json.loads(settings_path(out).read_text()) == changed


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bombs are planted
def test_a_decompression_bomb_is_a_counted_row_in_comp_clip_scores(spectrum_copy, tiny_open_clip_dir, monkeypatch):
    from data_generation.scoring.score import ScoringConfig, score_spectrum

    sp = spectrum_copy
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the real images (> 2000 px) are bombs now
    cfg = ScoringConfig(
        syn_path=str(sp["syn"]),
        real_path=str(sp["data"]),
        clip_backend="open_clip",
        clip_model=str(tiny_open_clip_dir),
        threshold=0.0,
        plots=False,
        progress=False,
        no_cache=True,
    )
    result = score_spectrum(cfg)
    assert result.n_total == 12 and result.n_failed == 12  # every row names its real image; none is lost
    assert all("too many pixels" in s for s in result.scores["score_status"])
    assert result.scores["clip_txt_sim"].notna().all()  # the synthetic images were still scored


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bombs are planted
def test_a_decompression_bomb_in_mining_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from data_generation import mine_hard

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "small.png")
    Image.new("RGB", (256, 256)).save(tmp_path / "imgs" / "bomb.png")
    rows = [("small", "imgs/small.png", 0, "a"), ("bomb", "imgs/bomb.png", 1, "b")]
    pd.DataFrame(rows, columns=["sample_id", "filepath", "label", "label_name"]).to_csv(tmp_path / "t.csv", index=False)
    from safetensors.torch import save_file

    from curriculum.weights_io import create_timm_classifier

    model, _, _ = create_timm_classifier("test_resnet", 2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 256x256 > 2 x 20000: a bomb; the 160 px crop is not
    argv = [
        "--dataset", "table", "--data", str(tmp_path / "t.csv"), "--data_root", str(tmp_path),
        "--scorers", "checkpoint", "--classifier_arch", "test_resnet",
        "--classifier_weights", str(tmp_path / "w.safetensors"),
        "--output_csv", str(tmp_path / "h.csv"), "--scores_parquet", str(tmp_path / "s.parquet"),
    ]  # fmt: skip
    assert mine_hard.main(argv) == 2
    err = capsys.readouterr().err
    assert "bomb.png" in err and "too many pixels" in err and "Traceback" not in err
