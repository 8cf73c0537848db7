"""CLIP scorer backends, chosen by name (`--clip_backend`): `transformers` and `open_clip`.

scorer = load_scorer("open_clip", "ViT-B-32", pretrained="openai", device="cuda")
sims = scorer.embed_images(images) @ scorer.embed_texts(prompts).T   # cosine similarities
"""

from __future__ import annotations

from data_generation.scoring.backends.base import SCORERS, ClipScorer, ScorerLoadError

DEFAULT_MODELS = {"transformers": "openai/clip-vit-base-patch32", "open_clip": "ViT-B-32"}


def default_model(backend: str) -> str:
    """Return the default `--clip_model` of a backend (DisCL scored with CLIP ViT-B/32)."""
    SCORERS.get(backend)  # unknown names fail with the registry's did-you-mean message
    return DEFAULT_MODELS[backend]


def load_scorer(
    backend: str, model: str | None = None, pretrained: str | None = None, device: str = "cpu", dtype: str | None = None
) -> ClipScorer:
    """Return a loaded scorer of `backend` for `model` (hub id, name or local folder) on `device`."""
    cls = SCORERS.get(backend)
    return cls.from_pretrained(model or default_model(backend), pretrained=pretrained, device=device, dtype=dtype)


# importing the backends registers them, so the registry is full whenever this package is imported
from data_generation.scoring.backends import hf_clip, openclip, probe  # noqa: E402,F401

__all__ = ["SCORERS", "ClipScorer", "ScorerLoadError", "default_model", "load_scorer"]
