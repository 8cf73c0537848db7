"""Hardening of the Phase 2 trainers (issue 16): resume with changed flags, a used run folder, checkpoints and
bookkeeping after a kill, damaged checkpoints, strict booleans and labels, FLYP's class-name map."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from curriculum.tables import TableError, check_labels, parse_bool_column
from data_generation.mining.datasets import load_imagenet_lt
from training import train_lt
from training.trainers.checkpoint import CheckpointError, load_checkpoint, recover_checkpoint, save_checkpoint
from training.trainers.data import load_real, load_synthetic

from .fakes import make_fake_imagenet_lt, make_synthetic_manifest


@pytest.fixture
def lt(tmp_path):
    """A very small ImageNet-LT table (train/val split) and a scored synthetic manifest of the tail class."""
    lst = make_fake_imagenet_lt(tmp_path / "lt", {0: 15, 1: 10, 2: 5})
    table = load_imagenet_lt(lst, data_root=tmp_path / "lt")
    table["split"] = ["val" if i % 5 == 0 else "train" for i in range(len(table))]
    table.drop(columns="source_path").to_parquet(tmp_path / "lt.parquet")
    real = load_real(tmp_path / "lt.parquet", tmp_path / "lt")
    manifest = make_synthetic_manifest(tmp_path / "syn", real[real["label"] == 2], strengths=(0.9,), seeds=(1,))
    return {"table": tmp_path / "lt.parquet", "root": tmp_path / "lt", "manifest": manifest, "real": real}


def _argv(d, run, *extra):
    return [
        "--data_table", str(d["table"]), "--data_root", str(d["root"]), "--arch", "resnet10t", "--img_size", "32",
        "--run_dir", str(run), "--epochs", "3", "--batch_size", "8", "--num_workers", "0", "--device", "cpu",
        "--composition", "mixed", "--eval_splits", "val", "--max_steps_per_epoch", "2", *extra,
    ]  # fmt: skip


def test_resume_with_changed_flags_and_a_used_run_dir_are_refused(lt, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_lt.main(_argv(lt, run, "--epochs_per_invocation", "1")) == 0
    config = (run / "config.json").read_text()
    # --resume with another --lr and --batch_size: refused, naming both; config.json is not overwritten
    assert train_lt.main(_argv(lt, run, "--resume", "--lr", "0.05", "--batch_size", "4")) == 2
    err = capsys.readouterr().err
    assert "--batch_size" in err and "--lr" in err and str(run / "config.json") in err
    assert (run / "config.json").read_text() == config
    # the same run dir without --resume: refused (it would silently replace the run)
    assert train_lt.main(_argv(lt, run)) == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "config.json").read_text() == config
    # flags that do not change what is trained may differ
    assert train_lt.main(_argv(lt, run, "--resume", "--num_workers", "0", "--epochs_per_invocation", "1")) == 0
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [0, 1]


def test_a_kill_between_checkpoint_renames_and_after_a_metrics_row_resumes_to_the_same_run(lt, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_lt.main(_argv(lt, a)) == 0
    assert train_lt.main(_argv(lt, b, "--epochs_per_invocation", "2")) == 0
    # simulate a kill during epoch 1's checkpoint save, after the old checkpoint was moved aside and before the
    # new one was renamed into place; and a kill after epoch 2's metrics/schedule rows were written
    ckpt = b / "checkpoints"
    (ckpt / "last").rename(ckpt / ".last.tmp")
    metrics, schedule = pd.read_csv(b / "metrics.csv"), pd.read_csv(b / "schedule.csv")
    pd.concat([metrics, metrics.tail(1).assign(epoch=2)]).to_csv(b / "metrics.csv", index=False)
    pd.concat([schedule, schedule.tail(1).assign(epoch=2)]).to_csv(b / "schedule.csv", index=False)
    (b / ".metrics.csv.k1ll3d.tmp").write_text("half a row")  # a killed atomic write's leftover
    assert train_lt.main(_argv(lt, b, "--resume")) == 0
    mb = pd.read_csv(b / "metrics.csv")
    assert mb["epoch"].tolist() == [0, 1, 2]  # not restarted at epoch 0, no duplicated epoch
    assert pd.read_csv(b / "schedule.csv")["epoch"].tolist() == [0, 1, 2]
    ma = pd.read_csv(a / "metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns="seconds"), mb.drop(columns="seconds"))
    wa, wb = load_file(str(a / "final_model.safetensors")), load_file(str(b / "final_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (ckpt / ".last.tmp").exists() and not (ckpt / ".last.old").exists()
    assert not list(b.glob(".*.tmp"))  # cleaned on the next run


def test_checkpoint_recovery_and_damaged_checkpoints(tmp_path):
    model = torch.nn.Linear(3, 2)
    last = tmp_path / "checkpoints" / "last"
    save_checkpoint(last, model, extra={"epoch": 0})
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(last, model, extra={"epoch": 1})
    # an interrupted save of epoch 2 (no state.json yet) never replaces the complete epoch-1 checkpoint
    (tmp_path / "checkpoints" / ".last.tmp").mkdir()
    (tmp_path / "checkpoints" / ".last.tmp" / "model.safetensors").write_bytes(b"half")
    assert recover_checkpoint(last) == last and not (tmp_path / "checkpoints" / ".last.tmp").exists()
    assert load_checkpoint(last, torch.nn.Linear(3, 2))["epoch"] == 1
    # only the previous checkpoint moved aside survives: it is put back
    last.rename(last.with_name(".last.old"))
    assert recover_checkpoint(last) == last and load_checkpoint(last, torch.nn.Linear(3, 2))["epoch"] == 1
    # a truncated weights file and a corrupt state.json: CheckpointError naming the folder
    shutil.copytree(last, tmp_path / "c1")
    raw = (tmp_path / "c1" / "model.safetensors").read_bytes()
    (tmp_path / "c1" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"c1: the checkpoint is damaged"):
        load_checkpoint(tmp_path / "c1", torch.nn.Linear(3, 2))
    shutil.copytree(last, tmp_path / "c2")
    (tmp_path / "c2" / "state.json").write_text('{"extra": ')
    with pytest.raises(CheckpointError, match=r"c2: the checkpoint is damaged"):
        load_checkpoint(tmp_path / "c2", torch.nn.Linear(3, 2))


def test_the_diffusion_trainer_checkpoints_share_the_recovering_atomic_folder(tmp_path, monkeypatch):
    """The one checkpoint implementation (a12's, with i16's recovery): the diffusion trainer's epoch folders are
    built in `.epoch-N.tmp`, follow the umask, and a full disk keeps the previous checkpoint, no temporary left."""
    import os

    import training.trainers.checkpoint as ck
    from training.diffusion import checkpoint as dck

    class Ema:  # the state_dict entries the diffusion checkpoint reads from diffusers' EMAModel
        def state_dict(self):
            return {"shadow_params": [torch.ones(2)], "decay": 0.9, "collected_params": None}

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    old_mask = os.umask(0o002)
    try:
        first = dck.save_checkpoint(tmp_path, 1, model, Ema(), opt, None, {"global_step": 1}, keep=0)
    finally:
        os.umask(old_mask)
    assert first.name == "epoch-0001" and (first.stat().st_mode & 0o777) == 0o775  # not mkdtemp's 0700
    assert json.loads((first / "state.json").read_text())["epoch"] == 1
    seen = []

    def full_disk(tensors, path, **kwargs):
        seen.append(path)
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(ck, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        dck.save_checkpoint(tmp_path, 2, model, Ema(), opt, None, {"global_step": 2}, keep=1)
    assert "/.epoch-0002.tmp/" in seen[0]  # built in the one atomic_folder's temporary
    root = tmp_path / dck.CHECKPOINT_DIR
    assert sorted(p.name for p in root.iterdir()) == ["epoch-0001"]  # no temporary left, epoch 1 kept
    assert dck.latest_checkpoint(tmp_path) == first


def test_a_damaged_checkpoint_or_a_full_disk_is_one_line_exit_2(lt, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train_lt.main(_argv(lt, run, "--epochs_per_invocation", "1")) == 0
    before = (run / "checkpoints" / "last" / "model.safetensors").read_bytes()
    state = run / "checkpoints" / "last" / "state.json"
    good = state.read_text()
    state.write_text("{not json")
    assert train_lt.main(_argv(lt, run, "--resume")) == 2
    err = capsys.readouterr().err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("train_lt: error: ") and "checkpoint is damaged" in last_line
    assert str(run / "checkpoints" / "last") in last_line and "Traceback" not in err
    state.write_text(good)

    import training.trainers.checkpoint as ck

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(args[1]))

    monkeypatch.setattr(ck, "save_file", full_disk)
    assert train_lt.main(_argv(lt, run, "--resume")) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err
    # the previous checkpoint is whole and no temporary folder is left behind
    assert (run / "checkpoints" / "last" / "model.safetensors").read_bytes() == before
    assert json.loads(state.read_text())["extra"]["epoch"] == 0
    assert not (run / "checkpoints" / ".last.tmp").exists()


def test_strict_booleans_keep_and_hard(lt, tmp_path):
    assert parse_bool_column(pd.Series(["False", " true", "0", "1", "", "NO", "yes"]), "f.csv", "keep").tolist() == [
        False,
        True,
        False,
        True,
        False,
        False,
        True,
    ]
    with pytest.raises(TableError, match=r"f\.csv: row 2: column 'keep' must be a boolean.*'maybe'"):
        parse_bool_column(pd.Series(["true", "maybe"]), "f.csv", "keep")
    with pytest.raises(TableError, match=r"row 1: column 'hard'"):
        parse_bool_column(pd.Series([2]), "f.csv", "hard")
    assert parse_bool_column(pd.Series([None, float("nan"), 1.0]), "f.csv", "hard").tolist() == [False, False, True]
    # a CSV manifest and a Parquet one with string keep values: "False" rows are dropped
    scores = pd.read_parquet(lt["manifest"])
    scores["keep"] = ["False" if i % 2 else "True" for i in range(len(scores))]
    n_keep = int((scores["keep"] == "True").sum())
    scores.to_csv(tmp_path / "m.csv", index=False)
    scores.to_parquet(tmp_path / "syn" / "m.parquet")
    assert len(load_synthetic(tmp_path / "m.csv", tmp_path / "syn")) == n_keep
    assert len(load_synthetic(tmp_path / "syn" / "m.parquet")) == n_keep
    scores.assign(keep="perhaps").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(TableError, match=r"bad\.csv: row 1: column 'keep'"):
        load_synthetic(tmp_path / "bad.csv", tmp_path / "syn")
    # a CSV sample table's hard = "False" is not hard
    table = pd.read_parquet(lt["table"])
    table["hard"] = ["False", "True"] * (len(table) // 2)
    table.to_csv(tmp_path / "t.csv", index=False)
    real = load_real(tmp_path / "t.csv", lt["root"])
    expected = table.set_index("image_name").loc[[f"{s}.JPEG" for s in real["sample_id"]], "hard"] == "True"
    assert real["hard"].dtype == bool and real["hard"].tolist() == expected.tolist() and not real["hard"].all()


@pytest.mark.parametrize("label", ["1e30", "-1", "2.5", "seven"])
def test_bad_labels_are_an_error_naming_file_and_row(lt, tmp_path, capsys, label):
    table = pd.read_parquet(lt["table"]).astype({"label": str})
    table.loc[3, "label"] = label
    table.to_csv(tmp_path / "t.csv", index=False)
    argv = _argv(lt, tmp_path / "run")
    argv[argv.index("--data_table") + 1] = str(tmp_path / "t.csv")
    assert train_lt.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.csv'}: row 4: column 'label' must be an integer" in err and label in err
    assert check_labels(pd.Series(["0", "2"]), "x", n_classes=3).tolist() == [0, 2]
    with pytest.raises(TableError, match=r"x: row 2: column 'label' must be an integer in \[0, 3\), got '3'"):
        check_labels(pd.Series(["0", "3"]), "x", n_classes=3)


def test_synthetic_labels_are_checked(lt, tmp_path):
    scores = pd.read_parquet(lt["manifest"])
    scores.loc[0, "label"] = -1
    scores.to_parquet(tmp_path / "syn" / "neg.parquet")
    with pytest.raises(TableError, match=r"neg\.parquet: row 1: column 'label'"):
        load_synthetic(tmp_path / "syn" / "neg.parquet")


def test_flyp_class_name_map_missing_labels_and_unknown_templates(lt, tmp_path):
    from training.finetune_flyp import flyp_class_names
    from training.trainers.engine import RunData

    data = RunData(real=lt["real"], synthetic=lt["real"].iloc[:0])
    (tmp_path / "names.csv").write_text("label,classname\n0,cat\n1,dog\n")
    with pytest.raises(ValueError, match=r"--class_names .*names\.csv: no name for 1 label\(s\) of the data: 2"):
        flyp_class_names(data, str(tmp_path / "names.csv"))
    (tmp_path / "names.csv").write_text("label,classname\n0,cat\n1,dog\n2,emu\n")
    assert flyp_class_names(data, str(tmp_path / "names.csv")) == ["cat", "dog", "emu"]


def test_flyp_cli_unknown_templates_key_is_exit_2(lt, tmp_path, capsys):
    from training import finetune_flyp

    argv = [
        "--data_table", str(lt["table"]), "--data_root", str(lt["root"]), "--run_dir", str(tmp_path / "r"),
        "--eval_splits", "val", "--templates", "no_such_dataset", "--model", "x", "--pretrained", "",
    ]  # fmt: skip
    assert finetune_flyp.main(argv) == 2
    err = capsys.readouterr().err
    assert "--templates" in err and "no_such_dataset" in err and "iwildcam" in err


def test_changed_settings_names_library_fields_without_cli_args():
    from training.trainers.engine import changed_settings

    old = {"task": "t", "config": {"lr": 1e-3, "levels": [10], "resume": False}, "cli_args": {}}
    new = {"task": "t", "config": {"lr": 1e-2, "levels": (10,), "resume": True}, "cli_args": {}}
    assert changed_settings(old, new) == ["lr"]


@pytest.mark.parametrize("line", ["train/a.jpg -1", "train/a.jpg 1e30", "train/a.jpg 99999999999999999999"])
def test_imagenet_lt_list_labels_must_be_non_negative_integers(tmp_path, line):
    (tmp_path / "list.txt").write_text(f"train/b.jpg 0\n{line}\n")
    with pytest.raises(TableError, match=r"list\.txt: line 2: expected 'relative/path label' with an integer label"):
        load_imagenet_lt(tmp_path / "list.txt", data_root=tmp_path)
