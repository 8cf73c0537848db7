"""open_clip backend: `create_model_and_transforms` from a name + pretrained tag, a name + local weights file
(`.safetensors`/`.bin`), or a local folder holding `open_clip_config.json` and weights."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from curriculum.offline import HOW, OPEN_CLIP_HUB, open_clip_hub_repo, open_clip_tag_missing, quiet_hub
from data_generation.hub import resolve_dtype
from data_generation.scoring.backends.base import (
    SCORERS,
    ScorerLoadError,
    TorchScorerMixin,
    file_signature,
    l2_normalise,
)

RANDOM = {"none", "random"}  # --clip_pretrained none: random weights (benchmarks, smoke tests)


def _check_tag_weights(model: str, name: str, tag: str) -> None:
    """Raise ScorerLoadError (one line: the flags, why, how to get a local folder) when the weights of an
    open_clip tag are neither cached nor downloadable now."""
    missing = open_clip_tag_missing(name, tag)
    if missing:
        raise ScorerLoadError(
            f"--clip_model {model} --clip_pretrained {tag}: open_clip weights {name}/{tag}: {missing}; "
            f"{HOW} (`hf download {open_clip_hub_repo(name, tag)} --local-dir DIR`, then --clip_model DIR)"
        )


def resolve_model(model: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """Return (open_clip model name, pretrained argument, weights description) for the flags.

    A folder becomes open_clip's `local-dir:` schema; a known name takes a tag or a weights file; unknown
    names and missing weight files raise ScorerLoadError naming the flag.
    """
    import open_clip

    if Path(model).is_dir():
        if not (Path(model) / "open_clip_config.json").is_file():
            raise ScorerLoadError(
                f"--clip_model {model}: folder has no open_clip_config.json (open_clip's local-dir layout)"
            )
        return f"local-dir:{model}", None, f"local folder {model}"
    if model.startswith(("local-dir:", "hf-hub:")):
        return model, None, model
    name = model.replace("/", "-")
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ScorerLoadError(f"--clip_model {model!r} is not an open_clip model name or folder.{hint}")
    if pretrained is None or pretrained.lower() in RANDOM:
        return name, None, "random weights"
    if os.path.sep in pretrained or pretrained.endswith((".safetensors", ".bin", ".pt", ".pth")):
        if not Path(pretrained).is_file():
            raise ScorerLoadError(f"--clip_pretrained {pretrained}: no such weights file")
        return name, pretrained, f"file {pretrained}"
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ScorerLoadError(f"--clip_pretrained {pretrained!r} is not a pretrained tag of {name}; tags: {tags}")
    _check_tag_weights(model, name, pretrained)  # before open_clip's own download: no retry storm
    return name, pretrained, f"tag {pretrained}"


@SCORERS.register("open_clip", "openclip")
class OpenClipScorer(TorchScorerMixin):
    """CLIP through open_clip: `encode_image` / `encode_text`, preprocessed by the model's validation
    transform (the one `create_model_and_transforms` returns for evaluation)."""

    backend = "open_clip"

    def __init__(
        self, model, preprocess, tokenizer, model_id: str, weights: str, device: str = "cpu", dtype=torch.float32
    ):
        self.model = model.to(device=device, dtype=dtype).eval()
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.weights = weights
        self.device = torch.device(device)
        self.dtype = dtype
        self.embed_dim = (
            int(model.text_projection.shape[1])
            if getattr(model, "text_projection", None) is not None
            else int(self.embed_texts(["a"]).shape[1])
        )

    @classmethod
    def from_pretrained(
        cls, model_id: str, pretrained: str | None = None, device: str = "cpu", dtype: str | None = None
    ):
        """Return the scorer for `model_id` (+ `pretrained` tag or weights file) on `device` in `dtype`."""
        if pretrained is None and model_id in {"ViT-B-32"}:
            pretrained = "openai"  # DisCL's CLIP ViT-B/32
        if (model_id, pretrained) in OPEN_CLIP_HUB:  # DisCL's defaults answer before open_clip is imported
            _check_tag_weights(model_id, model_id, pretrained)
        import open_clip

        name, pre, weights = resolve_model(model_id, pretrained)
        torch_dtype = resolve_dtype(dtype, device)
        # OpenAI's weights were trained with QuickGELU; the plain `ViT-B-32` config must be told so
        tag_cfg = open_clip.get_pretrained_cfg(name, pre) if weights.startswith("tag ") else {}
        quick_gelu = bool((tag_cfg or {}).get("quick_gelu", False))
        try:
            with quiet_hub():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pre, device="cpu", force_quick_gelu=quick_gelu
                )
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            raise ScorerLoadError(
                f"open_clip cannot load {model_id!r} ({weights}): {type(err).__name__}: {err}"
            ) from err
        return cls(model, preprocess, tokenizer, model_id=name, weights=weights, device=device, dtype=torch_dtype)

    def describe(self) -> dict:
        """Return backend, model name, weights, dtype and the evaluation transform."""
        out = {
            "backend": self.backend,
            "model_id": self.model_id,
            "weights": self.weights,
            "dtype": str(self.dtype).replace("torch.", ""),
            "embed_dim": self.embed_dim,
            "preprocessing": repr(self._preprocess),
        }
        local = self.model_id[len("local-dir:") :] if self.model_id.startswith("local-dir:") else None
        if local or self.weights.startswith("file "):
            out["weights_signature"] = file_signature(local or self.weights[len("file ") :])
        return out

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Return open_clip's evaluation transform of one RGB image, (C, H, W)."""
        return self._preprocess(image)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Return (N, D) normalised image embeddings of a preprocessed batch."""
        return l2_normalise(self.model.encode_image(pixels.to(self.device, self.dtype)))

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return (N, D) normalised text embeddings."""
        if not texts:
            return np.zeros((0, getattr(self, "embed_dim", 0)), dtype=np.float32)
        return l2_normalise(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)))
