"""Assemble RunData from Phase 1 files for a trainer (shared by the FLYP and long-tail scripts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from curriculum.guidance import REAL_LEVEL
from training.trainers.data import (
    check_images_exist,
    curriculum_validation_split,
    load_real,
    load_synthetic,
    real_items,
)
from training.trainers.engine import RunData


def build_run_data(args, adaptive: bool) -> tuple[RunData, list[int]]:
    """Return (RunData, the synthetic levels to schedule) from the parsed flags of a training script.

    Every image the run can read (real training and evaluation images, the scheduled levels' synthetic
    images) must exist: a missing one is an error here, before any training, naming the count and the first.
    """
    real = load_real(args.data_table, args.data_root, split=args.train_split)
    check_images_exist(
        real["source_path"], f"{args.data_table} (split {args.train_split!r}, --data_root {args.data_root or '.'})"
    )
    from curriculum.tables import read_sample_table

    table = read_sample_table(args.data_table, args.data_root)
    eval_splits = {}
    for split in args.eval_splits:
        if "split" not in table.columns:
            raise ValueError(f"{args.data_table}: --eval_splits needs a `split` column")
        rows = table[table["split"].astype(str) == split]
        if rows.empty:
            raise ValueError(f"{args.data_table}: no rows with split == {split!r} (--eval_splits)")
        eval_splits[split] = real_items(rows)
        check_images_exist(
            rows["source_path"],
            f"{args.data_table} (split {split!r} of --eval_splits, --data_root {args.data_root or '.'})",
        )
    synthetic = real.iloc[:0]
    levels: list[int] = []
    cval = None
    if args.curriculum and not args.syn_manifest:
        raise ValueError("--curriculum needs --syn_manifest (the synthetic images to schedule); none given")
    if args.syn_manifest:
        synthetic = load_synthetic(
            args.syn_manifest, args.syn_root, known_labels=table["label"].unique(), min_level=args.min_level
        )
        available = sorted(int(v) for v in synthetic["level"].unique() if v < REAL_LEVEL)
        if args.curriculum and not available:
            raise ValueError(
                f"--curriculum: {args.syn_manifest} has no kept synthetic image at a level >= --min_level "
                f"{args.min_level} (kept rows: {len(synthetic)}); nothing to schedule"
            )
        levels = [lv for lv in (args.levels or available) if lv in available]
        missing = sorted(set(args.levels or []) - set(available))
        if missing:
            raise ValueError(
                f"--levels {missing} have no (kept) synthetic images in {args.syn_manifest}; available: {available}"
            )
        synthetic = synthetic[synthetic["level"].isin(levels)].reset_index(drop=True)  # only the scheduled levels
        if args.curriculum:
            check_images_exist(
                synthetic["path"],
                f"{args.syn_manifest} (kept rows of --levels {levels}, --syn_root "
                f"{args.syn_root or 'from the manifest'})",
            )
        if adaptive and levels and args.curriculum:
            n_sources = int(synthetic["sample_id"].nunique())
            synthetic, cval = curriculum_validation_split(synthetic, levels, args.curriculum_val_size, seed=args.seed)
            if cval.empty:
                raise ValueError(
                    "the adaptive schedule needs source images that have every level (curriculum validation); "
                    "none found"
                )
            held = sorted(cval["sample_id"].unique())
            if 2 * len(held) > n_sources:
                raise ValueError(
                    f"--curriculum_val_size {args.curriculum_val_size} would hold out {len(held)} of the "
                    f"{n_sources} source images that have synthetic images (more than half) from training; "
                    f"give at most {n_sources // 2}"
                )
            cval = cval.assign(item_id="cval:" + cval["synthetic_id"], source="synthetic")[
                ["item_id", "sample_id", "path", "label", "level", "source"]
            ]
            # the held-out images leave training at every level, their real image too (DisCL's validate.csv);
            # with real data a candidate level, their real images are its validation rows
            held_real = real[real["sample_id"].isin(held)]
            real = real[~real["sample_id"].isin(held)].reset_index(drop=True)
            if getattr(args, "real_candidate", False):
                cval = pd.concat([cval, real_items(held_real).assign(item_id="cval:real:" + held_real["sample_id"])])
                cval = cval.reset_index(drop=True)
    data = RunData(real=real, synthetic=synthetic, eval_splits=eval_splits, curriculum_val=cval)
    if getattr(args, "prototype_state", None):
        data.real_schedule = prototype_schedule(
            args.prototype_state, real["sample_id"].tolist(), args.proto_start, args.proto_warmup_steps, args.proto_mode
        )
        # the distribution is refreshed often enough to follow the warm-up (a refresh interval longer than the
        # warm-up would sample the whole run from the step-0 distribution)
        refresh = getattr(args, "proto_refresh_every", None)
        data.real_refresh_every = int(refresh) if refresh else max(1, min(100, args.proto_warmup_steps // 20))
        if data.real_refresh_every < 1:
            raise ValueError(f"--proto_refresh_every must be >= 1, got {refresh}")
    return data, levels


def prototype_schedule(path: str, sample_ids: list[str], start: float, warmup_steps: int, mode: str):
    """Return the SoftPacingSchedule over the real samples from a saved curriculum state (aligned by sample id).

    The state is what `CurriculumLearning.save_weights` writes; its `difficulty` array (scaled prototype
    distances) drives p ∝ exp(∓d/T), with the target effective size rising from `start` over `warmup_steps`
    steps, uniform after. A real sample the state does not know is an error naming it.
    """
    from curriculum import SoftPacingSchedule, load_curriculum_state

    state = load_curriculum_state(path)
    try:
        d = state.aligned(sample_ids).arrays["difficulty"]
    except KeyError as err:
        raise ValueError(f"--prototype_state {path}: {err.args[0]}") from None
    return SoftPacingSchedule(d, final_iteration=warmup_steps, start=start, mode=mode)


def uniform_real_set(real: pd.DataFrame, n_images: int):
    """Return `rng -> items`: DisCL's iWildCam uniform set, a random `n_images` of the real training images
    (all of them when there are fewer), drawn afresh for each uniform pass."""

    def compose(rng):
        items = real_items(real)
        n = min(len(items), max(1, int(n_images)))
        return items.iloc[np.sort(rng.choice(len(items), size=n, replace=False))].reset_index(drop=True)

    return compose
