"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `checkpoints/epoch-XXXX/` written atomically (built under a temporary name, then
renamed) holding `unet.safetensors`, `ema.safetensors`, `optimizer.safetensors` (+ the non-tensor part of the
optimizer state in `state.json`), `mask.safetensors` for CS runs, and `state.json` (epoch, step, history).
Tensor files, optimizer flattening and the atomic folder write are `training.trainers.checkpoint`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from training.trainers.checkpoint import atomic_folder, flatten_optimizer, save_tensors, unflatten_optimizer

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(
    run_dir: str | Path, epoch: int, unet, ema, optimizer, mask, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write the checkpoint after `epoch` (1-based count of finished epochs); return its folder.

    Keeps the `keep` newest checkpoints (0 keeps all).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    with atomic_folder(final) as tmp:
        save_tensors(unet.state_dict(), tmp / "unet.safetensors")
        ema_sd = ema.state_dict()
        save_tensors({f"shadow.{i}": t for i, t in enumerate(ema_sd.pop("shadow_params"))}, tmp / "ema.safetensors")
        ema_sd.pop("collected_params", None)
        opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        if mask is not None:
            save_tensors(mask.state_tensors(), tmp / "mask.safetensors")
        full = dict(state, epoch=epoch, ema=ema_sd, optimizer=opt_meta)
        (tmp / "state.json").write_text(json.dumps(full, indent=1, default=str))
    if keep > 0:
        for old in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-keep]:
            shutil.rmtree(old)
    return final


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Remove what a killed run's atomic writes left behind (`checkpoints/.epoch-*` folders, `.*.tmp` files in
    the run folder); return how many were removed. Call before training starts, from one process."""
    run_dir = Path(run_dir)
    stale = list((run_dir / CHECKPOINT_DIR).glob(".epoch-*")) + list(run_dir.glob(".*.tmp"))
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return len(stale)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Return the newest complete checkpoint folder of a run, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    done = sorted(p for p in root.glob("epoch-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(folder: str | Path, unet, ema, optimizer, mask) -> dict[str, Any]:
    """Load a checkpoint into the given objects (in place); return its `state.json` contents."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    unet.load_state_dict(load_file(str(folder / "unet.safetensors")))
    shadow = load_file(str(folder / "ema.safetensors"))
    ema_sd = dict(state["ema"], shadow_params=[shadow[f"shadow.{i}"] for i in range(len(shadow))])
    ema.load_state_dict(ema_sd)
    optimizer.load_state_dict(unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), state["optimizer"]))
    if mask is not None:
        mask.load_state_tensors(load_file(str(folder / "mask.safetensors")))
    return state
