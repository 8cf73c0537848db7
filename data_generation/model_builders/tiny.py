"""Tiny, randomly initialised diffusers img2img pipelines built from configs, for tests, benchmarks and the
offline quick start (diffusers' own tests build theirs the same way).

They have the real architecture *classes* (UNet2DConditionModel, AutoencoderKL, CLIP text encoders, the real
CLIP BPE tokenizer that ships inside open_clip) at a few million parameters, and are saved with
`save_pretrained` so that gene_img loads them through the same `from_pretrained(folder)` path as a real model.

    python -m data_generation.model_builders.tiny --kind sdxl-refiner --out runs/tiny-sdxl-refiner

The real-size SDXL refiner architecture with random weights (for GPU benchmarks) is built by
`data_generation.model_builders.refiner`.
"""

from __future__ import annotations

import argparse
import gzip
import json
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[str]]:
    """Return (vocab, merges) of the CLIP BPE tokenizer, built from open_clip's bundled merges file."""
    import open_clip.tokenizer as oct

    merges = gzip.open(oct.default_bpe(), "rt", encoding="utf-8").read().split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(oct.bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write vocab.json/merges.txt of the real CLIP tokenizer to `folder` and return the folder.

    `CLIPTokenizer.from_pretrained(folder)` then gives the ids open_clip gives (49408 tokens, 77 max length).
    `pad_token`: OpenAI CLIP pads with `<|endoftext|>`; SDXL's OpenCLIP `tokenizer_2` pads with `!` (id 0).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": pad_token,
                "do_lower_case": True,
                "tokenizer_class": "CLIPTokenizer",
            }
        )
    )
    return folder


def clip_tokenizer(tmp_dir: str | Path, pad_token: str = "<|endoftext|>"):
    """Return a transformers CLIPTokenizer with the real CLIP vocabulary (written to `tmp_dir`)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tmp_dir, pad_token=pad_token)))


#: the tiny CLIP text encoder (real vocabulary and special tokens, width 32, 2 layers) every builder uses
TINY_CLIP_TEXT = dict(
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    hidden_size=32,
    intermediate_size=37,
    layer_norm_eps=1e-5,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
)


def _text_config(**kw):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{**TINY_CLIP_TEXT, **kw})


def _vae(sample_size: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        sample_size=sample_size,
        force_upcast=False,
    )


#: the UNet layout both tiny img2img pipelines share (two levels, one cross-attention level, 32-d text)
TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    norm_num_groups=32,
)


def _eval_modules(pipe):
    """Return `pipe` with every torch module among its components in eval mode."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def build_tiny_sd_img2img(work_dir: str | Path, seed: int = 0):
    """Return a tiny StableDiffusionImg2ImgPipeline (SD 1.x layout), eval mode, random weights."""
    from diffusers import PNDMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET, attention_head_dim=4)
    vae = _vae(64)
    text_encoder = CLIPTextModel(_text_config())
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(Path(work_dir) / "tokenizer-src"),
        unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    return _eval_modules(pipe)


def build_tiny_sdxl_refiner(work_dir: str | Path, seed: int = 0):
    """Return a tiny StableDiffusionXLImg2ImgPipeline in the refiner form, eval mode, random weights.

    Like stabilityai/stable-diffusion-xl-refiner-1.0: only `text_encoder_2`/`tokenizer_2`, an aesthetic
    score in the micro-conditioning (`requires_aesthetics_score=True`, so the UNet's
    `projection_class_embeddings_input_dim` = 5 x `addition_time_embed_dim` + the text projection size), and
    an Euler discrete scheduler.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    time_dim, proj_dim = 8, 32
    unet = UNet2DConditionModel(
        **TINY_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=5 * time_dim + proj_dim,
    )
    vae = _vae(64)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection_dim=proj_dim))
    tokenizer_2 = clip_tokenizer(Path(work_dir) / "tokenizer-src")
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    components = dict(
        vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer_2
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        **components, unet=unet, scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False
    )
    return _eval_modules(pipe)


BUILDERS = {"sd-img2img": build_tiny_sd_img2img, "sdxl-refiner": build_tiny_sdxl_refiner}


def save_tiny_pipeline(kind: str, out: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline `kind` and save it to `out` with `save_pretrained`; return `out`."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny pipeline {kind!r}; choose from {sorted(BUILDERS)}")
    out = Path(out)
    pipe = BUILDERS[kind](out.parent / f".{out.name}-build", seed=seed)
    pipe.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build and save a tiny pipeline; return the exit code."""
    p = argparse.ArgumentParser(description="Build a tiny random-weight img2img pipeline and save it.")
    p.add_argument("--kind", choices=sorted(BUILDERS), default="sdxl-refiner")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(save_tiny_pipeline(args.kind, args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
