"""The names and defaults Phase 1's argument parsers show, importable without torch or the model libraries.

`--help` and argument errors must answer in about 2 s, so a parser cannot import the backend registries (they
import torch, diffusers, open_clip, timm) to learn their names. These tuples are the registries' names, written
out; tests/test_cli_startup.py asserts each equals its registry, so a new backend fails the test until it is
listed here.
"""

from __future__ import annotations

#: data_generation.generation.backends.GENERATORS (gene_img.py --generator)
GENERATOR_NAMES = ("diffusers-img2img", "pixel-ddpm", "sd-img2img", "sdxl-refiner")
#: data_generation.scoring.backends.SCORERS (comp_clip_scores.py --clip_backend)
SCORER_NAMES = ("hf-clip", "open_clip", "openclip", "probe", "transformers")
#: data_generation.mining.datasets.DATASETS (mine_hard.py / make_table.py --dataset)
DATASET_NAMES = ("folder", "imagenet_lt", "iwildcam", "table")
#: data_generation.mining.difficulty.DIFFICULTY_SCORERS once scorer_runs is imported (mine_hard.py --scorers)
DIFFICULTY_SCORER_NAMES = ("checkpoint", "dynamics", "predefined", "prototype", "random", "zero_shot_clip")
#: data_generation.prompting.text_prompts.LANGUAGE_MODELS (get_text_prompt.py --backend)
LANGUAGE_MODEL_NAMES = ("openai", "template", "transformers")

#: data_generation.generation.generate.DEFAULT_MODEL_ID
DEFAULT_MODEL_ID = "stabilityai/stable-diffusion-xl-refiner-1.0"
#: data_generation.scoring.backends.DEFAULT_MODELS
DEFAULT_CLIP_MODELS = {"transformers": "openai/clip-vit-base-patch32", "open_clip": "ViT-B-32"}
#: data_generation.scoring.score.DEFAULT_THRESHOLD
DEFAULT_THRESHOLD = 0.25
