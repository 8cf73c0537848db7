"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds `model.safetensors`, `optimizer.safetensors` (the optimizer's tensors, flattened),
and `state.json` (optimizer param groups, LR scheduler, fp16 GradScaler, guidance schedule, sampler,
epoch/step, config). The pieces (`save_tensors`, `flatten_optimizer`/`unflatten_optimizer`, `atomic_folder`
with its `.tmp`/`.old` recovery) are the one implementation the diffusion trainer's checkpoints
(`training.diffusion.checkpoint`) use too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from curriculum.tables import atomic_path, write_json


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded (truncated weights, corrupt state.json); the message names it."""


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Write `tensors` (detached, on the CPU, contiguous) to the safetensors file `path`."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(flat, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()} or None)


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (tensors `{"<param id>.<slot>": tensor}`, JSON part `{"param_groups", "state"}`) of an optimizer
    state dict; `unflatten_optimizer` inverts it."""
    tensors, rest = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for pid, slots in state_dict["state"].items():
        rest["state"][str(pid)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest["state"][str(pid)][name] = value
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Return the optimizer state dict that `flatten_optimizer` split into `tensors` and `rest`."""
    # "plain_state": the key the diffusion trainer's checkpoints used before the layouts were made one
    state: dict = {int(pid): dict(slots) for pid, slots in rest.get("state", rest.get("plain_state", {})).items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


STATE_FILE = "state.json"


def _tmp_of(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.tmp")


def _old_of(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield the temporary folder `.<name>.tmp` beside `folder`; on success it replaces `folder`, on error
    (e.g. a full disk) it is removed and the previous `folder` stays as it is.

    The previous folder is moved aside to `.<name>.old`, not deleted, until the new one is in place: a kill
    between the two renames leaves a complete `.<name>.tmp` (and `.<name>.old`) that `recover_checkpoint`
    puts back. The temporary folder is made with `mkdir`, so it follows the umask like any folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _tmp_of(folder), _old_of(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: dict | None = None,
    scaler: Any = None,
) -> Path:
    """Write a checkpoint folder atomically (a temporary folder, then a rename); return the folder.

    `scaler` is mixed precision's GradScaler (accelerate's `accelerator.scaler` under fp16); its state
    (scale, growth tracker, factors: plain numbers) goes to state.json.
    """
    with atomic_folder(folder) as tmp:
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        meta: dict = {"extra": extra or {}, "torch_rng": torch.get_rng_state().tolist()}
        if optimizer is not None:
            tensors, rest = flatten_optimizer(optimizer.state_dict())
            save_tensors(tensors, tmp / "optimizer.safetensors")
            meta["optimizer"] = rest
        if scheduler is not None:
            meta["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            meta["scaler"] = {k: (float(v) if isinstance(v, float) else int(v)) for k, v in scaler.state_dict().items()}
        write_json(meta, tmp / STATE_FILE)  # written last: a temporary folder with state.json is complete
    return Path(folder)


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / STATE_FILE).is_file()


def recover_checkpoint(folder: str | Path) -> Path | None:
    """Return the checkpoint folder to resume from, after finishing a save that a kill interrupted; None if none.

    `folder` itself when complete; else the complete new temporary checkpoint (a kill came after it was written
    but before the rename), else the previous one moved aside - renamed into place. Incomplete leftovers of a
    killed save are removed.
    """
    folder = Path(folder)
    tmp, old = _tmp_of(folder), _old_of(folder)
    if not _complete(folder):
        for candidate in (tmp, old):
            if _complete(candidate):
                shutil.rmtree(folder, ignore_errors=True)
                candidate.rename(folder)
                break
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    return folder if folder.is_dir() else None


def load_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> dict:
    """Restore model (and optimizer/scheduler/GradScaler if given) from `folder`; return the `extra` dict saved
    with it. A checkpoint written without mixed precision leaves a given scaler as it is."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: not a checkpoint (no model.safetensors)")
    try:
        meta = json.loads((folder / STATE_FILE).read_text())
        weights = load_file(str(folder / "model.safetensors"))
        has_opt = optimizer is not None and "optimizer" in meta
        opt = load_file(str(folder / "optimizer.safetensors")) if has_opt else None
        meta["extra"], meta["torch_rng"]  # noqa: B018  (a state.json without them is not ours)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise CheckpointError(
            f"{folder}: the checkpoint is damaged ({type(err).__name__}: {err}); restore it, or move it away "
            "and rerun with --resume to start the run over"
        ) from None
    model.load_state_dict(weights)
    if opt is not None:
        optimizer.load_state_dict(unflatten_optimizer(opt, meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta["extra"]


def save_model_weights(path: str | Path, model: torch.nn.Module, metadata: dict | None = None) -> Path:
    """Write only the model weights to a safetensors file (atomically); return the path."""
    with atomic_path(path) as tmp:
        save_tensors(model.state_dict(), tmp, metadata or {})
    return Path(path)
