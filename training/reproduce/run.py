"""Reproduce a paper setup end to end with its preset, every step through the users' own CLIs.

    python -m training.reproduce --setup imagenet_lt --data_root data/ImageNet --out runs/inlt --dry_run
    python -m training.reproduce --setup imagenet_lt --data_root data/ImageNet --out runs/inlt
    python -m training.reproduce --setup iwildcam --data_root data/wilds --out runs/iwildcam \
        --steps generate --part 3 --total_parts 8          # one SLURM array task of the generation

ImageNet-LT: `--data_root` holds `ImageNet_LT_{train,val,test}.txt` and `train/`, `val/`. iWildCam: the WILDS
root that holds `iwildcam_v2.0/`. Each step calls one CLI's `main(argv)` with `--preset` (the setup's bundled
preset, or `--preset FILE`, e.g. one with `base: imagenet_lt` that points the models at local folders) and the
paths; a finished step leaves `{out}/steps/{step}.json` (its command, exit code and seconds) and is skipped on
a rerun. `--dry_run` prints every command, the number of hard images and of synthetic images to generate, and
the GPU-hours they cost at the stated per-step cost (`reproduce.sec_per_step` in the preset). The last step
writes `{out}/results.md` and `results.csv`: this run's numbers next to the paper's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from curriculum.presets import Preset, PresetError, add_preset_arg, load_preset, preset_defaults
from curriculum.tables import markdown_table

SETUPS = ("imagenet_lt", "iwildcam")
STEPS = ("table", "mine", "prompts", "generate", "merge", "filter", "baseline", "discl", "report")
SETUP_STEPS = {
    "imagenet_lt": STEPS,
    "iwildcam": tuple(s for s in STEPS if s != "prompts"),  # iWildCam prompts are a template (no language model)
}
# which CLI each step runs; the trainer depends on the setup
SCRIPTS = {
    "table": "data_generation/make_table.py",
    "mine": "data_generation/mine_hard.py",
    "prompts": "data_generation/get_text_prompt.py",
    "generate": "data_generation/gene_img.py",
    "merge": "data_generation/merge_manifests.py",
    "filter": "data_generation/comp_clip_scores.py",
}
TRAINER = {"imagenet_lt": "training/train_lt.py", "iwildcam": "training/finetune_flyp.py"}
# the DisCL run's switches on top of the preset (the baseline trains on real data only)
DISCL_FLAGS = {"imagenet_lt": ["--curriculum"], "iwildcam": ["--curriculum", "--progress_guid"]}


class ReproduceError(RuntimeError):
    """A step failed; the message names the step and the command to rerun it alone."""


@dataclass
class Step:
    """One step: its `name`, the CLI `script`, its `argv` and the files that show it is finished."""

    name: str
    script: str
    argv: list[str]
    outputs: list[Path] = field(default_factory=list)

    def command(self) -> str:
        """Return the step as the shell command a user would type."""
        return shlex.join(["python", self.script, *map(str, self.argv)])


def _main_of(script: str) -> Callable[[list[str]], int]:
    import importlib

    return importlib.import_module(script.removesuffix(".py").replace("/", ".")).main


@dataclass
class Paths:
    """Every file the pipeline writes under `out`."""

    out: Path

    def __post_init__(self):
        o = self.out
        self.table = o / "data" / "table.parquet"
        self.hard = o / "mining" / "hard.csv"
        self.scores = o / "mining" / "scores.parquet"
        self.prompts = o / "prompts" / "prompts.json"
        self.syn = o / "synthetic"
        self.manifest = o / "synthetic" / "manifest.parquet"
        self.filtered = o / "synthetic" / "clip_scores.parquet"
        self.phase2 = o / "phase2"
        self.steps = o / "steps"
        self.results_md = o / "results.md"
        self.results_csv = o / "results.csv"


def files_root(setup: str, data_root: Path) -> Path:
    """Return the folder the sample table's relative paths resolve against (WILDS: `{root}/iwildcam_v2.0`)."""
    return data_root / "iwildcam_v2.0" if setup == "iwildcam" else data_root


def plan_steps(setup: str, preset_ref: str, data_root: Path, paths: Paths, part: int, total_parts: int) -> list[Step]:
    """Return the setup's steps in order (each with its CLI flags; settings come from the preset)."""
    pre = ["--preset", preset_ref]
    files = files_root(setup, data_root)
    trainer = TRAINER[setup]
    common_train = pre + ["--data_table", paths.table, "--data_root", files]
    steps = [
        Step("table", SCRIPTS["table"], pre + ["--data", data_root, "--out", paths.table], [paths.table]),
        Step(
            "mine",
            SCRIPTS["mine"],
            pre + ["--data", data_root, "--output_csv", paths.hard, "--scores_parquet", paths.scores],
            [paths.hard, paths.scores],
        ),
        Step("prompts", SCRIPTS["prompts"], pre + ["--data_csv", paths.hard, "--prompt_json", paths.prompts]),
        Step(
            "generate",
            SCRIPTS["generate"],
            pre
            + ["--data_csv", paths.hard, "--data_root", files, "--output_path", paths.syn]
            + (["--prompt_json", paths.prompts] if setup == "imagenet_lt" else [])
            + ["--part", part, "--total_parts", total_parts, "--no_progress"],
        ),
        # merging has no settings: no --preset
        Step("merge", SCRIPTS["merge"], ["--output_path", paths.syn, "--strict"], [paths.manifest]),
        Step(
            "filter",
            SCRIPTS["filter"],
            pre + ["--syn_path", paths.syn, "--real_path", files, "--no_progress"],
            [paths.filtered],
        ),
        Step(
            "baseline",
            trainer,
            common_train + ["--run_dir", paths.phase2 / "baseline"],
            [paths.phase2 / "baseline" / "final_model.safetensors"],
        ),
        Step(
            "discl",
            trainer,
            common_train + ["--syn_manifest", paths.filtered, *DISCL_FLAGS[setup], "--run_dir", paths.phase2 / "discl"],
            [paths.phase2 / "discl" / "final_model.safetensors"],
        ),
    ]
    keep = SETUP_STEPS[setup]
    return [s for s in steps if s.name in keep]


def step_marker(paths: Paths, step: Step, part: int, total_parts: int) -> Path:
    """Return the file that records a finished step (the generation step: one per shard)."""
    name = f"generate-part{part}-of-{total_parts}" if step.name == "generate" else step.name
    return paths.steps / f"{name}.json"


def run_step(step: Step, marker: Path) -> float:
    """Run one step's CLI in-process; write its marker; return the seconds taken (raise ReproduceError)."""
    argv = [str(a) for a in step.argv]
    if step.name in ("baseline", "discl") and (Path(argv[argv.index("--run_dir") + 1]) / "checkpoints").is_dir():
        argv.append("--resume")  # an interrupted training run continues from its last checkpoint
    t0 = time.perf_counter()
    code = _main_of(step.script)(argv)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise ReproduceError(f"step '{step.name}' exited with code {code}; rerun it alone with: {step.command()}")
    missing = [str(p) for p in step.outputs if not Path(p).exists()]
    if missing:
        raise ReproduceError(f"step '{step.name}' finished but did not write {missing}: {step.command()}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"command": step.command(), "exit_code": code, "seconds": round(seconds, 1)}, indent=1))
    tmp.replace(marker)
    return seconds


# --------------------------------------------------------------------------------------------------------
# the plan's counts and cost
@dataclass
class PlanCounts:
    """The dry run's numbers: hard images (exact, or None when a model decides them), the cap, synthetic images
    per hard image, denoising steps per hard image and the stated cost."""

    hard: int | None
    hard_how: str
    per_hard: int
    steps_per_hard: int
    sec_per_step: float
    #: the most generations per image (the CLIP-checked retries); the estimate is for one, the bound for all
    max_attempts: int = 1

    @property
    def synthetic(self) -> int | None:
        """Return the number of synthetic images to generate (None when the hard count is not known yet)."""
        return None if self.hard is None else self.hard * self.per_hard

    def gpu_hours(self, hard: int | None = None) -> float | None:
        """Return the generation's GPU-hours at `sec_per_step` per denoising step of one image."""
        n = self.hard if hard is None else hard
        return None if n is None else n * self.steps_per_hard * self.sec_per_step / 3600


def _section(preset: Preset, name: str) -> dict:
    return preset.sections.get(name) or {}


def count_hard(setup: str, preset: Preset, data_root: Path, paths: Paths) -> tuple[int | None, str]:
    """Return (number of hard images, how it was obtained): from a finished mining step, or computed from the
    data when the preset's rule needs no model (ImageNet-LT: the few-shot classes' training images)."""
    from curriculum.tables import read_parquet_metadata, read_sample_table
    from data_generation.mining.rules import HardRule, select_hard

    if paths.scores.is_file():
        return int(read_parquet_metadata(paths.scores)["n_hard"]), f"from the finished mining step ({paths.scores})"
    mine = _section(preset, "mine_hard")
    cap = mine.get("max_hard")
    model_free = set(mine.get("scorers", [])) <= {"random", "predefined"} and mine.get("misclassified") is None
    if not (model_free and mine.get("tail_only")):
        bound = f"at most {cap} (the preset's --max_hard)" if cap else "no cap"
        return None, f"decided by the mining model ({', '.join(mine.get('scorers', []))}); {bound}"
    table = read_sample_table(data_root)
    train = table[table["split"] == mine.get("split", "train")] if "split" in table.columns else table
    scores = train.set_index("sample_id")[["label", "train_count"]]
    rule = HardRule(
        tail_only=True,
        tail_max_count=int(mine.get("tail_max_count", 19)),
        count_column="train_count",
        max_hard=cap,
        max_per_class=mine.get("max_hard_per_class"),
    )
    n = int(select_hard(scores, rule).sum())
    return n, f"exact: {rule.describe()} in {data_root}"


def plan_counts(setup: str, preset: Preset, data_root: Path, paths: Paths, sec_per_step: float) -> PlanCounts:
    """Return the dry run's counts for the setup (the generation grid from the preset's gene_img section)."""
    import math

    from data_generation.generation.plan import DEFAULT_SEEDS, DEFAULT_STRENGTHS, DEFAULT_TEXT_GUIDANCE

    gen = _section(preset, "gene_img")
    strengths = [float(s) for s in gen.get("strengths", DEFAULT_STRENGTHS)]
    n_cfg = len(gen.get("text_guidance", DEFAULT_TEXT_GUIDANCE))
    n_seeds = len(gen.get("seeds", DEFAULT_SEEDS))
    steps = int(gen.get("steps", 50))
    # img2img runs int(steps * strength) denoising steps (diffusers' get_timesteps), each a CFG forward
    denoise = sum(math.floor(steps * s + 1e-9) for s in strengths)
    hard, how = count_hard(setup, preset, data_root, paths)
    attempts = int(gen.get("retry_attempts", 6)) if gen.get("retry_clip_model") else 1
    return PlanCounts(hard, how, len(strengths) * n_cfg * n_seeds, denoise * n_cfg * n_seeds, sec_per_step, attempts)


# --------------------------------------------------------------------------------------------------------
# the results table
def _best_row(run_dir: Path, select_metric: str) -> pd.Series:
    m = pd.read_csv(run_dir / "metrics.csv")
    return m.loc[m[select_metric].idxmax()]  # the first best epoch on the selection split (never on test)


def results_table(setup: str, preset: Preset, paths: Paths) -> pd.DataFrame:
    """Return the paper's table for the setup: the paper's rows, then this run's (baseline and DisCL)."""
    paper = (_section(preset, "setup").get("paper")) or {}
    rows = []
    if setup == "imagenet_lt":
        train = _section(preset, "train_lt")
        prefix = train.get("metric_prefix", "imagenet_lt")
        sel = train.get("select_metric") or f"{prefix}/val/overall_acc"
        cols = {"many": "Many", "medium": "Medium", "few": "Few", "overall": "Overall"}
        for method, vals in paper.items():
            rows.append({"Method": f"{method} (paper)", **{cols[k]: float(v) for k, v in vals.items() if k in cols}})
        for run, label in (("baseline", "CE (this run)"), ("discl", "CE + DisCL (this run)")):
            b = _best_row(paths.phase2 / run, sel)
            rows.append(
                {"Method": label, **{cols[k]: 100 * float(b[f"{prefix}/test/{k}_acc"]) for k in cols}}
                | {"epoch": int(b["epoch"])}
            )
        order = ["Method", "Many", "Medium", "Few", "Overall", "epoch"]
    else:
        sel = _section(preset, "finetune_flyp").get("select_metric", "iwildcam/id_val/macro_f1")
        prefix = sel.split("/")[0]
        for method, vals in paper.items():
            rows.append({"Method": f"{method} (paper)", "OOD F1": vals.get("ood_f1"), "ID F1": vals.get("id_f1")})
        for run, label in (("baseline", "FLYP (this run)"), ("discl", "FLYP + DisCL (this run)")):
            b = _best_row(paths.phase2 / run, sel)
            rows.append(
                {
                    "Method": label,
                    "OOD F1": 100 * float(b[f"{prefix}/test/macro_f1"]),
                    "ID F1": 100 * float(b[f"{prefix}/id_test/macro_f1"]),
                    "OOD acc": 100 * float(b[f"{prefix}/test/acc"]),
                    "ID acc": 100 * float(b[f"{prefix}/id_test/acc"]),
                    "epoch": int(b["epoch"]),
                }
            )
        order = ["Method", "OOD F1", "ID F1", "OOD acc", "ID acc", "epoch"]
    df = pd.DataFrame(rows)
    return df[[c for c in order if c in df.columns]]


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    """Return the table as text cells: numbers with two decimals, the epoch as an integer, '-' where none."""
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col == "Method":
            out[col] = df[col]
        elif col == "epoch":
            out[col] = [("-" if pd.isna(v) else str(int(v))) for v in df[col]]
        else:
            out[col] = [("-" if pd.isna(v) else f"{float(v):.2f}") for v in df[col]]
    return out


def write_results(setup: str, preset: Preset, paths: Paths) -> Path:
    """Write results.csv and results.md (the table in the paper's format, with how the epoch was selected)."""
    df = results_table(setup, preset, paths)
    paths.results_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(paths.results_csv, index=False)
    what = (
        "top-1 accuracy (%) on ImageNet-LT test: many (> 100 training images), medium (20-100), few (< 20)"
        if setup == "imagenet_lt"
        else "macro-F1 and accuracy (%) on WILDS iWildCam: OOD = test, ID = id_test"
    )
    lines = [
        f"# DisCL reproduction: {setup}",
        "",
        f"Preset `{preset.name}` (sha256 {preset.sha256[:12]}). {what}. This run's rows: the epoch with the best "
        "selection metric (validation, never test); the paper's rows are from its README.",
        "",
        markdown_table(_shown(df), "{:.2f}"),
        "",
    ]
    tmp = paths.results_md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(paths.results_md)
    return paths.results_md


# --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `python -m training.reproduce`."""
    p = argparse.ArgumentParser(
        prog="python -m training.reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--setup", required=True, choices=SETUPS)
    p.add_argument("--data_root", required=True, help="ImageNet root with the ImageNet_LT_*.txt lists / WILDS root")
    p.add_argument("--out", required=True, help="run folder: every step's outputs, steps/, results.md")
    p.add_argument("--dry_run", action="store_true", help="print the plan (commands, counts, GPU-hours) and stop")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=None, help="run only these steps (default: all)")
    p.add_argument("--part", type=int, default=1, help="generation shard (1-based) for a SLURM array")
    p.add_argument("--total_parts", type=int, default=1, help="number of generation shards")
    p.add_argument(
        "--sec_per_step",
        type=float,
        default=None,
        help="GPU seconds per denoising step of one image (default: the preset's reproduce.sec_per_step)",
    )
    add_preset_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run (or with --dry_run, print) the setup's pipeline; return the exit code."""
    p = build_parser()
    args = p.parse_args(argv)
    data_root, paths = Path(args.data_root), Paths(Path(args.out))
    preset_ref = args.preset or args.setup
    try:
        preset = load_preset(preset_ref)
        own = preset_defaults(p, preset, "reproduce") if "reproduce" in preset.sections else {}
    except (PresetError, OSError) as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    sec_per_step = args.sec_per_step if args.sec_per_step is not None else own.get("sec_per_step")
    if sec_per_step is None:
        p.error(f"--sec_per_step: not given and preset {preset.path} has no reproduce.sec_per_step")
    if not data_root.exists():
        print(f"reproduce: error: --data_root {data_root}: no such folder", file=sys.stderr)
        return 2
    steps = plan_steps(args.setup, preset.name, data_root, paths, args.part, args.total_parts)
    wanted = args.steps or list(SETUP_STEPS[args.setup])
    unknown = [s for s in wanted if s not in SETUP_STEPS[args.setup]]
    if unknown:
        p.error(
            f"--steps {' '.join(unknown)}: not a step of {args.setup} (its steps: {' '.join(SETUP_STEPS[args.setup])})"
        )
    try:
        counts = plan_counts(args.setup, preset, data_root, paths, sec_per_step)
    except (ValueError, OSError) as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    print(f"setup {args.setup}, preset {preset.name} (sha256 {preset.sha256[:12]}), out {paths.out}")
    print(plan_text(counts))
    if args.dry_run:
        for s in steps:
            if s.name in wanted:
                print(f"[{s.name}] {s.command()}")
        if "report" in wanted:
            print(f"[report] results table -> {paths.results_md}")
        return 0
    try:
        for s in steps:
            if s.name not in wanted:
                continue
            marker = step_marker(paths, s, args.part, args.total_parts)
            if marker.is_file():
                print(f"[{s.name}] done earlier, skipped ({marker})", flush=True)
                continue
            print(f"[{s.name}] {s.command()}", flush=True)
            print(f"[{s.name}] {run_step(s, marker):.1f}s", flush=True)
            if s.name == "mine":
                print(plan_text(plan_counts(args.setup, preset, data_root, paths, sec_per_step)), flush=True)
        if "report" in wanted:
            path = write_results(args.setup, preset, paths)
            print(f"[report] {path}\n" + path.read_text())
    except (ReproduceError, ValueError, OSError, KeyError) as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    return 0


def plan_text(c: PlanCounts) -> str:
    """Return the plan's counts in words."""
    retries = (
        f"; the CLIP-checked retries may generate an image up to {c.max_attempts} times: at most {c.max_attempts}x that"
        if c.max_attempts > 1
        else ""
    )
    return _plan_text(c) + retries


def _plan_text(c: PlanCounts) -> str:
    if c.hard is None:
        return (
            f"hard images: not known before mining ({c.hard_how}); {c.per_hard} synthetic images and "
            f"{c.steps_per_hard} denoising steps per hard image at {c.sec_per_step:g} GPU-s/step = "
            f"{c.steps_per_hard * c.sec_per_step / 3600:.4f} GPU-hours per hard image"
        )
    return (
        f"hard images: {c.hard} ({c.hard_how}); synthetic images to generate: {c.synthetic} "
        f"({c.per_hard} per hard image); denoising steps: {c.hard * c.steps_per_hard}; "
        f"estimated generation cost: {c.gpu_hours():.2f} GPU-hours at {c.sec_per_step:g} GPU-s per step"
    )
