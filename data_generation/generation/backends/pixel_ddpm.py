"""pixel-ddpm backend: SDEdit with a small class-conditional pixel-space model (the offline demo's generator).

It wraps `ClassConditionalPixelPipeline` (a folder written by `training/train_diffusion.py`): each item's
source image is brought to the model's native `sample_size` (square for every model train_diffusion.py
writes), noised to the level set by `strength` with the item's own generator, and denoised with
classifier-free guidance towards the item's class label (`batch.labels`), guidance scale
`batch.text_guidance`. Prompts are not used: the model is conditioned on class ids, which are recorded
with their names in the folder's `class_names.json`.

Output size: always the native size, whatever `--width/--height` say (the models are trained at one
size). A source whose aspect differs from the model's is **center-cropped** to the model's aspect (the
largest central square for a square model) and then resized (bicubic), so it is never squashed; a warning
says so once per run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from curriculum.images import crop_resize, to_signed_array
from data_generation.generation.backends.base import GENERATORS, GenerationBatch, ModelLoadError

log = logging.getLogger(__name__)


def pil_to_tensor(images, size: tuple[int, int]) -> torch.Tensor:
    """Return PIL images center-cropped to the aspect of `size` (w, h) and resized to it, as a B×3×H×W float
    tensor in [-1, 1]."""
    arrs = [to_signed_array(crop_resize(im, size)) for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


@GENERATORS.register("pixel-ddpm")
class PixelDDPMGenerator:
    """Image-guided generation (SDEdit) with a ClassConditionalPixelPipeline folder."""

    pipeline_classes = ("ClassConditionalPixelPipeline",)

    def __init__(self, pipe, model_id: str, device: str = "cpu"):
        from data_generation.generation.backends.pixel_pipeline import (
            read_class_names_json,
        )  # diffusers is imported only when a model is used

        self.pipe = pipe.to(device)
        self.pipe.unet.eval()
        self.model_id = model_id
        self.device = torch.device(device)
        cfg = pipe.unet.config
        # the UNet halves the resolution once per down block but the last
        self.size_multiple = 2 ** (len(cfg.block_out_channels) - 1)
        size = cfg.sample_size
        self.native_size = (size, size) if isinstance(size, int) else (int(size[1]), int(size[0]))
        self.class_names = read_class_names_json(model_id)
        self._warned_resize = False

    @classmethod
    def from_pretrained(cls, model_id: str, device: str = "cpu", dtype: str = "fp32") -> PixelDDPMGenerator:
        """Return the backend with the pixel pipeline folder `model_id` loaded on `device` (always fp32)."""
        if not Path(model_id, "model_index.json").is_file():
            raise ModelLoadError(f"--model_id {model_id!r}: not a pixel-ddpm model folder (no model_index.json)")
        if dtype != "fp32":
            log.warning("pixel-ddpm runs in fp32 (asked for %s): the models are small", dtype)
        from data_generation.generation.backends.pixel_pipeline import ClassConditionalPixelPipeline

        try:
            pipe = ClassConditionalPixelPipeline.from_pretrained(model_id)
        except Exception as err:
            raise ModelLoadError(f"cannot load a ClassConditionalPixelPipeline from {model_id}: {err}") from err
        return cls(pipe, model_id=model_id, device=device)

    def describe(self) -> dict:
        """Return the pipeline class, model id, native size, scheduler and class count (manifest metadata)."""
        return {
            "pipeline": type(self.pipe).__name__,
            "model_id": self.model_id,
            "dtype": "float32",
            "scheduler": type(self.pipe.scheduler).__name__,
            "native_size": list(self.native_size),
            "num_classes": self.pipe.num_classes,
            "conditioning": "class label (prompts unused)",
        }

    def generate(self, batch: GenerationBatch) -> list[np.ndarray]:
        """Return one HxWx3 float32 array in [0, 1] per item, at the model's native size."""
        if len(batch) == 0:
            return []
        if batch.labels is None:
            raise ValueError("pixel-ddpm is class-conditional: the batch carries no labels")
        bad = [int(y) for y in batch.labels if not 0 <= int(y) < self.pipe.num_classes]
        if bad:
            raise ValueError(f"labels {bad} are outside the model's {self.pipe.num_classes} classes ({self.model_id})")
        if batch.images[0].size != self.native_size and not self._warned_resize:
            log.warning(
                "pixel-ddpm: source images (%s) are center-cropped to the aspect of the model's native "
                "size %s and resized to it; outputs are %s",
                batch.images[0].size,
                self.native_size,
                self.native_size,
            )
            self._warned_resize = True
        image = pil_to_tensor(batch.images, self.native_size).to(self.device)
        out = self.pipe(
            class_labels=[int(y) for y in batch.labels],
            generator=list(batch.generators),
            num_inference_steps=batch.steps,
            guidance_scale=float(batch.text_guidance),
            image=image,
            strength=float(batch.strength),
            output_type="np",
        ).images
        return [np.asarray(a, dtype=np.float32) for a in out]
