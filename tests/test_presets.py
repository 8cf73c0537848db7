"""Presets (curriculum/presets.py, assets/presets/*.yaml): defaults from a preset, explicit flags win, bad keys and
values stop with exit 2 naming the file and the key, and the recorded config names the preset."""

from __future__ import annotations

import argparse
import hashlib
import importlib

import pytest

from curriculum.presets import PRESET_DIR, available_presets, load_preset, parse_args

CLI_MODULES = {
    "make_table": "data_generation.make_table",
    "mine_hard": "data_generation.mine_hard",
    "get_text_prompt": "data_generation.get_text_prompt",
    "gene_img": "data_generation.gene_img",
    "merge_manifests": "data_generation.merge_manifests",
    "comp_clip_scores": "data_generation.comp_clip_scores",
    "train_probe": "data_generation.train_probe",
    "train_diffusion": "training.train_diffusion",
    "train_lt": "training.train_lt",
    "finetune_flyp": "training.finetune_flyp",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool.py")
    p.add_argument("--dataset", required=True, choices=["a", "b"])
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--levels", type=int, nargs="+", default=[1])
    p.add_argument("--flag", action="store_true")
    p.add_argument("--name", default="x")
    return p


def _write(tmp_path, text: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_presets_exist():
    assert {"imagenet_lt", "iwildcam", "digits"} <= set(available_presets())


@pytest.mark.parametrize("preset", ["imagenet_lt", "iwildcam", "digits"])
def test_every_section_of_every_bundled_preset_is_accepted_by_its_command(preset, capsys):
    """Each section's keys are flags of that command and each value passes its type/choices: `--preset P --help`
    gets to the help (exit 0) only when the preset applies cleanly."""
    sections = [s for s in load_preset(preset).sections if s in CLI_MODULES]
    assert len(sections) >= 4
    for section in sections:
        main = importlib.import_module(CLI_MODULES[section]).main
        with pytest.raises(SystemExit) as exc:
            main(["--preset", preset, "--help"])
        assert exc.value.code == 0, (section, capsys.readouterr().err)


def test_reference_values_in_the_presets():
    lt, wc = load_preset("imagenet_lt").sections, load_preset("iwildcam").sections
    assert lt["comp_clip_scores"]["threshold"] == 0.30 and wc["comp_clip_scores"]["threshold"] == 0.25
    assert lt["train_lt"]["lr"] == 1e-3 and lt["train_lt"]["wd"] == 1e-5 and lt["train_lt"]["epochs"] == 65
    assert lt["train_lt"]["levels"] == [10, 30, 50] and lt["mine_hard"]["tail_max_count"] == 19
    assert wc["finetune_flyp"]["lr"] == 1e-5 and wc["finetune_flyp"]["wd"] == 0.2
    assert wc["finetune_flyp"]["batch_size"] == 256 and wc["finetune_flyp"]["min_level"] == 50
    assert wc["gene_img"]["width"] == 480 and wc["gene_img"]["height"] == 270
    for s in (lt, wc):
        assert s["gene_img"]["seeds"] == [10, 20, 30, 40, 42, 50, 60, 70] and s["gene_img"]["text_guidance"] == [10]


def test_preset_sets_defaults_and_explicit_flags_win(tmp_path):
    path = _write(tmp_path, "mine_hard:\n  dataset: b\n  n: 3\n  lr: 1e-5\n  levels: [10, 30]\n  flag: true\n")
    args = parse_args(_parser(), ["--preset", str(path), "--n", "7"], "mine_hard")
    # the required --dataset comes from the preset; YAML's 1e-5 (a string to YAML 1.1) is converted as argparse would
    assert (args.dataset, args.n, args.lr, args.levels, args.flag, args.name) == ("b", 7, 1e-5, [10, 30], True, "x")
    rec = args.preset_record
    assert rec["file"] == str(path.resolve()) and rec["section"] == "mine_hard"
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["overrides"] == {"n": 7} and rec["explicit"] == {"n": 7}
    assert rec["settings"]["n"] == 3
    # without a preset: nothing recorded, the parser's own defaults
    plain = parse_args(_parser(), ["--dataset", "a"], "mine_hard")
    assert plain.preset_record is None and plain.n == 1


def test_bundled_preset_by_name_and_its_record():
    from data_generation.comp_clip_scores import build_parser

    args = parse_args(build_parser(), ["--preset", "imagenet_lt", "--syn_path", "s"], "comp_clip_scores")
    assert args.threshold == pytest.approx(0.30) and args.text_template == "a photo of {name}"
    assert args.clip_model == "openai/clip-vit-base-patch32"
    assert args.preset_record["name"] == "imagenet_lt"
    assert args.preset_record["sha256"] == hashlib.sha256((PRESET_DIR / "imagenet_lt.yaml").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("mine_hard:\n  dataset: a\n  nope: 1\n", "key mine_hard.nope: unknown key"),
        ("mine_hard:\n  dataset: c\n", "key mine_hard.dataset: 'c' is not one of ['a', 'b']"),
        ("mine_hard:\n  dataset: a\n  n: 0.5\n", "key mine_hard.n: 0.5 is not a valid int"),
        ("mine_hard:\n  dataset: a\n  n: true\n", "key mine_hard.n: expected int"),
        ("mine_hard:\n  dataset: a\n  flag: 1\n", "key mine_hard.flag: this switch takes true or false"),
        ("mine_hard:\n  dataset: a\n  levels: [1, x]\n", "key mine_hard.levels[1]: 'x' is not a valid int"),
        ("mine_hard:\n  dataset: a\n  name: [a, b]\n", "key mine_hard.name: expected a single value"),
        ("mine_hardd:\n  dataset: a\n", "unknown key 'mine_hardd'"),
        ("train_lt:\n  lr: 1\n", "no section 'mine_hard'"),
    ],
)
def test_bad_preset_exits_2_naming_file_and_key(tmp_path, capsys, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        parse_args(_parser(), ["--preset", str(path)], "mine_hard")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tool.py: error: ") and str(path.resolve()) in err and needle in err
    assert len(err.splitlines()) == 1


def test_unknown_preset_name_lists_the_bundled_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(_parser(), ["--preset", "imagenet"], "mine_hard")
    assert exc.value.code == 2
    assert "no bundled preset of that name (bundled: digits, imagenet_lt, iwildcam" in capsys.readouterr().err


def test_base_preset_is_merged_and_both_files_are_recorded(tmp_path):
    base = _write(tmp_path, "mine_hard:\n  dataset: a\n  n: 3\n  lr: 0.5\n", "base.yaml")
    child = _write(tmp_path, "base: base.yaml\nmine_hard:\n  n: 4\n", "child.yaml")
    args = parse_args(_parser(), [f"--preset={child}"], "mine_hard")
    assert (args.dataset, args.n, args.lr) == ("a", 4, 0.5)
    assert args.preset_record["files"] == [str(base.resolve()), str(child.resolve())]
    expected = hashlib.sha256(bytes.fromhex(hashlib.sha256(base.read_bytes()).hexdigest()) + child.read_bytes())
    assert args.preset_record["sha256"] == expected.hexdigest()


def test_a_cli_records_the_preset_in_its_output(tmp_path):
    """make_table writes the preset's name, sha256 and the explicit overrides into the table's metadata."""
    from curriculum.tables import read_parquet_metadata
    from data_generation import make_table
    from tests.fake_trees import make_official_imagenet_lt

    root = make_official_imagenet_lt(tmp_path / "inlt", {0: 6, 1: 3})
    out = tmp_path / "table.parquet"
    assert make_table.main(["--preset", "imagenet_lt", "--data", str(root), "--out", str(out)]) == 0
    meta = read_parquet_metadata(out)
    assert meta["preset"]["name"] == "imagenet_lt" and meta["dataset"] == "imagenet_lt"
    assert meta["preset"]["sha256"] == hashlib.sha256((PRESET_DIR / "imagenet_lt.yaml").read_bytes()).hexdigest()
    assert meta["preset"]["overrides"] == {} and set(meta["preset"]["explicit"]) == {"data", "out"}


@pytest.mark.parametrize("preset", ["imagenet_lt", "iwildcam"])
def test_the_reproduce_section_applies_to_the_reproduce_command(preset):
    from curriculum.presets import preset_defaults
    from training.reproduce.run import build_parser

    assert preset_defaults(build_parser(), load_preset(preset), "reproduce")["sec_per_step"] > 0


def test_the_digits_preset_holds_the_demo_settings():
    """digits.yaml states the offline demo's full run (training/demo/run.py DemoConfig.full()): they must agree."""
    from training.demo.run import DemoConfig

    d, s = DemoConfig.full(), load_preset("digits").sections
    assert s["gene_img"]["strengths"] == list(d.strengths) and s["gene_img"]["seeds"] == list(d.gen_seeds)
    assert s["gene_img"]["steps"] == d.gen_steps and s["gene_img"]["text_guidance"] == [d.class_guidance]
    assert s["comp_clip_scores"]["threshold"] == d.threshold
    assert s["train_diffusion"]["stage_epochs"] == list(d.gen_stage_epochs)
    assert s["train_diffusion"]["block_out_channels"] == list(d.gen_channels)
    lt = s["train_lt"]
    assert (lt["epochs"], lt["curriculum_epoch"], lt["batch_size"], lt["lr"]) == (
        d.epochs,
        d.curriculum_epoch,
        d.batch_size,
        d.lr,
    )
    assert lt["levels"] == list(d.levels) and lt["arch"] == d.arch and lt["img_size"] == d.classifier_size
    assert s["mine_hard"]["bottom_q"] == [f"true_prob={d.mine_bottom_q}"]
    assert s["train_probe"]["epochs"] == d.probe_epochs and s["train_probe"]["arch"] == d.probe_arch
