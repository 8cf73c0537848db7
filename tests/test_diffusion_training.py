"""A tiny pixel model trains a few steps under the curriculum, saves, reloads and resumes exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from curriculum.sparsity import group_l1
from training import train_diffusion as cli
from training.diffusion.trainer import bucket_edges, build_schedulers, conv_weights, min_snr_weights

from .pixel_helpers import digits_subset, tiny_config, train_tiny


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_subset(tmp_path_factory.mktemp("digits"), n=64)


@pytest.fixture(scope="module")
def cs_run(digits, tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("runs") / "cs", digits[1], sparsity="cs", sparsity_start=0.75)


def test_run_folder_metrics_and_stage_report(cs_run):
    from data_generation.generation.backends import detect_generator

    run = cs_run
    assert run.global_step == 8 and run.epochs_done == 2  # 64 images / batch 16 = 4 steps per epoch
    metrics = pd.read_csv(run.metrics_path)
    assert metrics["epoch"].tolist() == [1, 2] and metrics["step"].tolist() == [4, 8]
    assert metrics[["t_min", "t_max"]].values.tolist() == [[500, 999], [0, 999]]
    buckets = [c for c in metrics.columns if c.startswith("loss_t")]
    assert len(buckets) == 10 and buckets[0] == "loss_t0000_0099" and buckets[-1] == "loss_t0900_0999"
    # stage 0 only draws t >= 500: the low buckets have no loss, the high ones do
    assert metrics.loc[0, buckets[:5]].isna().all() and metrics.loc[0, buckets[5:]].notna().any()
    stages = pd.read_csv(run.stages_path)
    # 32 bottleneck channels: 0.75 -> 24 masked, then 0 at the last stage
    assert stages["target_sparsity"].tolist() == [0.75, 0.0]
    # measured at each stage's end: channels exactly zero on the probe batch, channels whose parameters never moved
    assert stages["bottleneck_sparsity_reached"].tolist() == [0.75, 0.0]
    assert stages["bottleneck_unchanged_fraction"].tolist() == [0.75, 0.0]
    assert metrics["bottleneck_masked_fraction"].tolist() == [0.75, 0.0]
    assert metrics["bottleneck_zero_fraction"].tolist() == [0.75, 0.0]
    assert stages["conv_near_zero_channel_fraction"].between(0, 1).all()
    assert stages["channels_born"].tolist() == [8, 24]
    born = pd.read_csv(f"{run.run_dir}/bottleneck_channels.csv")
    assert sorted(born["born_stage"].value_counts().items()) == [(0, 8), (1, 24)]
    for k in (0, 1):
        with Image.open(f"{run.run_dir}/samples/stage{k}.png") as im:
            assert im.size == (2 * 16, 10 * 16)  # samples_per_class columns, one row per class
    index = json.loads(open(f"{run.model_dir}/model_index.json").read())
    assert index["_class_name"] == "ClassConditionalPixelPipeline"
    assert detect_generator(run.model_dir) == "pixel-ddpm"
    assert json.loads(open(f"{run.model_dir}/class_names.json").read())["3"] == "three"


def test_saved_model_loads_with_from_pretrained_and_holds_the_ema_weights(cs_run):
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    unet = UNet2DModel.from_pretrained(cs_run.model_dir, subfolder="unet")
    assert unet.config.num_class_embeds == 11 and unet.config.sample_size == 16
    ckpt = sorted((__import__("pathlib").Path(cs_run.run_dir) / "checkpoints").glob("epoch-*"))[-1]
    shadow = load_file(str(ckpt / "ema.safetensors"))
    params = list(unet.parameters())
    assert len(params) == len(shadow)
    assert all(torch.equal(p, shadow[f"shadow.{i}"]) for i, p in enumerate(params))
    raw = load_file(str(ckpt / "unet.safetensors"))
    assert not torch.equal(unet.state_dict()["conv_in.weight"], raw["conv_in.weight"])  # EMA differs from raw


def test_an_interrupted_then_resumed_run_equals_an_uninterrupted_one(digits, tmp_path):
    ds = digits[1]
    full = train_tiny(tmp_path / "full", ds, sparsity="cs", sparsity_start=0.5)
    part = train_tiny(tmp_path / "resumed", ds, sparsity="cs", sparsity_start=0.5, stop_after_epoch=1)
    assert part.model_dir is None and part.epochs_done == 1
    resumed = train_tiny(tmp_path / "resumed", ds, sparsity="cs", sparsity_start=0.5)
    assert resumed.resumed_from.endswith("epoch-0001") and resumed.global_step == full.global_step
    a = load_unet(full.model_dir).state_dict()
    b = load_unet(resumed.model_dir).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(full.metrics_path), pd.read_csv(resumed.metrics_path), atol=1e-6)
    with pytest.raises(ValueError, match="different config .*learning_rate"):
        train_tiny(tmp_path / "resumed", ds, sparsity="cs", sparsity_start=0.5, learning_rate=1e-4)


def load_unet(folder):
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(folder, subfolder="unet")


def test_cr_penalty_in_training_equals_its_formula(digits, tmp_path):
    from training.diffusion.trainer import build_unet

    cfg = tiny_config(tmp_path)
    unet = build_unet(cfg, 10)
    weights = conv_weights(unet)
    convs = [m for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(weights) == len(convs) - 1  # every conv but conv_out
    manual = sum(float(w[c].detach().pow(2).sum().sqrt()) for w in weights for c in range(w.shape[0]))
    assert float(group_l1(weights).detach()) == pytest.approx(manual, rel=1e-5)
    run = train_tiny(tmp_path / "cr", digits[1], sparsity="cr")
    lam = pd.read_csv(run.metrics_path)["cr_lambda"].tolist()
    # λ is logged at each epoch's last step: progress 3/7 and 7/7 of a cosine from 5e-5 to 0
    assert lam == pytest.approx([2.5e-5 * (1 + math.cos(math.pi * 3 / 7)), 0.0], rel=1e-9, abs=1e-15)
    stages = pd.read_csv(run.stages_path)
    # no mask: nothing is gated to zero and there is no frozen snapshot to compare with
    assert stages["bottleneck_sparsity_reached"].tolist() == [0.0, 0.0]
    assert stages["bottleneck_unchanged_fraction"].isna().all()


def test_min_snr_weights_are_min_snr_over_snr():
    train, _ = build_schedulers(tiny_config("x"))
    t = torch.tensor([0, 100, 500, 999])
    ac = train.alphas_cumprod[t]
    snr = ac / (1 - ac)
    assert torch.allclose(min_snr_weights(train, t, 5.0), torch.clamp(snr, max=5.0) / snr)
    assert float(min_snr_weights(train, t, 5.0)[-1]) == 1.0  # noisy end: SNR < γ, weight 1


def test_bucket_edges_cover_all_timesteps():
    edges = bucket_edges(1000)
    assert edges[0] == (0, 99) and edges[-1] == (900, 999)
    assert sum(hi - lo + 1 for lo, hi in edges) == 1000


def test_cli_trains_from_an_image_folder(tmp_path):
    root = tmp_path / "folder"
    g = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    argv = [
        "--data",
        str(root),
        "--output_dir",
        str(out),
        "--image_size",
        "16",
        "--block_out_channels",
        "16",
        "32",
        "--batch_size",
        "4",
        "--stage_starts",
        "0.5",
        "0",
        "--stage_epochs",
        "1",
        "1",
        "--t_sampler",
        "soft",
        "--loss_weighting",
        "min_snr",
        "--sample_steps",
        "3",
        "--samples_per_class",
        "1",
        "--no_progress",
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    assert json.loads((out / "model" / "class_names.json").read_text()) == {"0": "cat", "1": "dog"}
    assert json.loads((out / "config.json").read_text())["t_sampler"] == "soft"
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert cli.main(["--data", str(tmp_path / "nope"), "--output_dir", str(out)]) == 2


def test_write_digits_writes_a_canonical_table(digits):
    table = pd.read_csv(digits[0])
    assert list(table.columns) == ["sample_id", "filepath", "label", "label_name", "split"]
    assert len(table) == 1797 and set(table["split"]) == {"train", "test"}
    assert abs((table["split"] == "test").mean() - 0.3) < 0.01
    with Image.open(digits[0].parent / table["filepath"][0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
