"""The embedded default: DisCL end to end, offline, on a CPU, in minutes.

    python -m training.demo               # the full demo: runs/demo/
    python -m training.demo --quick       # the smoke run CI runs (no verdicts): runs/demo-quick/

Times (benchmarks/times.py): full, 496 s (8.3 min) on 2 CPU cores with 1 torch thread, measured 2026-12-01; quick,
447 s on 2 CPU cores with 1 torch thread at a load average of about 15, measured 2026-12-02.

Both phases run for real, through the same command-line entry points a user runs (each called in-process
through its `main(argv)`), on scikit-learn's bundled handwritten digits made long-tailed
(`training.demo.data`):

Phase 1
  1. the CLIP stand-in: a small image classifier with a cosine head trained on the disjoint `pool` split
     (`data_generation/train_probe.py`; image-image = cosine of its features, image-text = its probability
     of the prompt's class);
  2. the task classifier trained on the long-tailed `train` split, real data only - both the Phase 2
     baseline (seed 0) and the "pretrained classifier" that marks hard samples (`training/train_lt.py`);
  3. hard samples: `data_generation/mine_hard.py` with the classifier (true-class probability) and
     prototype difficulty (k-means on the classifier's features), among the few-shot classes; it also
     saves the prototype curriculum state Phase 2 samples real data with;
  4. the generator: a class-conditional pixel-space diffusion model trained on `pool` with the timestep
     curriculum (`training/train_diffusion.py`);
  5. the spectrum: `data_generation/gene_img.py --model_id <generator>` across strengths and seeds;
  6. the filter: `data_generation/comp_clip_scores.py --clip_backend probe`.
Phase 2
  7. `training/train_lt.py` for each variant and seed: real data only (baseline), the non-adaptive guidance
     curriculum and the adaptive one, both with prototype-weighted real sampling.
Report
  8. `{out}/report/report.md` with PNGs: the data, the generator's samples, the spectrum grid, kept/total
     per strength, the schedules followed (each decision with the level the run went on with), the accuracy
     table (mean ± std over seeds), the paired differences with their 95% t-intervals over seeds, and a plain
     statement of what they show - a gain or a loss only where the interval excludes 0; none from `--quick`.

Every step's outputs stay in `{out}`; a rerun skips the steps whose outputs exist (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from curriculum.contracts import DISTRIBUTIONS_PLOT, GRID_PLOT, MANIFEST_FILE, SCORES_FILE, SUMMARY_FILE, guidance_level
from curriculum.tables import markdown_table

VARIANTS = {
    "baseline": "real data only, cross-entropy",
    "baseline_bsm": (
        "real data only, balanced softmax (a strong long-tail baseline: logits + log class prior in training)"
    ),
    "discl_fixed": "non-adaptive guidance curriculum, synthetic (level 0) to real, equal shares",
    "discl_adaptive": "adaptive curriculum: next level = the largest validation progress (DisCL's iWildCam rule)",
    "discl_random": "ablation: the adaptive loop with the next level drawn at random (DisCL's --random_guid)",
}
FEW_MAX = 19  # the few-shot classes: fewer than 20 training images (ImageNet-LT's definition)
METRIC_PREFIX = "digits_lt"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of one demo run (`full()` and `quick()` are the two presets)."""

    out: str = "runs/demo"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # data
    image_size: int = 8
    n_max: int = 80
    imbalance: float = 20.0
    # CLIP stand-in and task classifier
    probe_arch: str = "test_efficientnet"
    probe_epochs: int = 20
    arch: str = "test_resnet"
    classifier_size: int = 16
    epochs: int = 40
    curriculum_epoch: int = 25
    batch_size: int = 64
    lr: float = 2e-3
    # mining: among the few-shot classes, the less confident half or the farther-from-prototype half
    mine_bottom_q: float = 0.5
    mine_top_q: float = 0.5
    # generator
    gen_channels: tuple[int, ...] = (32, 64)
    gen_stage_epochs: tuple[int, ...] = (12, 12, 18, 18, 30)
    gen_batch_size: int = 32
    # spectrum
    strengths: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    gen_seeds: tuple[int, ...] = (10, 20, 30, 40, 42, 50, 60, 70)
    gen_steps: int = 25
    class_guidance: float = 2.0
    threshold: float = 0.5
    # Phase 2
    levels: tuple[int, ...] = (0, 20, 40, 60, 80)
    curriculum_val_size: int = 8
    proto_start: float = 0.5
    variants: tuple[str, ...] = ("baseline", "baseline_bsm", "discl_fixed", "discl_adaptive", "discl_random")
    #: a smoke preset checks the pipeline end to end; its few seeds and epochs support no comparison
    smoke: bool = False

    @classmethod
    def full(cls, out: str = "runs/demo") -> DemoConfig:
        """Return the full demo (the time it takes: the module docstring)."""
        return cls(out=out)

    @classmethod
    def quick(cls, out: str = "runs/demo-quick") -> DemoConfig:
        """Return the quick smoke demo CI runs: fewer epochs, seeds and variants per image; it draws no verdict."""
        return cls(
            out=out,
            seeds=(0, 1),
            probe_epochs=8,
            epochs=10,
            curriculum_epoch=6,
            gen_stage_epochs=(1, 1, 1, 1, 2),
            strengths=(0.2, 0.6, 1.0),
            gen_seeds=(10, 20),
            gen_steps=10,
            levels=(0, 40, 80),
            curriculum_val_size=4,
            smoke=True,
        )


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and the command to rerun it alone."""


def _call(step: str, main: Callable[[list[str]], int], argv: list[str]) -> None:
    """Run one CLI's `main(argv)`; raise DemoError naming the step and its command line if it fails."""
    code = main([str(a) for a in argv])
    if code != 0:
        raise DemoError(f"step '{step}' exited with code {code}: {' '.join(map(str, argv))}")


class Steps:
    """Runs named steps in order, skipping finished ones, and records each step's seconds in `timings.json`
    (a skipped step keeps the time it took when it ran)."""

    def __init__(self, total: int, timings: Path):
        self.total, self.done, self.path = total, 0, timings
        self.seconds: dict[str, float] = json.loads(timings.read_text()) if timings.is_file() else {}

    def run(self, name: str, finished: Callable[[], bool], fn: Callable[[], None]) -> None:
        """Run `fn` unless `finished()` already holds; print a header line and the time taken."""
        self.done += 1
        head = f"[{self.done}/{self.total}] {name}"
        if finished():
            print(f"{head}: done earlier, skipped", flush=True)
            self.seconds.setdefault(name, float("nan"))
            return
        print(f"{head} ...", flush=True)
        t0 = time.perf_counter()
        fn()
        self.seconds[name] = time.perf_counter() - t0
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.seconds, indent=1))
        tmp.replace(self.path)
        print(f"{head}: {self.seconds[name]:.1f}s", flush=True)


def _phase2_argv(cfg: DemoConfig, paths: dict[str, Path], variant: str, seed: int) -> list[str]:
    """Return train_lt.py's flags for one variant and seed."""
    argv = [
        "--data_table",
        paths["table"],
        "--data_root",
        paths["data"],
        "--arch",
        cfg.arch,
        "--img_size",
        cfg.classifier_size,
        "--augment",
        "shift",
        "--epochs",
        cfg.epochs,
        "--batch_size",
        cfg.batch_size,
        "--lr",
        cfg.lr,
        "--wd",
        5e-4,
        "--eval_splits",
        "val",
        "test",
        "--metric_prefix",
        METRIC_PREFIX,
        "--select_metric",
        f"{METRIC_PREFIX}/val/overall_acc",
        "--tail_max_count",
        FEW_MAX,
        "--composition",
        "mixed",
        "--num_workers",
        0,
        "--seed",
        seed,
        "--device",
        "cpu",
        "--run_dir",
        paths["phase2"] / f"{variant}-seed{seed}",
        "--resume",  # a rerun of the demo continues a killed run (train_lt refuses a used --run_dir without it)
    ]
    if variant == "baseline":
        return argv
    if variant == "baseline_bsm":
        return argv + ["--loss", "balanced_softmax"]
    steps = _steps_per_epoch(cfg, paths)
    argv += [
        "--syn_manifest",
        paths["scores"],
        "--curriculum",
        "--curriculum_epoch",
        cfg.curriculum_epoch,
        # the demo's own curriculum (equal stages over its short run, the LR ending at its last step)
        "--fixed_stages",
        "equal",
        "--lr_schedule",
        "exact",
        "--no-real_candidate",
        "--levels",
        *cfg.levels,
        "--prototype_state",
        paths["proto"],
        "--proto_start",
        cfg.proto_start,
        "--proto_warmup_steps",
        max(1, steps * cfg.curriculum_epoch // 2),
    ]
    if variant == "discl_adaptive":
        argv += ["--progress_guid", "--curriculum_val_size", cfg.curriculum_val_size]
    elif variant == "discl_random":  # DisCL's ablation: the adaptive loop, but the next level drawn at random
        argv += ["--progress_guid", "--random_guid", "--curriculum_val_size", cfg.curriculum_val_size]
    elif variant != "discl_fixed":
        raise ValueError(f"unknown demo variant {variant!r}; known: {', '.join(VARIANTS)}")
    return argv


def _steps_per_epoch(cfg: DemoConfig, paths: dict[str, Path]) -> int:
    n_train = int((pd.read_csv(paths["table"])["split"] == "train").sum())
    return -(-n_train // cfg.batch_size)


def run_demo(cfg: DemoConfig, fresh: bool = False) -> Path:
    """Run every step of the demo (skipping finished ones unless `fresh`); return the report's path."""
    from data_generation import comp_clip_scores, gene_img, mine_hard, train_probe
    from training import train_diffusion, train_lt
    from training.demo.data import write_long_tailed_digits  # torch: imported here, so --help answers at once

    t_start = time.perf_counter()
    out = Path(cfg.out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "data": out / "data",
        "table": out / "data" / "samples.csv",
        "probe": out / "probe",
        "mining": out / "mining",
        "proto": out / "mining" / "prototypes",
        "gen": out / "generator",
        "syn": out / "synthetic",
        "phase2": out / "phase2",
        "report": out / "report",
    }
    paths["hard"] = paths["mining"] / "hard.csv"
    paths["scores"] = paths["syn"] / SCORES_FILE
    steps = Steps(7 + len(cfg.variants) * len(cfg.seeds), out / "timings.json")

    steps.run(
        "data: long-tailed digits",
        lambda: paths["table"].is_file(),
        lambda: write_long_tailed_digits(
            paths["data"], size=cfg.image_size, n_max=cfg.n_max, imbalance=cfg.imbalance, seed=0
        ),
    )
    steps.run(
        "phase 1: CLIP stand-in (probe) on the pool split",
        lambda: (paths["probe"] / "train_summary.json").is_file(),
        lambda: _call(
            "probe",
            train_probe.main,
            [
                "--data",
                paths["table"],
                "--split",
                "pool",
                "--out",
                paths["probe"],
                "--arch",
                cfg.probe_arch,
                "--img_size",
                16,
                "--epochs",
                cfg.probe_epochs,
                "--no_progress",
            ],
        ),
    )

    def phase2(variant: str, seed: int) -> None:
        run_dir = paths["phase2"] / f"{variant}-seed{seed}"
        steps.run(
            f"phase 2: {variant}, seed {seed}",
            lambda: (run_dir / "final_model.safetensors").is_file(),
            lambda: _call(f"{variant}-seed{seed}", train_lt.main, _phase2_argv(cfg, paths, variant, seed)),
        )

    classifier = paths["phase2"] / f"baseline-seed{cfg.seeds[0]}"
    phase2("baseline", cfg.seeds[0])  # also the classifier that marks hard samples
    steps.run(
        "phase 1: mine hard samples (classifier + prototype difficulty)",
        lambda: paths["hard"].is_file(),
        lambda: _call(
            "mine_hard",
            mine_hard.main,
            [
                "--dataset",
                "table",
                "--data",
                paths["table"],
                "--data_root",
                paths["data"],
                "--split",
                "train",
                "--scorers",
                "checkpoint",
                "prototype",
                "--classifier_arch",
                cfg.arch,
                "--classifier_weights",
                classifier / "best_model.safetensors",
                "--classifier_img_size",
                cfg.classifier_size,
                "--feature_model",
                cfg.arch,
                "--feature_weights",
                classifier / "best_model.safetensors",
                "--feature_img_size",
                cfg.classifier_size,
                "--use_labels",
                "--tail_only",
                "--tail_max_count",
                FEW_MAX,
                "--bottom_q",
                f"true_prob={cfg.mine_bottom_q}",
                "--top_q",
                f"prototype_distance={cfg.mine_top_q}",
                "--combine",
                "any",
                "--output_csv",
                paths["hard"],
                "--scores_parquet",
                paths["mining"] / "scores.parquet",
                "--prototype_state",
                paths["proto"],
                "--layout",
                "canonical",
            ],
        ),
    )
    steps.run(
        "phase 1: train the generator (timestep curriculum) on the pool split",
        lambda: (paths["gen"] / "model" / "model_index.json").is_file(),
        lambda: _call(
            "train_diffusion",
            train_diffusion.main,
            [
                "--data",
                paths["table"],
                "--split",
                "pool",
                "--output_dir",
                paths["gen"],
                "--image_size",
                cfg.image_size,
                "--block_out_channels",
                *cfg.gen_channels,
                "--stage_epochs",
                *cfg.gen_stage_epochs,
                "--batch_size",
                cfg.gen_batch_size,
                "--samples_per_class",
                8,
                "--device",
                "cpu",
            ],
        ),
    )
    steps.run(
        "phase 1: generate the spectrum (gene_img.py)",
        lambda: (paths["syn"] / MANIFEST_FILE).is_file(),
        lambda: _call(
            "gene_img",
            gene_img.main,
            [
                "--data_csv",
                paths["hard"],
                "--data_root",
                paths["data"],
                "--output_path",
                paths["syn"],
                "--model_id",
                paths["gen"] / "model",
                "--strengths",
                *cfg.strengths,
                "--seeds",
                *cfg.gen_seeds,
                "--text_guidance",
                cfg.class_guidance,
                "--steps",
                cfg.gen_steps,
                "--batch_size",
                64,
                "--prompt_template",
                "a photo of the digit {name}",
                "--device",
                "cpu",
                "--merge",
                "--strict",
                "--no_progress",
            ],
        ),
    )
    steps.run(
        "phase 1: score and filter (comp_clip_scores.py, probe backend)",
        lambda: paths["scores"].is_file(),
        lambda: _call(
            "comp_clip_scores",
            comp_clip_scores.main,
            [
                "--syn_path",
                paths["syn"],
                "--clip_backend",
                "probe",
                "--clip_model",
                paths["probe"],
                "--threshold",
                cfg.threshold,
                "--device",
                "cpu",
                "--num_workers",
                0,
                "--no_progress",
            ],
        ),
    )
    for variant in cfg.variants:
        for seed in cfg.seeds:
            if (variant, seed) != ("baseline", cfg.seeds[0]):
                phase2(variant, seed)
    print(f"[{steps.total}/{steps.total}] report", flush=True)
    report = write_report(cfg, paths, steps.seconds, time.perf_counter() - t_start)
    return report


# --------------------------------------------------------------------------------------------------------
# the report
def results_table(cfg: DemoConfig, phase2: Path) -> pd.DataFrame:
    """Return one row per (variant, seed): the test metrics of the epoch selected on val, and that epoch."""
    rows = []
    sel = f"{METRIC_PREFIX}/val/overall_acc"
    for variant in cfg.variants:
        for seed in cfg.seeds:
            m = pd.read_csv(phase2 / f"{variant}-seed{seed}" / "metrics.csv")
            best = m.loc[m[sel].idxmax()]  # the first epoch with the best val accuracy (never selected on test)
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "selected_epoch": int(best["epoch"]),
                    **{k: float(best[f"{METRIC_PREFIX}/test/{k}"]) for k in ("overall_acc", "few_acc", "medium_acc")},
                    "val_overall_acc": float(best[sel]),
                }
            )
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Return mean and std over seeds per variant of the test accuracies (in percent)."""
    g = results.groupby("variant", sort=False)[["overall_acc", "few_acc", "medium_acc"]]
    mean, std = g.mean() * 100, g.std(ddof=1) * 100
    out = pd.DataFrame({"n_seeds": results.groupby("variant", sort=False).size()})
    for col in ("overall_acc", "few_acc", "medium_acc"):
        out[f"{col}_mean"], out[f"{col}_std"] = mean[col], std[col]
    return out.reset_index()


def _pairs(variants) -> list[tuple[str, str]]:
    """Return the compared (variant, reference) pairs: each variant vs baseline, adaptive vs its ablations."""
    present = list(variants)
    pairs = [(v, "baseline") for v in present if v != "baseline"]
    pairs += [("discl_adaptive", o) for o in ("baseline_bsm", "discl_fixed", "discl_random") if o in present]
    return [(a, b) for a, b in pairs if a in present and b in present]


def paired_differences(results: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Return, per compared pair and metric, the mean paired difference over seeds (points) and its t-interval.

    Runs with the same seed share the data split, the baseline checkpoint and the initialisation, so the
    difference is taken seed by seed; the interval is mean ± t(n-1) · sd / sqrt(n) (NaN with one seed).
    """
    from scipy import stats

    rows = []
    for a, b in _pairs(dict.fromkeys(results["variant"])):
        for col in ("few_acc", "overall_acc", "medium_acc"):
            wide = results[results["variant"].isin([a, b])].pivot(index="seed", columns="variant", values=col)
            d = ((wide[a] - wide[b]) * 100).dropna().to_numpy()
            n = len(d)
            mean = float(d.mean()) if n else float("nan")
            half = (
                float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            )
            rows.append(
                {
                    "variant": a,
                    "reference": b,
                    "metric": col,
                    "n_seeds": n,
                    "mean_diff": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                }
            )
    return pd.DataFrame(rows)


def verdict(summary: pd.DataFrame, results: pd.DataFrame | None = None) -> list[str]:
    """Return plain sentences comparing each DisCL variant with the baseline, and the adaptive curriculum with
    its ablations (gain, loss or no clear difference).

    With the per-seed `results`, a difference is clear when the 95% t-interval of the paired difference over
    seeds excludes 0 (the sentence gives the interval). From the summary alone, when it exceeds the larger of
    the two standard deviations.
    """
    by = summary.set_index("variant")
    diffs = paired_differences(results).set_index(["variant", "reference", "metric"]) if results is not None else None
    lines = []
    for a, b in _pairs(by.index):
        for col, what in (("few_acc", "few-class"), ("overall_acc", "overall")):
            ma, mb = by.loc[a, f"{col}_mean"], by.loc[b, f"{col}_mean"]
            if diffs is not None:
                r = diffs.loc[(a, b, col)]
                d, lo, hi = r["mean_diff"], r["ci_low"], r["ci_high"]
                word = "a gain" if lo > 0 else ("a loss" if hi < 0 else "no clear difference")
                lines.append(
                    f"{a} vs {b}, {what} test accuracy: {d:+.1f} points ({ma:.1f} vs {mb:.1f}; 95% CI of the "
                    f"paired difference over {int(r['n_seeds'])} seeds [{lo:+.1f}, {hi:+.1f}]) - {word}."
                )
                continue
            noise = max(by.loc[a, f"{col}_std"], by.loc[b, f"{col}_std"])
            d = ma - mb
            word = "no clear difference" if abs(d) <= noise else ("a gain" if d > 0 else "a loss")
            lines.append(
                f"{a} vs {b}, {what} test accuracy: {d:+.1f} points ({ma:.1f} vs {mb:.1f}; "
                f"larger std {noise:.1f}) - {word}."
            )
    return lines


def schedule_lines(variant: str, seed: int, schedule: pd.DataFrame, max_decisions: int = 6) -> list[str]:
    """Return the report's lines for one run's `schedule.csv`: the level of every epoch, then the first
    `max_decisions` adaptive decisions with the progress per level and the level the run went on with.

    The next level is the one the run recorded (`next_level`, else the following epoch's level), never
    recomputed: the random ablation draws it, so it need not be the level with the largest progress.
    """
    random_draw = variant == "discl_random"
    lines = [f"- **{variant}** (seed {seed}), level per epoch: " + " ".join(str(int(v)) for v in schedule["level"])]
    levels = schedule["level"].tolist()
    decisions = [(i, r) for i, (_, r) in enumerate(schedule.iterrows()) if str(r.get("progress", "")).startswith("{")]
    for i, r in decisions[:max_decisions]:
        p = json.loads(r["progress"])
        nxt = r.get("next_level")
        if nxt is None or pd.isna(nxt):
            nxt = levels[i + 1] if i + 1 < len(levels) else None
        best = max(p, key=p.get) if p else "-"
        how = f"drawn at random; largest progress {best}" if random_draw else "largest progress"
        lines.append(
            f"  - after epoch {int(r['epoch'])}: progress per level "
            + ", ".join(f"{k}: {v:+.3f}" for k, v in p.items())
            + (f" -> next {int(nxt)} ({how})" if nxt is not None else " -> (last decision)")
        )
    if len(decisions) > max_decisions:
        lines.append(f"  - ... {len(decisions) - max_decisions} more decisions in schedule.csv")
    return lines


DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def labelled_sample_grid(src: Path, dst: Path, class_names) -> Path | None:
    """Redraw the trainer's sample grid (one row per class, square cells, no gaps) with a gap between cells,
    the class name on each row and the sample number on each column; return `dst` (None without `src`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from PIL import Image

    if not src.is_file():
        return None
    with Image.open(src) as im:
        grid = np.asarray(im.convert("RGB"))
    rows = len(class_names)
    cell = grid.shape[0] // rows
    cols = grid.shape[1] // cell
    fig, axes = plt.subplots(rows, cols, figsize=(0.6 * cols + 1.2, 0.6 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(grid[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(class_names[r], rotation=0, ha="right", va="center", fontsize=8)
            if r == 0:
                ax.set_title(f"sample {c + 1}", fontsize=8)
    fig.suptitle("generator samples from noise: one row per class", fontsize=9)
    fig.subplots_adjust(wspace=0.15, hspace=0.15)
    fig.savefig(dst, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return dst


def write_report(cfg: DemoConfig, paths: dict[str, Path], seconds: dict[str, float], total_s: float) -> Path:
    """Write `report/report.md` (+ PNGs and results CSVs) from the run's files; return its path."""
    from training.demo.data import long_tail_counts, split_counts

    rep = paths["report"]
    rep.mkdir(parents=True, exist_ok=True)
    results = results_table(cfg, paths["phase2"])
    results.to_csv(rep / "results_per_seed.csv", index=False)
    summary = summary_table(results)
    summary.to_csv(rep / "results.csv", index=False)
    shown = pd.DataFrame({"variant": summary["variant"], "seeds": summary["n_seeds"].astype(str)})
    for col, name in (
        ("overall_acc", "overall"),
        ("few_acc", "few (<20 train imgs)"),
        ("medium_acc", "medium (20-100)"),
    ):
        shown[name] = [f"{m:.1f} ± {s:.1f}" for m, s in zip(summary[f"{col}_mean"], summary[f"{col}_std"])]

    diffs = paired_differences(results)
    diff_table = pd.DataFrame(
        {
            "variant vs reference": [f"{a} vs {b}" for a, b in zip(diffs["variant"], diffs["reference"])],
            "metric": diffs["metric"],
            "mean diff": [f"{v:+.1f}" for v in diffs["mean_diff"]],
            "95% CI": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(diffs["ci_low"], diffs["ci_high"])],
        }
    )
    diffs.to_csv(rep / "paired_differences.csv", index=False)
    stages = sorted((paths["gen"] / "samples").glob("stage*.png"))
    gen_png = labelled_sample_grid(stages[-1], rep / "generator_samples.png", DIGITS) if stages else None
    grid_src = paths["syn"] / GRID_PLOT
    grid_png = shutil.copy(grid_src, rep / "spectrum_grid.png") if grid_src.is_file() else None
    dist_src = paths["syn"] / DISTRIBUTIONS_PLOT
    dist_png = shutil.copy(dist_src, rep / "score_distributions.png") if dist_src.is_file() else None
    clip_summary = pd.read_csv(paths["syn"] / SUMMARY_FILE)
    per_strength = clip_summary[clip_summary["group"] == "strength"][
        ["value", "total", "kept", "mean_clip_txt_sim", "mean_clip_img_sim"]
    ]
    per_strength = per_strength.rename(
        columns={"value": "strength", "mean_clip_txt_sim": "mean p(class)", "mean_clip_img_sim": "mean img-img cosine"}
    )
    per_strength.insert(1, "level", [guidance_level(s) for s in per_strength["strength"]])
    hard = pd.read_csv(paths["hard"])
    counts = split_counts(paths["table"]).reset_index()
    hard_per_class = hard.groupby("label_name").size()
    counts["hard"] = [int(hard_per_class.get(n, 0)) for n in counts["label_name"]]
    probe = json.loads((paths["probe"] / "train_summary.json").read_text())

    sched_lines = []
    for variant in cfg.variants:
        if variant == "baseline":
            continue
        s = pd.read_csv(paths["phase2"] / f"{variant}-seed{cfg.seeds[0]}" / "schedule.csv")
        sched_lines += schedule_lines(variant, cfg.seeds[0], s)

    timing = pd.DataFrame({"step": list(seconds), "seconds": [round(v, 1) for v in seconds.values()]})
    steps_s = float(np.nansum(list(seconds.values())))
    lines = [
        "# DisCL offline demo report",
        "",
        f"Preset: **{'quick' if cfg.smoke else 'full'}**; the steps took {steps_s:.0f} s "
        f"({steps_s / 60:.1f} min) on this machine (this invocation: {total_s:.0f} s). Everything below was computed "
        "by this run, offline.",
        "",
        *(
            [
                f"**This is a smoke run** (`--quick`: {len(cfg.seeds)} seeds, {cfg.epochs} epochs): it checks that "
                "every step runs and writes its files. Its accuracies are too few and too short to compare the "
                "variants, so this report draws no verdict; run `python -m training.demo` (the full preset) for that.",
                "",
            ]
            if cfg.smoke
            else []
        ),
        "## Data",
        "",
        f"scikit-learn's handwritten digits (8×8), long-tailed training split (imbalance {cfg.imbalance:g}:1, "
        f"{long_tail_counts(cfg.n_max, cfg.imbalance)} images per class), balanced val (model selection) and test "
        "(reported) splits, and a disjoint `pool` that stands in for the data a real generator and CLIP were "
        "pretrained on: the generator and the CLIP stand-in learn from `pool` only.",
        "",
        markdown_table(counts, "{:.1f}"),
        "",
        "## Phase 1: the synthetic-to-real spectrum",
        "",
        f"- CLIP stand-in: `{cfg.probe_arch}` with a cosine head trained on `pool` ({probe['n_images']} images, "
        f"training accuracy {probe['train_accuracy']:.3f}); image-text score = its probability of the prompt's class.",
        f"- Hard samples: `mine_hard.py` among the few-shot classes (< 20 training images): the bottom "
        f"{cfg.mine_bottom_q:g} by the baseline classifier's true-class probability or the top {cfg.mine_top_q:g} by "
        f"prototype distance; {len(hard)} images (per class in the table above).",
        f"- Generator: class-conditional pixel-space UNet trained on `pool` with the timestep curriculum "
        f"(stages {cfg.gen_stage_epochs} epochs); its samples from noise (one row per class, zero to nine):",
        "",
    ]
    if gen_png:
        lines += [f"![generator samples]({gen_png.name})", ""]
    lines += [
        f"- Spectrum: strengths {list(cfg.strengths)} × seeds {list(cfg.gen_seeds)}; level = 100 − 100·strength "
        "(100 = real). Kept = p(class) ≥ "
        f"{cfg.threshold:g}:",
        "",
        markdown_table(per_strength, "{:.3f}"),
        "",
    ]
    if grid_png:
        lines += [
            "The real image and its variants per strength (green kept, red dropped):",
            "",
            f"![spectrum grid]({Path(grid_png).name})",
            "",
        ]
    if dist_png:
        lines += [f"![score distributions]({Path(dist_png).name})", ""]
    lines += [
        "## Phase 2: curriculum training",
        "",
        f"`train_lt.py`, `{cfg.arch}` at {cfg.classifier_size} px, {cfg.epochs} epochs, cross-entropy "
        "(balanced softmax in baseline_bsm); each epoch "
        "all real training images plus the current level's kept synthetic images; the model of the epoch with the "
        "best val accuracy is reported on test. DisCL variants: the guidance curriculum over the first "
        f"{cfg.curriculum_epoch} epochs on levels {list(cfg.levels)}, then real only, with prototype-weighted "
        "real sampling (prototypes from k-means within each class; the effective size rises from "
        f"{cfg.proto_start:g} to uniform over the first half of the curriculum).",
        "",
        *[f"- `{v}`: {VARIANTS[v]}" for v in cfg.variants],
        "",
        "Read the gains with the premise in mind: the generator learnt from `pool`, which holds "
        f"{int(counts.loc[counts['train'] <= FEW_MAX, 'pool'].sum())} images of the few-shot classes (table above) "
        "that the task model never sees; its synthetic images carry that knowledge, as a pretrained diffusion model "
        "carries its "
        "pretraining data. That is DisCL's premise, not a leak: `pool` is disjoint from train, val and test.",
        "",
        "Schedules followed:",
        "",
        *sched_lines,
        "",
        "Test accuracy in percent, mean ± std over seeds:",
        "",
        markdown_table(shown, "{:.1f}"),
        "",
        "Paired differences in points (variant − reference, seed by seed; 95% t-interval over the seeds):",
        "",
        markdown_table(diff_table, "{:.1f}"),
        "",
        *(
            ["No verdict: a smoke run (see the top)."]
            if cfg.smoke
            else ["**What the numbers show.**", "", *[f"- {s}" for s in verdict(summary, results)]]
        ),
        "",
        "Per-seed rows: `results_per_seed.csv`; every run's metrics, schedule and checkpoints: `phase2/`.",
        "",
        "## Time per step",
        "",
        markdown_table(timing, "{:.1f}"),
        "",
    ]
    path = rep / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m training.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the smoke preset CI runs: every step, small; no verdicts")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo-quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="Phase 2 seeds (default 0 1 2 3 4; quick 0 1)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the models are tiny, and one thread is fastest on a busy machine)",
    )
    args = p.parse_args(argv)
    cfg = DemoConfig.quick() if args.quick else DemoConfig.full()
    if args.out:
        cfg = replace(cfg, out=args.out)
    if args.seeds:
        if len(args.seeds) < 2:
            p.error("--seeds needs at least two seeds (the report gives mean ± std)")
        cfg = replace(cfg, seeds=tuple(args.seeds))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    try:
        report = run_demo(cfg, fresh=args.fresh)
    except (DemoError, ValueError, OSError) as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # called in-process (tests, notebooks): leave the caller's setting
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s; report: {report}")
    if cfg.smoke:
        print("  a smoke run (--quick): no verdict; run without --quick to compare the variants")
        return 0
    summary = pd.read_csv(report.parent / "results.csv")
    results = pd.read_csv(report.parent / "results_per_seed.csv")
    for line in verdict(summary, results):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DemoConfig", "DemoError", "main", "run_demo", "results_table", "summary_table", "verdict", "write_report"]
