"""Generator backends, chosen by name (`--generator`) or from a model folder's `model_index.json`."""

from __future__ import annotations

import json
from pathlib import Path

from data_generation.generation.backends.base import GENERATORS, GenerationBatch, ImageGenerator, ModelLoadError


def detect_generator(model_id: str) -> str:
    """Return the registered backend name for `model_id` (a local folder is read; hub ids use diffusers)."""
    index = Path(model_id) / "model_index.json"
    if not index.is_file():
        return "diffusers-img2img"
    try:
        cls = json.loads(index.read_text()).get("_class_name", "")
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{index}: not valid JSON ({err})") from err
    for name in GENERATORS.names():
        if cls in getattr(GENERATORS.get(name), "pipeline_classes", ()):
            return name
    raise ModelLoadError(
        f"{index}: pipeline class {cls!r} has no generator backend; supported: "
        f"{sorted(c for n in GENERATORS.names() for c in getattr(GENERATORS.get(n), 'pipeline_classes', ()))}"
    )


def load_generator(model_id: str, device: str = "cpu", dtype: str = "fp32", name: str | None = None) -> ImageGenerator:
    """Return a loaded generator backend for `model_id` (`name` overrides auto-detection)."""
    backend = GENERATORS.get(name or detect_generator(model_id))
    return backend.from_pretrained(model_id, device=device, dtype=dtype)


# importing the backends registers them, so the registry is full whenever this package is imported
from data_generation.generation.backends import diffusers_img2img, pixel_ddpm  # noqa: E402,F401

__all__ = ["GENERATORS", "GenerationBatch", "ImageGenerator", "ModelLoadError", "detect_generator", "load_generator"]
