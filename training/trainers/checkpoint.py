"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds `model.safetensors`, `optimizer.safetensors` (the optimizer's tensors, flattened),
and `state.json` (optimizer param groups, LR scheduler, fp16 GradScaler, guidance schedule, sampler,
epoch/step, config). The pieces (`save_tensors`, `flatten_optimizer`/`unflatten_optimizer`, `atomic_folder`)
are the one implementation the diffusion trainer's checkpoints (`training.diffusion.checkpoint`) use too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from curriculum.tables import atomic_path, write_json


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


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `folder`; on success it replaces `folder`, on error it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
        write_json(meta, tmp / "state.json")
    return Path(folder)


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
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    meta = json.loads((folder / "state.json").read_text())
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(
            unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"])
        )
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
