"""The SDXL refiner's real architecture with random weights, built offline from its published configs.

For GPU benchmarks: the same compute as `stabilityai/stable-diffusion-xl-refiner-1.0` (UNet 2.26 B, OpenCLIP
ViT-bigG text encoder 0.69 B, VAE 84 M parameters) without downloading 6 GB of weights. Random weights make
noise images; the point is the time and memory of the real pipeline. Nothing is built until asked: the full
model is ~3.0 B parameters (12 GB in fp32, 6 GB in fp16), so build it on the GPU, not on a small CPU box.

The config values below are written out from the refiner's published files - `unet/config.json`,
`vae/config.json`, `text_encoder_2/config.json`, `scheduler/scheduler_config.json`, `model_index.json` - and
agree with Stability's `configs/inference/sd_xl_refiner.yaml` (model_channels 384, channel_mult [1, 2, 4, 4],
attention at downsampling 2 and 4, 64-channel heads, transformer depth 4, context 1280, adm_in_channels 2560).
Built on the meta device they give exactly the parameter counts of the published fp32 safetensors files
(tested). `small=True` keeps the block layout and the refiner form but shrinks widths and depths, for tests.

    python -m data_generation.model_builders.refiner --out DIR --device cuda --dtype fp16   # saves a folder
    python benchmarks/bench_generation.py --build_refiner_arch --device cuda --dtype fp16 --size 480 272
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

SDXL_REFINER_ID = "stabilityai/stable-diffusion-xl-refiner-1.0"
RANDOM_INIT_ID = f"random-init:{SDXL_REFINER_ID}"

# unet/config.json (diffusers' `attention_head_dim` is the number of heads here: 384/64, 768/64, 1536/64)
REFINER_UNET_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (384, 768, 1536, 1536),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 4,
    "attention_head_dim": (6, 12, 24, 24),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "addition_embed_type_num_heads": 64,
    # pooled text embedding (1280) + 5 micro-conditions x 256: original size (2), crop (2), aesthetic score (1)
    "projection_class_embeddings_input_dim": 2560,
}

# vae/config.json (the SDXL VAE; fp16 inference upcasts it, as the pipeline does)
REFINER_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}

# text_encoder_2/config.json: OpenCLIP ViT-bigG/14 text tower as CLIPTextModelWithProjection
REFINER_TEXT_ENCODER_2_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# scheduler/scheduler_config.json
REFINER_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}

# model_index.json: the refiner form of StableDiffusionXLImg2ImgPipeline (no text_encoder/tokenizer)
REFINER_PIPELINE_CONFIG = {"requires_aesthetics_score": True, "force_zeros_for_empty_prompt": False}
REFINER_TOKENIZER_PAD = "!"  # tokenizer_2/tokenizer_config.json (OpenCLIP pads with id 0)

# the same block layout at CPU-test size: head width 16 instead of 64, one layer per block, a 32-wide text tower
_SMALL = {
    "unet": {
        "block_out_channels": (32, 64, 128, 128),
        "attention_head_dim": (2, 4, 8, 8),
        "layers_per_block": 1,
        "transformer_layers_per_block": 1,
        "addition_time_embed_dim": 8,
        "sample_size": 32,
    },
    "vae": {"block_out_channels": (32, 32, 64, 64), "layers_per_block": 1, "sample_size": 64},
    "text_encoder_2": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}


def micro_conditioning_dim(unet: dict, text_encoder_2: dict) -> int:
    """Return what the refiner UNet's `projection_class_embeddings_input_dim` must be for these configs.

    The refiner's added embedding is the pooled, projected text embedding concatenated with 5 time
    embeddings of `addition_time_embed_dim` (original height/width, crop top/left, aesthetic score).
    """
    return 5 * int(unet["addition_time_embed_dim"]) + int(text_encoder_2["projection_dim"])


def refiner_architecture_configs(small: bool = False) -> dict[str, dict]:
    """Return fresh copies of the refiner's configs: {'unet', 'vae', 'text_encoder_2', 'scheduler', 'pipeline'}.

    `small=True`: the same block types, refiner form and scheduler with narrow widths and few layers; the
    UNet's cross-attention and micro-conditioning sizes are derived from the small text encoder.
    """
    cfgs = {
        "unet": copy.deepcopy(REFINER_UNET_CONFIG),
        "vae": copy.deepcopy(REFINER_VAE_CONFIG),
        "text_encoder_2": copy.deepcopy(REFINER_TEXT_ENCODER_2_CONFIG),
        "scheduler": copy.deepcopy(REFINER_SCHEDULER_CONFIG),
        "pipeline": copy.deepcopy(REFINER_PIPELINE_CONFIG),
    }
    if small:
        for part, over in _SMALL.items():
            cfgs[part].update(over)
        cfgs["unet"]["cross_attention_dim"] = cfgs["text_encoder_2"]["hidden_size"]
        cfgs["unet"]["projection_class_embeddings_input_dim"] = micro_conditioning_dim(
            cfgs["unet"], cfgs["text_encoder_2"]
        )
    return cfgs


def build_refiner_modules(small: bool = False, device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """Return {'unet', 'vae', 'text_encoder_2', 'scheduler'} with the refiner architecture, random fp32 weights.

    The modules are created directly on `device` (`"meta"` allocates nothing: it is how the tests count the
    full model's parameters on a CPU).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfgs = refiner_architecture_configs(small)
    if str(device) != "meta":
        torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**cfgs["unet"])
        vae = AutoencoderKL(**cfgs["vae"])
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfgs["text_encoder_2"]))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder_2": text_encoder_2,
        "scheduler": EulerDiscreteScheduler(**cfgs["scheduler"]),
    }


def build_refiner_architecture(
    work_dir: str | Path, small: bool = False, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
):
    """Return a StableDiffusionXLImg2ImgPipeline with the SDXL refiner's architecture, random weights, eval mode.

    Built on `device` and cast to `dtype` (the full model: ~12 GB while built in fp32, then 6 GB in fp16;
    build it on the GPU). The tokenizer is the real CLIP BPE vocabulary from open_clip, written to `work_dir`.
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from data_generation.model_builders.tiny import clip_tokenizer

    mods = build_refiner_modules(small=small, device=device, seed=seed)
    for name in ("unet", "vae", "text_encoder_2"):
        mods[name] = (mods[name] if dtype == torch.float32 else mods[name].to(dtype=dtype)).eval()
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=mods["vae"],
        text_encoder=None,
        text_encoder_2=mods["text_encoder_2"],
        tokenizer=None,
        tokenizer_2=clip_tokenizer(Path(work_dir) / "tokenizer-src", pad_token=REFINER_TOKENIZER_PAD),
        unet=mods["unet"],
        scheduler=mods["scheduler"],
        **refiner_architecture_configs(small)["pipeline"],
    )
    return pipe


def load_refiner_generator(work_dir: str | Path, small: bool = False, device: str = "cpu", dtype: str = "fp32"):
    """Return a gene_img backend (DiffusersImg2ImgGenerator) over a freshly built random-weight refiner.

    Nothing is written to disk: the benchmark injects it into run_generation. `dtype` is a `--dtype` name.
    """
    from data_generation.generation.backends.diffusers_img2img import DiffusersImg2ImgGenerator
    from data_generation.hub import resolve_dtype

    torch_dtype = resolve_dtype(dtype, device)
    pipe = build_refiner_architecture(work_dir, small=small, device=device, dtype=torch_dtype)
    model_id = RANDOM_INIT_ID + (" (small)" if small else "")
    return DiffusersImg2ImgGenerator(pipe, model_id=model_id, device=device)


def save_refiner_architecture(
    out: str | Path, small: bool = False, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Path:
    """Build the random-weight refiner architecture and save it with `save_pretrained` to `out`; return `out`.

    `gene_img.py --model_id out` then loads it like the real model (the full one is 6 GB in fp16).
    """
    out = Path(out)
    pipe = build_refiner_architecture(
        out.parent / f".{out.name}-build", small=small, device=device, dtype=dtype, seed=seed
    )
    pipe.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build the random-weight SDXL refiner architecture and save it; return the exit code."""
    from data_generation.hub import resolve_dtype

    p = argparse.ArgumentParser(description="Save the SDXL refiner architecture with random weights (offline).")
    p.add_argument("--out", required=True, help="folder to write (a diffusers pipeline folder)")
    p.add_argument("--small", action="store_true", help="narrow widths and few layers (a quick CPU check)")
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to build (the full model needs ~12 GB while built)",
    )
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="saved dtype (fp32 on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = save_refiner_architecture(
        args.out, small=args.small, device=args.device, dtype=resolve_dtype(args.dtype, args.device), seed=args.seed
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
