"""gene_img end to end on tiny real diffusers pipelines saved to and loaded from local folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curriculum.contracts import MANIFEST_COLUMNS
from curriculum.tables import read_parquet_metadata
from data_generation import gene_img, merge_manifests
from data_generation.generation.backends import GenerationBatch, detect_generator, load_generator
from data_generation.generation.generate import GenerationConfig, process_shard, run_generation
from data_generation.generation.seeding import make_generator

from .conftest import ASSETS, REPO, SAMPLE_PHOTO

STRENGTHS = [0.5, 1.0]
SEEDS = [10, 20]


def _photo(size=(80, 45), mode="RGB", color=None) -> Image.Image:
    im = Image.open(SAMPLE_PHOTO).convert("RGB").resize(size)
    if color is not None:
        im = Image.new("RGB", size, color)
    return im.convert(mode) if mode != "RGB" else im


def _table(tmp_path: Path, n: int = 3) -> Path:
    """A canonical sample table of n small real-photo crops in two classes."""
    rows = []
    photo = Image.open(SAMPLE_PHOTO).convert("RGB")
    for i in range(n):
        p = tmp_path / "imgs" / f"img{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        photo.crop((i * 40, 0, i * 40 + 400, 225)).resize((80, 45)).save(p)
        rows.append(
            {
                "sample_id": f"img{i}",
                "filepath": f"imgs/img{i}.jpg",
                "label": i % 2,
                "label_name": ["cheetah", "zebra"][i % 2],
            }
        )
    path = tmp_path / "samples.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _cfg(tmp_path, model_dir, out="out", **kw) -> GenerationConfig:
    base = dict(
        data_csv=str(_table(tmp_path)),
        output_path=str(tmp_path / out),
        data_root=str(tmp_path),
        model_id=str(model_dir),
        strengths=STRENGTHS,
        seeds=SEEDS,
        steps=4,
        batch_size=3,
        progress=False,
    )
    base.update(kw)
    return GenerationConfig(**base)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.parametrize("fixture", ["tiny_sd_dir", "tiny_sdxl_dir"])
def test_batched_generation_equals_plain_diffusers_pipeline(request, fixture):
    """One batched call over two images x two seeds equals the plain pipeline on one image per call."""
    from diffusers import AutoPipelineForImage2Image

    model_dir = request.getfixturevalue(fixture)
    assert detect_generator(str(model_dir)) == "diffusers-img2img"
    gen = load_generator(str(model_dir))
    images = [_photo(), _photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    images = [im.resize((64, 36)) for im in images]
    items = [(k, s) for k in (0, 1) for s in SEEDS]
    prompts = ["a photo of cheetah in the wild", "a photo of zebra in the wild"]
    batch = GenerationBatch(
        images=[images[k] for k, _ in items],
        image_keys=[f"img{k}" for k, _ in items],
        prompts=[prompts[k] for k, _ in items],
        generators=[make_generator(f"img{k}", s) for k, s in items],
        strength=0.6,
        text_guidance=7.5,
        steps=5,
    )
    got = gen.generate(batch)

    pipe = AutoPipelineForImage2Image.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    for (k, s), out in zip(items, got):
        ref = pipe(
            prompt=prompts[k],
            image=images[k],
            strength=0.6,
            guidance_scale=7.5,
            num_inference_steps=5,
            generator=make_generator(f"img{k}", s),
            output_type="np",
        ).images[0]
        assert out.shape == ref.shape == (36, 64, 3)
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    # different seeds give different images; the same (image, seed) is reproducible
    assert np.abs(got[0] - got[1]).max() > 1e-3
    again = gen.generate(
        GenerationBatch(
            images=[images[0]],
            image_keys=["img0"],
            prompts=[prompts[0]],
            generators=[make_generator("img0", SEEDS[0])],
            strength=0.6,
            text_guidance=7.5,
            steps=5,
        )
    )
    np.testing.assert_allclose(again[0], got[0], atol=1e-5, rtol=0)


def _count_vae_encodes(gen) -> list[int]:
    """Wrap the backend's `vae.encode`; return the list that receives each call's batch size."""
    calls: list[int] = []
    encode = gen.pipe.vae.encode

    def counted(x, *args, **kwargs):
        calls.append(int(x.shape[0]))
        return encode(x, *args, **kwargs)

    gen.pipe.vae.encode = counted
    return calls


def test_each_source_image_is_vae_encoded_once_per_run(tmp_path, tiny_sdxl_dir):
    """2 images x 3 strengths x 2 seeds: one VAE encode per image, and the very images an uncached run makes."""
    kw = dict(
        data_csv=str(_table(tmp_path, n=2)),
        data_root=str(tmp_path),
        model_id=str(tiny_sdxl_dir),
        strengths=[0.5, 0.75, 1.0],
        seeds=[10, 20],
        steps=4,
        batch_size=3,
        progress=False,
    )
    gen = load_generator(str(tiny_sdxl_dir))
    calls = _count_vae_encodes(gen)
    summary = run_generation(GenerationConfig(output_path=str(tmp_path / "cached"), **kw), generator=gen)
    assert (summary.generated, summary.failed) == (12, 0)
    assert calls == [1, 1]  # one single-image encode per source image, reused by its 6 variants

    # the same run re-encoding per pipeline call (the former behaviour): 3 strengths x batches [3, 1] over the
    # 4 (image, seed) rows of a strength = 9 encodes; its images are identical
    plain = load_generator(str(tiny_sdxl_dir))
    plain.image_cache_size = 0
    plain.keep_images = lambda n: None
    plain_calls = _count_vae_encodes(plain)
    run_generation(GenerationConfig(output_path=str(tmp_path / "plain"), **kw), generator=plain)
    assert len(plain_calls) == 9
    written = sorted(p.relative_to(tmp_path / "cached") for p in (tmp_path / "cached").rglob("*.jpg"))
    assert len(written) == 12
    for rel in written:
        np.testing.assert_array_equal(_pixels(tmp_path / "cached" / rel), _pixels(tmp_path / "plain" / rel))

    # a cached key with different pixels is encoded again, never served the stale posterior
    other = Image.open(tmp_path / "imgs" / "img0.jpg").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    other = other.resize((80, 44))

    def one(g):
        return g.generate(
            GenerationBatch(
                images=[other],
                image_keys=["img0"],
                prompts=["a photo of a cheetah."],
                generators=[make_generator("img0", 10)],
                strength=0.5,
                text_guidance=10.0,
                steps=4,
            )
        )[0]

    got = one(gen)
    assert calls == [1, 1, 1]
    np.testing.assert_allclose(got, one(load_generator(str(tiny_sdxl_dir))), atol=1e-5, rtol=0)


def test_run_writes_discl_layout_and_manifest_then_resumes(tmp_path, tiny_sdxl_dir):
    cfg = _cfg(tmp_path, tiny_sdxl_dir, text_guidance=[5.0, 10.0])
    summary = run_generation(cfg)
    n = 3 * len(STRENGTHS) * 2 * len(SEEDS)
    assert (summary.planned, summary.generated, summary.skipped_done, summary.failed) == (n, n, 0, 0)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest-part1-of-1.parquet")
    assert list(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == n
    row = manifest.set_index("synthetic_id").loc["img1/Strength50_guidance100_seed20"]
    assert row.path == "zebra/Strength50_guidance100_seed20/img1.jpg"
    assert (row.label, row.label_name, row.prompt) == (1, "zebra", "a photo of a zebra.")
    assert (row.strength, row.image_guidance, row.text_guidance, row.seed, row.steps) == (0.5, 0.5, 10.0, 20, 4)
    # the source is 80x45: its aspect is kept at the source size, rounded down to the VAE factor (2)
    assert (row.width, row.height) == (80, 44)
    for p in manifest["path"]:
        assert Image.open(tmp_path / "out" / p).size == (80, 44)
    meta = read_parquet_metadata(tmp_path / "out" / "manifest-part1-of-1.parquet")
    assert meta["generator"]["pipeline"] == "StableDiffusionXLImg2ImgPipeline" and meta["shard"] == [1, 1]

    before = {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in manifest["path"]}
    again = run_generation(cfg)
    assert (again.generated, again.skipped_done, again.failed) == (0, n, 0)
    assert {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in manifest["path"]} == before
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "manifest-part1-of-1.parquet"), manifest)
    (tmp_path / "out" / manifest["path"].iloc[3]).unlink()  # a recorded image that went missing is made again
    third = run_generation(cfg)
    assert (third.generated, third.skipped_done) == (1, n - 1)
    # a recorded image truncated after the fact (no JPEG end marker) counts as not done, and is made again
    cut = tmp_path / "out" / manifest["path"].iloc[5]
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    fourth = run_generation(cfg)
    assert (fourth.generated, fourth.skipped_done) == (1, n - 1) and cut.read_bytes() == whole


def test_same_images_in_any_shard_layout_and_batch_size(tmp_path, tiny_sd_dir):
    whole = run_generation(_cfg(tmp_path, tiny_sd_dir, out="whole", batch_size=8))
    parts = [
        run_generation(_cfg(tmp_path, tiny_sd_dir, out="parts", part=p, total_parts=2, batch_size=1)) for p in (1, 2)
    ]
    assert whole.generated == sum(p.generated for p in parts) == 12
    # shards split the image list: part 1 holds 2 of the 3 images, part 2 the third
    m1 = pd.read_parquet(tmp_path / "parts" / "manifest-part1-of-2.parquet")
    m2 = pd.read_parquet(tmp_path / "parts" / "manifest-part2-of-2.parquet")
    assert set(m1["sample_id"]) == {"img0", "img1"} and set(m2["sample_id"]) == {"img2"}
    merged = merge_manifests.merge_manifests(tmp_path / "parts")
    assert merged.rows == 12 and merged.missing_parts == []
    mw = pd.read_parquet(tmp_path / "whole" / "manifest-part1-of-1.parquet")
    assert sorted(pd.read_parquet(merged.path)["synthetic_id"]) == sorted(mw["synthetic_id"])
    for p in mw["path"]:
        a, b = _pixels(tmp_path / "whole" / p), _pixels(tmp_path / "parts" / p)
        # batched kernels differ by ~1e-6 (the strict 1e-5 check is on arrays above); a rare flip of the
        # 8-bit rounding is spread over its 8x8 block by JPEG, so compare the decoded files loosely
        diff = np.abs(a - b)
        assert diff.max() <= 8 and diff.mean() < 0.05


def test_bad_inputs_are_counted_not_fatal(tmp_path, tiny_sd_dir):
    d = tmp_path / "imgs"
    d.mkdir()
    _photo(mode="L").save(d / "gray.png")
    _photo(mode="RGBA").save(d / "rgba.png")
    arr16 = np.asarray(_photo(mode="L"), dtype=np.uint16) * 257
    Image.fromarray(arr16).save(d / "deep.png")  # uint16 -> mode I;16
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    rows = [
        ("gray", "imgs/gray.png", 0, "cat"),
        ("rgba", "imgs/rgba.png", 0, "cat"),
        ("deep", "imgs/deep.png", 0, "cat"),
        ("corrupt", "imgs/corrupt.jpg", 0, "cat"),
        ("missing", "imgs/missing.jpg", 0, "cat"),
        ("../escape", "imgs/gray.png", 0, "cat"),
        ("badclass", "imgs/gray.png", 1, "../x"),
        ("noname", "imgs/gray.png", 7, "seven"),
    ]
    table = tmp_path / "bad.csv"
    pd.DataFrame(rows, columns=["sample_id", "filepath", "label", "label_name"]).to_csv(table, index=False)
    names = tmp_path / "names.csv"
    pd.DataFrame({"label": [0, 1], "classname": ["cat", "x"]}).to_csv(names, index=False)
    argv = [
        "--data_csv",
        str(table),
        "--output_path",
        str(tmp_path / "out"),
        "--data_root",
        str(tmp_path),
        "--model_id",
        str(tiny_sd_dir),
        "--strengths",
        "0.5",
        "--seeds",
        "1",
        "2",
        "--steps",
        "4",
        "--class_names",
        str(names),
        "--no_progress",
    ]
    cfg = GenerationConfig(
        data_csv=str(table),
        output_path=str(tmp_path / "out"),
        data_root=str(tmp_path),
        model_id=str(tiny_sd_dir),
        strengths=[0.5],
        seeds=[1, 2],
        steps=4,
        class_names=str(names),
        progress=False,
    )
    summary = run_generation(cfg)
    # the class "../x" is no longer a failure: it gets the safe folder "..%2Fx" inside the output (issue 14);
    # the image name "../escape" still cannot be written
    assert summary.planned == 16 and summary.generated == 8 and summary.failed == 8
    assert summary.failure_reasons == {
        "missing source image": 2,
        "unreadable source image": 2,
        "not a safe file name": 2,
        "no name in the class-name map": 2,
    }
    assert (tmp_path / "out" / "..%2Fx" / "Strength50_guidance100_seed1" / "badclass.jpg").is_file()
    failures = pd.read_csv(summary.failures_path)
    assert str(tmp_path / "imgs" / "missing.jpg") in " ".join(failures["reason"])
    # the label the map lacks is reported with its sample, its label and the map file
    noname = failures.set_index("sample_id").loc["noname", "reason"]
    assert noname == f"sample 'noname': label 7 ('seven') has no name in the class-name map {names}"
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path / "x").exists()
    for sid in ("gray", "rgba", "deep"):
        out = tmp_path / "out" / "cat" / "Strength50_guidance100_seed1" / f"{sid}.jpg"
        assert Image.open(out).mode == "RGB"
    assert gene_img.main(argv) == 0  # resumed: nothing new, the same failures
    assert gene_img.main(argv + ["--strict"]) == 1


def test_model_that_cannot_be_loaded_fails_fast_with_advice(tmp_path, capsys):
    argv = [
        "--data_csv",
        str(_table(tmp_path)),
        "--output_path",
        str(tmp_path / "o"),
        "--data_root",
        str(tmp_path),
        "--model_id",
        "stabilityai/stable-diffusion-xl-refiner-1.0",
        "--no_progress",
    ]
    t0 = time.perf_counter()
    assert gene_img.main(argv) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "--model_id DIR" in err
    assert gene_img.main(argv[:-3] + ["--model_id", str(tmp_path / "nope"), "--no_progress"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_flags_are_validated_with_their_names(tmp_path, tiny_sd_dir):
    with pytest.raises(ValueError, match="--steps 4 with strength 0.1"):
        run_generation(_cfg(tmp_path, tiny_sd_dir, strengths=[0.1, 0.5]))
    with pytest.raises(ValueError, match="--strengths"):
        run_generation(_cfg(tmp_path, tiny_sd_dir, strengths=[1.5]))
    with pytest.raises(ValueError, match="--part"):
        run_generation(_cfg(tmp_path, tiny_sd_dir, part=3, total_parts=2))


def test_accelerate_processes_split_a_part(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun's / accelerate's variables
    monkeypatch.setenv("RANK", "2")
    assert process_shard(2, 3) == (7, 12)  # part 2 of 3, third of four processes
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert process_shard(2, 3) == (2, 3)


def test_killed_run_leaves_no_truncated_image_and_resumes(tmp_path, tiny_sd_dir):
    """SIGKILL the CLI mid-run; every file that counts as done decodes, and a rerun completes the set."""
    table = _table(tmp_path)
    out = tmp_path / "out"
    argv = [
        sys.executable,
        str(REPO / "data_generation" / "gene_img.py"),
        "--data_csv",
        str(table),
        "--output_path",
        str(out),
        "--data_root",
        str(tmp_path),
        "--model_id",
        str(tiny_sd_dir),
        "--strengths",
        "0.5",
        "0.75",
        "1.0",
        "--seeds",
        *map(str, range(1, 9)),
        "--steps",
        "8",
        "--batch_size",
        "2",
        "--no_progress",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.jpg"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = list(out.rglob("*.jpg"))
    assert 4 <= len(written) < 72, "the run should have been killed mid-way"
    for p in written:
        Image.open(p).load()  # raises on a truncated file
    summary = run_generation(
        GenerationConfig(
            data_csv=str(table),
            output_path=str(out),
            data_root=str(tmp_path),
            model_id=str(tiny_sd_dir),
            strengths=[0.5, 0.75, 1.0],
            seeds=list(range(1, 9)),
            steps=8,
            batch_size=2,
            progress=False,
        )
    )
    assert summary.skipped_done >= len(written) and summary.generated + summary.skipped_done == 72
    assert not list(out.rglob(".*.tmp"))
    manifest = pd.read_parquet(summary.manifest_path)
    assert len(manifest) == 72 and all((out / p).is_file() for p in manifest["path"])


def test_quickstart_assets_resolve_from_the_repo_root():
    """The bundled DisCL sample CSV names the bundled photo relative to the repository root."""
    from curriculum.tables import read_sample_table

    df = read_sample_table(ASSETS / "sample_iwildcam.csv", data_root=REPO)
    assert Path(df.iloc[0].source_path).is_file()
