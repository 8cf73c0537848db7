"""The generator protocol: what gene_img needs from an image-guided diffusion backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from curriculum.registry import Registry

# filled by the backend modules, which the package imports (so it is full whenever the package is imported)
GENERATORS: Registry = Registry("generator")


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded, with a message saying how to point at a local folder."""


@dataclass
class GenerationBatch:
    """One call's worth of variants that share strength, text guidance, steps and output size.

    `image_keys[i]` identifies the source image of item i (its `sample_id`): items with the same key share
    the seed-independent work (preprocessing, VAE encoding).
    """

    images: Sequence[Image.Image]
    image_keys: Sequence[str]
    prompts: Sequence[str]
    generators: Sequence[torch.Generator]
    strength: float
    text_guidance: float
    steps: int
    #: integer class labels of the items (class-conditional backends use them instead of the prompts)
    labels: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.images)


class ImageGenerator(Protocol):
    """An image-guided generator. `generate` returns one HxWx3 float array in [0, 1] per item."""

    model_id: str
    #: output sides are multiples of this (the VAE's down-sampling factor for latent models)
    size_multiple: int

    def generate(self, batch: GenerationBatch) -> list[np.ndarray]:
        """Return the generated images of `batch`, in order, as float arrays in [0, 1]."""
        ...

    def describe(self) -> dict:
        """Return what produced the images (class, model id, dtype, scheduler) for the manifest metadata."""
        ...
