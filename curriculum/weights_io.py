"""Loading model weights without unpickling objects, shared by mining (a classifier scorer) and training."""
from __future__ import annotations

import os
from typing import Callable

import torch


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return the tensors of a safetensors file or a torch state-dict file (`weights_only=True`, no objects).

    A checkpoint that nests its weights under 'state_dict' or 'model' is unwrapped.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def create_timm_classifier(arch: str, num_classes: int, weights: str | None = None, img_size: int | None = None
                           ) -> tuple[torch.nn.Module, Callable, Callable]:
    """Return (timm `arch` with `num_classes` outputs, its train transform, its eval transform).

    `weights` (optional) is loaded with `read_state_dict`; a classifier head trained for another number of
    classes is dropped and re-initialised, any other mismatch is an error naming the file.
    """
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if weights:
        state = read_state_dict(weights)
        prefix = model.pretrained_cfg.get("classifier", "fc") + "."
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not (k.startswith(prefix) and k in own and v.shape != own[k].shape)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        body_missing = [k for k in missing if not k.startswith(prefix)]
        if unexpected or body_missing:
            raise ValueError(f"{weights}: does not fit {arch} (missing {body_missing[:5]}, unexpected {unexpected[:5]})")
    cfg = resolve_data_config({}, model=model)
    if img_size:
        cfg["input_size"] = (3, img_size, img_size)
        cfg["crop_pct"] = 1.0
    return model.eval(), create_transform(**cfg, is_training=True), create_transform(**cfg)
