"""Several processes for real: 2 CPU processes under torchrun (gloo) against 1 process on the same work.

Each test launches `python -m torch.distributed.run --nproc_per_node 2` on tests/mp_driver.py, which runs the
CLI's own `main(argv)` and records what its process did (pipeline calls, training losses).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from curriculum.distributed import DistributedSetupError, ProcessInfo, detect, split_range
from data_generation.generation.plan import process_bounds, shard_bounds

from .test_training import _flyp_argv, _lt_argv, imagenet_lt, iwildcam  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTO = REPO / "data_generation" / "iWildCam" / "sample_imgs" / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU", "SLURM_PROCID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run `python -m torch.distributed.run --nproc_per_node nproc ARGS` from the repo root; assert it succeeds."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(free_port()), *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def records(folder: Path, world: int = 2) -> list[dict]:
    recs = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(world)]
    assert [r["rc"] for r in recs] == [0] * world
    return recs


# --------------------------------------------------------------------------------------------------------
# the helper, without launching anything
def test_detect_reads_torchrun_slurm_and_refuses_accelerates_single_cpu_process():
    assert detect({}) == ProcessInfo(0, 1, 0, "single")
    assert detect({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == ProcessInfo(1, 2, 1, "torchrun")
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0"}
    assert detect(slurm) == ProcessInfo(3, 4, 1, "slurm")
    # an sbatch script with --ntasks 4 that runs python once (no srun step) is one process
    assert detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}).world_size == 1
    # torchrun inside a SLURM job: torchrun's variables win
    assert detect({**slurm, "RANK": "0", "WORLD_SIZE": "2"}).world_size == 2
    # `accelerate launch --cpu --num_processes 2` starts ONE process and leaves MASTER_ADDR behind
    with pytest.raises(DistributedSetupError, match="starts ONE process.*torchrun --nproc_per_node"):
        detect({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    with pytest.raises(DistributedSetupError, match="starts ONE process"):  # no --multi_gpu on a CPU machine
        detect({"ACCELERATE_USE_CPU": "False", "MASTER_ADDR": "127.0.0.1"})
    assert detect({"ACCELERATE_USE_CPU": "True"}).world_size == 1  # --cpu with one process is fine
    assert ProcessInfo(2, 4).global_shard(2, 3) == (7, 12)
    assert ProcessInfo(1, 2, 1).device("cuda") == "cuda:1" and ProcessInfo().device("cpu") == "cpu"


@pytest.mark.parametrize("n", [0, 1, 7, 10, 23])
def test_process_shares_of_parts_cover_every_item_once(n):
    covered = []
    for part in (1, 2, 3):
        got = [process_bounds(n, part, 3, r, 2) for r in range(2)]
        assert got[0][0] == shard_bounds(n, part, 3)[0] and got[-1][1] == shard_bounds(n, part, 3)[1]
        covered += [i for s, e in got for i in range(s, e)]
    assert covered == list(range(n))
    blocks = [split_range(n, r, 3, block=4) for r in range(3)]
    assert [i for s, e in blocks for i in range(s, e)] == list(range(n))
    assert all(s % 4 == 0 or s == n for s, _ in blocks)  # whole batches of 4


# --------------------------------------------------------------------------------------------------------
# gene_img
def _hard_table(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    shutil.copy(SAMPLE_PHOTO, data / "imgs" / "cheetah01.jpg")
    rng = np.random.default_rng(0)
    for name in ("zebra01", "zebra02"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(data / "imgs" / f"{name}.jpg")
    csv = tmp_path / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["cheetah01", "zebra01", "zebra02"],
            "filepath": ["imgs/cheetah01.jpg", "imgs/zebra01.jpg", "imgs/zebra02.jpg"],
            "label": [3, 7, 7],
            "label_name": ["cheetah", "zebra", "zebra"],
        }
    ).to_csv(csv, index=False)
    return csv, data


GENE_FLAGS = ["--strengths", "0.5", "1.0", "--seeds", "1", "2", "--steps", "4", "--width", "48", "--height", "32"]
GENE_FLAGS += ["--batch_size", "2", "--no_progress", "--merge"]


def test_gene_img_two_processes_generate_each_variant_once_and_equal_one_process(tmp_path, tiny_sd_dir):
    from data_generation import gene_img

    csv, data = _hard_table(tmp_path)
    common = ["--data_csv", str(csv), "--data_root", str(data), "--model_id", str(tiny_sd_dir), *GENE_FLAGS]
    one, two = tmp_path / "one", tmp_path / "two"
    assert gene_img.main([*common, "--output_path", str(one)]) == 0
    torchrun("tests/mp_driver.py", "gene_img", str(tmp_path / "rec"), "--", *common, "--output_path", str(two))

    recs = records(tmp_path / "rec")
    # every variant was generated once: 3 images x 2 strengths x 2 seeds, each process its own images
    per_process = [{sid for b in r["batches"] for sid in b["sample_ids"]} for r in recs]
    assert per_process[0] and per_process[1] and not per_process[0] & per_process[1]
    pairs = pd.Series([(sid, b["strength"]) for r in recs for b in r["batches"] for sid in b["sample_ids"]])
    assert len(pairs) == 12 and pairs.value_counts().eq(2).all()  # 2 seeds of each (image, strength)
    assert sum(sum(r["pipeline_calls"]) for r in recs) == 12
    shards = [pd.read_parquet(two / f"manifest-part{i}-of-2.parquet") for i in (1, 2)]
    assert [len(s) for s in shards] == [sum(r["pipeline_calls"]) for r in recs]
    assert not set(shards[0]["synthetic_id"]) & set(shards[1]["synthetic_id"])

    # the merged manifest (by the main process, after the barrier) and every image equal one process's
    pd.testing.assert_frame_equal(pd.read_parquet(two / "manifest.parquet"), pd.read_parquet(one / "manifest.parquet"))
    images = sorted(p.relative_to(one) for p in one.rglob("*.jpg"))
    assert len(images) == 12 and images == sorted(p.relative_to(two) for p in two.rglob("*.jpg"))
    assert all((one / p).read_bytes() == (two / p).read_bytes() for p in images)


def test_accelerate_cpu_launch_of_one_process_is_an_error_not_a_silent_single_run(tmp_path, monkeypatch, capsys):
    from data_generation import gene_img

    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu --num_processes 2` leaves
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    csv, data = _hard_table(tmp_path)
    argv = ["--data_csv", str(csv), "--data_root", str(data), "--output_path", str(tmp_path / "out")]
    assert gene_img.main(argv) == 2
    assert "starts ONE process" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.jpg"))


# --------------------------------------------------------------------------------------------------------
# comp_clip_scores
def test_comp_clip_scores_two_processes_share_the_embedding_and_equal_one_process(
    spectrum_copy, tiny_open_clip_dir, capsys
):
    from data_generation import comp_clip_scores

    sp = spectrum_copy
    flags = ["--syn_path", str(sp["syn"]), "--real_path", str(sp["data"]), "--clip_backend", "open_clip"]
    flags += ["--clip_model", str(tiny_open_clip_dir), "--threshold", "0.0", "--batch_size", "4", "--no_progress"]
    flags += ["--no_plots", "--num_workers", "1"]
    one, two = sp["root"] / "one", sp["root"] / "two"
    assert comp_clip_scores.main([*flags, "--output_dir", str(one), "--cache_dir", str(one / "cache")]) == 0
    done = torchrun(
        "data_generation/comp_clip_scores.py", *flags, "--output_dir", str(two), "--cache_dir", str(two / "cache")
    )
    # 12 synthetic images in batches of 4: process 1 embeds batches 1 and 3, process 2 batch 2
    assert "process 1/2 embedded 8 of 12 synthetic images" in done.stderr
    assert "process 2/2 embedded 4 of 12 synthetic images" in done.stderr
    for name in ("clip_scores.parquet", "manifest-filtered.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(two / name), pd.read_parquet(one / name))
    assert (two / "clip_summary.csv").read_text() == (one / "clip_summary.csv").read_text()
    # the cache (written by the main process only) holds every embedding: a rerun embeds nothing
    chunks = list((two / "cache").rglob("chunk-*.safetensors"))
    assert chunks and all(p.stat().st_size for p in chunks)
    assert comp_clip_scores.main([*flags, "--output_dir", str(two / "again"), "--cache_dir", str(two / "cache")]) == 0
    assert "synthetic 0 new/12 cached, real 0 new/2 cached" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------
# FLYP: the contrastive batch is the global batch
def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final_model.safetensors")


FLYP_FLAGS = ["--batch_size", "16", "--max_steps_per_epoch", "1", "--lr", "0.5", "--warmup_steps", "0"]
FLYP_FLAGS += ["--eval_batch_size", "3", "--epochs", "3"]


def test_flyp_two_processes_of_8_equal_one_process_of_16(iwildcam, tmp_path, monkeypatch):  # noqa: F811
    """Same loss at every step and the same weights after 3 steps (the last step a short batch of 12).

    Both runs use SGD: AdamW divides each gradient by its own size, so on a parameter whose gradient is
    mathematically zero (the text attention's key bias) it turns float noise into lr-sized steps of random sign.
    """
    from training import finetune_flyp
    from training.trainers import flyp

    orig_load, losses = flyp.load_open_clip, []

    def load_without_augmentation(*args, **kwargs):  # as the driver does: no random crop
        model, _train_tf, eval_tf, tok = orig_load(*args, **kwargs)
        return model, eval_tf, eval_tf, tok

    orig_loss = flyp.FLYPTask.training_loss

    def training_loss(self, model, images, labels, **kw):  # kw: FLYP's item rows
        loss = orig_loss(self, model, images, labels, **kw)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(flyp, "load_open_clip", load_without_augmentation)
    monkeypatch.setattr(flyp.FLYPTask, "training_loss", training_loss)
    monkeypatch.setattr(torch.optim, "AdamW", torch.optim.SGD)
    one, two = tmp_path / "one", tmp_path / "two"
    assert finetune_flyp.main(_flyp_argv(iwildcam, one, *FLYP_FLAGS)) == 0
    clip_cfg = str(tmp_path / "clipcfg")  # where the fixture registered the tiny architecture
    argv2 = _flyp_argv(iwildcam, two, *FLYP_FLAGS)
    torchrun("tests/mp_driver.py", "flyp", str(tmp_path / "rec"), clip_cfg, "sgd", "--", *argv2)

    recs = records(tmp_path / "rec")
    assert len(losses) == 3 and all(len(r["losses"]) == 3 for r in recs)
    for r in recs:  # every process's loss is the global batch's: one process's on 16 pairs
        np.testing.assert_allclose(r["losses"], losses, rtol=1e-5, atol=1e-6)
    w1, w2 = _weights(one), _weights(two)
    torch.manual_seed(0)
    w0 = orig_load(iwildcam["model"], "")[0].state_dict()
    moved = max(float((w1[k] - w0[k]).abs().max()) for k in w1)
    diff = sorted(((float((w1[k] - w2[k]).abs().max()), k) for k in w1), reverse=True)
    assert moved > 1e-3 and diff[0][0] <= 1e-5, (moved, diff[:5])
    # sharded evaluation (batches of 3 over splits of 4: shares of 3 and 1) gives one process's metrics
    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    cols = [c for c in m1.columns if c.startswith("iwildcam/")]
    assert len(cols) == 8
    pd.testing.assert_frame_equal(m1[cols], m2[cols])


def test_flyp_global_batch_must_divide_across_processes(monkeypatch):
    from training.trainers.engine import per_process_batch

    assert per_process_batch(16, 2) == 8 and per_process_batch(16, 2, batch_per_process=True) == 16
    with pytest.raises(ValueError, match="--batch_size 15 is the global batch.*2 processes"):
        per_process_batch(15, 2)


def test_contrastive_loss_gathered_form_equals_the_plain_one_on_one_process():
    from open_clip.loss import ClipLoss

    from training.trainers.losses import contrastive_loss

    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scale = torch.tensor(10.0)
    ours = contrastive_loss(img, txt, scale)
    theirs = ClipLoss()(torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1), scale)
    torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------------------------------------------
# train_lt --sync_bn: BatchNorm over the global batch
LT_FLAGS = ["--augment", "none", "--max_steps_per_epoch", "2", "--epochs", "2", "--eval_batch_size", "7"]
LT_FLAGS += ["--lr", "0.1", "--sync_bn"]


def test_train_lt_sync_bn_two_processes_of_8_equal_one_process_of_16(imagenet_lt, tmp_path, monkeypatch):  # noqa: F811
    from training import train_lt
    from training.trainers import classifier

    losses = []
    orig_loss = classifier.ClassifierTask.training_loss

    def training_loss(self, model, images, labels, **kw):  # kw: FLYP's item rows
        loss = orig_loss(self, model, images, labels, **kw)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(classifier.ClassifierTask, "training_loss", training_loss)
    monkeypatch.setattr(torch.optim, "Adam", torch.optim.SGD)  # see the FLYP test
    one, two = tmp_path / "one", tmp_path / "two"
    with pytest.warns(UserWarning, match="--sync_bn with one process"):
        assert train_lt.main(_lt_argv(imagenet_lt, one, *LT_FLAGS)) == 0
    argv2 = _lt_argv(imagenet_lt, two, *LT_FLAGS)
    torchrun("tests/mp_driver.py", "train_lt", str(tmp_path / "rec"), "sgd", "--", *argv2)

    recs = records(tmp_path / "rec")
    # a process's loss is the mean over its 8 items; the two processes' mean is one process's loss on 16
    assert len(losses) == 4
    np.testing.assert_allclose(np.mean([r["losses"] for r in recs], axis=0), losses, rtol=1e-5, atol=1e-6)
    w1, w2 = _weights(one), _weights(two)
    bn = [k for k in w1 if k.endswith("running_var")]
    assert bn and max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-5
    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    cols = [c for c in m1.columns if c.startswith("imagenet_lt/")]
    pd.testing.assert_frame_equal(m1[cols], m2[cols])


def test_process_batches_slice_each_global_batch_and_never_repeat_an_item():
    from training.trainers.engine import process_batches, trainable_count

    assert trainable_count(33, 16) == 32 and trainable_count(1, 16) == 1  # one process: as before
    assert trainable_count(29, 16, 2) == 28  # a last batch of 13: slices of 6, one item left out
    assert trainable_count(19, 16, 2) == 16  # a last batch of 3: slices of 1 would break BatchNorm
    n = trainable_count(29, 16, 2)
    slices = [process_batches(n, 16, r, 2) for r in range(2)]
    assert [len(b) for b in slices[0]] == [8, 6] and [len(b) for b in slices[1]] == [8, 6]
    for step in range(2):  # rank order = the order of one process's batch
        assert slices[0][step] + slices[1][step] == process_batches(n, 16)[step]


# --------------------------------------------------------------------------------------------------------
# mine_hard: the scorers' forward passes shared by the processes
def test_mine_hard_two_processes_share_the_forward_passes_and_equal_one_process(tmp_path):
    import timm
    from safetensors.torch import save_file

    from data_generation import mine_hard

    from .fakes import make_image_folder

    make_image_folder(tmp_path / "imgs", {"cat": 4, "dog": 3})
    weights = tmp_path / "clf.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("resnet10t", num_classes=2).state_dict(), str(weights))
    flags = ["--dataset", "folder", "--data", str(tmp_path / "imgs"), "--scorers", "checkpoint", "random"]
    flags += ["--classifier_arch", "resnet10t", "--classifier_weights", str(weights), "--classifier_img_size", "32"]
    flags += ["--bottom_q", "true_prob=0.3", "--batch_size", "3"]
    outs = {n: (tmp_path / f"hard{n}.csv", tmp_path / f"scores{n}.parquet") for n in (1, 2)}
    assert mine_hard.main([*flags, "--output_csv", str(outs[1][0]), "--scores_parquet", str(outs[1][1])]) == 0
    two = ["--output_csv", str(outs[2][0]), "--scores_parquet", str(outs[2][1])]
    torchrun("data_generation/mine_hard.py", *flags, *two)
    # 7 images in batches of 3: process 1 runs batches 1-2 (6 images), process 2 batch 3; gathered in order
    pd.testing.assert_frame_equal(pd.read_parquet(outs[2][1]), pd.read_parquet(outs[1][1]))
    assert outs[2][0].read_text() == outs[1][0].read_text()
