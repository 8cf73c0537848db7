"""diffusers img2img backend: SDXL refiner (the default) and SD 1.x/2.x img2img.

It wraps an upstream pipeline object and calls it unchanged. The seed-independent work is done once and
passed through arguments the upstream call already accepts:

* the prompt is encoded once per distinct prompt (`prompt_embeds`, `negative_prompt_embeds`, and the pooled
  embeddings for SDXL);
* the source image is preprocessed and VAE-encoded once per (image, size) for the whole run, not once per
  call: its posterior (the latent distribution) is kept in a bounded LRU cache across strengths, text
  guidance scales, seeds and batches. Each variant then samples its initial latents from that posterior with
  its own generator - exactly the draw the pipeline would make - and passes them as a 4-channel `image`,
  which the pipeline takes as latents.

Generators are consumed in the same order as inside the pipeline, so the result equals the plain pipeline
called on one image with the same generator (up to batched-kernel rounding, ~1e-6).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict

import numpy as np
import torch

from data_generation.generation.backends.base import GENERATORS, GenerationBatch, ModelLoadError
from data_generation.hub import load_pretrained, resolve_dtype

log = logging.getLogger(__name__)


def load_img2img_pipeline(model_id: str, torch_dtype: torch.dtype):
    """Return a diffusers img2img pipeline from a local folder, the local cache or the hub.

    A hub id that is not in the local cache fails before diffusers is imported, with a one-line
    ModelLoadError that names --model_id and the local-folder route (about 1.8 s for gene_img.py and
    mine_hard.py at load 1 (benchmarks/results/startup.md)); see `data_generation.hub.load_pretrained`.
    """
    how = (
        f"Download it where the hub is reachable (e.g. `hf download {model_id} --local-dir DIR`, or "
        f"`AutoPipelineForImage2Image.from_pretrained('{model_id}').save_pretrained(DIR)`) and pass --model_id DIR."
    )

    def load(**kw):
        from diffusers import AutoPipelineForImage2Image  # after the cache check: several CPU-seconds

        return AutoPipelineForImage2Image.from_pretrained(model_id, dtype=torch_dtype, **kw)

    return load_pretrained(
        model_id,
        load,
        kind="a diffusers img2img pipeline",
        flag="--model_id",
        how=how,
        error=ModelLoadError,
        cached_file="model_index.json",
    )


@GENERATORS.register("diffusers-img2img", "sdxl-refiner", "sd-img2img")
class DiffusersImg2ImgGenerator:
    """Image-guided generation with a diffusers SD/SDXL img2img pipeline (see the module docstring)."""

    pipeline_classes = (
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionPipeline",
    )

    def __init__(
        self, pipe, model_id: str, device: str = "cpu", prompt_cache_size: int = 4096, image_cache_size: int = 64
    ):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        if not isinstance(pipe, (StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline)):
            raise ModelLoadError(
                f"{model_id}: {type(pipe).__name__} is not an SD/SDXL img2img pipeline; this backend serves "
                "StableDiffusionImg2ImgPipeline and StableDiffusionXLImg2ImgPipeline"
            )
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.model_id = model_id
        self.device = torch.device(device)
        self.is_sdxl = isinstance(pipe, StableDiffusionXLImg2ImgPipeline)
        self.size_multiple = int(pipe.vae_scale_factor)
        # Passing latents as `image` needs the pipelines' 4-channel check to recognise them.
        self.latent_passthrough = int(pipe.vae.config.latent_channels) == 4
        self._prompt_cache: OrderedDict = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        # (image key, width, height) -> (weak reference to the image, pixel digest, VAE posterior)
        self._posterior_cache: OrderedDict = OrderedDict()
        self.image_cache_size = image_cache_size

    @classmethod
    def from_pretrained(cls, model_id: str, device: str = "cpu", dtype: str = "fp32") -> DiffusersImg2ImgGenerator:
        """Return the backend with the pipeline at `model_id` loaded on `device` in `dtype`."""
        torch_dtype = resolve_dtype(dtype, device)
        pipe = load_img2img_pipeline(model_id, torch_dtype)
        return cls(pipe, model_id=model_id, device=device)

    @property
    def dtype(self) -> torch.dtype:
        """Return the torch dtype the pipeline runs in (that of its UNet)."""
        return self.pipe.unet.dtype

    def keep_images(self, n: int) -> None:
        """Keep the VAE posteriors of at least the `n` most recently used source images; return None.

        run_generation passes its chunk size, so every image of a chunk is encoded once for all its variants.
        """
        self.image_cache_size = max(self.image_cache_size, int(n))

    def describe(self) -> dict:
        """Return the pipeline class, model id, dtype and scheduler (recorded in the manifest metadata)."""
        return {
            "pipeline": type(self.pipe).__name__,
            "model_id": self.model_id,
            "dtype": str(self.dtype).replace("torch.", ""),
            "scheduler": type(self.pipe.scheduler).__name__,
            "vae_scale_factor": self.size_multiple,
        }

    # ---------------------------------------------------------------------------------------------------
    # seed-independent work, done once
    def _encode_prompt(self, prompt: str, do_cfg: bool) -> tuple:
        key = (prompt, do_cfg)
        if key in self._prompt_cache:
            self._prompt_cache.move_to_end(key)
            return self._prompt_cache[key]
        with torch.no_grad():
            out = self.pipe.encode_prompt(
                prompt=[prompt], device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg
            )
        self._prompt_cache[key] = out
        if len(self._prompt_cache) > self._prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return out

    def _prompt_kwargs(self, prompts, do_cfg: bool) -> dict:
        encoded = [self._encode_prompt(p, do_cfg) for p in prompts]

        def cat(i):
            parts = [e[i] for e in encoded]
            return None if parts[0] is None else torch.cat(parts)

        names = ["prompt_embeds", "negative_prompt_embeds"]
        if self.is_sdxl:
            names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        return {name: cat(i) for i, name in enumerate(names)}

    def _posterior(self, image):
        """The VAE posterior of one preprocessed image, computed as the pipeline's prepare_latents does."""
        x = self.pipe.image_processor.preprocess(image).to(device=self.device, dtype=self.dtype)
        upcast = self.is_sdxl and self.pipe.vae.config.force_upcast
        if upcast:
            x = x.float()
            self.pipe.vae.to(dtype=torch.float32)
        with torch.no_grad():
            dist = self.pipe.vae.encode(x).latent_dist
        if upcast:
            self.pipe.vae.to(self.dtype)
        return dist

    @staticmethod
    def _digest(image) -> bytes:
        return hashlib.blake2b(image.mode.encode() + image.tobytes(), digest_size=16).digest()

    def _cached_posterior(self, key: str, image):
        """Return the posterior of `image` (source `key`), encoding it only if this image is not cached.

        A hit needs the same key and size and the same pixels: the same image object (what run_generation
        passes for every variant of a source) or, for another object, an equal pixel digest. So a key reused
        for a different picture is encoded again, never served a stale posterior.
        """
        ckey = (key, *image.size)
        entry = self._posterior_cache.get(ckey)
        if entry is not None:
            ref, digest, dist = entry
            if ref() is image or digest == self._digest(image):
                self._posterior_cache.move_to_end(ckey)
                return dist
        dist = self._posterior(image)
        if self.image_cache_size > 0:
            self._posterior_cache[ckey] = (weakref.ref(image), self._digest(image), dist)
            self._posterior_cache.move_to_end(ckey)
            while len(self._posterior_cache) > self.image_cache_size:
                self._posterior_cache.popitem(last=False)
        return dist

    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.pipe.vae.config
        z = z.to(self.dtype)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if self.is_sdxl and mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, 4, 1, 1).to(device=z.device, dtype=z.dtype)
            std = torch.tensor(std).view(1, 4, 1, 1).to(device=z.device, dtype=z.dtype)
            return (z - mean) * cfg.scaling_factor / std
        return cfg.scaling_factor * z

    def _initial_latents(self, batch: GenerationBatch) -> torch.Tensor:
        in_call: dict[tuple, object] = {}  # items of one call share their image's posterior even uncached
        latents = []
        for key, image, gen in zip(batch.image_keys, batch.images, batch.generators):
            k = (str(key), id(image))
            if k not in in_call:
                in_call[k] = self._cached_posterior(str(key), image)
            dist = in_call[k]
            # the same draw `retrieve_latents(vae.encode(x), generator)` makes inside the pipeline
            latents.append(self._scale_latents(dist.sample(gen)))
        return torch.cat(latents)

    # ---------------------------------------------------------------------------------------------------
    def generate(self, batch: GenerationBatch) -> list[np.ndarray]:
        """Return one HxWx3 float32 array in [0, 1] per item of `batch`."""
        if len(batch) == 0:
            return []
        do_cfg = batch.text_guidance > 1.0
        kwargs = self._prompt_kwargs(batch.prompts, do_cfg)
        image = self._initial_latents(batch) if self.latent_passthrough else list(batch.images)
        with torch.no_grad():
            out = self.pipe(
                image=image,
                strength=batch.strength,
                guidance_scale=batch.text_guidance,
                num_inference_steps=batch.steps,
                generator=list(batch.generators),
                output_type="np",
                **kwargs,
            ).images
        return [np.asarray(a, dtype=np.float32) for a in out]
