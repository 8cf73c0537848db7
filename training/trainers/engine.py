"""One accelerate training loop for every Phase 2 trainer; it asks the guidance schedule for the level.

Per epoch: the schedule gives the level; the task composes the epoch's items (real + that level's
synthetic); one pass over them is an epoch (the "loader exhausted" moment of DisCL's adaptive rule). With
`stage_unit="pass"` (DisCL's iWildCam loop) an adaptive curriculum epoch is instead a fixed number of steps and a
stage, one pass over the level's items, runs across epoch boundaries; its end triggers the choice. Then,
during the curriculum, an adaptive schedule is fed the per-level progress on the curriculum-validation split;
the model is evaluated on the evaluation splits, metrics appended to `metrics.csv` (and TensorBoard with
`tensorboard=True`), a checkpoint written
(safetensors + JSON) and the schedule followed appended to `schedule.csv`. `resume=True` continues from the
last checkpoint and follows the same schedule as an uninterrupted run (every random choice is seeded by
(seed, epoch): the composition, the global RNGs augmentations draw from, FLYP's prompt templates).
Several processes (torchrun, `accelerate launch --multi_gpu`, srun; curriculum.distributed reads the launcher's
variables): every process trains its slice of each global batch (through the DDP wrapper); `batch_size` is the
GLOBAL batch (each process takes batch_size / processes, as the reference's DataParallel splits its batch), so
the learning rate needs no scaling; evaluation is sharded across the processes and gathered (metrics equal to
one process's); only the main process writes the run folder.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from curriculum.guidance import REAL_LEVEL, AdaptiveSchedule, FixedSchedule, level_progress
from curriculum.tables import write_csv, write_json, write_parquet
from training.trainers.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint, save_model_weights
from training.trainers.data import ItemDataset, stage_items, synthetic_items
from training.trainers.lr_schedule import WarmupCosine

#: the stage level of a pass over the uniform set of real rows (--uniform_set)
UNIFORM_SET = -2


class EmptyCurriculumError(ValueError):
    """A curriculum run that trained on no synthetic image at all (see TrainConfig.allow_empty_curriculum)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the resolved config is written to the run folder)."""

    run_dir: str
    epochs: int = 20
    #: the global batch, split across processes (see `batch_per_process`)
    batch_size: int = 256
    #: True: `batch_size` is per process (global batch = batch_size x processes), as plain DDP scripts count it
    batch_per_process: bool = False
    #: synchronise BatchNorm statistics across processes (the global batch's, as one process computes them)
    sync_bn: bool = False
    lr: float = 1e-5
    weight_decay: float = 0.2
    optimizer: str = "adamw"
    warmup_steps: int = 500
    curriculum: bool = True
    curriculum_epoch: float = 15
    schedule: str = "adaptive"  # or "fixed"
    levels: tuple[int, ...] = (50, 60, 70, 80, 90)
    #: DisCL's --uniform_set: alternate one pass over a uniform set of real rows (RunData.uniform_compose), after
    #: which progress picks a level, with one pass over that level (needs stage_unit "pass")
    uniform_set: bool = False
    #: ours: the adaptive schedule's first stage is a uniform mix of every synthetic level
    uniform_first: bool = False
    #: with uniform_set: the progress baseline is re-measured after this many batches of each uniform pass
    #: (DisCL's iWildCam code: 2); 0 = only before training
    uniform_baseline_batch: int = 0
    random_guid: bool = False
    #: the adaptive schedule's candidates include real data (level 100), as in DisCL's iWildCam code
    include_real: bool = False
    #: previous value of the first progress check: "zero" (DisCL: p_i(previous) = 0, so the first choice is the
    #: level with the largest mean true-class probability) or "initial" (measured before training)
    progress_baseline: str = "initial"
    #: "epoch": a stage is an epoch (one pass over the level's items, the choice at its end); "pass" (DisCL's
    #: iWildCam loop): during an adaptive curriculum an epoch is `curriculum_epoch_steps` optimizer steps and a
    #: stage is one pass over the level's loader, running across epoch boundaries; the choice is made when it ends
    stage_unit: str = "epoch"
    #: steps of a curriculum epoch with stage_unit "pass" (None: floor(real training items / batch), DisCL's
    #: num_batches)
    curriculum_epoch_steps: int | None = None
    #: fixed schedule's stage boundaries: "equal" shares or DisCL's ImageNet-LT "reference" boundaries
    fixed_stages: str = "equal"
    #: "exact": the cosine spans the steps the run takes (ends at its last step); "reference": planned once, over
    #: (epochs + lr_extra_epochs) x the first (curriculum) epoch's steps, as DisCL's trainers do
    lr_schedule: str = "exact"
    lr_extra_epochs: int = 0
    #: a curriculum that added no synthetic image in any epoch is an error unless this is set
    allow_empty_curriculum: bool = False
    curriculum_val_size: int = 2000
    seed: int = 0
    device: str | None = None
    mixed_precision: str = "no"
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    select_metric: str | None = None
    select_mode: str = "max"
    log_dynamics: bool = False
    eval_batch_size: int = 256
    resume: bool = False
    #: stop after this many epochs in this invocation (a cluster job's time limit); resume continues
    epochs_per_invocation: int | None = None
    #: also log each epoch's metrics row to TensorBoard (run_dir/tensorboard; needs the tensorboard package)
    tensorboard: bool = False
    #: every parsed command-line flag of the script that made this config (recorded in config.json)
    cli_args: Mapping = field(default_factory=dict)
    #: settings the script resolved from its flags (e.g. the CLIP activation and the rule that chose it)
    resolved: Mapping = field(default_factory=dict)

    def make_schedule(self):
        """Return the guidance schedule this config asks for (None without a curriculum)."""
        if not self.curriculum:
            return None
        if self.schedule == "fixed":
            return FixedSchedule(
                levels=list(self.levels), curriculum_epochs=self.curriculum_epoch, boundaries=self.fixed_stages
            )
        if self.schedule == "adaptive":
            return AdaptiveSchedule(
                levels=list(self.levels),
                curriculum_epochs=self.curriculum_epoch,
                uniform_first=self.uniform_first,
                random_choice=self.random_guid,
                seed=self.seed,
                include_real=self.include_real,
            )
        raise ValueError(f"--schedule must be 'fixed' or 'adaptive', got {self.schedule!r}")


class Task(Protocol):
    """What a trainer plugs into the loop."""

    name: str
    model: torch.nn.Module
    train_transform: Callable
    eval_transform: Callable

    def training_loss(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the batch loss; `model` may be a DDP wrapper: call it, never its attributes."""
        ...

    def class_logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Return class logits; `model` is the unwrapped module."""
        ...

    def prepare_eval(self, model: torch.nn.Module) -> None: ...

    # optional: `set_process(rank, world_size)`, told once before training (FLYP gathers its features)

    def split_metrics(self, split: str, y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]: ...


@dataclass
class RunData:
    """What a run trains and evaluates on (all item tables: see training.trainers.data.ITEM_COLUMNS)."""

    real: pd.DataFrame
    synthetic: pd.DataFrame
    eval_splits: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    curriculum_val: pd.DataFrame | None = None
    #: optional: (epoch, level, rng) -> the epoch's items; default: every real sample + the level's synthetic
    compose: Callable | None = None
    #: optional: a curriculum schedule (e.g. SoftPacingSchedule over prototype distances) over `real` rows; the
    #: real part of each epoch is then drawn by curriculum.CurriculumSampler from it
    real_schedule: object | None = None
    #: how often (steps) the sampler refreshes the real-data distribution
    real_refresh_every: int = 100
    #: every composed item appears this many times, with a `template` column 0..k-1 (FLYP: one training row per
    #: (image, caption template), as DisCL's train.csv has)
    templates_per_item: int = 1
    #: with TrainConfig.uniform_set: rng -> the items of one uniform pass (a uniform set of real rows)
    uniform_compose: Callable | None = None


@torch.no_grad()
def predict(
    task: Task,
    model: torch.nn.Module,
    items: pd.DataFrame,
    batch_size: int,
    device,
    num_workers: int = 0,
    shard: bool = True,
) -> np.ndarray:
    """Return softmax class probabilities of `model` on `items` (N x C, float64), on every process.

    Under several processes (and `shard`), each evaluates a contiguous, batch-aligned share of `items` and
    the shares are gathered in order: every item is evaluated once (no DistributedSampler padding to drop),
    in the same batches as one process, so the result is one process's.
    """
    from curriculum.distributed import gather_rows, is_initialized, split_range

    model.eval()
    task.prepare_eval(model)
    many = shard and is_initialized() and torch.distributed.get_world_size() > 1
    if many:
        start, stop = split_range(
            len(items), torch.distributed.get_rank(), torch.distributed.get_world_size(), block=batch_size
        )
        items = items.iloc[start:stop]
    loader = torch.utils.data.DataLoader(
        ItemDataset(items, task.eval_transform), batch_size=batch_size, num_workers=num_workers
    )
    out = [torch.softmax(task.class_logits(model, x.to(device)).double(), dim=1).cpu() for x, _, _ in loader]
    local = torch.cat(out) if out else torch.zeros((0, 0), dtype=torch.float64)
    return (gather_rows(local) if many else local).numpy()


def per_process_batch(batch_size: int, num_processes: int, batch_per_process: bool = False) -> int:
    """Return the batch one process takes: the global `batch_size` / `num_processes` (ValueError naming both
    when it does not divide), or `batch_size` itself with `batch_per_process`."""
    if batch_per_process or num_processes == 1:
        return batch_size
    if batch_size % num_processes:
        near = batch_size - batch_size % num_processes or num_processes
        raise ValueError(
            f"--batch_size {batch_size} is the global batch and must be divisible by the {num_processes} processes "
            f"(each takes batch_size / processes); use e.g. --batch_size {near} "
            "or --batch_per_process to make --batch_size the per-process batch"
        )
    return batch_size // num_processes


def items_for_epoch(
    data: RunData, level: int, epoch: int, seed: int, global_step: int, batch_size: int
) -> pd.DataFrame:
    """Return the shuffled items of one epoch: real + the level's synthetic (or the task's composition).

    With `data.real_schedule`, the real part is drawn (with replacement, as many draws as real samples) by
    the curriculum package's CurriculumSampler, positioned at `global_step`, so a resumed run draws the same.
    """
    rng = np.random.default_rng([seed, epoch])
    if level == UNIFORM_SET:
        if data.uniform_compose is None:
            raise ValueError("--uniform_set needs a uniform set of real rows (RunData.uniform_compose)")
        return _with_templates(data.uniform_compose(rng), data.templates_per_item, rng)
    if data.compose is not None:
        items = data.compose(epoch, level, rng)
    else:
        items = stage_items(data.real, data.synthetic, level)
    if data.real_schedule is not None:
        from curriculum.samplers import CurriculumSampler

        if data.compose is not None:
            raise ValueError("prototype weighting of the real data needs the default epoch composition")
        real_mask = (items["source"] == "real").to_numpy()
        real_part = items[real_mask].reset_index(drop=True)  # the rows of data.real, in order
        # real draws per training step: the expected number of real items in a batch of the mixed epoch
        per_step = max(1, math.ceil(batch_size * real_mask.sum() / max(len(items), 1)))
        sampler = CurriculumSampler(
            data.real_schedule,
            batch_size=per_step,
            num_samples=len(real_part),
            refresh_every=data.real_refresh_every,
            seed=seed,
            num_replicas=1,
            rank=0,
        )
        idx = sampler.take(global_step * per_step, len(real_part))
        items = pd.concat([real_part.iloc[idx], items[~real_mask]], ignore_index=True)
    return _with_templates(items, data.templates_per_item, rng)


def _with_templates(items: pd.DataFrame, k: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return `items` repeated once per caption template (a `template` column 0..k-1 when k > 1), shuffled."""
    if k > 1:
        items = pd.concat([items.assign(template=t) for t in range(k)], ignore_index=True)
    return items.iloc[rng.permutation(len(items))].reset_index(drop=True)


def training_dataset(items: pd.DataFrame, transform: Callable) -> ItemDataset:
    """Return the dataset a training pass iterates over `items` (one place, so tests can observe every pass)."""
    return ItemDataset(items, transform)


def trainable_count(n_items: int, batch_size: int, num_processes: int = 1) -> int:
    """Return how many of an epoch's `n_items` are trained on in global batches of `batch_size`.

    All, except: the last (partial) batch is cut to a multiple of `num_processes` (every process takes an equal
    slice of it: at most processes - 1 items are left out, never padded with repeats), and dropped when a slice
    would hold a single item (BatchNorm cannot train on one sample), unless it is the epoch's only batch. The
    epoch is shuffled, so nothing is favoured. One process: only a last batch of one item is dropped.
    """
    last = n_items % batch_size
    if last == 0:
        return n_items
    per = last // num_processes
    keep = per >= 2 or (per == 1 and n_items == last)
    return n_items - last + (per * num_processes if keep else 0)


def process_batches(n_items: int, batch_size: int, rank: int = 0, num_processes: int = 1) -> list[list[int]]:
    """Return the item indices of process `rank`'s batches over `n_items` (a `trainable_count`) in global
    batches of `batch_size`: step k's global batch is items [k * batch_size, (k + 1) * batch_size) in order, and
    each process takes its equal, contiguous slice, so the processes together train exactly one process's
    batches (the rank order of the slices is the order of the gathered features)."""
    out = []
    for start in range(0, n_items, batch_size):
        size = min(batch_size, n_items - start) // num_processes
        out.append(list(range(start + rank * size, start + (rank + 1) * size)))
    return out


def epoch_size(data: RunData, level: int, epoch: int, seed: int) -> int:
    """Return the number of items `items_for_epoch` composes for `epoch` at `level` (without drawing them)."""
    k = max(1, data.templates_per_item)
    if level == UNIFORM_SET:
        return len(items_for_epoch(data, level, epoch, seed, 0, 1))
    if data.compose is not None:
        return k * len(data.compose(epoch, level, np.random.default_rng([seed, epoch])))
    return k * (len(data.real) + len(synthetic_items(data.synthetic, level)))


def epoch_steps(n_items: int, batch_size: int, num_processes: int = 1, max_steps: int | None = None) -> int:
    """Return the optimizer steps one process takes over `n_items` (accelerate shards batches evenly)."""
    steps = math.ceil(math.ceil(n_items / batch_size) / num_processes)
    return min(steps, max_steps) if max_steps else steps


def tensorboard_writer_class():
    """Return torch's TensorBoard SummaryWriter class; raise RuntimeError saying how to install it if missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise RuntimeError(
            "--tensorboard needs the optional tensorboard package: pip install tensorboard "
            "(or pip install -e '.[tensorboard]')"
        ) from err
    return SummaryWriter


def resolved_config(cfg: TrainConfig, task_name: str) -> dict:
    """Return what config.json records: the TrainConfig, the task, every CLI flag and the working directory
    the flags' relative paths are relative to."""
    config = asdict(cfg)
    cli = dict(config.pop("cli_args"))
    resolved = dict(config.pop("resolved"))
    return {"config": config, "task": task_name, "cli_args": cli, "resolved": resolved, "cwd": os.getcwd()}


def train(cfg: TrainConfig, task: Task, data: RunData) -> dict:
    """Train `task.model` as `cfg` says; return {'best': metrics of the selected epoch, 'run_dir': ...}.

    Raises EmptyCurriculumError (after writing the final model) when a curriculum run trained on no synthetic
    image in any epoch and `cfg.allow_empty_curriculum` is not set.
    """
    import sys

    from accelerate import Accelerator

    from curriculum.distributed import init_process_group

    # 1. the run folder, the processes and the resolved config
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    # the launcher's world (torchrun, accelerate, srun: SLURM's ranks are exported for accelerate) before
    # accelerate, whose own detection reports one process under torchrun on a machine without CUDA
    process = init_process_group()
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=cfg.mixed_precision)
    if accelerator.num_processes != process.world_size:
        raise RuntimeError(
            f"accelerate sees {accelerator.num_processes} process(es) but the launcher ({process.launcher}) started "
            f"{process.world_size}"
        )
    batch = per_process_batch(cfg.batch_size, accelerator.num_processes, cfg.batch_per_process)
    global_batch = batch * accelerator.num_processes
    if hasattr(task, "set_process"):
        task.set_process(accelerator.process_index, accelerator.num_processes)
    main = accelerator.is_main_process  # only the main process writes files; every process trains and evaluates
    check_run_dir(run, resolved_config(cfg, task.name), cfg.resume)
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one writes to it
    if main:  # temporary files of a killed run's atomic writes (metrics.csv, best_model, ...): never reused
        for stale in run.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    torch.manual_seed(cfg.seed)
    writer = tensorboard_writer_class()(log_dir=str(run / "tensorboard")) if cfg.tensorboard and main else None
    if main:
        write_json(resolved_config(cfg, task.name), run / "config.json")
        if data.curriculum_val is not None:  # the held-out images (out of training at every level)
            write_csv(data.curriculum_val, run / "curriculum_val.csv")

    if cfg.sync_bn:
        from training.trainers.sync_bn import convert_sync_batchnorm

        task.model, n_bn = convert_sync_batchnorm(task.model, accelerator.device)
        if n_bn == 0:
            warnings.warn("--sync_bn: the model has no BatchNorm layer; there is nothing to synchronise", stacklevel=2)
        elif accelerator.num_processes == 1:
            warnings.warn(
                f"--sync_bn with one process: its {n_bn} BatchNorm layer(s) already see the whole batch", stacklevel=2
            )

    # 2. optimizer, LR schedule, guidance schedule
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optimizer]
    optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = cfg.make_schedule()
    nproc = accelerator.num_processes
    pass_mode = cfg.stage_unit == "pass" and isinstance(schedule, AdaptiveSchedule)
    if cfg.stage_unit not in ("epoch", "pass"):
        raise ValueError(f"--stage_unit must be 'epoch' or 'pass', got {cfg.stage_unit!r}")
    if cfg.uniform_set and not pass_mode:
        raise ValueError("--uniform_set needs the adaptive schedule (--progress_guid) with --stage_unit pass")
    sizes: dict[tuple[int, int], int] = {}  # (epoch, level) -> composed item count

    def steps_of(epoch: int, level: int) -> int:
        if (epoch, level) not in sizes:
            sizes[epoch, level] = trainable_count(
                epoch_size(data, level, epoch, cfg.seed), global_batch, accelerator.num_processes
            )
        return epoch_steps(sizes[epoch, level], global_batch, 1, cfg.max_steps_per_epoch)

    # DisCL's iWildCam loop: a curriculum epoch is floor(real caption rows / batch) steps, whatever the stage
    # (the global batch: one optimizer step covers `global_batch` rows across the processes)
    spe = cfg.curriculum_epoch_steps or max(1, len(data.real) * max(1, data.templates_per_item) // global_batch)
    spe = min(spe, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else spe

    def in_curriculum(epoch: int) -> bool:
        return schedule is not None and epoch < cfg.curriculum_epoch

    # 3. resume from the last checkpoint (weights, optimizer, schedules, the stage position, the metrics so far)
    ckpt = run / "checkpoints" / "last"
    if main:  # finish a save a kill interrupted (a complete temporary checkpoint is renamed into place)
        recover_checkpoint(ckpt)
    accelerator.wait_for_everyone()  # ... before any process looks for the checkpoint
    start_epoch, global_step, best, metrics_rows, schedule_rows = 0, 0, None, [], []
    stage: dict = {"no": 0, "level": None, "offset": 0, "start_step": 0}
    restored_prev = None
    if cfg.resume and ckpt.is_dir():
        start_epoch, global_step, best, metrics_rows, schedule_rows, saved_stage, restored_prev = _resume(
            run, ckpt, accelerator, model, optimizer, scheduler, schedule
        )
        stage = dict(saved_stage or stage)
    # 4. the adaptive schedule's baseline: true-class probabilities on the curriculum validation set (or zero)
    if stage["level"] is None and schedule is not None:
        stage["level"] = UNIFORM_SET if cfg.uniform_set else schedule.level_at(0)
    has_cval = isinstance(schedule, AdaptiveSchedule) and data.curriculum_val is not None and len(data.curriculum_val)
    cval_levels = data.curriculum_val["level"].to_numpy() if has_cval else None

    def measure() -> np.ndarray:
        probs = _true_probs(task, accelerator.unwrap_model(model), data.curriculum_val, cfg, accelerator)
        model.train()
        return probs

    prev_val_probs = None
    if has_cval:
        if restored_prev is not None:
            prev_val_probs = np.asarray(restored_prev, dtype=np.float64)
        elif cfg.progress_baseline == "zero" and not cfg.uniform_set and start_epoch == 0:
            prev_val_probs = np.zeros(len(data.curriculum_val))  # DisCL: the first check compares with 0
        elif cfg.progress_baseline in ("zero", "initial"):
            prev_val_probs = measure()
        else:
            raise ValueError(f"--progress_baseline must be 'zero' or 'initial', got {cfg.progress_baseline!r}")

    # 4b. the LR plan (the reference's: once, up front), the loader, one optimizer step, the end of a pass stage
    if cfg.lr_schedule == "reference":
        if global_step == 0:  # planned once (a resumed run restores the position)
            first = spe if pass_mode else steps_of(0, schedule.level_at(0) if schedule is not None else REAL_LEVEL)
            scheduler.plan((cfg.epochs + cfg.lr_extra_epochs) * first)
    elif cfg.lr_schedule != "exact":
        raise ValueError(f"--lr_schedule must be 'exact' or 'reference', got {cfg.lr_schedule!r}")

    def make_loader(items: pd.DataFrame, epoch: int):
        # this process's slices of the global batches (not accelerate's sharding, which pads a short last batch
        # with repeated items): one optimizer step covers items[k * global_batch : (k + 1) * global_batch]
        slices = process_batches(len(items), global_batch, accelerator.process_index, nproc)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # seeds the workers' base seed
        return torch.utils.data.DataLoader(
            training_dataset(items, task.train_transform),
            batch_sampler=slices,
            num_workers=cfg.num_workers,
            generator=gen,
        )

    counts = {"items": 0, "synthetic": 0, "losses": []}

    def train_batch(x, y, idx, items: pd.DataFrame) -> None:
        nonlocal global_step
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        rows = items.iloc[idx.tolist()] if torch.is_tensor(idx) else items.iloc[list(idx)]
        counts["last_lr"] = scheduler.get_last_lr()[0]
        with accelerator.autocast():
            if getattr(task, "uses_item_rows", False):
                loss = task.training_loss(model, x, y, rows=rows)
            else:
                loss = task.training_loss(model, x, y)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        counts["losses"].append(float(loss.detach()))
        counts["items"] += len(rows)
        counts["synthetic"] += int((rows["source"] == "synthetic").sum())
        global_step += 1

    def end_stage(epoch: int) -> None:
        """A pass over the stage's loader is over: choose the next stage (DisCL's StopIteration handler)."""
        nonlocal prev_val_probs
        level = stage["level"]
        row = {"epoch": epoch, "step": global_step, "stage": stage["no"], "level": level, "progress": ""}
        if cfg.uniform_set and level != UNIFORM_SET:
            nxt = UNIFORM_SET  # after the chosen level's pass, back to the uniform set
        else:
            cur = measure()
            progress = level_progress(prev_val_probs, cur, cval_levels)
            nxt = schedule.choose(progress, epoch=epoch, step=global_step)
            prev_val_probs = cur
            row["progress"] = json.dumps({str(k): round(v, 6) for k, v in progress.items()})
        row["next_level"] = nxt
        schedule_rows.append(row)
        stage.update(no=stage["no"] + 1, level=int(nxt), offset=0, start_step=global_step)

    last_epoch = (
        cfg.epochs if cfg.epochs_per_invocation is None else min(cfg.epochs, start_epoch + cfg.epochs_per_invocation)
    )
    # 5. the epochs: train on the schedule's level, evaluate, choose the next level, checkpoint
    for epoch in range(start_epoch, last_epoch):
        # 5a. the epoch's items (real + the level's synthetic images) and loader
        t0 = time.perf_counter()
        _seed_epoch(cfg.seed, epoch, accelerator.process_index)
        if hasattr(task, "set_epoch"):
            task.set_epoch(epoch)  # per-epoch randomness of the task (e.g. FLYP's template choice) is seeded
        counts.update(items=0, synthetic=0, losses=[], last_lr=None)
        levels_seen: list[int] = []
        if cfg.lr_schedule == "exact" and pass_mode:
            scheduler.plan(sum(spe if in_curriculum(e) else steps_of(e, REAL_LEVEL) for e in range(epoch, cfg.epochs)))
        # 5b. train: a fixed number of steps over the stages' loaders (pass mode), else one pass over the items
        model.train()
        if pass_mode and in_curriculum(epoch):
            done = 0
            while done < spe:
                level = stage["level"]
                items = items_for_epoch(data, level, stage["no"], cfg.seed, stage["start_step"], global_batch)
                items = items.iloc[: trainable_count(len(items), global_batch, nproc)]
                if items.empty:
                    raise ValueError(f"the curriculum stage at level {level} has no training items")
                items = items.iloc[stage["offset"] * global_batch :]
                it = iter(make_loader(items, epoch) if len(items) else [])
                exhausted = False
                while done < spe:
                    try:
                        x, y, idx = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    if not levels_seen or levels_seen[-1] != level:
                        levels_seen.append(level)
                    train_batch(x, y, idx, items)
                    done += 1
                    stage["offset"] += 1
                    if level == UNIFORM_SET and stage["offset"] == cfg.uniform_baseline_batch and has_cval:
                        prev_val_probs = measure()  # DisCL: the baseline after the uniform pass's 2nd batch
                if exhausted:
                    end_stage(epoch)
            level = levels_seen[-1] if levels_seen else stage["level"]
            n_items = int(accelerator.reduce(torch.tensor(counts["items"], device=accelerator.device), "sum"))
            n_syn = int(accelerator.reduce(torch.tensor(counts["synthetic"], device=accelerator.device), "sum"))
            sched_row = None
        else:
            level = schedule.level_at(epoch) if schedule is not None else REAL_LEVEL
            if pass_mode:
                level = REAL_LEVEL
            items = items_for_epoch(data, level, epoch, cfg.seed, global_step, global_batch)
            items = items.iloc[: trainable_count(len(items), global_batch, nproc)]
            loader = make_loader(items, epoch)
            # the LR schedule's length: this epoch's steps plus the later epochs' (from their composed item
            # counts; an adaptive schedule's future levels are taken as the current one until they are chosen)
            n_steps = min(len(loader), cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else len(loader)
            if cfg.lr_schedule == "exact" and not pass_mode:
                scheduler.plan(
                    n_steps
                    + sum(
                        steps_of(e, schedule.level_at(e) if schedule is not None else REAL_LEVEL)
                        for e in range(epoch + 1, cfg.epochs)
                    )
                )
            bar = tqdm(
                loader,
                desc=f"epoch {epoch} level {level}",
                leave=False,
                unit="batch",
                disable=not accelerator.is_local_main_process,
            )
            for i, (x, y, idx) in enumerate(bar):
                if cfg.max_steps_per_epoch and i >= cfg.max_steps_per_epoch:
                    break
                train_batch(x, y, idx, items)
                bar.set_postfix(loss=f"{counts['losses'][-1]:.4f}")
            n_items, n_syn = len(items), int((items["source"] == "synthetic").sum())
            levels_seen = [level]
            sched_row = {"epoch": epoch, "step": global_step, "level": level, "progress": ""}
        # the LR of the epoch's last step
        lr = counts["last_lr"] if counts["last_lr"] is not None else scheduler.get_last_lr()[0]
        losses = counts["losses"]
        train_loss = float(np.mean(losses)) if losses else float("nan")
        train_loss = float(accelerator.reduce(torch.tensor(train_loss, device=accelerator.device), "mean"))
        row = {
            "epoch": epoch,
            "step": global_step,
            "level": level,
            "n_items": n_items,
            "n_synthetic": n_syn,
            "train_loss": train_loss,
            "lr": lr,
        }
        if pass_mode:
            row["levels"] = " ".join("uniform" if lv == UNIFORM_SET else str(lv) for lv in levels_seen)
        synthetic_stage = any(lv not in (REAL_LEVEL, UNIFORM_SET) for lv in levels_seen)
        if in_curriculum(epoch) and n_syn == 0 and main and synthetic_stage:
            avail = len(synthetic_items(data.synthetic, level)) if level >= 0 else 0
            why = getattr(data.compose, "last_note", None)
            print(
                f"warning: curriculum epoch {epoch} (level {row.get('levels', level)}) trained on {n_items} items "
                f"and no synthetic image ({avail} kept synthetic image(s) at level {level}"
                + (f"; {why()}" if callable(why) and why() else "")
                + ")",
                file=sys.stderr,
            )
        # 5c. adaptive schedule (epoch stages): progress per level since the last evaluation -> the next level
        unwrapped = accelerator.unwrap_model(model)
        if (
            sched_row is not None
            and isinstance(schedule, AdaptiveSchedule)
            and prev_val_probs is not None
            and epoch + 1 < cfg.curriculum_epoch
        ):
            cur = _true_probs(task, unwrapped, data.curriculum_val, cfg, accelerator)
            progress = level_progress(prev_val_probs, cur, cval_levels)
            nxt = schedule.choose(progress, epoch=epoch + 1, step=global_step)
            prev_val_probs = cur
            sched_row["progress"] = json.dumps({str(k): round(v, 6) for k, v in progress.items()})
            sched_row["next_level"] = nxt
        # 5d. evaluate, write metrics, keep the best epoch's weights, checkpoint
        for split, split_items in data.eval_splits.items():
            probs = predict(task, unwrapped, split_items, cfg.eval_batch_size, accelerator.device, cfg.num_workers)
            for k, v in task.split_metrics(split, probs.argmax(axis=1), split_items["label"].to_numpy()).items():
                row[k] = v
        if cfg.log_dynamics:  # every process evaluates its share; the main process writes
            _log_dynamics(task, unwrapped, data.real, cfg, accelerator.device, epoch, run, write=main)
        row["seconds"] = time.perf_counter() - t0
        metrics_rows.append(row)
        if sched_row is not None:
            schedule_rows.append(sched_row)
        if main:
            write_csv(pd.DataFrame(metrics_rows), run / "metrics.csv")
            write_csv(pd.DataFrame(schedule_rows), run / "schedule.csv")
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                    writer.add_scalar(k, float(v), global_step=epoch)
            writer.flush()
        if cfg.select_metric and cfg.select_metric in row:
            val = row[cfg.select_metric]
            better = best is None or (val > best["value"] if cfg.select_mode == "max" else val < best["value"])
            if better:
                best = {"epoch": epoch, "metric": cfg.select_metric, "value": val}
                if main:
                    save_model_weights(
                        run / "best_model.safetensors", unwrapped, {"epoch": epoch, cfg.select_metric: val}
                    )
        extra = {
            "epoch": epoch,
            "global_step": global_step,
            "best": best,
            "schedule": schedule.state_dict() if isinstance(schedule, AdaptiveSchedule) else None,
            "stage": dict(stage),
            "prev_val_probs": None if prev_val_probs is None else [float(v) for v in prev_val_probs],
        }
        if main:
            save_checkpoint(ckpt, unwrapped, optimizer, scheduler, extra, scaler=accelerator.scaler)
        accelerator.wait_for_everyone()  # the checkpoint is complete before any process goes on (or stops)
    # 6. the final weights (or stop early, resumable, after --epochs_per_invocation)
    if writer is not None:
        writer.close()
    if last_epoch < cfg.epochs:
        return {"run_dir": str(run), "best": best, "metrics": pd.DataFrame(metrics_rows), "finished": False}
    if main:
        save_model_weights(run / "final_model.safetensors", accelerator.unwrap_model(model))
        if isinstance(schedule, AdaptiveSchedule):
            write_json(schedule.state_dict(), run / "adaptive_schedule.json")
    accelerator.wait_for_everyone()
    curriculum_rows = [r for r in metrics_rows if in_curriculum(int(r["epoch"]))]
    if curriculum_rows and not cfg.allow_empty_curriculum and sum(int(r["n_synthetic"]) for r in curriculum_rows) == 0:
        raise EmptyCurriculumError(
            f"the curriculum trained on no synthetic image in any of its {len(curriculum_rows)} epoch(s) "
            f"(metrics.csv n_synthetic is 0 throughout; the run folder {run} is kept); pass "
            "--allow_empty_curriculum to accept a real-only run"
        )
    return {"run_dir": str(run), "best": best, "metrics": pd.DataFrame(metrics_rows), "finished": True}


def _resume(run: Path, ckpt: Path, accelerator, model, optimizer, scheduler, schedule) -> tuple:
    """Restore a run from its `ckpt` folder; return (start epoch, global step, best, metrics rows, schedule rows,
    the pass-mode stage position or None, the progress baseline's probabilities or None)."""
    extra = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler)
    if isinstance(schedule, AdaptiveSchedule):
        schedule.load_state_dict(extra["schedule"])
    start_epoch = extra["epoch"] + 1
    # rows are keyed by epoch: those of epochs after the checkpoint (written before a kill that came ahead of
    # the checkpoint) are dropped, so the resumed run writes each epoch once. metrics.csv has one row per epoch;
    # schedule.csv one per stage end, several per epoch in pass mode (--stage_unit pass)
    metrics_rows = _rows_before(run / "metrics.csv", start_epoch)
    schedule_rows = _rows_before(run / "schedule.csv", start_epoch, one_per_epoch=False)
    return (
        start_epoch,
        extra["global_step"],
        extra.get("best"),
        metrics_rows,
        schedule_rows,
        extra.get("stage"),
        extra.get("prev_val_probs"),
    )


#: flags that may differ between an interrupted run and its resumption (they do not change what is trained)
RESUME_FREE = frozenset(
    {"resume", "epochs_per_invocation", "num_workers", "device", "tensorboard", "run_dir", "eval_batch_size"}
)


def _plain(obj):
    """Return `obj` as config.json stores it (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def changed_settings(old: Mapping, new: Mapping) -> list[str]:
    """Return the names of the settings (config fields and CLI flags) that differ between two resolved configs,
    leaving out the RESUME_FREE ones; a flag recorded on only one side counts as changed."""

    def diff(part: str) -> list[str]:
        a, b = _plain(old.get(part) or {}), _plain(new.get(part) or {})
        return sorted(k for k in set(a) | set(b) if k not in RESUME_FREE and a.get(k) != b.get(k))

    task = ["task"] if old.get("task") != new.get("task") else []
    flags = diff("cli_args")  # what the user typed, named as flags; else the library config's fields
    return task + ([f"--{k}" for k in flags] if flags else diff("config"))


def check_run_dir(run: Path, config: Mapping, resume: bool) -> None:
    """Return None if `config` may train in `run`; else raise ValueError naming the run folder and the flags.

    A folder that already holds a run (config.json) is refused without --resume (it would silently replace
    that run), and with --resume when a setting other than the RESUME_FREE ones changed (the resumed run
    would silently mix two configs); a config.json that cannot be read is an error naming it.
    """
    path = run / "config.json"
    if not path.is_file():
        if not resume and (run / "checkpoints" / "last").exists():
            raise ValueError(f"--run_dir {run} already holds checkpoints; pass --resume or use a new --run_dir")
        return
    if not resume:
        raise ValueError(
            f"--run_dir {run} already holds a run ({path}); pass --resume to continue it or use a new --run_dir"
        )
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the recorded config ({err}); use a new --run_dir") from None
    diff = changed_settings(old, config)
    if diff:
        flags = ", ".join(diff)
        raise ValueError(
            f"--resume: {path} was made with different settings ({flags} changed); "
            "rerun with the recorded flags or use a new --run_dir"
        )


def _rows_before(path: Path, epoch: int, one_per_epoch: bool = True) -> list[dict]:
    """Return the rows of a run CSV (metrics/schedule) with epoch < `epoch` (`one_per_epoch`: the last row of
    each epoch); none for a missing or empty file (a pass-mode run may not have ended a stage before a kill)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return []
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ({err}); restore it or use a new --run_dir") from None
    if df.empty or "epoch" not in df.columns:
        return []
    df = df[df["epoch"] < epoch]
    if one_per_epoch:
        df = df.drop_duplicates("epoch", keep="last")
    df = df.sort_values("epoch", kind="stable")
    return df.to_dict("records")


def _seed_epoch(seed: int, epoch: int, process: int) -> None:
    """Seed torch, numpy and Python's global RNGs from (seed, epoch, process) (augmentations draw from them;
    timm's random-resized crop uses Python's `random`), so an epoch's randomness is the same after a resume."""
    s = int(np.random.SeedSequence([seed, epoch, process]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _true_probs(task: Task, model, items: pd.DataFrame, cfg: TrainConfig, accelerator) -> np.ndarray:
    """Return the true-class probabilities on `items`, the same array on every process.

    `predict` shards the items and gathers the shares, so every process holds the same gathered numbers and
    the adaptive schedule's choice is identical everywhere.
    """
    probs = predict(task, model, items, cfg.eval_batch_size, accelerator.device, cfg.num_workers)
    return np.ascontiguousarray(probs[np.arange(len(items)), items["label"].to_numpy()])


def _log_dynamics(
    task: Task, model, real: pd.DataFrame, cfg: TrainConfig, device, epoch: int, run: Path, write: bool = True
) -> None:
    """Append per-sample true-class probability and correctness of the real training data to dynamics.parquet
    (every process evaluates its share; only `write` processes write)."""
    from training.trainers.data import real_items

    items = real_items(real)
    probs = predict(task, model, items, cfg.eval_batch_size, device, cfg.num_workers)
    if not write:
        return
    labels = items["label"].to_numpy()
    frame = pd.DataFrame(
        {
            "epoch": epoch,
            "sample_id": items["sample_id"].to_numpy(),
            "true_prob": probs[np.arange(len(items)), labels],
            "correct": probs.argmax(axis=1) == labels,
        }
    )
    path = run / "dynamics.parquet"
    if path.exists():
        old = pd.read_parquet(path)
        frame = pd.concat([old[old["epoch"] != epoch], frame], ignore_index=True)
    write_parquet(frame, path, {"columns": "per-epoch true-class probability and correctness of real training samples"})
