"""Flags shared by the Phase 2 training scripts (DisCL's switch names where they exist)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from curriculum.config import dataclass_from_args

if TYPE_CHECKING:  # the engine imports torch: the parsers built here must not
    from training.trainers.engine import TrainConfig


def common_parser(prog: str, doc: str | None, defaults: dict) -> argparse.ArgumentParser:
    """Return the parser of a Phase 2 training script `prog` (help text `doc`) with the shared flags added."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, defaults)
    return p


def add_common_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Add the data, curriculum and run flags shared by finetune_flyp.py and train_lt.py."""
    d = p.add_argument_group("data")
    d.add_argument(
        "--data_table", required=True, help="sample table (CSV/Parquet) with a `split` column and optionally `hard`"
    )
    d.add_argument("--data_root", default=None, help="root for the table's relative filepaths (default: cwd)")
    d.add_argument(
        "--syn_manifest", default=None, help="synthetic manifest (the scored one: rows with keep=False are dropped)"
    )
    d.add_argument(
        "--syn_root", default=None, help="folder the manifest's paths are relative to (default: from its metadata)"
    )
    d.add_argument("--train_split", default="train")
    d.add_argument("--eval_splits", nargs="+", default=defaults["eval_splits"])
    c = p.add_argument_group("curriculum")
    c.add_argument("--curriculum", action="store_true", help="train with synthetic data and a guidance schedule")
    c.add_argument(
        "--curriculum_epoch",
        type=float,
        default=defaults["curriculum_epoch"],
        help="epochs of curriculum; then real only",
    )
    c.add_argument(
        "--progress_guid", action="store_true", help="adaptive schedule from validation progress (else fixed order)"
    )
    c.add_argument(
        "--random_guid", action="store_true", help="adaptive schedule that picks levels at random (ablation)"
    )
    c.add_argument(
        "--uniform_set",
        action="store_true",
        help="DisCL's uniform set (with --progress_guid): alternate one pass over a uniform set of real rows "
        "(--uniform_set_size), after which progress picks a level, with one pass over that level",
    )
    c.add_argument(
        "--uniform_set_size",
        type=int,
        default=defaults.get("uniform_set_size", 30000),
        help=defaults.get("uniform_set_help", "size of the uniform set of real rows"),
    )
    c.add_argument(
        "--uniform_baseline_batch",
        type=int,
        default=defaults.get("uniform_baseline_batch", 0),
        help="with --uniform_set: re-measure the progress baseline after this many batches of each uniform pass "
        "(0: only before training)",
    )
    c.add_argument(
        "--uniform_first",
        action="store_true",
        help="ours: the adaptive schedule's first stage is a uniform mix of every synthetic level",
    )
    c.add_argument(
        "--real_candidate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the adaptive schedule may pick real data (level 100) too, as DisCL's does; the held-out sources' "
        "real images are then its validation rows",
    )
    c.add_argument(
        "--progress_baseline",
        default=defaults.get("progress_baseline", "initial"),
        choices=["zero", "initial"],
        help="previous value of the first progress check: zero (DisCL's iWildCam code) or measured before training",
    )
    c.add_argument(
        "--stage_unit",
        default=defaults.get("stage_unit", "epoch"),
        choices=["epoch", "pass"],
        help="adaptive curriculum: a stage is an epoch, or (pass, DisCL's iWildCam loop) one pass over the level's "
        "loader while a curriculum epoch is a fixed --curriculum_epoch_steps steps",
    )
    c.add_argument(
        "--curriculum_epoch_steps",
        type=int,
        default=None,
        help="steps of a curriculum epoch with --stage_unit pass (default: floor(real training rows / batch))",
    )
    c.add_argument(
        "--fixed_stages",
        default=defaults.get("fixed_stages", "equal"),
        choices=["reference", "equal"],
        help="fixed schedule's stage boundaries: equal shares of --curriculum_epoch, or DisCL's ImageNet-LT "
        "boundaries (levels + real, floor(E/(k+1)) epochs each, the first one epoch shorter)",
    )
    c.add_argument(
        "--allow_empty_curriculum",
        action="store_true",
        help="accept a curriculum run that trained on no synthetic image (else exit 2 at its end)",
    )
    c.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=defaults.get("levels"),
        help="guidance levels (image guidance %% = 100 - 100*strength), synthetic to real order for the fixed schedule",
    )
    c.add_argument(
        "--min_level", type=int, default=defaults.get("min_level", 0), help="ignore synthetic levels below this"
    )
    c.add_argument(
        "--prototype_state",
        default=None,
        help="curriculum state (CurriculumLearning.save_weights) whose prototype difficulty drives the real-data "
        "sampler",
    )
    c.add_argument(
        "--proto_start", type=float, default=0.3, help="initial effective dataset size (fraction of draws unique)"
    )
    c.add_argument("--proto_warmup_steps", type=int, default=1000, help="steps until real sampling is uniform")
    c.add_argument(
        "--proto_refresh_every",
        type=int,
        default=None,
        help="steps between refreshes of the real-data distribution (default: warm-up / 20, at most 100)",
    )
    c.add_argument("--proto_mode", default="prototypes_first", choices=["prototypes_first", "hard_first"])
    c.add_argument(
        "--curriculum_val_size",
        type=int,
        default=defaults.get("curriculum_val_size", 2000),
        help="source images held out (from training, at every level) to measure level progress",
    )
    r = p.add_argument_group("run")
    r.add_argument("--run_dir", required=True)
    r.add_argument("--epochs", type=int, default=defaults["epochs"])
    r.add_argument(
        "--batch_size",
        type=int,
        default=defaults["batch_size"],
        help=f"the GLOBAL batch (default {defaults['batch_size']}, the reference's): with several processes each "
        "takes batch_size / processes (must divide), as the reference's DataParallel split it; the learning rate "
        "needs no scaling",
    )
    r.add_argument(
        "--batch_per_process",
        action="store_true",
        help="make --batch_size the per-process batch instead (global batch = batch_size x processes)",
    )
    r.add_argument(
        "--eval_batch_size",
        type=int,
        default=256,
        help="images per evaluation forward pass (default 256); several processes share each split in whole batches",
    )
    r.add_argument("--lr", type=float, default=defaults["lr"])
    r.add_argument("--wd", type=float, default=defaults["wd"])
    r.add_argument("--warmup_steps", type=int, default=defaults.get("warmup_steps", 500))
    r.add_argument(
        "--lr_schedule",
        default="reference",
        choices=["reference", "exact"],
        help=f"cosine planned once over (epochs + {defaults.get('lr_extra_epochs', 0)}) x the first epoch's steps "
        "(the reference), or over the steps the run takes (exact: ends at the last step)",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None)
    r.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    r.add_argument("--num_workers", type=int, default=4)
    r.add_argument("--max_steps_per_epoch", type=int, default=None, help="cap steps per epoch (smoke runs)")
    r.add_argument("--log_dynamics", action="store_true", help="log per-sample true-class probability per epoch")
    r.add_argument("--resume", action="store_true", help="continue from run_dir/checkpoints/last")
    r.add_argument(
        "--epochs_per_invocation",
        type=int,
        default=None,
        help="stop after this many epochs (job time limits); --resume continues",
    )
    r.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log each epoch's metrics to run_dir/tensorboard (needs: pip install tensorboard)",
    )


def check_run_flags(args) -> None:
    """Return None when the optional packages the flags ask for are importable and the batch splits across the
    launched processes; else raise RuntimeError / ValueError saying which flag."""
    from curriculum.distributed import detect
    from training.trainers.engine import per_process_batch

    if args.tensorboard:
        from training.trainers.engine import tensorboard_writer_class

        tensorboard_writer_class()
    per_process_batch(args.batch_size, detect().world_size, args.batch_per_process)


def train_config(
    args, levels: list[int], optimizer: str, select_metric: str, lr_extra_epochs: int = 0, resolved=None
) -> TrainConfig:
    """Return the TrainConfig the parsed flags describe (`resolved`: settings the script derived, recorded)."""
    from training.trainers.engine import TrainConfig

    return dataclass_from_args(
        TrainConfig,
        args,
        weight_decay=args.wd,
        optimizer=optimizer,
        curriculum=args.curriculum and bool(levels),
        schedule="adaptive" if (args.progress_guid or args.random_guid) else "fixed",
        levels=tuple(levels),
        include_real=args.real_candidate,
        lr_extra_epochs=lr_extra_epochs,
        select_metric=select_metric,
        cli_args=dict(vars(args)),
        resolved=dict(resolved or {}),
    )


def run_training(prog: str, cfg: TrainConfig, task, data) -> int:
    """Run `engine.train` for a CLI; return 0, or 2 with one line naming the file or flag: an image that exists
    but cannot be decoded, a full disk or read-only folder (the checkpoints written until then are kept, so
    --resume continues), a used --run_dir without --resume, --resume with changed flags, a damaged checkpoint."""
    import sys

    from training.trainers.engine import EmptyCurriculumError, train

    try:
        result = train(cfg, task, data)
    except (EmptyCurriculumError, ValueError) as err:
        # a used --run_dir, changed flags on --resume, a damaged checkpoint, a curriculum that added nothing
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an undecodable image (load_image names it), a full disk, a read-only run folder
        print(
            f"{prog}: error: {err}; the checkpoints written so far are kept: fix the cause and rerun with --resume",
            file=sys.stderr,
        )
        return 2
    print(f"done: {result['run_dir']}; best {result['best']}")
    return 0
