"""Class-conditional pixel-space diffusion training with a timestep curriculum and channel sparsity.

`train_diffusion(DiffusionTrainConfig(...)) -> DiffusionTrainResult` trains a diffusers `UNet2DModel`
(class embedding with a null class for classifier-free guidance; labels dropped with probability
`p_uncond`) under a diffusers `DDPMScheduler`, ε-prediction, with:

* a timestep sampler from `curriculum.timestep` ('uniform', 'stages', 'soft');
* loss weighting 'none' or 'min_snr' (Min-SNR-γ: w_t = min(SNR_t, γ)/SNR_t, diffusers' `compute_snr`);
* a sparsity variant from `curriculum.sparsity` ('none' = C, 'cs' = bottleneck masks, 'cr' = group-L1);
* accelerate, EMA weights (`diffusers.training_utils.EMAModel`), per-epoch checkpoints and resume, a samples
  grid PNG at the end of each stage, and a metrics CSV with the loss per timestep bucket.

The run folder holds `config.json`, `metrics.csv` (one row per epoch), `stages.csv` (per stage: t range,
target sparsity and the sparsity measured at the stage's end: bottleneck channels exactly zero on a fixed
probe batch, CS channels whose parameters did not change during the stage, conv channels whose filter norm
is below 1e-2 × their layer's largest), `bottleneck_channels.csv` (CS: the stage each channel was born),
`samples/stage{k}.png`, `checkpoints/` and `model/` - a ClassConditionalPixelPipeline folder with the EMA
weights that `from_pretrained` loads and `gene_img.py --model_id` uses.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors import SafetensorError
from tqdm.auto import tqdm

from curriculum.sparsity import (
    DEFAULT_CR_LAMBDA_MAX,
    DEFAULT_SPARSITY_START,
    REGROWTH_MODES,
    SPARSITY_VARIANTS,
    cosine_lambda,
    group_l1,
    n_active,
    stage_sparsities,
    zero_channel_fraction,
)
from curriculum.tables import write_csv, write_json
from curriculum.timestep import (
    DEFAULT_STAGE_EPOCHS,
    DEFAULT_STAGE_STARTS,
    TIMESTEP_SAMPLERS,
    StageSchedule,
    make_timestep_sampler,
)
from training.diffusion.channel_mask import BottleneckMask, bottleneck_channels, bottleneck_zero_fraction
from training.diffusion.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from training.diffusion.data import PixelDataset, load_pixel_dataset

log = logging.getLogger(__name__)

LOSS_WEIGHTINGS = ("none", "min_snr")
N_T_BUCKETS = 10
#: a conv output channel counts as near zero when its filter's L2 norm is below this × its layer's largest
NEAR_ZERO_REL_TOL = 1e-2
#: images in the fixed probe batch on which the bottleneck's zero channels are counted
N_PROBE = 32
# fields that may differ between an interrupted run and its resumption
_RESUME_FREE = {"resume", "progress", "stop_after_epoch", "keep_checkpoints", "output_dir", "preset"}


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Everything one diffusion training run needs (the flags of train_diffusion.py)."""

    data: str
    output_dir: str
    data_root: str | None = None
    split: str | None = None
    image_size: int = 16
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    mid_attention: bool = True
    t_sampler: str = "stages"
    stage_starts: tuple[float, ...] = DEFAULT_STAGE_STARTS
    stage_epochs: tuple[int, ...] = DEFAULT_STAGE_EPOCHS
    soft_kappa: float = 4.0
    loss_weighting: str = "none"
    snr_gamma: float = 5.0
    sparsity: str = "none"
    sparsity_start: float = DEFAULT_SPARSITY_START
    regrowth: str = "gradient"
    cr_lambda_max: float = DEFAULT_CR_LAMBDA_MAX
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    sample_steps: int = 25
    sample_guidance: float = 2.0
    samples_per_class: int = 4
    seed: int = 0
    device: str | None = None
    resume: bool = True
    keep_checkpoints: int = 2
    stop_after_epoch: int | None = None
    progress: bool = True
    #: the --preset record (name, file, sha256, overrides), kept in config.json
    preset: dict | None = None

    def validate(self) -> StageSchedule:
        """Raise ValueError naming the flag for settings that cannot work; return the stage schedule."""
        schedule = StageSchedule(tuple(self.stage_starts), tuple(int(e) for e in self.stage_epochs))
        TIMESTEP_SAMPLERS.get(self.t_sampler)
        SPARSITY_VARIANTS.get(self.sparsity)
        REGROWTH_MODES.get(self.regrowth)
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"--loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        down = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size < 8 or self.image_size % down:
            raise ValueError(
                f"--image_size {self.image_size} must be >= 8 and a multiple of {down} "
                f"(one halving per extra entry of --block_out_channels)"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"--block_out_channels {list(self.block_out_channels)} must be multiples of "
                f"--norm_num_groups {self.norm_num_groups}"
            )
        for flag, v in (
            ("--batch_size", self.batch_size),
            ("--sample_steps", self.sample_steps),
            ("--num_train_timesteps", self.num_train_timesteps),
        ):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"--p_uncond must be in [0, 1), got {self.p_uncond}")
        if not 0.0 <= self.sparsity_start < 1.0:
            raise ValueError(f"--sparsity_start must be in [0, 1), got {self.sparsity_start}")
        if self.snr_gamma <= 0 or self.cr_lambda_max < 0:
            raise ValueError("--snr_gamma must be > 0 and --cr_lambda_max >= 0")
        return schedule

    def to_json(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiffusionTrainConfig:
        """Return a config from `to_json`'s dict (lists back to tuples)."""
        tuples = {f.name for f in fields(cls) if "tuple" in str(f.type)}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


@dataclass
class DiffusionTrainResult:
    """What a run produced: paths, step counts and the per-stage report."""

    run_dir: str
    model_dir: str | None
    metrics_path: str
    stages_path: str
    global_step: int
    epochs_done: int
    final_loss: float
    stages: list[dict] = field(default_factory=list)
    resumed_from: str | None = None


def build_unet(cfg: DiffusionTrainConfig, num_classes: int):
    """Return a fresh class-conditional UNet2DModel (num_class_embeds = num_classes + 1: the last is null)."""
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=num_classes + 1,
        add_attention=cfg.mid_attention,
        attention_head_dim=min(8, cfg.block_out_channels[-1]),
    )


def build_schedulers(cfg: DiffusionTrainConfig):
    """Return (training DDPMScheduler, sampling DDIMScheduler with 'trailing' spacing: the full chain starts at T−1)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=True,
    )
    sample = DDIMScheduler.from_config(train.config, timestep_spacing="trailing", set_alpha_to_one=True)
    return train, sample


def conv_weights(unet) -> list[torch.Tensor]:
    """Return the weights of every conv layer of `unet` but the output layer (its channels are the colours)."""
    return [m.weight for name, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d) and name != "conv_out"]


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return Min-SNR-γ loss weights min(SNR_t, γ)/SNR_t for ε-prediction."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    return torch.clamp(snr, max=gamma) / snr


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # one generator per epoch: a resumed run draws the same batches, timesteps and noise as an uninterrupted one
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def bucket_edges(num_train_timesteps: int, n_buckets: int = N_T_BUCKETS) -> list[tuple[int, int]]:
    """Return the inclusive integer timestep range of each loss bucket."""
    edges = [round(k * num_train_timesteps / n_buckets) for k in range(n_buckets + 1)]
    return [(edges[k], edges[k + 1] - 1) for k in range(n_buckets)]


def _bucket_columns(num_train_timesteps: int) -> list[str]:
    return [f"loss_t{lo:04d}_{hi:04d}" for lo, hi in bucket_edges(num_train_timesteps)]


def save_pipeline(unet, sample_scheduler, folder: str | Path, class_names: dict[int, str]) -> Path:
    """Save a ClassConditionalPixelPipeline folder (model_index.json, unet/, scheduler/, class_names.json)."""
    from data_generation.generation.backends.pixel_pipeline import ClassConditionalPixelPipeline, write_class_names

    folder = Path(folder)
    ClassConditionalPixelPipeline(unet=unet, scheduler=sample_scheduler).save_pretrained(str(folder))
    write_class_names(folder, class_names)
    return folder


def sample_grid(
    unet, sample_scheduler, num_classes: int, per_class: int, steps: int, guidance: float, seed: int
) -> Image.Image:
    """Return a grid PNG image: one row per class, `per_class` samples each (fixed generators)."""
    from data_generation.generation.backends.pixel_pipeline import ClassConditionalPixelPipeline

    pipe = ClassConditionalPixelPipeline(unet=unet, scheduler=copy.deepcopy(sample_scheduler))
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    imgs = pipe(class_labels=labels, generator=gens, num_inference_steps=steps, guidance_scale=guidance).images
    h, w = imgs.shape[1:3]
    grid = np.zeros((num_classes * h, per_class * w, 3), dtype=np.float32)
    for i, im in enumerate(imgs):
        r, c = divmod(i, per_class)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    return Image.fromarray((grid * 255).round().astype(np.uint8))


_DAMAGED = "move that checkpoint folder away to resume from the one before it, or pass --no_resume"


def _check_resume_config(state: dict, cfg: DiffusionTrainConfig, where: Path) -> None:
    old = {k: v for k, v in (state.get("config") or {}).items() if k not in _RESUME_FREE}
    new = {k: v for k, v in cfg.to_json().items() if k not in _RESUME_FREE}
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        raise ValueError(
            f"{where}: cannot resume with a different config ({', '.join(diff)} changed); "
            "use a new --output_dir or --no_resume"
        )


def train_diffusion(cfg: DiffusionTrainConfig, dataset: PixelDataset | None = None) -> DiffusionTrainResult:
    """Train (or resume) a run; return the result with the saved model folder (EMA weights) and reports.

    `dataset` injects already-loaded data (tests, the benchmark); otherwise it is read from `cfg.data`.
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    # 1. check inputs, read the data
    schedule = cfg.validate()
    sparsity = SPARSITY_VARIANTS.get(cfg.sparsity)  # canonical name: 'none', 'cs' or 'cr' (aliases resolved)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = dataset if dataset is not None else load_pixel_dataset(cfg.data, cfg.image_size, cfg.data_root, cfg.split)
    if data.images.shape[-1] != cfg.image_size:
        raise ValueError(f"dataset images are {data.images.shape[-1]} px but --image_size is {cfg.image_size}")
    num_classes = data.num_classes
    class_names = {k: data.class_names.get(k, str(k)) for k in range(num_classes)}

    # 2. model, noise schedulers, optimizer, timestep sampler, channel mask (CS), EMA
    accelerator = Accelerator(cpu=(cfg.device == "cpu"), mixed_precision="no")
    torch.manual_seed(cfg.seed)
    unet = build_unet(cfg, num_classes)
    train_sched, sample_sched = build_schedulers(cfg)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sampler = make_timestep_sampler(cfg.t_sampler, schedule, kappa=cfg.soft_kappa)
    targets = stage_sparsities(schedule.n_stages, cfg.sparsity_start, 0.0)
    mask = None
    if sparsity == "cs":
        mask = BottleneckMask(
            unet,
            n_active(bottleneck_channels(unet), targets[0]),
            generator=torch.Generator().manual_seed(cfg.seed + 17),
        )
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config)

    # 3. resume from the newest checkpoint (its config must match)
    T = cfg.num_train_timesteps
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = math.ceil(len(data) / (cfg.batch_size * world))
    total_steps = steps_per_epoch * schedule.total_epochs
    start_epoch, global_step, history, stage_rows = 0, 0, [], []
    resumed_from = None
    if accelerator.is_main_process:  # leftovers of a killed run's atomic writes are never reused
        remove_stale_temporaries(run_dir)
    accelerator.wait_for_everyone()
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        try:
            state = json.loads((ckpt / "state.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{ckpt / 'state.json'}: the checkpoint is damaged ({err}); {_DAMAGED}") from None
        _check_resume_config(state, cfg, ckpt)
        try:
            state = load_checkpoint(ckpt, unet, ema, optimizer, mask)
        except (OSError, KeyError, RuntimeError, SafetensorError) as err:
            raise ValueError(f"{ckpt}: the checkpoint is damaged ({type(err).__name__}: {err}); {_DAMAGED}") from None
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        history, stage_rows = state["history"], state["stages"]
        resumed_from = str(ckpt)
        log.info("resumed from %s (epoch %d, step %d)", ckpt, start_epoch, global_step)
    # 4. place everything on the device
    write_json(cfg.to_json(), run_dir / "config.json")
    unet, optimizer = accelerator.prepare(unet, optimizer)
    raw_unet = accelerator.unwrap_model(unet)
    ema.to(accelerator.device)
    if mask is not None:
        mask.to(accelerator.device)  # the mask was built (and maybe resumed) with the model still on the CPU
    images, labels = data.images.to(accelerator.device), data.labels.to(accelerator.device)
    probe = _probe_batch(images, labels, train_sched, cfg.seed)
    null = num_classes
    bucket_cols = _bucket_columns(T)
    (run_dir / "samples").mkdir(exist_ok=True)

    last_epoch = (
        schedule.total_epochs if cfg.stop_after_epoch is None else min(cfg.stop_after_epoch, schedule.total_epochs)
    )
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        desc="train_diffusion",
        unit="step",
        disable=not (cfg.progress and accelerator.is_main_process),
    )
    epoch_loss = float("nan")
    # 5. the epochs: grow the mask at a stage change, train, report, checkpoint
    for epoch in range(start_epoch, last_epoch):
        # 5a. the stage (a CS mask grows to the stage's sparsity) and this process's share of a shuffled epoch
        stage = schedule.stage_of_epoch(epoch)
        if mask is not None and stage != mask.stage:
            mask.grow_to(
                n_active(mask.n_channels, targets[stage]),
                stage,
                cfg.regrowth,
                generator=torch.Generator().manual_seed(cfg.seed * 7919 + stage),
            )
        gen = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(len(data), generator=gen)[rank::world]
        sums, counts = torch.zeros(N_T_BUCKETS, dtype=torch.float64), torch.zeros(N_T_BUCKETS, dtype=torch.float64)
        loss_sum, lam = 0.0, 0.0
        # 5b. train: epsilon-prediction loss at the sampler's timesteps (classifier-free label dropout)
        unet.train()
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(images.device)
            if idx.numel() == 0:
                continue
            x0, y = images[idx], labels[idx]
            n = x0.shape[0]
            progress = global_step / max(total_steps - 1, 1)
            drop = torch.rand(n, generator=gen) < cfg.p_uncond
            y_in = torch.where(drop.to(y.device), torch.full_like(y, null), y)
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            t = sampler.sample(n, T, epoch=epoch, progress=progress, generator=gen).to(x0.device)
            xt = train_sched.add_noise(x0, noise, t)
            eps = unet(xt, t, class_labels=y_in).sample
            per_item = ((eps.float() - noise) ** 2).mean(dim=(1, 2, 3))
            w = (
                min_snr_weights(train_sched, t, cfg.snr_gamma)
                if cfg.loss_weighting == "min_snr"
                else torch.ones_like(per_item)
            )
            loss = (w * per_item).mean()
            if sparsity == "cr":
                lam = cosine_lambda(progress, cfg.cr_lambda_max, 0.0)
                loss = loss + lam * group_l1(conv_weights(raw_unet))
            accelerator.backward(loss)
            if mask is not None:
                if world > 1 and mask.gate.grad is not None:
                    # the gate is no DDP parameter: average its gradient so every rank regrows the same channels
                    mask.gate.grad = accelerator.reduce(mask.gate.grad, reduction="mean")
                mask.after_backward()
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
            optimizer.step()
            if mask is not None:
                mask.after_step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            ema.step(raw_unet.parameters())
            global_step += 1
            bar.update(1)
            with torch.no_grad():
                bucket = (t.cpu() * N_T_BUCKETS // T).clamp(max=N_T_BUCKETS - 1)
                sums.index_add_(0, bucket, per_item.detach().cpu().double())
                counts.index_add_(0, bucket, torch.ones(n, dtype=torch.float64))
                loss_sum += float(per_item.detach().mean())
        # 5c. the epoch's metrics (per-timestep-bucket losses, sparsity) and, at a stage's end, its report
        epoch_loss = loss_sum / steps_per_epoch
        t_lo, t_hi = sampler.allowed_range(T, epoch)
        row = {
            "epoch": epoch + 1,
            "stage": stage,
            "step": global_step,
            "t_min": t_lo,
            "t_max": t_hi,
            "loss": epoch_loss,
            "cr_lambda": lam,
            "bottleneck_masked_fraction": mask.sparsity if mask is not None else 0.0,
            "bottleneck_zero_fraction": bottleneck_zero_fraction(raw_unet, *probe),
            "bottleneck_unchanged_fraction": mask.unchanged_fraction() if mask is not None else float("nan"),
            "conv_near_zero_channel_fraction": zero_channel_fraction(conv_weights(raw_unet), NEAR_ZERO_REL_TOL),
        }
        row.update({c: (float(s / k) if k else float("nan")) for c, s, k in zip(bucket_cols, sums, counts)})
        history.append(row)
        end_of_stage = epoch + 1 == schedule.first_epoch(stage) + schedule.epochs[stage]
        if end_of_stage:
            stage_rows.append(_stage_report(sampler.name, sparsity, schedule, stage, targets, mask, row))
        # 5d. the main process writes the reports, the stage's sample grid and the checkpoint
        if accelerator.is_main_process:
            write_csv(pd.DataFrame(history), run_dir / "metrics.csv")
            write_csv(pd.DataFrame(stage_rows, columns=_STAGE_COLUMNS), run_dir / "stages.csv")
            if end_of_stage:
                grid = sample_grid(
                    _ema_unet(raw_unet, ema, mask),
                    sample_sched,
                    num_classes,
                    cfg.samples_per_class,
                    cfg.sample_steps,
                    cfg.sample_guidance,
                    cfg.seed,
                )
                grid.save(run_dir / "samples" / f"stage{stage}.png")
            if mask is not None:
                _write_mask_channels(mask, run_dir / "bottleneck_channels.csv")
            save_checkpoint(
                run_dir,
                epoch + 1,
                raw_unet,
                ema,
                optimizer,
                mask,
                {"global_step": global_step, "history": history, "stages": stage_rows, "config": cfg.to_json()},
                keep=cfg.keep_checkpoints,
            )
    bar.close()

    # 6. the final model (EMA weights, every channel active) as a pipeline folder
    epochs_done = max(last_epoch, start_epoch)
    model_dir = None
    if epochs_done >= schedule.total_epochs and accelerator.is_main_process:
        final = _ema_unet(raw_unet, ema, None)
        if mask is not None and not bool(mask.active.all()):
            raise RuntimeError("the CS mask still masks channels after the last stage; the saved model has no mask")
        model_dir = str(save_pipeline(final, sample_sched, run_dir / "model", class_names))
    if history and not math.isfinite(epoch_loss):
        epoch_loss = float(history[-1]["loss"])
    return DiffusionTrainResult(
        run_dir=str(run_dir),
        model_dir=model_dir,
        metrics_path=str(run_dir / "metrics.csv"),
        stages_path=str(run_dir / "stages.csv"),
        global_step=global_step,
        epochs_done=epochs_done,
        final_loss=float(epoch_loss),
        stages=stage_rows,
        resumed_from=resumed_from,
    )


def _write_mask_channels(mask: BottleneckMask, path: Path) -> None:
    """Write the CS mask's channels (index, active, the stage each was born in) to the CSV `path`."""
    channels = {
        "channel": range(mask.n_channels),
        "active": mask.active.int().tolist(),
        "born_stage": mask.born.tolist(),
    }
    write_csv(pd.DataFrame(channels), path)


_STAGE_COLUMNS = [
    "stage",
    "first_epoch",
    "epochs",
    "t_min_frac",
    "t_max_frac",
    "t_min",
    "t_max",
    "target_sparsity",
    "bottleneck_sparsity_reached",
    "bottleneck_unchanged_fraction",
    "conv_near_zero_channel_fraction",
    "channels_born",
    "cr_lambda_end",
    "loss",
]


def _probe_batch(images: torch.Tensor, labels: torch.Tensor, train_sched, seed: int):
    """Return the fixed (x_t, t, labels) batch on which the bottleneck's zero channels are counted.

    The first N_PROBE training images, noised to timesteps evenly spread over [0, T−1] with a generator
    seeded from `seed`, so every epoch (and a resumed run) measures on the same inputs.
    """
    n = min(N_PROBE, images.shape[0])
    T = train_sched.config.num_train_timesteps
    t = torch.linspace(0, T - 1, n).round().long()
    noise = torch.randn(images[:n].shape, generator=torch.Generator().manual_seed(int(seed) + 29))
    x0 = images[:n]
    xt = train_sched.add_noise(x0, noise.to(x0.device), t.to(x0.device))
    return xt, t.to(x0.device), labels[:n]


def _stage_report(
    sampler_name: str, sparsity: str, schedule: StageSchedule, stage: int, targets, mask, row: dict
) -> dict:
    lo, hi = schedule.ranges()[stage]
    return {
        "stage": stage,
        "first_epoch": schedule.first_epoch(stage) + 1,
        "epochs": schedule.epochs[stage],
        "t_min_frac": lo if sampler_name == "stages" else 0.0,
        "t_max_frac": hi,
        "t_min": row["t_min"],
        "t_max": row["t_max"],
        "target_sparsity": targets[stage] if sparsity == "cs" else 0.0,
        "bottleneck_sparsity_reached": row["bottleneck_zero_fraction"],
        "bottleneck_unchanged_fraction": row["bottleneck_unchanged_fraction"],
        "conv_near_zero_channel_fraction": row["conv_near_zero_channel_fraction"],
        "channels_born": int((mask.born == stage).sum()) if mask is not None else 0,
        "cr_lambda_end": row["cr_lambda"],
        "loss": row["loss"],
    }


def _ema_unet(unet, ema, mask):
    """Return a copy of `unet` holding the EMA weights, gated by `mask` when given (for stage samples)."""
    copy_ = copy.deepcopy(unet).eval()
    ema.copy_to(copy_.parameters())
    # a deepcopy also copies forward hooks; the caller's mask decides the gate of the copy
    copy_.mid_block._forward_hooks.clear()
    if mask is not None:
        mask.attach(copy_, keep=False)  # the copy is dropped after sampling, and its hook with it
    return copy_
