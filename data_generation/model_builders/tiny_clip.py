"""Tiny, randomly initialised CLIP models saved to folders, for tests, benchmarks and the offline demo.

Both have the real architecture classes and the real CLIP BPE tokenizer (shipped inside open_clip) at a few
hundred thousand parameters, and are loaded back through the same paths users use:

* transformers: `CLIPModel` + `CLIPProcessor` saved with `save_pretrained(folder)`, loaded with
  `--clip_backend transformers --clip_model FOLDER`;
* open_clip: a folder in open_clip's `local-dir` layout (`open_clip_config.json` + `open_clip_model.safetensors`),
  loaded with `--clip_backend open_clip --clip_model FOLDER`; the same folder also holds `{name}.json`, so
  `open_clip.add_model_config(folder)` + `--clip_model {name} --clip_pretrained FOLDER/open_clip_model.safetensors`
  works too.

    python -m data_generation.model_builders.tiny_clip --backend open_clip --out runs/tiny-open-clip
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from data_generation.model_builders.tiny import TINY_CLIP_TEXT, write_clip_tokenizer

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_OPEN_CLIP_NAME = "tiny-clip"


def save_tiny_hf_clip(out: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Build a tiny transformers CLIP (model + processor) and save it to `out`; return `out`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(TINY_CLIP_TEXT),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=image_size,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(out.parent / f".{out.name}-tokenizer")))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def tiny_open_clip_config(image_size: int = 32) -> dict:
    """Return the open_clip model config of the tiny CLIP (a ViT with 2 layers of width 32)."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }


def save_tiny_open_clip(out: str | Path, image_size: int = 32, seed: int = 0, name: str = TINY_OPEN_CLIP_NAME) -> Path:
    """Build a tiny open_clip CLIP and save it to `out` in open_clip's local-dir layout; return `out`."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_open_clip_config(image_size)
    (out / f"{name}.json").write_text(json.dumps(cfg, indent=2))
    open_clip.add_model_config(out / f"{name}.json")
    torch.manual_seed(seed)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None)
    preprocess_cfg = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess_cfg}, indent=2)
    )
    # contiguous copies: safetensors refuses shared or strided storage
    save_file(
        {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
        str(out / "open_clip_model.safetensors"),
    )
    return out


BUILDERS = {"transformers": save_tiny_hf_clip, "open_clip": save_tiny_open_clip}


def main(argv: list[str] | None = None) -> int:
    """CLI: build and save a tiny CLIP; return the exit code."""
    p = argparse.ArgumentParser(description="Build a tiny random-weight CLIP and save it to a folder.")
    p.add_argument("--backend", choices=sorted(BUILDERS), default="open_clip")
    p.add_argument("--out", required=True)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(BUILDERS[args.backend](args.out, image_size=args.image_size, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
