"""One accelerate training loop for every Phase 2 trainer; it asks the guidance schedule for the level.

Per epoch: the schedule gives the level; the task composes the epoch's items (real + that level's
synthetic); one pass over them is an epoch (the "loader exhausted" moment of DisCL's adaptive rule). Then,
during the curriculum, an adaptive schedule is fed the per-level progress on the curriculum-validation split;
the model is evaluated on the evaluation splits, metrics appended to `metrics.csv` (and TensorBoard with
`tensorboard=True`), a checkpoint written
(safetensors + JSON) and the schedule followed appended to `schedule.csv`. `resume=True` continues from the
last checkpoint and follows the same schedule as an uninterrupted run (every random choice is seeded by
(seed, epoch): the composition, the global RNGs augmentations draw from, FLYP's prompt templates).
Under `accelerate launch` every process trains (through the DDP wrapper) and evaluates (on the unwrapped
model); only the main process writes the run folder.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
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


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (the resolved config is written to the run folder)."""

    run_dir: str
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-5
    weight_decay: float = 0.2
    optimizer: str = "adamw"
    warmup_steps: int = 500
    curriculum: bool = True
    curriculum_epoch: float = 15
    schedule: str = "adaptive"  # or "fixed"
    levels: tuple[int, ...] = (50, 60, 70, 80, 90)
    uniform_set: bool = False
    random_guid: bool = False
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

    def make_schedule(self):
        """Return the guidance schedule this config asks for (None without a curriculum)."""
        if not self.curriculum:
            return None
        if self.schedule == "fixed":
            return FixedSchedule(levels=list(self.levels), curriculum_epochs=self.curriculum_epoch)
        if self.schedule == "adaptive":
            return AdaptiveSchedule(
                levels=list(self.levels),
                curriculum_epochs=self.curriculum_epoch,
                uniform_first=self.uniform_set,
                random_choice=self.random_guid,
                seed=self.seed,
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


@torch.no_grad()
def predict(
    task: Task, model: torch.nn.Module, items: pd.DataFrame, batch_size: int, device, num_workers: int = 0
) -> np.ndarray:
    """Return softmax class probabilities of `model` on `items` (N x C, float64)."""
    model.eval()
    task.prepare_eval(model)
    loader = torch.utils.data.DataLoader(
        ItemDataset(items, task.eval_transform), batch_size=batch_size, num_workers=num_workers
    )
    out = [torch.softmax(task.class_logits(model, x.to(device)).double(), dim=1).cpu() for x, _, _ in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def items_for_epoch(
    data: RunData, level: int, epoch: int, seed: int, global_step: int, batch_size: int
) -> pd.DataFrame:
    """Return the shuffled items of one epoch: real + the level's synthetic (or the task's composition).

    With `data.real_schedule`, the real part is drawn (with replacement, as many draws as real samples) by
    the curriculum package's CurriculumSampler, positioned at `global_step`, so a resumed run draws the same.
    """
    rng = np.random.default_rng([seed, epoch])
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
    return items.iloc[rng.permutation(len(items))].reset_index(drop=True)


def trainable_count(n_items: int, batch_size: int) -> int:
    """Return how many of an epoch's `n_items` are trained on: all, except a last batch of a single item,
    which is dropped (BatchNorm cannot train on one sample; the epoch is shuffled, so nothing is favoured)."""
    return n_items - 1 if n_items > 1 and n_items % batch_size == 1 else n_items


def epoch_size(data: RunData, level: int, epoch: int, seed: int) -> int:
    """Return the number of items `items_for_epoch` composes for `epoch` at `level` (without drawing them)."""
    if data.compose is not None:
        return len(data.compose(epoch, level, np.random.default_rng([seed, epoch])))
    return len(data.real) + len(synthetic_items(data.synthetic, level))


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
    return {"config": config, "task": task_name, "cli_args": cli, "cwd": os.getcwd()}


def train(cfg: TrainConfig, task: Task, data: RunData) -> dict:
    """Train `task.model` as `cfg` says; return {'best': metrics of the selected epoch, 'run_dir': ...}."""
    from accelerate import Accelerator

    # 1. the run folder, the processes and the resolved config
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=cfg.mixed_precision)
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

    # 2. optimizer, LR schedule, guidance schedule
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optimizer]
    optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(optimizer, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = cfg.make_schedule()
    sizes: dict[tuple[int, int], int] = {}  # (epoch, level) -> composed item count

    def steps_of(epoch: int, level: int) -> int:
        if (epoch, level) not in sizes:
            sizes[epoch, level] = trainable_count(epoch_size(data, level, epoch, cfg.seed), cfg.batch_size)
        return epoch_steps(sizes[epoch, level], cfg.batch_size, accelerator.num_processes, cfg.max_steps_per_epoch)

    # 3. resume from the last checkpoint (weights, optimizer, schedules, the metrics written so far)
    ckpt = run / "checkpoints" / "last"
    if main:  # finish a save a kill interrupted (a complete temporary checkpoint is renamed into place)
        recover_checkpoint(ckpt)
    accelerator.wait_for_everyone()  # ... before any process looks for the checkpoint
    start_epoch, global_step, best, metrics_rows, schedule_rows = 0, 0, None, [], []
    if cfg.resume and ckpt.is_dir():
        start_epoch, global_step, best, metrics_rows, schedule_rows = _resume(
            run, ckpt, accelerator, model, optimizer, scheduler, schedule
        )
    # 4. the adaptive schedule's baseline: true-class probabilities on the curriculum validation set
    prev_val_probs = None
    if isinstance(schedule, AdaptiveSchedule) and data.curriculum_val is not None and len(data.curriculum_val):
        prev_val_probs = _true_probs(task, accelerator.unwrap_model(model), data.curriculum_val, cfg, accelerator)

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
        level = schedule.level_at(epoch) if schedule is not None else REAL_LEVEL
        items = items_for_epoch(data, level, epoch, cfg.seed, global_step, cfg.batch_size)
        items = items.iloc[: trainable_count(len(items), cfg.batch_size)]
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(
            ItemDataset(items, task.train_transform),
            batch_size=cfg.batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=cfg.num_workers,
            generator=gen,
        )
        loader = accelerator.prepare(loader)
        # the LR schedule's length: this epoch's steps plus the later epochs' (from their composed item counts;
        # an adaptive schedule's future levels are taken as the current one until they are chosen)
        n_steps = min(len(loader), cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else len(loader)
        scheduler.plan(
            n_steps
            + sum(
                steps_of(e, schedule.level_at(e) if schedule is not None else REAL_LEVEL)
                for e in range(epoch + 1, cfg.epochs)
            )
        )
        # 5b. train
        model.train()
        lr = scheduler.get_last_lr()[0]
        losses = []
        bar = tqdm(
            loader,
            desc=f"epoch {epoch} level {level}",
            leave=False,
            unit="batch",
            disable=not accelerator.is_local_main_process,
        )
        for i, (x, y, _) in enumerate(bar):
            if cfg.max_steps_per_epoch and i >= cfg.max_steps_per_epoch:
                break
            lr = scheduler.get_last_lr()[0]
            with accelerator.autocast():
                loss = task.training_loss(model, x, y)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            global_step += 1
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        train_loss = float(np.mean(losses)) if losses else float("nan")
        train_loss = float(accelerator.reduce(torch.tensor(train_loss, device=accelerator.device), "mean"))
        row = {
            "epoch": epoch,
            "step": global_step,
            "level": level,
            "n_items": len(items),
            "n_synthetic": int((items["source"] == "synthetic").sum()),
            "train_loss": train_loss,
            "lr": lr,
        }  # the LR of the epoch's last step
        # 5c. adaptive schedule: progress per level since the last evaluation -> the next level
        sched_row = {"epoch": epoch, "step": global_step, "level": level, "progress": ""}
        unwrapped = accelerator.unwrap_model(model)
        if isinstance(schedule, AdaptiveSchedule) and prev_val_probs is not None and epoch + 1 < cfg.curriculum_epoch:
            cur = _true_probs(task, unwrapped, data.curriculum_val, cfg, accelerator)
            progress = level_progress(prev_val_probs, cur, data.curriculum_val["level"].to_numpy())
            nxt = schedule.choose(progress, epoch=epoch + 1, step=global_step)
            prev_val_probs = cur
            sched_row["progress"] = json.dumps({str(k): round(v, 6) for k, v in progress.items()})
            sched_row["next_level"] = nxt
        # 5d. evaluate, write metrics, keep the best epoch's weights, checkpoint
        for split, split_items in data.eval_splits.items():
            probs = predict(task, unwrapped, split_items, cfg.eval_batch_size, accelerator.device, cfg.num_workers)
            for k, v in task.split_metrics(split, probs.argmax(axis=1), split_items["label"].to_numpy()).items():
                row[k] = v
        if cfg.log_dynamics and main:
            _log_dynamics(task, unwrapped, data.real, cfg, accelerator.device, epoch, run)
        row["seconds"] = time.perf_counter() - t0
        metrics_rows.append(row)
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
    return {"run_dir": str(run), "best": best, "metrics": pd.DataFrame(metrics_rows), "finished": True}


def _resume(run: Path, ckpt: Path, accelerator, model, optimizer, scheduler, schedule) -> tuple:
    """Restore a run from its `ckpt` folder; return (start epoch, global step, best, metrics rows, schedule rows)."""
    extra = load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler)
    if isinstance(schedule, AdaptiveSchedule):
        schedule.load_state_dict(extra["schedule"])
    start_epoch = extra["epoch"] + 1
    # rows are keyed by epoch: those of epochs after the checkpoint (written before a kill that came ahead of
    # the checkpoint) are dropped, so the resumed run writes each epoch once
    metrics_rows = _rows_before(run / "metrics.csv", start_epoch)
    schedule_rows = _rows_before(run / "schedule.csv", start_epoch)
    return start_epoch, extra["global_step"], extra.get("best"), metrics_rows, schedule_rows


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


def _rows_before(path: Path, epoch: int) -> list[dict]:
    """Return the rows of a per-epoch CSV (metrics/schedule) with epoch < `epoch`, one per epoch (the last)."""
    if not path.exists():
        return []
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ({err}); restore it or use a new --run_dir") from None
    if df.empty or "epoch" not in df.columns:
        return []
    df = df[df["epoch"] < epoch].drop_duplicates("epoch", keep="last").sort_values("epoch")
    return df.to_dict("records")


def _seed_epoch(seed: int, epoch: int, process: int) -> None:
    """Seed torch, numpy and Python's global RNGs from (seed, epoch, process) (augmentations draw from them;
    timm's random-resized crop uses Python's `random`), so an epoch's randomness is the same after a resume."""
    s = int(np.random.SeedSequence([seed, epoch, process]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def _true_probs(task: Task, model, items: pd.DataFrame, cfg: TrainConfig, accelerator) -> np.ndarray:
    """Return the true-class probabilities on `items`, the main process's on every process.

    Every process evaluates the same (synchronised) weights; taking the main process's values makes the
    adaptive schedule's choice identical everywhere even where kernels differ in the last bits.
    """
    from accelerate.utils import broadcast

    probs = predict(task, model, items, cfg.eval_batch_size, accelerator.device, cfg.num_workers)
    true = torch.from_numpy(np.ascontiguousarray(probs[np.arange(len(items)), items["label"].to_numpy()]))
    return broadcast(true.to(accelerator.device), from_process=0).cpu().numpy()


def _log_dynamics(task: Task, model, real: pd.DataFrame, cfg: TrainConfig, device, epoch: int, run: Path) -> None:
    """Append per-sample true-class probability and correctness of the real training data to dynamics.parquet."""
    from training.trainers.data import real_items

    items = real_items(real)
    probs = predict(task, model, items, cfg.eval_batch_size, device, cfg.num_workers)
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
