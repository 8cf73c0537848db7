"""Feature extraction from any torch model, and DINO models through timm.

`PretrainedModelExtractor` runs a model over a dataset and returns one vector per sample: the model's output,
or the output of a named intermediate module captured by a forward hook. Outputs with more than two
dimensions are pooled: (B, C, H, W) by the spatial mean, (B, L, D) token sequences by the token mean (or
the first token with pool='cls'). Vectors are L2-normalised when `normalize_features=True`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

# The seed library named `dino_vits16` etc. (torch.hub names); timm has the same architectures and weights.
DINO_MODELS = {
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",
}


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):  # e.g. transformers ModelOutput
        for key in ("pooler_output", "last_hidden_state", "image_embeds", "features"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"cannot find a tensor in a model output of type {type(out).__name__}")


def pool(x: torch.Tensor, how: str | Callable[[torch.Tensor], torch.Tensor] = "auto") -> torch.Tensor:
    """Return (B, D) vectors from a (B, ...) output: 'auto' (4-d: spatial mean; 3-d: token mean), 'mean', 'cls'."""
    if callable(how):
        return how(x)
    if x.dim() == 2:
        return x
    if how == "cls":
        if x.dim() != 3:
            raise ValueError(f"pool='cls' needs a (B, L, D) token output, got shape {tuple(x.shape)}")
        return x[:, 0]
    if how in ("auto", "mean"):
        if x.dim() == 3:
            return x.mean(1)  # (B, L, D): tokens are the middle axis in timm/transformers ViTs
        return x.flatten(2).mean(2)  # (B, C, ...): mean over all spatial axes
    raise ValueError(f"pool must be 'auto', 'mean', 'cls' or a callable, got {how!r}")


class PretrainedModelExtractor:
    """Features of a torch model's output or of a named intermediate module (forward hook)."""

    def __init__(
        self,
        model: nn.Module,
        feature_layer: str | None = None,
        normalize_features: bool = True,
        pool: str | Callable[[torch.Tensor], torch.Tensor] = "auto",
    ):
        self.model = model.eval()
        self.feature_layer = feature_layer
        self.normalize_features = normalize_features
        self.pool = pool
        self._captured: list[torch.Tensor] = []
        self._module = None
        if feature_layer is not None:
            modules = dict(model.named_modules())
            if feature_layer not in modules:
                names = [n for n in modules if n]
                close = difflib.get_close_matches(feature_layer, names, n=5, cutoff=0.4)
                hint = f" Close names: {', '.join(close)}." if close else ""
                raise ValueError(
                    f"feature_layer {feature_layer!r} is not a module of the model.{hint} "
                    f"The model has {len(names)} named modules (model.named_modules())."
                )
            self._module = modules[feature_layer]

    def _hook(self, module, inputs, output) -> None:
        self._captured.append(_first_tensor(output).detach())

    def features_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return the (B, D) float32 features of one batch of model inputs."""
        if self._module is None:
            out = _first_tensor(self.model(inputs))
        else:
            self._captured.clear()
            handle = self._module.register_forward_hook(self._hook)
            try:
                self.model(inputs)
            finally:
                handle.remove()  # never leave a hook behind on the user's model
            out = self._captured[0]
        f = pool(out, self.pool).float()
        if self.normalize_features:
            f = nn.functional.normalize(f, p=2, dim=1)
        return f

    @torch.no_grad()
    def extract(
        self, data, device: str | torch.device = "cpu", batch_size: int = 256, num_workers: int = 0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (features float32 (N, D), labels int64 (N,) or None) for a Dataset or DataLoader.

        Batches may be tensors, (inputs, labels, ...) tuples or dicts with 'pixel_values'/'image'/'inputs'.
        """
        loader = (
            data
            if isinstance(data, DataLoader)
            else DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        )
        self.model.to(device)
        feats, labels = [], []
        for batch in loader:
            y = None
            if isinstance(batch, dict):
                key = next((k for k in ("pixel_values", "image", "inputs", "x") if k in batch), None)
                if key is None:
                    raise ValueError(f"dict batches need a 'pixel_values', 'image' or 'inputs' key, got {list(batch)}")
                x, y = batch[key], batch.get("label", batch.get("labels"))
            elif isinstance(batch, (list, tuple)):
                x = batch[0]
                y = batch[1] if len(batch) > 1 else None
            else:
                x = batch
            feats.append(self.features_of(x.to(device)).cpu())
            labels.append(torch.as_tensor(y).reshape(-1) if y is not None else None)
        if not feats:
            raise ValueError("the dataset is empty")
        f = torch.cat(feats).numpy()
        lab = torch.cat(labels).numpy().astype(np.int64) if all(v is not None for v in labels) else None
        return f, lab

    def extract_features(self, data_loader, device: str | torch.device = "cpu") -> torch.Tensor:
        """Return the (N, D) float32 features of every sample as a CPU tensor (the seed library's call)."""
        return torch.from_numpy(self.extract(data_loader, device)[0])


def create_dino_model(
    dino_model: str = "dino_vits16", weights: str | os.PathLike | None = None, **model_kwargs: Any
) -> nn.Module:
    """Return a DINO ViT (timm) with its classifier head removed, in eval mode.

    `dino_model`: a seed-library name (dino_vits16, dino_vits8, dino_vitb16, dino_vitb8) or a timm id.
    `weights`: a local .safetensors/.pth state dict, loaded instead of the hub (no network). Without it the
    weights come from the hub through timm; offline that fails at once with a RuntimeError saying how to
    pass local weights. `model_kwargs` go to timm.create_model (e.g. img_size=32, depth=2 for a tiny model).
    """
    import timm

    timm_id = DINO_MODELS.get(dino_model, dino_model)
    if timm_id not in timm.list_models(pretrained=True) and timm_id not in timm.list_models():
        close = difflib.get_close_matches(dino_model, list(DINO_MODELS) + timm.list_models("*dino*"), n=5)
        raise ValueError(f"unknown dino_model {dino_model!r}; known: {sorted(DINO_MODELS)}; close: {close}")
    if weights is not None:
        model = timm.create_model(timm_id, pretrained=False, num_classes=0, **model_kwargs)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never objects
        # a classifier checkpoint (e.g. a fine-tuned timm model) carries a head this feature model has not
        head = str(model.pretrained_cfg.get("classifier") or "head")
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("head")]
        if bad or unexpected:
            raise ValueError(
                f"weights {path} do not fit {timm_id}: missing {bad[:5]}, unexpected {list(unexpected)[:5]}"
            )
        return model.eval()
    try:
        return timm.create_model(timm_id, pretrained=True, num_classes=0, **model_kwargs).eval()
    except Exception as err:  # hub errors come in many types; the user needs one message
        raise RuntimeError(
            f"cannot load pretrained weights for {dino_model!r} ({timm_id}) from the model hub: {err}. "
            "Offline, pass a local state dict (weights='dino.safetensors' or a .pth file), "
            "or pass model= with a model you built yourself."
        ) from err
