"""Phase 2 as the DisCL reference: QuickGELU for OpenAI CLIP, one FLYP row per (image, template), adaptive stages
as passes over the level's loader, the ImageNet-LT ResNet-10 and its checkpoints, stage boundaries, shot groups,
the curriculum-validation hold-out and the errors of an empty curriculum (tiny models, fake data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from curriculum.guidance import REAL_LEVEL, FixedSchedule
from data_generation.mining.datasets import load_imagenet_lt, load_wilds_iwildcam
from training import finetune_flyp, train_lt
from training.trainers import engine
from training.trainers.data import ItemDataset, load_real
from training.trainers.flyp import clip_activation, load_open_clip
from training.trainers.metrics import shot_accuracies
from training.trainers.resnet import build_resnet10, read_lt_checkpoint, resnet10

from .fakes import make_fake_imagenet_lt, make_fake_iwildcam, make_synthetic_manifest, register_tiny_open_clip


def _activation_classes(model) -> set[str]:
    return {type(b.mlp.gelu).__name__ for t in (model.visual.transformer, model.transformer) for b in t.resblocks}


def test_openai_weights_are_built_with_quickgelu(monkeypatch):
    """The `openai` tag resolves to QuickGELU and load_open_clip builds ViT-B-16 with it (random init on the meta
    device: the real factory, only the download is left out); LAION weights keep GELU."""
    import open_clip

    assert clip_activation("ViT-B-16", "openai")[0] is True
    assert clip_activation("ViT-B-16", "laion2b_s34b_b88k")[0] is False
    assert clip_activation("ViT-B-16-quickgelu", "")[0] is True
    real_factory = open_clip.create_model_and_transforms
    seen = {}

    def offline(name, pretrained=None, device="cpu", **kw):
        seen.update(kw, pretrained=pretrained)
        return real_factory(name, pretrained=None, device="meta", **kw)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    # the weights count as cached: the offline check (curriculum.offline) would otherwise stop before the factory
    import curriculum.offline

    monkeypatch.setattr(curriculum.offline, "open_clip_tag_missing", lambda model, pretrained: None)
    quick, rule = clip_activation("ViT-B-16", "openai")
    model = load_open_clip("ViT-B-16", "openai", quick_gelu=quick)[0]
    assert seen == {"pretrained": "openai", "force_quick_gelu": True} and "registry" in rule
    assert _activation_classes(model) == {"QuickGELU"}
    assert _activation_classes(load_open_clip("ViT-B-16", "openai")[0]) == {"GELU"}  # what open_clip does unasked


def test_local_weights_file_activation(tmp_path, capsys):
    """A local file: open_clip_config.json beside it decides (and the weights load); a bare file is an error."""
    import open_clip
    from safetensors.torch import save_file

    name = register_tiny_open_clip(tmp_path / "cfg")
    src = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
    weights = tmp_path / "hub" / "open_clip_model.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    (weights.parent / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    quick, rule = clip_activation(name, str(weights))
    assert quick and "open_clip_config.json" in rule
    model = load_open_clip(name, str(weights), quick_gelu=quick)[0]
    assert _activation_classes(model) == {"QuickGELU"}
    assert torch.equal(model.state_dict()["text_projection"], src.state_dict()["text_projection"])
    bare = tmp_path / "weights.safetensors"
    bare.write_bytes(weights.read_bytes())
    with pytest.raises(ValueError, match="--activation quickgelu"):
        clip_activation(name, str(bare))
    assert clip_activation(name, str(bare), "gelu") == (False, "--activation gelu")


@pytest.fixture
def iwildcam(tmp_path):
    make_fake_iwildcam(tmp_path / "wilds", per_split={"train": 12, "val": 3, "test": 3, "id_val": 3, "id_test": 3})
    table = load_wilds_iwildcam(tmp_path / "wilds")
    table["hard"] = (table["split"] == "train") & (np.arange(len(table)) % 2 == 0)
    table.drop(columns=["source_path"]).to_parquet(tmp_path / "iwildcam.parquet")
    manifest = make_synthetic_manifest(tmp_path / "syn", table[table["hard"]], strengths=(0.5, 0.3, 0.1), seeds=(1, 2))
    return {
        "table": tmp_path / "iwildcam.parquet",
        "root": table.attrs["data_root"],
        "manifest": manifest,
        "model": register_tiny_open_clip(tmp_path / "clipcfg"),
    }


@pytest.fixture
def recorded(monkeypatch):
    """Every item table the engine builds a training loader over (one per stage pass or epoch)."""
    tables: list[pd.DataFrame] = []

    def recording(items, transform):
        tables.append(items.copy())
        return ItemDataset(items, transform)

    monkeypatch.setattr(engine, "training_dataset", recording)
    return tables


def test_flyp_reference_defaults_end_to_end(iwildcam, tmp_path, recorded):
    """FLYP with the defaults (tiny model, batch and epochs shrunk): two rows per image (both templates), curriculum
    epochs of floor(real rows / batch) steps, stages = passes over the level's loader across epochs, real (100) a
    candidate, the first progress against 0, held-out images (their real image too) in no training pass, the
    activation recorded, warm-up 500."""
    run = tmp_path / "run"
    argv = [
        *("--data_table", str(iwildcam["table"]), "--data_root", iwildcam["root"]),
        *("--syn_manifest", str(iwildcam["manifest"]), "--model", iwildcam["model"], "--pretrained", ""),
        *("--run_dir", str(run), "--device", "cpu", "--num_workers", "0", "--batch_size", "6"),
        *("--epochs", "5", "--curriculum_epoch", "4", "--curriculum", "--progress_guid", "--curriculum_val_size", "2"),
    ]
    assert finetune_flyp.main(argv) == 0
    metrics, sched = pd.read_csv(run / "metrics.csv"), pd.read_csv(run / "schedule.csv")
    held = set(pd.read_csv(run / "curriculum_val.csv")["sample_id"])
    assert len(held) == 2
    # 12 train images, 2 held out: 10 real images x 2 templates = 20 rows -> floor(20 / 6) = 3 steps per epoch
    assert metrics["step"].tolist()[:4] == [3, 6, 9, 12] and (metrics["n_items"].iloc[:2] == 18).all()
    first = recorded[0]
    # the first stage (level 50): every real training image and every kept level-50 synthetic image, x 2 templates
    assert len(first) == 2 * (10 + 4 * 2)
    assert first.groupby("item_id")["template"].apply(lambda t: sorted(t) == [0, 1]).all()
    assert set(first["level"]) == {50, REAL_LEVEL}
    # 36 rows at batch 6 = 6 steps: the stage spans epochs 0-1 and its end is when the level is chosen
    stage_ends = sched[sched["progress"].notna() & (sched["progress"] != "")]
    assert stage_ends["step"].iloc[0] == 6 and stage_ends["level"].iloc[0] == 50
    progress = json.loads(stage_ends["progress"].iloc[0])
    assert set(progress) == {"50", "70", "90", "100"}  # real data is a candidate
    assert all(0 < v <= 1 for v in progress.values())  # the first check compares with 0: progress = mean p > 0
    for items in recorded:  # every training pass, every level: no held-out image, not even its real one
        assert not held & set(items["sample_id"])
    assert metrics["level"].iloc[-1] == REAL_LEVEL and metrics["n_synthetic"].iloc[-1] == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["activation"] == "gelu" and "no pretrained weights" in cfg["resolved"]["activation_rule"]
    assert cfg["config"]["stage_unit"] == "pass" and cfg["config"]["lr_extra_epochs"] == 1
    # warm-up 500 (the reference's): the LR of each epoch's last step is lr * step / 500
    np.testing.assert_allclose(metrics["lr"], 1e-5 * metrics["step"] / 500, rtol=1e-9)


@pytest.fixture
def imagenet_lt(tmp_path):
    """A tiny ImageNet-LT (canonical table with a split column; class 2 is the tail) and synthetic tail images."""
    lst = make_fake_imagenet_lt(tmp_path / "lt", {0: 130, 1: 60, 2: 5})
    table = load_imagenet_lt(lst, data_root=tmp_path / "lt")
    table["split"] = ["train" if i % 5 else ("val" if i % 10 == 0 else "test") for i in range(len(table))]
    table.drop(columns="source_path").to_parquet(tmp_path / "lt.parquet")
    real = load_real(tmp_path / "lt.parquet", tmp_path / "lt")
    tail = real[real["label"] == 2]
    manifest = make_synthetic_manifest(tmp_path / "syn", tail, strengths=(0.9, 0.7, 0.5), seeds=(1,))
    return {"table": tmp_path / "lt.parquet", "root": tmp_path / "lt", "manifest": manifest, "real": real}


def _lt(d, run, *extra):
    return [
        *("--data_table", str(d["table"]), "--data_root", str(d["root"]), "--syn_manifest", str(d["manifest"])),
        *("--run_dir", str(run), "--device", "cpu", "--num_workers", "0", "--img_size", "16", "--curriculum"),
        *extra,
    ]


def test_lt_reference_defaults_and_stage_boundaries(imagenet_lt, tmp_path):
    """The parser's defaults are the reference's; the fixed stages fall on its boundaries; an end-to-end run with
    the defaults (epochs shrunk to 9, curriculum 8) follows them, with the reference LR plan."""
    args = train_lt.build_parser().parse_args(["--data_table", "x", "--run_dir", "y"])
    assert (args.arch, args.lr, args.wd, args.batch_size, args.epochs, args.curriculum_epoch) == (
        "resnet10",
        1e-3,
        1e-5,
        128,
        65,
        60,
    )
    assert args.curriculum_val_size == 100 and args.levels == [10, 30, 50] and args.fixed_stages == "reference"
    ref = FixedSchedule([10, 30, 50], 60, boundaries="reference")
    assert [ref.level_at(e) for e in range(65)] == [10] * 14 + [30] * 15 + [50] * 15 + [REAL_LEVEL] * 21
    with pytest.raises(ValueError, match="too short"):
        FixedSchedule([10, 30, 50], 3, boundaries="reference")
    run = tmp_path / "run"
    assert train_lt.main(_lt(imagenet_lt, run, "--epochs", "9", "--curriculum_epoch", "8")) == 0
    metrics = pd.read_csv(run / "metrics.csv")
    # floor(8 / 4) = 2 epochs a stage, the first one shorter: 10: 0, 30: 1-2, 50: 3-4, real: 5-8
    assert metrics["level"].tolist() == [10, 30, 30, 50, 50, 100, 100, 100, 100]
    # a fresh floor(30%) of the 152 non-tail images + the 4 real tail images + synthetic up to 13.6%
    assert (metrics["n_items"] == 45 + 7).all() and (metrics["n_synthetic"].iloc[:5] == 3).all()
    # the reference's cosine: planned once over 9 x the first epoch's steps (1 step an epoch at batch 128)
    k = np.arange(9)
    np.testing.assert_allclose(metrics["lr"], 1e-3 * 0.5 * (1 + np.cos(np.pi * k / 9)), rtol=1e-9)
    assert json.loads((run / "config.json").read_text())["resolved"]["model"].startswith("torchvision resnet10")


def test_resnet10_loads_ldmlr_and_oltr_checkpoints(tmp_path, caplog):
    """The stage-1 layouts (LDMLR's {'state_dict': {'model'}}, OLTR's feat_model/classifier, 'module.' prefixes)
    load into the torchvision-style ResNet-10; another head size is re-initialised; a foreign layout is an error."""
    src = resnet10(1000)
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": {"model": sd}, "model": {"name": "resnet10"}, "epoch": 3}, tmp_path / "ldmlr.pth")
    body = {k: v for k, v in sd.items() if not k.startswith("module.fc.")}
    head = {k: v for k, v in sd.items() if k.startswith("module.fc.")}
    torch.save({"state_dict": {"feat_model": body, "classifier": head}}, tmp_path / "oltr.pth")
    for name in ("ldmlr.pth", "oltr.pth"):
        state = read_lt_checkpoint(tmp_path / name)
        assert state.keys() == src.state_dict().keys()
        model, train_tf, eval_tf = build_resnet10(1000, str(tmp_path / name))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in src.state_dict().items())
    small, _, eval_tf = build_resnet10(3, str(tmp_path / "ldmlr.pth"))
    assert small.fc.out_features == 3 and torch.equal(small.conv1.weight, src.conv1.weight)
    assert "re-initialised" in caplog.text
    assert [type(t).__name__ for t in eval_tf.transforms][:2] == ["Resize", "CenterCrop"]
    assert eval_tf.transforms[0].size == 256 and eval_tf.transforms[1].size == (224, 224)
    torch.save({"state_dict": {"model": {"backbone.weight": torch.zeros(2)}}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not fit resnet10"):
        build_resnet10(3, str(tmp_path / "other.pth"))


def test_shot_groups_are_the_reference_split():
    counts = {0: 100, 1: 99, 2: 20, 3: 19}
    out = shot_accuracies(np.array([0, 0, 2, 3]), np.array([0, 1, 2, 3]), counts)
    assert out["many_acc"] == 1.0 and out["medium_acc"] == 0.5 and out["few_acc"] == 1.0  # 100 is many


def test_silent_no_ops_are_errors(imagenet_lt, tmp_path, capsys):
    """--curriculum without a manifest or usable level; an oversized curriculum-validation set; a curriculum that
    adds no synthetic image (a warning per epoch, exit 2 unless --allow_empty_curriculum)."""
    short = ("--epochs", "3", "--curriculum_epoch", "3", "--levels", "30", "50")
    argv = [a for a in _lt(imagenet_lt, tmp_path / "a", *short) if a != str(imagenet_lt["manifest"])]
    argv.remove("--syn_manifest")
    assert train_lt.main(argv) == 2 and "--curriculum needs --syn_manifest" in capsys.readouterr().err
    assert train_lt.main(_lt(imagenet_lt, tmp_path / "b", *short[:4], "--min_level", "95", "--levels", "10")) == 2
    capsys.readouterr()
    assert train_lt.main(_lt(imagenet_lt, tmp_path / "b2", *short, "--min_level", "95")) == 2
    assert "no kept synthetic image at a level >= --min_level 95" in capsys.readouterr().err
    # the default 100 held-out sources against 4 sources with synthetic images: refused, naming both numbers
    assert train_lt.main(_lt(imagenet_lt, tmp_path / "c", *short, "--progress_guid")) == 2
    err = capsys.readouterr().err
    assert "--curriculum_val_size 100" in err and "4 of the 4 source images" in err and "at most 2" in err
    # the real tail already fills a 1% tail share: no synthetic top-up in any epoch
    empty = _lt(imagenet_lt, tmp_path / "d", *short, "--tail_share", "0.01")
    assert train_lt.main(empty) == 2
    err = capsys.readouterr().err
    # reference boundaries, E = 3, levels 30, 50: floor(3/3) = 1 epoch a stage, the first one shorter: 30 for no
    # epoch, 50 for epoch 0, real from 1 - the curriculum's real epochs get no warning
    assert err.count("warning: curriculum epoch") == 1 and "the 4 real tail images already fill the tail target" in err
    assert "no synthetic image in any of its 3 epoch(s)" in err and "--allow_empty_curriculum" in err
    assert (pd.read_csv(tmp_path / "d" / "metrics.csv")["n_synthetic"] == 0).all()
    allowed = _lt(imagenet_lt, tmp_path / "e", *short, "--tail_share", "0.01", "--allow_empty_curriculum")
    assert train_lt.main(allowed) == 0


def test_uniform_set_alternates_with_the_chosen_level(imagenet_lt, tmp_path, recorded):
    """--uniform_set (ImageNet-LT's definition: every non-tail real image + N real tail draws): uniform passes
    alternate with one pass over the level progress picked; held-out sources are in no pass."""
    run = tmp_path / "run"
    flags = ("--epochs", "4", "--curriculum_epoch", "3", "--progress_guid", "--uniform_set", "--curriculum_val_size")
    assert train_lt.main(_lt(imagenet_lt, run, *flags, "1", "--uniform_set_size", "6", "--batch_size", "64")) == 0
    sched = pd.read_csv(run / "schedule.csv")
    stages = sched[sched["stage"].notna()]
    # 155 real images at batch 64: 2 steps an epoch; the uniform pass (152 non-tail + 6 tail draws) is 3 batches,
    # the level's pass (45 + 3 real tail + 4 synthetic) 1: uniform 0-1, level 1, uniform 2-...
    assert stages["step"].tolist()[:2] == [3, 4]
    assert stages["level"].iloc[0] == engine.UNIFORM_SET and stages["next_level"].iloc[0] != engine.UNIFORM_SET
    assert stages["level"].iloc[1] == stages["next_level"].iloc[0] and stages["next_level"].iloc[1] == -2
    uniform = recorded[0]
    assert (uniform["source"] == "real").all() and (uniform["label"] == 2).sum() == 6
    assert (uniform["label"] != 2).sum() == (imagenet_lt["real"]["label"] != 2).sum()
    held = set(pd.read_csv(run / "curriculum_val.csv")["sample_id"])
    assert all(not held & set(t["sample_id"]) for t in recorded)


def _fidelity_rows() -> list[list[str]]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "training" / "README.md").read_text()
    section = text.split("## Fidelity to the reference", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()]
    return [r for r in rows if len(r) == 5 and r[0].endswith(".py")]


def _cell_value(cell: str) -> str:
    assert cell.startswith("`") and cell.count("`") >= 2, f"the 'ours' cell of a flag row must be `value`: {cell!r}"
    return cell.split("`")[1]


def _render(default) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default)
    return str(default)


def test_fidelity_table_agrees_with_the_parsers():
    """training/README.md's table: every flag row names a real flag whose parser default is the 'ours' value."""
    from data_generation import comp_clip_scores, gene_img

    parsers = {
        "finetune_flyp.py": finetune_flyp.build_parser(),
        "train_lt.py": train_lt.build_parser(),
        "gene_img.py": gene_img.build_parser(),
        "comp_clip_scores.py": comp_clip_scores.build_parser(),
    }
    rows = _fidelity_rows()
    checked = set()
    for script, setting, reference, ours, _why in rows:
        assert script in parsers, f"unknown script {script!r} in the fidelity table"
        assert reference, f"{script} {setting}: the reference's value is missing"
        if not setting.startswith("`--"):
            continue
        flag = setting.strip("`")
        actions = {o: a for a in parsers[script]._actions for o in a.option_strings}
        assert flag in actions, f"{script}: the fidelity table names {flag}, which the parser does not have"
        default = actions[flag].default
        value = _cell_value(ours)
        if isinstance(default, float):
            assert float(value) == default, f"{script} {flag}: table says {value}, parser {default}"
        else:
            assert value == _render(default), f"{script} {flag}: table says {value!r}, parser {_render(default)!r}"
        checked.add((script, flag))
    # the recipe's settings are all in the table
    for script, flags in {
        "finetune_flyp.py": [
            "--lr",
            "--wd",
            "--batch_size",
            "--epochs",
            "--curriculum_epoch",
            "--warmup_steps",
            "--activation",
            "--captions",
            "--stage_unit",
            "--curriculum_val_size",
            "--lr_schedule",
        ],
        "train_lt.py": [
            "--arch",
            "--lr",
            "--wd",
            "--batch_size",
            "--epochs",
            "--curriculum_epoch",
            "--levels",
            "--fixed_stages",
            "--curriculum_val_size",
            "--subset_frac",
            "--tail_share",
            "--img_size",
        ],
        "gene_img.py": ["--strengths", "--seeds", "--text_guidance", "--width", "--height", "--prompt_template"],
        "comp_clip_scores.py": ["--threshold", "--clip_model"],
    }.items():
        assert {(script, f) for f in flags} <= checked, sorted({(script, f) for f in flags} - checked)


def test_pass_stages_resume_mid_stage_like_an_uninterrupted_run(imagenet_lt, tmp_path):
    """Stages that run across epochs (--stage_unit pass, with the uniform set): interrupted after epoch 0, in the
    middle of the first uniform pass, and resumed, the run follows the same stages to the same weights."""
    from safetensors.torch import load_file

    flags = ("--epochs", "4", "--curriculum_epoch", "3", "--progress_guid", "--uniform_set", "--curriculum_val_size")
    flags = (*flags, "1", "--uniform_set_size", "6", "--batch_size", "64")
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_lt.main(_lt(imagenet_lt, a, *flags)) == 0
    assert train_lt.main(_lt(imagenet_lt, b, *flags, "--epochs_per_invocation", "1")) == 0
    state = json.loads((b / "checkpoints" / "last" / "state.json").read_text())["extra"]["stage"]
    assert state["level"] == engine.UNIFORM_SET and state["offset"] == 2  # mid-pass: 2 of its 3 batches
    assert train_lt.main(_lt(imagenet_lt, b, *flags, "--resume")) == 0
    pd.testing.assert_frame_equal(pd.read_csv(a / "schedule.csv"), pd.read_csv(b / "schedule.csv"))
    ma, mb = (pd.read_csv(r / "metrics.csv").drop(columns="seconds") for r in (a, b))
    pd.testing.assert_frame_equal(ma, mb, atol=1e-6)
    wa, wb = load_file(str(a / "final_model.safetensors")), load_file(str(b / "final_model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
