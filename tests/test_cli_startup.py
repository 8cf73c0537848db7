"""Every CLI answers `--help` and argument errors without importing torch or the model libraries.

Behaviour, not timing: each CLI runs in a fresh interpreter and the test reads `sys.modules` afterwards (the
wall times are measured by benchmarks/bench_startup.py). The static name lists the parsers use instead of the
registries are checked against the registries here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "open_clip", "timm", "wilds", "accelerate")

CLIS = [
    "data_generation.gene_img",
    "data_generation.comp_clip_scores",
    "data_generation.get_text_prompt",
    "data_generation.make_table",
    "data_generation.merge_manifests",
    "data_generation.mine_hard",
    "data_generation.quickstart",
    "data_generation.train_probe",
    "training.finetune_flyp",
    "training.train_diffusion",
    "training.train_lt",
    "training.demo.run",
]

PROBE = """
import contextlib, io, json, sys, importlib
mod = importlib.import_module({module!r})
codes = []
for argv in (["--help"], ["--no_such_flag"]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            mod.main(argv)
        except SystemExit as exc:
            codes.append(exc.code)
    if argv == ["--help"]:
        help_text = out.getvalue()
    else:
        error_text = err.getvalue()
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy, "help": help_text, "error": error_text}}))
"""


@pytest.mark.parametrize("module", CLIS)
def test_help_and_argument_errors_import_no_heavy_library(module):
    code = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0, 2]  # --help exits 0, an unknown flag is argparse's exit 2
    assert "usage:" in res["help"] and "error:" in res["error"]  # a missing required flag or the unknown one
    assert res["heavy"] == [], f"{module} imported {res['heavy']} before parsing its arguments"


def test_phase1_name_lists_equal_the_registries():
    from data_generation import cli_names
    from data_generation.generation import generate
    from data_generation.generation.backends import GENERATORS
    from data_generation.mining import scorer_runs  # noqa: F401  (registers the difficulty scorers)
    from data_generation.mining.datasets import DATASETS
    from data_generation.mining.difficulty import DIFFICULTY_SCORERS
    from data_generation.prompting.text_prompts import LANGUAGE_MODELS
    from data_generation.scoring import score
    from data_generation.scoring.backends import DEFAULT_MODELS, SCORERS

    assert cli_names.GENERATOR_NAMES == tuple(GENERATORS.names())
    assert cli_names.SCORER_NAMES == tuple(SCORERS.names())
    assert cli_names.DATASET_NAMES == tuple(DATASETS.names())
    assert cli_names.DIFFICULTY_SCORER_NAMES == tuple(DIFFICULTY_SCORERS.names())
    assert cli_names.LANGUAGE_MODEL_NAMES == tuple(LANGUAGE_MODELS.names())
    assert cli_names.DEFAULT_MODEL_ID == generate.DEFAULT_MODEL_ID
    assert cli_names.DEFAULT_CLIP_MODELS == DEFAULT_MODELS
    assert cli_names.DEFAULT_THRESHOLD == score.DEFAULT_THRESHOLD


def test_phase2_name_lists_and_defaults_equal_their_sources():
    from curriculum.sparsity import REGROWTH_MODES, SPARSITY_VARIANTS
    from curriculum.timestep import TIMESTEP_SAMPLERS
    from training import cli_names
    from training.diffusion.trainer import LOSS_WEIGHTINGS, DiffusionTrainConfig
    from training.trainers.classifier import AUGMENTATIONS
    from training.trainers.flyp import ACTIVATIONS
    from training.trainers.losses import LOSSES

    assert cli_names.ACTIVATION_NAMES == tuple(ACTIVATIONS)
    assert cli_names.LOSS_NAMES == tuple(LOSSES.names())
    assert cli_names.AUGMENTATION_NAMES == tuple(AUGMENTATIONS)
    assert cli_names.TIMESTEP_SAMPLER_NAMES == tuple(TIMESTEP_SAMPLERS.names())
    assert cli_names.SPARSITY_NAMES == tuple(SPARSITY_VARIANTS.names())
    assert cli_names.REGROWTH_NAMES == tuple(REGROWTH_MODES.names())
    assert cli_names.LOSS_WEIGHTING_NAMES == tuple(LOSS_WEIGHTINGS)
    fields = {f.name: f.default for f in dataclasses.fields(DiffusionTrainConfig)}
    assert vars(cli_names.DIFFUSION_DEFAULTS) == {k: fields[k] for k in vars(cli_names.DIFFUSION_DEFAULTS)}
