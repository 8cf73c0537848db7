"""transformers CLIP backend: `CLIPModel` + `CLIPProcessor` from a hub id or a local folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_generation.hub import load_pretrained, resolve_dtype
from data_generation.scoring.backends.base import (
    SCORERS,
    ScorerLoadError,
    TorchScorerMixin,
    file_signature,
    l2_normalise,
)


def _load(model_id: str, torch_dtype: torch.dtype):
    """Return (CLIPModel, CLIPProcessor) from a folder, the local cache or the hub; fail fast and clearly."""
    how = (
        f"Download it where the hub is reachable (e.g. `hf download {model_id} --local-dir DIR`)"
        " and pass --clip_model DIR."
    )

    def load(**kw):
        from transformers import CLIPModel, CLIPProcessor

        return CLIPModel.from_pretrained(model_id, dtype=torch_dtype, **kw), CLIPProcessor.from_pretrained(
            model_id, **kw
        )

    return load_pretrained(
        model_id,
        load,
        kind="a transformers CLIP model",
        flag="--clip_model",
        how=how,
        error=ScorerLoadError,
        cached_file="config.json",  # answer before importing transformers and retrying
    )


def _plain(value):
    """Return a JSON-friendly form of an image-processor setting (SizeDict -> dict without Nones)."""
    import dataclasses

    if dataclasses.is_dataclass(value):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


@SCORERS.register("transformers", "hf-clip")
class HFClipScorer(TorchScorerMixin):
    """CLIP through transformers: `get_image_features` / `get_text_features` (their `.pooler_output` is the
    projected embedding in transformers 5), preprocessed by the model's own `CLIPProcessor`."""

    backend = "transformers"

    def __init__(self, model, processor, model_id: str, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.model_id = model_id
        self.device = torch.device(device)
        self.embed_dim = int(model.config.projection_dim)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, model_id: str, pretrained: str | None = None, device: str = "cpu", dtype: str | None = None
    ):
        """Return the scorer with `model_id` (hub id or folder) loaded on `device` in `dtype`."""
        if pretrained:
            raise ScorerLoadError(
                "--clip_pretrained is for the open_clip backend; transformers reads weights from --clip_model"
            )
        model, processor = _load(model_id, resolve_dtype(dtype, device))
        return cls(model, processor, model_id=model_id, device=device)

    @property
    def dtype(self) -> torch.dtype:
        """Return the torch dtype the model runs in."""
        return self.model.dtype

    def describe(self) -> dict:
        """Return backend, model id, dtype and the image processor's settings."""
        ip = self.processor.image_processor
        prep = {
            k: getattr(ip, k, None)
            for k in ("size", "crop_size", "resample", "image_mean", "image_std", "do_center_crop")
        }
        out = {
            "backend": self.backend,
            "model_id": self.model_id,
            "dtype": str(self.dtype).replace("torch.", ""),
            "embed_dim": self.embed_dim,
            "image_processor": type(ip).__name__,
            "preprocessing": {k: _plain(v) for k, v in prep.items()},
        }
        if Path(self.model_id).is_dir():
            out["weights_signature"] = file_signature(self.model_id)
        return out

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Return the processor's pixel tensor (C, H, W) for one RGB image."""
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Return (N, D) normalised image embeddings of a preprocessed batch."""
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return l2_normalise(getattr(out, "pooler_output", out))

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return (N, D) normalised text embeddings (padded to the longest text, truncated at 77 tokens)."""
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        tok = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
        return l2_normalise(getattr(out, "pooler_output", out))
