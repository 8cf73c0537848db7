"""ClassConditionalPixelPipeline: a diffusers pipeline for small class-conditional pixel-space UNets.

Components are injected (a `UNet2DModel` whose class embedding has one extra *null* class for classifier-free
guidance, and a noise scheduler); `__call__` samples from noise with the full chain, or - given `image` and
`strength` < 1 - does SDEdit: the image is noised to the timestep where the last int(N·strength) of the
N-step schedule begin (as diffusers' img2img pipelines do) and denoised from there.

Randomness comes only from one `torch.Generator` per item (the initial noise; the scheduler's step noise
when it has any), so an item's output does not depend on the batch it is in (up to ~1e-6 of batched
kernels). The folder layout is diffusers' own (`model_index.json`, `unet/`, `scheduler/`) plus
`class_names.json` ({id: name}); `UNet2DModel.from_pretrained(folder, subfolder='unet')` loads the UNet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

CLASS_NAMES_FILE = "class_names.json"


def null_class(unet) -> int:
    """Return the id of the null (unconditional) class: the last class embedding."""
    n = unet.config.num_class_embeds
    if not n:
        raise ValueError("the UNet has no class embedding (num_class_embeds is not set)")
    return int(n) - 1


def write_class_names(folder: str | Path, names: dict[int, str]) -> Path:
    """Write `{id: name}` as `class_names.json` into a model folder; return its path."""
    path = Path(folder) / CLASS_NAMES_FILE
    path.write_text(json.dumps({str(k): v for k, v in sorted(names.items())}, indent=2) + "\n")
    return path


def read_class_names_json(folder: str | Path) -> dict[int, str]:
    """Return `{id: name}` from a model folder's `class_names.json` (empty if it has none)."""
    path = Path(folder) / CLASS_NAMES_FILE
    if not path.is_file():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def sdedit_timesteps(timesteps: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """Return the last int(steps·strength) timesteps of an N-step schedule (diffusers img2img's rule)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    n_run = min(int(steps * strength), steps)
    return timesteps[steps - n_run :]


class ClassConditionalPixelPipeline(DiffusionPipeline):
    """Class-conditional pixel-space sampling and SDEdit with classifier-free guidance."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_classes(self) -> int:
        """Return the number of real classes (the null class excluded)."""
        return null_class(self.unet)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        if guidance_scale == 1.0:
            return self.unet(x, t, class_labels=labels).sample
        null = torch.full_like(labels, null_class(self.unet))
        both = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
        eps_cond, eps_uncond = both.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        image: torch.Tensor | None = None,
        strength: float = 1.0,
        output_type: str = "np",
        progress: bool = False,
    ) -> ImagePipelineOutput:
        """Return generated images for `class_labels` (`output_type` 'np' HxWx3 floats in [0,1], 'pt' or 'pil').

        `image` (B×3×H×W in [-1, 1]) with `strength` < 1 runs SDEdit; at strength 1 the image is ignored and
        sampling starts from pure noise, as without an image.
        """
        device = self.unet.device
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).flatten()
        n = labels.numel()
        if n == 0:
            raise ValueError("class_labels is empty")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(f"class labels must be in [0, {self.num_classes}), got {labels.tolist()}")
        if isinstance(generator, (list, tuple)) and len(generator) != n:
            raise ValueError(f"{len(generator)} generators for {n} class labels")
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if image is not None:
            if image.ndim != 4 or image.shape[0] != n or image.shape[1] != self.unet.config.in_channels:
                raise ValueError(f"image must be {n}x{self.unet.config.in_channels}xHxW, got {tuple(image.shape)}")
            h, w = image.shape[-2:]
        dtype = self.unet.dtype
        shape = (n, self.unet.config.in_channels, h, w)

        # 1. timesteps: the full chain, or its tail for SDEdit
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        use_image = image is not None and strength < 1.0
        if use_image:
            timesteps = sdedit_timesteps(timesteps, num_inference_steps, strength)
        # 2. initial sample: one noise draw per item from its own generator
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32).to(
            device, dtype
        )
        if not use_image:
            x = noise * self.scheduler.init_noise_sigma
        elif len(timesteps) == 0:
            x = image.to(device, dtype)
        else:
            x = self.scheduler.add_noise(image.to(device, dtype), noise, timesteps[:1].repeat(n))
        # 3. denoise with classifier-free guidance
        for t in self.progress_bar(timesteps) if progress else timesteps:
            x_in = self.scheduler.scale_model_input(x, t)
            eps = self._eps(x_in, t, labels, guidance_scale)  # a 0-d t: the UNet broadcasts it
            x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        # 4. to [0, 1]
        out = (x.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return ImagePipelineOutput(images=out)
        arr = out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        if output_type == "pil":
            return ImagePipelineOutput(images=self.numpy_to_pil(arr))
        return ImagePipelineOutput(images=arr)
