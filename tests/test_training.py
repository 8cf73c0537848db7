"""Phase 2 training on tiny models: FLYP on a fake iWildCam tree, a long-tail ResNet on a tiny ImageNet-LT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from data_generation.mining.datasets import load_imagenet_lt, load_wilds_iwildcam
from training import finetune_flyp, train_lt
from training.trainers.checkpoint import load_checkpoint, save_checkpoint
from training.trainers.classifier import lt_epoch_composer
from training.trainers.data import load_real, load_synthetic, stage_items
from training.trainers.losses import balanced_softmax, log_class_prior

from .fakes import make_fake_imagenet_lt, make_fake_iwildcam, make_synthetic_manifest, register_tiny_open_clip


@pytest.fixture
def iwildcam(tmp_path):
    """A fake WILDS tree, its sample table (hard = half the train images) and a scored synthetic manifest."""
    make_fake_iwildcam(tmp_path / "wilds", per_split={"train": 12, "val": 4, "test": 4, "id_val": 4, "id_test": 4})
    table = load_wilds_iwildcam(tmp_path / "wilds")
    table["hard"] = (table["split"] == "train") & (np.arange(len(table)) % 2 == 0)
    table_path = tmp_path / "iwildcam.parquet"
    table.drop(columns=["source_path"]).to_parquet(table_path)
    hard = table[table["hard"]]
    manifest = make_synthetic_manifest(tmp_path / "syn", hard, strengths=(0.5, 0.3, 0.1), seeds=(1, 2), keep_every=1)
    model_name = register_tiny_open_clip(tmp_path / "clipcfg")
    return {
        "table": table_path,
        "root": table.attrs["data_root"],
        "manifest": manifest,
        "model": model_name,
        "n_train": 12,
        "n_hard": len(hard),
    }


def _flyp_argv(d, run_dir, *extra):
    return [
        "--data_table",
        str(d["table"]),
        "--data_root",
        d["root"],
        "--syn_manifest",
        str(d["manifest"]),
        "--model",
        d["model"],
        "--pretrained",
        "",
        "--run_dir",
        str(run_dir),
        "--epochs",
        "3",
        "--batch_size",
        "8",
        "--lr",
        "1e-4",
        "--warmup_steps",
        "2",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--curriculum",
        "--curriculum_epoch",
        "2",
        "--curriculum_val_size",
        "2",
        *extra,
    ]


# the flags that restore our own FLYP curriculum where the reference's differs (tests of resume, metrics and
# prototype sampling written for it keep testing it; the reference defaults have their own tests)
OURS = (
    "--stage_unit",
    "epoch",
    "--captions",
    "random_template",
    "--no-real_candidate",
    "--progress_baseline",
    "initial",
    "--lr_schedule",
    "exact",
)


def test_stage_items_keep_non_hard_real_data(iwildcam):
    real = load_real(iwildcam["table"], iwildcam["root"])
    syn = load_synthetic(iwildcam["manifest"], known_labels=real["label"].unique())
    assert sorted(syn["level"].unique()) == [50, 70, 90]
    items = stage_items(real, syn, 70)
    assert (items["source"] == "real").sum() == iwildcam["n_train"]  # hard and non-hard real samples
    assert set(items.loc[items["source"] == "real", "sample_id"]) == set(real["sample_id"])
    assert (items["level"] == 70).sum() == iwildcam["n_hard"] * 2
    with pytest.raises(ValueError, match="not a class of the real training data"):
        load_synthetic(iwildcam["manifest"], known_labels=[0])


def test_missing_images_are_an_error_before_training(iwildcam, tmp_path, capsys):
    """Missing synthetic or real images: exit 2 at startup, naming the file they come from, the count, the first."""
    run = tmp_path / "run"
    syn = load_synthetic(iwildcam["manifest"])
    gone = syn["path"].iloc[1]
    Path(gone).unlink()
    assert finetune_flyp.main(_flyp_argv(iwildcam, run)) == 2
    err = capsys.readouterr().err
    assert str(iwildcam["manifest"]) in err and f"1 of {len(syn)} image file(s)" in err and gone in err
    real = load_real(iwildcam["table"], iwildcam["root"])
    for p in real["source_path"].iloc[[3, 5]]:
        Path(p).unlink()
    assert finetune_flyp.main(_flyp_argv(iwildcam, run)) == 2
    err = capsys.readouterr().err
    assert str(iwildcam["table"]) in err and "'train'" in err and "2 of 12 image file(s)" in err
    assert real["source_path"].iloc[3] in err and not run.exists()


def test_flyp_adaptive_run_writes_metrics_schedule_checkpoints(iwildcam, tmp_path):
    run = tmp_path / "run"
    assert finetune_flyp.main(_flyp_argv(iwildcam, run, "--progress_guid", "--log_dynamics", *OURS)) == 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1, 2]
    for split in ("id_val", "id_test", "val", "test"):
        for m in ("acc", "macro_f1"):
            col = f"iwildcam/{split}/{m}"
            assert col in metrics and metrics[col].between(0, 1).all()
    # the schedule followed: synthetic levels during the curriculum (2 epochs), then real (100)
    sched = pd.read_csv(run / "schedule.csv")
    assert sched["level"].iloc[-1] == 100 and set(sched["level"].iloc[:2]) <= {50, 70, 90}
    assert json.loads(sched["progress"].iloc[0]).keys() == {"50", "70", "90"}
    assert sched["next_level"].iloc[0] == sched["level"].iloc[1]
    # every stage trains on all real samples (but the 2 held-out sources') plus the chosen level's synthetic images
    assert (metrics["n_items"] - metrics["n_synthetic"] == iwildcam["n_train"] - 2).all()
    assert metrics["n_synthetic"].iloc[-1] == 0 and metrics["n_synthetic"].iloc[0] > 0
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "best_model.safetensors").is_file() and (run / "final_model.safetensors").is_file()
    dyn = pd.read_parquet(run / "dynamics.parquet")
    # the real training samples: the 2 held-out sources left training
    assert len(dyn) == 3 * (iwildcam["n_train"] - 2) and dyn["true_prob"].between(0, 1).all()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["schedule"] == "adaptive" and cfg["config"]["levels"] == [50, 70, 90]
    # every parsed flag, not only the TrainConfig
    cli = cfg["cli_args"]
    assert cli["data_table"] == str(iwildcam["table"]) and cli["syn_manifest"] == str(iwildcam["manifest"])
    assert cli["model"] == iwildcam["model"] and cli["templates"] == "iwildcam" and cli["progress_guid"] is True
    assert cli["levels"] is None and cli["min_level"] == 50 and cli["prototype_state"] is None
    _assert_lr_ends_at_the_last_step(metrics, base=1e-4, warmup=2)


def _assert_lr_ends_at_the_last_step(metrics: pd.DataFrame, base: float, warmup: int) -> None:
    """The cosine spans the steps the run took: FLYP's formula at the last step, higher at every earlier epoch."""
    total = int(metrics["step"].iloc[-1])
    assert total > metrics["step"].diff().iloc[1:].max()  # several epochs of steps
    last = base * 0.5 * (1 + np.cos(np.pi * (total - 1 - warmup) / (total - warmup)))
    assert metrics["lr"].iloc[-1] == pytest.approx(last, rel=1e-9) and last < 0.1 * base
    assert (metrics["lr"].iloc[:-1] > 2 * last).all()  # the minimum is never reached before the last epoch


def _assert_same_run(a, b) -> None:
    """Two run folders hold the same final weights, schedule followed and metrics (timing aside)."""
    wa, wb = load_file(str(a / "final_model.safetensors")), load_file(str(b / "final_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(a / "schedule.csv"), pd.read_csv(b / "schedule.csv"))
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns="seconds"), mb.drop(columns="seconds"), atol=1e-6)


def test_flyp_adaptive_run_resumed_mid_curriculum_equals_uninterrupted(iwildcam, tmp_path):
    """Interrupted after epoch 0 (mid-curriculum, adaptive) and after epoch 2 (its end): same run as without."""
    a, b = tmp_path / "a", tmp_path / "b"
    flags = ("--progress_guid", "--log_dynamics", "--epochs", "4", "--curriculum_epoch", "3", *OURS)
    assert finetune_flyp.main(_flyp_argv(iwildcam, a, *flags)) == 0
    assert finetune_flyp.main(_flyp_argv(iwildcam, b, *flags, "--epochs_per_invocation", "1")) == 0
    assert not (b / "final_model.safetensors").exists()
    assert pd.read_csv(b / "schedule.csv")["epoch"].tolist() == [0]
    assert finetune_flyp.main(_flyp_argv(iwildcam, b, *flags, "--resume", "--epochs_per_invocation", "2")) == 0
    assert finetune_flyp.main(_flyp_argv(iwildcam, b, *flags, "--resume")) == 0
    _assert_same_run(a, b)
    sched = pd.read_csv(b / "schedule.csv")
    assert sched["next_level"].notna().sum() == 2 and sched["level"].tolist()[-1] == 100  # two adaptive choices
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "dynamics.parquet"), pd.read_parquet(b / "dynamics.parquet"), atol=1e-6
    )
    state_a, state_b = (json.loads((r / "adaptive_schedule.json").read_text()) for r in (a, b))
    assert state_a == state_b


def test_balanced_softmax_by_formula():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.2, 0.1, 3.0]])
    labels = torch.tensor([0, 2])
    prior = log_class_prior(torch.tensor([100.0, 10.0, 1.0]))
    np.testing.assert_allclose(prior.exp().numpy(), [100 / 111, 10 / 111, 1 / 111], rtol=1e-6)
    shifted = logits + prior
    expected = -(shifted.log_softmax(1)[torch.arange(2), labels]).mean()
    torch.testing.assert_close(balanced_softmax(logits, labels, prior), expected)
    with pytest.raises(ValueError, match="class prior"):
        balanced_softmax(logits, labels)


def test_lt_epoch_composition_tops_up_the_tail():
    real = pd.DataFrame(
        {"sample_id": [f"s{i}" for i in range(1000)], "source_path": "x", "label": [0] * 900 + [1] * 100}
    )
    syn = pd.DataFrame(
        {
            "synthetic_id": [f"y{i}" for i in range(300)],
            "sample_id": "t",
            "path": "p",
            "label": 1,
            "level": [10] * 150 + [30] * 150,
        }
    )
    compose = lt_epoch_composer(real, syn, tail_labels={1}, subset_frac=0.3, tail_share=0.136)
    items = compose(0, 10, np.random.default_rng(0))
    head = items[items["label"] == 0]
    assert len(head) == 270 and head["sample_id"].is_unique  # a fresh 30% subset
    tail = items[items["label"] == 1]
    assert (tail["source"] == "real").sum() == 100
    assert set(tail.loc[tail["source"] == "synthetic", "level"]) <= {10}
    assert abs(len(tail) / len(items) - 0.136) < 0.005 or (tail["source"] == "synthetic").sum() == 0
    other = compose(1, 10, np.random.default_rng(1))
    assert set(other.loc[other["label"] == 0, "sample_id"]) != set(head["sample_id"])


@pytest.fixture
def imagenet_lt(tmp_path):
    """A tiny ImageNet-LT list (120/60/4 images per class; class 2 is the tail) and synthetic tail images."""
    lst = make_fake_imagenet_lt(tmp_path / "lt", {0: 120, 1: 60, 2: 4})
    table = load_imagenet_lt(lst, data_root=tmp_path / "lt")
    table["split"] = ["train" if i % 5 else ("val" if i % 10 == 0 else "test") for i in range(len(table))]
    table.drop(columns="source_path").to_parquet(tmp_path / "lt.parquet")
    real = load_real(tmp_path / "lt.parquet", tmp_path / "lt")
    manifest = make_synthetic_manifest(
        tmp_path / "syn", real[real["label"] == 2], strengths=(0.9, 0.7, 0.5), seeds=(1, 2, 3)
    )
    return {"table": tmp_path / "lt.parquet", "root": tmp_path / "lt", "manifest": manifest, "real": real}


def _lt_argv(d, run_dir, *extra):
    return [
        "--data_table",
        str(d["table"]),
        "--data_root",
        str(d["root"]),
        "--syn_manifest",
        str(d["manifest"]),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--loss",
        "balanced_softmax",
        "--run_dir",
        str(run_dir),
        "--epochs",
        "3",
        "--curriculum",
        "--curriculum_epoch",
        "2",
        "--levels",
        "10",
        "30",
        "--batch_size",
        "16",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--tail_max_count",
        "19",
        "--fixed_stages",
        "equal",
        "--lr_schedule",
        "exact",
        "--no-real_candidate",
        *extra,
    ]


def test_lt_training_run_with_balanced_softmax_and_its_resume(imagenet_lt, tmp_path):
    """The reference composition and fixed schedule; interrupted mid-curriculum it resumes to the same run."""
    run = tmp_path / "run"
    argv = _lt_argv(imagenet_lt, run)
    assert train_lt.main(argv) == 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["level"].tolist() == [10, 30, 100]
    for split in ("val", "test"):
        for k in ("overall_acc", "many_acc", "medium_acc", "few_acc"):
            assert f"imagenet_lt/{split}/{k}" in metrics
    assert metrics["imagenet_lt/val/overall_acc"].between(0, 1).all()
    assert np.isfinite(metrics["train_loss"]).all()
    assert metrics["n_synthetic"].iloc[0] > 0 and metrics["n_synthetic"].iloc[-1] == 0
    # epochs are a 30% subset + the tail, far fewer items than the real training data
    _assert_lr_ends_at_the_last_step(metrics, base=1e-3, warmup=0)
    best = json.loads((run / "checkpoints" / "last" / "state.json").read_text())["extra"]["best"]
    assert best["metric"] == "imagenet_lt/val/overall_acc"  # selected on val, never on test
    assert train_lt.main(argv + ["--levels", "99"]) == 2  # a level with no images: clear error
    # interrupted after epoch 0 (level 10 of 10 -> 30), then resumed: schedule.csv written, the same run
    b = tmp_path / "b"
    assert train_lt.main(_lt_argv(imagenet_lt, b, "--epochs_per_invocation", "1")) == 0
    assert pd.read_csv(b / "schedule.csv")["level"].tolist() == [10]
    assert train_lt.main(_lt_argv(imagenet_lt, b, "--resume")) == 0
    assert pd.read_csv(b / "schedule.csv")["level"].tolist() == [10, 30, 100]
    _assert_same_run(run, b)
    for name in ("best_model.safetensors", "checkpoints/last/model.safetensors"):
        wa, wb = load_file(str(run / name)), load_file(str(b / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lt_mixed_composition_with_prototype_state(imagenet_lt, tmp_path, capsys, monkeypatch):
    """--composition mixed: every real image + the level's synthetic, real part drawn by prototype difficulty;
    --tensorboard logs each epoch's metrics row."""
    import sys
    import types

    from curriculum import save_curriculum_state

    # --tensorboard without the tensorboard package: a clear error at startup
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert train_lt.main(_lt_argv(imagenet_lt, tmp_path / "tb", "--composition", "mixed", "--tensorboard")) == 2
    assert "pip install tensorboard" in capsys.readouterr().err and not (tmp_path / "tb").exists()
    logged: list[tuple] = []

    class SummaryWriter:  # records what the engine logs (the package is optional and not installed in CI)
        def __init__(self, log_dir):
            logged.append(("open", log_dir))

        def add_scalar(self, tag, value, global_step):
            logged.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            logged.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))

    real = imagenet_lt["real"]
    state = tmp_path / "proto"
    save_curriculum_state(state, real["sample_id"].tolist(), {"difficulty": np.linspace(0, 1, len(real))})
    run = tmp_path / "run"
    # the reference composition draws its own real subset: a clear error at startup naming both flags
    assert train_lt.main(_lt_argv(imagenet_lt, run, "--prototype_state", str(state))) == 2
    err = capsys.readouterr().err
    assert "--prototype_state" in err and "--composition mixed" in err and not run.exists()
    # the interface of the offline demo: --composition mixed --prototype_state STATE --curriculum --progress_guid
    argv = _lt_argv(
        imagenet_lt,
        run,
        "--composition",
        "mixed",
        "--prototype_state",
        str(state),
        "--proto_warmup_steps",
        "4",
        "--progress_guid",
        "--curriculum_val_size",
        "1",
        "--tensorboard",
    )
    assert train_lt.main(argv) == 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert logged[0] == ("open", str(run / "tensorboard")) and logged[-1] == ("close",)
    scalars = pd.DataFrame(logged[1:-1], columns=["tag", "value", "epoch"]).pivot(
        index="epoch", columns="tag", values="value"
    )
    assert scalars.index.tolist() == [0, 1, 2]
    for col in ("train_loss", "lr", "level", "imagenet_lt/val/overall_acc", "imagenet_lt/test/few_acc"):
        np.testing.assert_allclose(scalars[col].to_numpy(), metrics[col].to_numpy(), rtol=1e-9)
    # every real image but the held-out source's, each epoch
    assert (metrics["n_items"] - metrics["n_synthetic"] == len(real) - 1).all()
    syn = load_synthetic(imagenet_lt["manifest"])
    n_val_sources = 1
    per_level = syn.groupby("level").size()
    assert metrics["n_synthetic"].iloc[0] == per_level[10] - 3 * n_val_sources  # level 10, minus held-out images
    assert metrics["n_synthetic"].iloc[-1] == 0 and metrics["level"].iloc[-1] == 100
    sched = pd.read_csv(run / "schedule.csv")
    assert sched["next_level"].iloc[0] in (10, 30) and sched["level"].iloc[1] == sched["next_level"].iloc[0]
    assert (run / "final_model.safetensors").is_file()
    cli = json.loads((run / "config.json").read_text())["cli_args"]
    assert cli["composition"] == "mixed" and cli["prototype_state"] == str(state) and cli["proto_warmup_steps"] == 4
    assert cli["loss"] == "balanced_softmax" and cli["arch"] == "resnet10t" and cli["levels"] == [10, 30]


def test_checkpoint_round_trip_restores_optimizer(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    for _ in range(3):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        sched.step()
    save_checkpoint(tmp_path / "ck", model, opt, sched, {"epoch": 3})
    m2 = torch.nn.Linear(3, 2)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.1)
    s2 = torch.optim.lr_scheduler.LambdaLR(o2, lambda s: 0.5**s)
    assert load_checkpoint(tmp_path / "ck", m2, o2, s2) == {"epoch": 3}
    torch.testing.assert_close(m2.weight, model.weight)
    a, b = opt.state_dict(), o2.state_dict()
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            torch.testing.assert_close(torch.as_tensor(b["state"][pid][k]), torch.as_tensor(v))
    assert s2.get_last_lr() == sched.get_last_lr()
    assert not any(p.name.endswith(".pkl") or p.suffix in {".pt", ".pth", ".bin"} for p in (tmp_path / "ck").iterdir())


def test_checkpoint_round_trip_restores_the_grad_scaler(tmp_path):
    """The fp16 GradScaler's scale and growth tracker survive a checkpoint, as JSON (no pickle)."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for _ in range(3):
        scaler.scale(model(torch.randn(4, 3)).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0**11 and scaler.state_dict()["_growth_tracker"] == 1
    save_checkpoint(tmp_path / "ck", model, opt, scaler=scaler)
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["scaler"]["scale"] == 2.0**11
    fresh = torch.amp.GradScaler("cpu")
    load_checkpoint(tmp_path / "ck", torch.nn.Linear(3, 2), scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()


def test_fp16_grad_scaler_state_is_resumed(iwildcam, tmp_path, monkeypatch):
    """With accelerate's GradScaler (as under fp16 on a GPU) the resumed run continues its scale."""
    from accelerate import Accelerator

    orig_init = Accelerator.__init__

    def init(self, *args, **kw):
        orig_init(self, *args, **kw)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1)  # doubles every step

    monkeypatch.setattr(Accelerator, "__init__", init)
    run = tmp_path / "run"
    flags = ("--epochs", "2", "--curriculum_epoch", "1")
    assert finetune_flyp.main(_flyp_argv(iwildcam, run, *flags, "--epochs_per_invocation", "1")) == 0
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["scaler"]["scale"] == 2.0 ** (4 + state["extra"]["global_step"])
    assert finetune_flyp.main(_flyp_argv(iwildcam, run, *flags, "--resume")) == 0
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["extra"]["global_step"] > 2 and state["scaler"]["scale"] == 2.0 ** (4 + state["extra"]["global_step"])


def test_prototype_weighting_draws_real_data_through_the_curriculum_sampler(iwildcam, tmp_path):
    """The real part of an epoch follows the saved prototype difficulty: near-prototype samples first."""
    from curriculum import save_curriculum_state
    from training.trainers.engine import RunData, items_for_epoch
    from training.trainers.runs import prototype_schedule

    real = load_real(iwildcam["table"], iwildcam["root"])
    ids = real["sample_id"].tolist()
    d = np.linspace(0.0, 1.0, len(ids))  # sample i is i/(n-1) away from its prototype
    save_curriculum_state(tmp_path / "proto", ids[::-1], {"difficulty": d[::-1].copy()})  # stored in another order
    sched = prototype_schedule(str(tmp_path / "proto"), ids, start=0.3, warmup_steps=1000, mode="prototypes_first")
    data = RunData(real=real, synthetic=real.iloc[:0], real_schedule=sched)
    items = items_for_epoch(data, 100, epoch=0, seed=0, global_step=0, batch_size=4)
    assert len(items) == len(ids) and (items["source"] == "real").all()
    drawn = items["sample_id"].map(dict(zip(ids, d)))
    assert drawn.mean() < 0.4 and items["sample_id"].nunique() < len(ids)  # favours prototypes, with replacement
    again = items_for_epoch(data, 100, epoch=0, seed=0, global_step=0, batch_size=4)
    assert again["sample_id"].tolist() == items["sample_id"].tolist()  # a resumed run draws the same
    late = items_for_epoch(data, 100, epoch=5, seed=0, global_step=5000, batch_size=4)
    assert abs(late["sample_id"].map(dict(zip(ids, d))).mean() - 0.5) < 0.25  # uniform after the warm-up
    with pytest.raises(ValueError, match="have no curriculum state"):
        prototype_schedule(str(tmp_path / "proto"), ids + ["stranger"], 0.3, 1000, "prototypes_first")


def test_prototype_sampler_refreshes_within_a_short_warm_up(iwildcam, tmp_path):
    """The real-data distribution is refreshed often enough to follow the warm-up: with a 40-step warm-up
    the draws after it are uniform (a fixed 100-step refresh would draw the whole run from step 0)."""
    import argparse

    from curriculum import save_curriculum_state
    from training.trainers.cli import add_common_args
    from training.trainers.engine import items_for_epoch
    from training.trainers.runs import build_run_data

    real = load_real(iwildcam["table"], iwildcam["root"])
    ids = real["sample_id"].tolist()
    d = np.linspace(0.0, 1.0, len(ids))
    save_curriculum_state(tmp_path / "proto", ids, {"difficulty": d})
    p = argparse.ArgumentParser()
    add_common_args(
        p, {"eval_splits": ["id_val"], "curriculum_epoch": 1, "epochs": 1, "batch_size": 4, "lr": 1e-3, "wd": 0.0}
    )
    base = [
        "--data_table",
        str(iwildcam["table"]),
        "--data_root",
        str(iwildcam["root"]),
        "--run_dir",
        str(tmp_path / "r"),
        "--prototype_state",
        str(tmp_path / "proto"),
        "--proto_warmup_steps",
        "40",
        "--proto_start",
        "0.3",
    ]
    data, _ = build_run_data(p.parse_args(base), adaptive=False)
    assert data.real_refresh_every == 2  # warm-up / 20
    early = items_for_epoch(data, 100, epoch=0, seed=0, global_step=0, batch_size=4)
    late = items_for_epoch(data, 100, epoch=9, seed=0, global_step=40, batch_size=4)
    dist = dict(zip(ids, d))
    assert early["sample_id"].map(dist).mean() < 0.4
    assert abs(late["sample_id"].map(dist).mean() - 0.5) < 0.2
    data, _ = build_run_data(p.parse_args(base + ["--proto_refresh_every", "7"]), adaptive=False)
    assert data.real_refresh_every == 7


def test_flyp_run_with_prototype_state(iwildcam, tmp_path):
    from curriculum import save_curriculum_state

    real = load_real(iwildcam["table"], iwildcam["root"])
    save_curriculum_state(tmp_path / "proto", real["sample_id"].tolist(), {"difficulty": np.linspace(0, 1, len(real))})
    run = tmp_path / "run"
    assert (
        finetune_flyp.main(
            _flyp_argv(iwildcam, run, "--prototype_state", str(tmp_path / "proto"), "--proto_warmup_steps", "4", *OURS)
        )
        == 0
    )
    metrics = pd.read_csv(run / "metrics.csv")
    assert (metrics["n_items"] - metrics["n_synthetic"] == iwildcam["n_train"]).all()


def test_warmup_cosine_spans_the_steps_it_is_told_about():
    """Exact lengths give FLYP's formula; a re-planned (adaptive) run decays without jumps to its last step."""
    from training.trainers.lr_schedule import WarmupCosine

    def run(plans: list[int], epochs_steps: list[int], warmup: int) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        sched, lrs = WarmupCosine(opt, warmup), []
        for remaining, n in zip(plans, epochs_steps):
            sched.plan(remaining)
            for _ in range(n):
                lrs.append(opt.param_groups[0]["lr"])
                sched.step()
        assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
        return lrs

    steps, w = [5, 7, 3, 3], 3
    total = sum(steps)
    exact = run([total - sum(steps[:i]) for i in range(4)], steps, w)
    flyp = [0.5 * (k + 1) / w if k < w else 0.25 * (1 + np.cos(np.pi * (k - w) / (total - w))) for k in range(total)]
    np.testing.assert_allclose(exact, flyp, rtol=1e-12)
    # adaptive: the later epochs were first estimated at 7 steps each (the current level's length)
    replanned = run([5 + 7 * 3, 7 + 7 * 2, 3 + 3, 3], steps, w)
    after = np.array(replanned[w:])
    assert (np.diff(after) < 0).all() and np.abs(np.diff(after)).max() < 0.2  # decreasing, no jump
    assert replanned[-1] < 0.05 * 0.5 and min(replanned[:-1]) > replanned[-1]
    # the state is JSON and restores the position exactly
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    a = WarmupCosine(opt, w)
    a.plan(20)
    for _ in range(6):
        a.step()
    b = WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), w)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.get_last_lr() == a.get_last_lr() and b.progress == a.progress


def test_flyp_loss_goes_through_the_forward_of_a_wrapper(iwildcam):
    """A DDP-like wrapper exposes only forward: FLYP's loss calls it and equals the loss of the bare model."""
    from curriculum.tables import read_prompt_templates
    from training.trainers.flyp import FLYPTask, load_open_clip

    torch.manual_seed(0)
    model, _, _, tok = load_open_clip(iwildcam["model"], "")

    class ForwardOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args)

    wrapped = ForwardOnly(model)
    assert not hasattr(wrapped, "encode_image")
    task = FLYPTask(model, None, None, tok, ["cat", "dog", "cow"], read_prompt_templates("iwildcam"))
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    task.set_epoch(3)
    direct = task.training_loss(model, images, labels)
    task.set_epoch(3)
    through = task.training_loss(wrapped, images, labels)
    torch.testing.assert_close(through, direct)
    through.backward()
    assert model.logit_scale.grad is not None and model.visual.conv1.weight.grad.abs().sum() > 0


def test_flyp_trains_under_ddp_and_only_the_main_process_writes(iwildcam, tmp_path, monkeypatch):
    """Real DistributedDataParallel (gloo, one CPU process) around the model; a non-main process writes nothing."""
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.nn.parallel import DistributedDataParallel

    from training.trainers.flyp import load_open_clip

    orig_prepare, seen = Accelerator.prepare, {}

    def prepare(self, *objs, **kw):
        out = orig_prepare(self, *objs, **kw)
        wrap = lambda o: DistributedDataParallel(o) if isinstance(o, torch.nn.Module) else o  # noqa: E731
        return tuple(wrap(o) for o in out) if isinstance(out, tuple) else wrap(out)

    def train(cfg, task, data):
        seen["task"] = task
        seen["result"] = orig_train(cfg, task, data)
        return seen["result"]

    import training.trainers.engine as engine

    orig_train = engine.train
    monkeypatch.setattr(Accelerator, "prepare", prepare)
    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(engine, "train", train)  # the CLIs reach it through cli_common.run_training
    run = tmp_path / "run"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert finetune_flyp.main(_flyp_argv(iwildcam, run, "--progress_guid", "--log_dynamics", "--epochs", "2")) == 0
    finally:
        dist.destroy_process_group()
    metrics = seen["result"]["metrics"]
    assert metrics["epoch"].tolist() == [0, 1] and np.isfinite(metrics["train_loss"]).all()
    torch.manual_seed(0)  # the script's initialisation
    before = load_open_clip(iwildcam["model"], "")[0].state_dict()
    after = seen["task"].model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained through the wrapper
    assert [p for p in run.rglob("*")] == []  # metrics, schedule, checkpoints, models, dynamics: main process only


def test_an_epoch_whose_last_batch_would_hold_one_item_trains(imagenet_lt, tmp_path):
    """BatchNorm cannot train on one sample: such a last batch is dropped, and the step count agrees."""
    from training.trainers.engine import trainable_count

    assert trainable_count(33, 16) == 32 and trainable_count(32, 16) == 32 and trainable_count(1, 16) == 1
    n = len(imagenet_lt["real"])
    bs = next(b for b in range(8, n) if n % b == 1)
    run = tmp_path / "run"
    argv = [
        "--data_table",
        str(imagenet_lt["table"]),
        "--data_root",
        str(imagenet_lt["root"]),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--run_dir",
        str(run),
        "--epochs",
        "1",
        "--batch_size",
        str(bs),
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--composition",
        "mixed",
    ]
    assert train_lt.main(argv) == 0
    m = pd.read_csv(run / "metrics.csv")
    assert m["n_items"].tolist() == [n - 1] and m["step"].tolist() == [(n - 1) // bs]


def test_a_corrupt_training_image_is_a_clear_error_naming_it(imagenet_lt, tmp_path, capsys):
    """An image that exists but cannot be decoded stops the run with exit 2 and its path (no traceback)."""
    bad = imagenet_lt["real"]["source_path"].iloc[0]
    Path(bad).write_bytes(b"not a jpeg")
    argv = [
        "--data_table",
        str(imagenet_lt["table"]),
        "--data_root",
        str(imagenet_lt["root"]),
        "--arch",
        "resnet10t",
        "--img_size",
        "32",
        "--run_dir",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--batch_size",
        "16",
        "--num_workers",
        "0",
        "--device",
        "cpu",
        "--composition",
        "mixed",
    ]
    assert train_lt.main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot read training image" in err and str(bad) in err and "--resume" in err
