"""Loading model weights without unpickling objects, shared by mining (a classifier scorer) and training."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def load_weights_file(path: str | os.PathLike):
    """Return what a weights file holds, never unpickling objects: a safetensors file's tensors, or a torch
    file's tensors and containers (`torch.load(weights_only=True)`; it raises on anything else)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return the tensors of a safetensors file or a torch state-dict file (`weights_only=True`, no objects).

    A checkpoint that nests its weights under 'state_dict' or 'model' is unwrapped.
    """
    state = load_weights_file(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    classifier = model.pretrained_cfg.get("classifier", "fc")
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    return tuple(f"{n}." for n in names)


def head_num_classes(state: dict[str, torch.Tensor], model: torch.nn.Module) -> int | None:
    """Return the number of classes of the classifier head stored in `state` for `model`'s architecture.

    The head is the module timm names in `pretrained_cfg['classifier']`; None when `state` has no head.
    """
    for prefix in _head_prefixes(model):
        w = state.get(prefix + "weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return None


def create_timm_classifier(
    arch: str,
    num_classes: int | None,
    weights: str | None = None,
    img_size: int | None = None,
    allow_new_head: bool = False,
) -> tuple[torch.nn.Module, Callable, Callable]:
    """Return (timm `arch` with `num_classes` outputs, its train transform, its eval transform).

    `weights` (optional) is loaded with `read_state_dict`. `num_classes` None takes the class count from the
    weights file's classifier head. A head trained for another number of classes (or missing from the file)
    is an error naming the file and both class counts, unless `allow_new_head` (fine-tuning to new classes):
    then it is re-initialised at random and a warning is logged. Any other mismatch is an error naming the file.
    """
    import timm
    from timm.data import create_transform, resolve_data_config

    state = read_state_dict(weights) if weights else None
    if num_classes is None and state is None:
        raise ValueError(f"{arch}: the number of classes is needed when no weights file is given")
    model = timm.create_model(arch, pretrained=False, **({} if num_classes is None else {"num_classes": num_classes}))
    if state is not None:
        file_classes = head_num_classes(state, model)
        if num_classes is None:
            if file_classes is None:
                raise ValueError(
                    f"{weights}: has no classifier head for {arch} ({_head_prefixes(model)[0]}weight), "
                    "so the number of classes must be given"
                )
            model.reset_classifier(file_classes)
        prefixes = _head_prefixes(model)
        own = model.state_dict()
        if file_classes != model.num_classes:
            what = f"a classifier head for {file_classes} classes" if file_classes is not None else "no classifier head"
            msg = f"{weights}: has {what}, but {arch} is built for {model.num_classes} classes"
            if not allow_new_head:
                raise ValueError(msg + " (pass the weights trained on this label set)")
            log.warning("%s; the head is re-initialised at random (fine-tuning to new classes)", msg)
            state = {
                k: v for k, v in state.items() if not (k.startswith(prefixes) and k in own and v.shape != own[k].shape)
            }
        missing, unexpected = model.load_state_dict(state, strict=False)
        body_missing = [k for k in missing if not k.startswith(prefixes)]
        if unexpected or body_missing:
            raise ValueError(
                f"{weights}: does not fit {arch} (missing {body_missing[:5]}, unexpected {unexpected[:5]})"
            )
    cfg = resolve_data_config({}, model=model)
    if img_size:
        cfg["input_size"] = (3, img_size, img_size)
        cfg["crop_pct"] = 1.0
    return model.eval(), create_transform(**cfg, is_training=True), create_transform(**cfg)
