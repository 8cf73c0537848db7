"""pixel-ddpm: SDEdit with a tiny trained pixel model behind the generator interface gene_img uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from curriculum.contracts import MANIFEST_COLUMNS
from data_generation.generation.backends import GenerationBatch, detect_generator, load_generator
from data_generation.generation.backends.pixel_pipeline import ClassConditionalPixelPipeline, sdedit_timesteps
from data_generation.generation.generate import GenerationConfig, run_generation

from .pixel_helpers import digits_in_memory, train_tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixel")
    run = train_tiny(root / "run", digits_in_memory(64), stage_epochs=(2, 2))
    return run.model_dir


@pytest.fixture(scope="module")
def gen(model_dir):
    return load_generator(model_dir)


def _digit(i: int) -> Image.Image:
    from sklearn.datasets import load_digits

    img = load_digits().images[i]
    gray = Image.fromarray(np.clip(img * 255 / 16, 0, 255).astype(np.uint8), mode="L")
    return gray.resize((16, 16), Image.BICUBIC).convert("RGB")


def _batch(images, labels, seeds, strength, steps=10, guidance=2.0):
    return GenerationBatch(
        images=images,
        image_keys=[str(i) for i in range(len(images))],
        prompts=[""] * len(images),
        generators=[torch.Generator().manual_seed(s) for s in seeds],
        strength=strength,
        text_guidance=guidance,
        steps=steps,
        labels=labels,
    )


def test_backend_is_detected_and_described(model_dir, gen):
    assert detect_generator(model_dir) == "pixel-ddpm"
    d = gen.describe()
    assert d["pipeline"] == "ClassConditionalPixelPipeline" and d["num_classes"] == 10 and d["native_size"] == [16, 16]
    assert gen.size_multiple == 2


def test_generation_is_deterministic_and_batched_equals_single(gen):
    imgs, labels, seeds = [_digit(0), _digit(1), _digit(1)], [0, 1, 7], [5, 6, 7]
    batched = gen.generate(_batch(imgs, labels, seeds, 0.6))
    again = gen.generate(_batch(imgs, labels, seeds, 0.6))
    assert all(a.shape == (16, 16, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1 for a in batched)
    assert all(np.array_equal(a, b) for a, b in zip(batched, again))
    for i in range(3):
        single = gen.generate(_batch([imgs[i]], [labels[i]], [seeds[i]], 0.6))[0]
        assert np.abs(single - batched[i]).max() < 1e-5
    assert np.abs(batched[1] - batched[2]).max() > 1e-3  # another label and seed: another image


def test_strength_one_ignores_the_input_image(gen):
    a = gen.generate(_batch([_digit(0)], [3], [11], 1.0))[0]
    b = gen.generate(_batch([_digit(5)], [3], [11], 1.0))[0]
    assert np.array_equal(a, b)


def test_strength_near_zero_returns_the_image_almost_unchanged(gen):
    src = np.asarray(_digit(2), dtype=np.float32) / 255
    near = gen.generate(_batch([_digit(2)], [2], [1], 0.02, steps=50, guidance=1.0))[0]  # 1 of 50 steps, from t = 19
    mid = gen.generate(_batch([_digit(2)], [2], [1], 0.5, steps=20, guidance=1.0))[0]
    full = gen.generate(_batch([_digit(2)], [2], [1], 1.0, steps=10, guidance=1.0))[0]
    d_near, d_mid, d_full = (float(np.abs(x - src).mean()) for x in (near, mid, full))
    assert d_near < 0.05 and d_near < d_mid and d_near < d_full / 4


def test_classifier_free_guidance_is_the_cfg_formula(gen):
    pipe: ClassConditionalPixelPipeline = gen.pipe
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor(500), torch.tensor([1, 4])
    with torch.no_grad():
        cond = pipe.unet(x, t, class_labels=y).sample
        uncond = pipe.unet(x, t, class_labels=torch.full_like(y, 10)).sample
        for w in (0.0, 1.0, 3.0):
            assert torch.allclose(pipe._eps(x, t, y, w), uncond + w * (cond - uncond), atol=1e-5)


def test_sdedit_runs_the_tail_of_the_schedule():
    ts = torch.arange(9, -1, -1) * 100 + 99
    assert sdedit_timesteps(ts, 10, 1.0).tolist() == ts.tolist()
    assert sdedit_timesteps(ts, 10, 0.3).tolist() == [299, 199, 99]
    assert sdedit_timesteps(ts, 10, 0.05).tolist() == []


def test_labels_outside_the_model_fail_clearly(gen):
    with pytest.raises(ValueError, match=r"labels \[12\] are outside the model's 10 classes"):
        gen.generate(_batch([_digit(0)], [12], [1], 0.5))


def test_gene_img_writes_the_discl_layout_and_manifest_with_the_pixel_model(model_dir, tmp_path):
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    _digit(3).resize((40, 40)).save(data / "imgs" / "a.png")
    _digit(4).resize((40, 40)).save(data / "imgs" / "b.png")
    table = tmp_path / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["a", "b"],
            "filepath": ["imgs/a.png", "imgs/b.png"],
            "label": [3, 4],
            "label_name": ["three", "four"],
        }
    ).to_csv(table, index=False)
    out = tmp_path / "syn"
    cfg = GenerationConfig(
        data_csv=str(table),
        output_path=str(out),
        data_root=str(data),
        model_id=str(model_dir),
        strengths=[0.5, 1.0],
        text_guidance=[2.0],
        seeds=[10, 20],
        steps=10,
        batch_size=4,
        device="cpu",
        progress=False,
    )
    summary = run_generation(cfg)
    assert summary.generated == 8 and summary.failed == 0
    manifest = pd.read_parquet(summary.manifest_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == 8
    assert set(manifest["model_id"]) == {str(model_dir)}
    assert set(zip(manifest["width"], manifest["height"])) == {(16, 16)}
    expected = {
        f"{name}/Strength{int(100 * s)}_guidance20_seed{seed}/{sid}.jpg"
        for sid, name in (("a", "three"), ("b", "four"))
        for s in (0.5, 1.0)
        for seed in (10, 20)
    }
    assert set(manifest["path"]) == expected
    for p in expected:
        with Image.open(out / p) as im:
            assert im.size == (16, 16)
    assert summary.manifest_path.endswith("manifest-part1-of-1.parquet")
    again = run_generation(cfg)  # resume: everything is done
    assert again.generated == 0 and again.skipped_done == 8


def test_non_square_sources_are_center_cropped_not_squashed(tmp_path):
    from curriculum.images import center_crop_to_aspect
    from data_generation.generation.backends.pixel_ddpm import pil_to_tensor
    from training.diffusion.data import load_image

    wide = np.zeros((16, 48, 3), dtype=np.uint8)
    wide[:, :16] = (255, 0, 0)
    wide[:, 16:32] = (0, 255, 0)
    wide[:, 32:] = (0, 0, 255)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    for arr in (wide, tall):
        im = Image.fromarray(arr)
        assert center_crop_to_aspect(im, (16, 16)).size == (16, 16)
        x = pil_to_tensor([im], (16, 16))
        assert x.shape == (1, 3, 16, 16)
        # only the green middle third survives (squashing would have kept red and blue borders)
        assert torch.allclose(x[0, 1], torch.ones(16, 16)) and torch.allclose(x[0, [0, 2]], -torch.ones(2, 16, 16))
        im.save(tmp_path / "src.png")  # training data is cropped the same way
        assert np.allclose(load_image(tmp_path / "src.png", 16), x[0].permute(1, 2, 0).numpy())
    assert center_crop_to_aspect(Image.fromarray(wide[:, :40]), (8, 4)).size == (32, 16)  # a non-square aspect
    square = Image.fromarray(wide[:, 8:24])
    assert center_crop_to_aspect(square, (16, 16)) is square


@pytest.fixture(scope="module")
def model_dir_32(tmp_path_factory):
    from training.diffusion.data import PixelDataset

    ds = digits_in_memory(32)
    big = torch.nn.functional.interpolate(ds.images, size=32, mode="bilinear", align_corners=False)
    data32 = PixelDataset(big, ds.labels, ds.class_names, ds.sample_ids)
    run = train_tiny(tmp_path_factory.mktemp("pixel32") / "run", data32, image_size=32, samples_per_class=1)
    return run.model_dir


@pytest.mark.parametrize("model_fixture, size", [("model_dir", 16), ("model_dir_32", 32)])
def test_gene_img_cli_writes_the_discl_layout_and_manifest_with_a_trained_pixel_model(
    model_fixture, size, request, tmp_path
):
    from curriculum.tables import read_parquet_metadata
    from data_generation import gene_img

    model = request.getfixturevalue(model_fixture)
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    _digit(3).resize((60, 40)).save(data / "imgs" / "a.png")  # not square: center-cropped, not squashed
    _digit(4).resize((40, 40)).save(data / "imgs" / "b.png")
    table = tmp_path / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["a", "b"],
            "filepath": ["imgs/a.png", "imgs/b.png"],
            "label": [3, 4],
            "label_name": ["three", "four"],
        }
    ).to_csv(table, index=False)
    out = tmp_path / "syn"
    argv = [
        "--data_csv",
        str(table),
        "--output_path",
        str(out),
        "--data_root",
        str(data),
        "--model_id",
        str(model),
        "--strengths",
        "0.5",
        "1.0",
        "--text_guidance",
        "2",
        "--seeds",
        "10",
        "20",
        "--steps",
        "4",
        "--batch_size",
        "4",
        "--device",
        "cpu",
        "--no_progress",
        "--merge",
    ]
    assert gene_img.main(argv) == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == 8
    assert set(manifest["model_id"]) == {str(model)}
    assert set(zip(manifest["width"], manifest["height"])) == {(size, size)}
    assert set(manifest["path"]) == {
        f"{name}/Strength{int(100 * s)}_guidance20_seed{seed}/{sid}.jpg"
        for sid, name in (("a", "three"), ("b", "four"))
        for s in (0.5, 1.0)
        for seed in (10, 20)
    }
    for p in manifest["path"]:
        with Image.open(out / p) as im:
            assert im.size == (size, size)
    meta = read_parquet_metadata(out / "manifest-part1-of-1.parquet")
    assert meta["generator"]["pipeline"] == "ClassConditionalPixelPipeline"
    assert meta["generator"]["native_size"] == [size, size]
