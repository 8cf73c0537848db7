"""The scorer protocol: what CLIP scoring needs from an image-text model, and helpers all backends share.

A scorer turns images and texts into *projected, L2-normalised* embeddings, so a similarity is a dot
product. Preprocessing is the model's own (the transform it was trained with), exposed separately from the
forward pass so that image decoding and preprocessing can run in worker threads while the model works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from curriculum.registry import Registry

log = logging.getLogger(__name__)

# filled by the backend modules, which the package imports (so it is full whenever the package is imported)
SCORERS: Registry = Registry("CLIP backend")


class ScorerLoadError(RuntimeError):
    """A CLIP model that cannot be loaded; the message says which flag to change or how to go offline."""


class ClipScorer(Protocol):
    """An image-text embedding model used for CLIPScore filtering."""

    model_id: str
    device: torch.device

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Return the model's preprocessed pixel tensor (C, H, W) for one RGB image."""
        ...

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Return (N, D) float32 L2-normalised projected embeddings of a preprocessed batch."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return (N, D) float32 L2-normalised projected embeddings of RGB images."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return (N, D) float32 L2-normalised projected embeddings of texts."""
        ...

    def describe(self) -> dict:
        """Return the backend, model id, weights, dtype and preprocessing (recorded in output metadata)."""
        ...


class TorchScorerMixin:
    """`embed_images` on top of `preprocess` + `embed_pixels`, shared by the backends."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return (N, D) float32 L2-normalised embeddings of `images` (one forward pass)."""
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.embed_pixels(torch.stack([self.preprocess(im) for im in images]))


def l2_normalise(features: torch.Tensor) -> np.ndarray:
    """Return `features` as float32 numpy rows of unit L2 norm (normalised in float32, not in half)."""
    f = features.detach().float()
    return (f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def file_signature(path: str) -> str:
    """Return 'size-mtime_ns' of a local file or folder's files (so a cache notices changed weights)."""
    import os
    from pathlib import Path

    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{f.name}:{st.st_size}-{st.st_mtime_ns}")
    return ";".join(parts)
