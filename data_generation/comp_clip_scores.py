"""comp_clip_scores.py: CLIPScore the synthetic spectrum and keep the good images (DisCL's filter, batched).

    python data_generation/comp_clip_scores.py --syn_path runs/syn --threshold 0.25 \
        --clip_backend open_clip --clip_model ViT-B-32 --clip_pretrained openai

Reads {syn_path}/manifest.parquet (or the shard manifests; or walks DisCL's folder layout) and writes, beside
it: clip_scores.parquet (manifest + clip_img_sim, clip_txt_sim, keep, score_status), manifest-filtered.parquet
(the kept rows), clip_summary.csv, clip_failures.csv, clip_score_distributions.png, clip_spectrum_grid.png.
Embeddings are cached under {syn_path}/clip_cache, so a rerun with a new threshold embeds nothing again.
"""

from __future__ import annotations

import argparse
import logging
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names; torch and the CLIP libraries are imported by main() once the arguments are parsed
from curriculum.config import dataclass_from_args  # noqa: E402
from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from data_generation.cli_names import DEFAULT_CLIP_MODELS as DEFAULT_MODELS  # noqa: E402
from data_generation.cli_names import DEFAULT_THRESHOLD, SCORER_NAMES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of comp_clip_scores.py."""
    p = argparse.ArgumentParser(
        prog="comp_clip_scores.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("input / output (DisCL's flags first)")
    io.add_argument("--syn_path", required=True, help="the generation output folder")
    io.add_argument(
        "--real_path", help="root of the manifest's real filepaths (default: the data_root it records, else the cwd)"
    )
    io.add_argument(
        "--manifest", help="manifest to score (default: {syn_path}/manifest.parquet or the shard manifests)"
    )
    io.add_argument("--walk", action="store_true", help="ignore any manifest and walk DisCL's folder layout")
    io.add_argument("--data_csv", default=None, help="sample table: labels and real filepaths for a folder walk")
    io.add_argument(
        "--prompt_template",
        help="prompt for a folder walk: 'iwildcam' (a photo of {name} in the wild), 'imagenet_lt'/'default' "
        "(a photo of a {name}.) or a literal with {name}; default from the --data_csv layout",
    )
    io.add_argument(
        "--class_names", default=None, help="class-name map CSV for walk prompts (label,classname or y,...,english)"
    )
    io.add_argument("--output_dir", default=None, help="where outputs go (default: --syn_path)")
    f = p.add_argument_group("filter")
    f.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"keep clip_txt_sim >= this (default {DEFAULT_THRESHOLD}, DisCL iWildCam; 0.30 for ImageNet-LT)",
    )
    f.add_argument(
        "--text_template",
        default=None,
        help="score each image against this text with {name} = its class name (the reference's ImageNet-LT "
        "filter: 'a photo of {name}'); default: the image's generation prompt",
    )
    f.add_argument("--img_threshold", type=float, default=None, help="also require clip_img_sim >= this (default: off)")
    m = p.add_argument_group("model")
    m.add_argument("--clip_backend", default="transformers", choices=SCORER_NAMES, help="default transformers")
    m.add_argument(
        "--clip_model",
        help=f"hub id / open_clip name / local folder (default {DEFAULT_MODELS['transformers']} for transformers, "
        f"{DEFAULT_MODELS['open_clip']} for open_clip)",
    )
    m.add_argument(
        "--clip_pretrained",
        help="open_clip only: pretrained tag (default openai for ViT-B-32), a local .safetensors/.bin, "
        "or 'none' (random)",
    )
    m.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    m.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"], help="default fp16 on GPU, fp32 on CPU")
    r = p.add_argument_group("run")
    r.add_argument("--batch_size", type=int, default=64, help="images per forward pass (default 64)")
    r.add_argument("--num_workers", type=int, default=2, help="threads decoding/preprocessing images (default 2)")
    r.add_argument("--cache_dir", default=None, help="embedding cache (default {syn_path}/clip_cache)")
    r.add_argument("--no_cache", action="store_true", help="do not read or write the embedding cache")
    r.add_argument("--no_plots", action="store_true", help="skip the PNGs")
    r.add_argument("--grid_samples", type=int, default=4, help="source images in the spectrum grid (default 4)")
    r.add_argument("--strict", action="store_true", help="exit 1 if any synthetic image could not be scored")
    r.add_argument("--no_progress", action="store_true", help="no progress bars")
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def main(argv: list[str] | None = None) -> int:
    """Run comp_clip_scores with `argv`; return the exit code (2 on bad input or an unloadable model)."""
    args = parse_args(build_parser(), argv, "comp_clip_scores")
    from curriculum.distributed import DistributedSetupError, init_process_group
    from curriculum.tables import TableError
    from data_generation.scoring.backends import ScorerLoadError
    from data_generation.scoring.index import SpectrumError
    from data_generation.scoring.report import format_summary
    from data_generation.scoring.score import ScoringConfig, score_spectrum, summarize

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = dataclass_from_args(
        ScoringConfig, args, plots=not args.no_plots, progress=not args.no_progress, preset=args.preset_record
    )
    try:
        # several processes (torchrun, accelerate, srun): each embeds a share; the main process writes
        process = init_process_group()
        result = score_spectrum(cfg, process=process)
    except (ScorerLoadError, SpectrumError, TableError, ValueError, OSError, DistributedSetupError) as err:
        print(f"comp_clip_scores: error: {err}", file=sys.stderr)
        return 2
    if not process.is_main:
        return 1 if (args.strict and result.n_failed) else 0
    print(format_summary(summarize(result.scores)))
    print(result.line())
    for name, path in result.paths.items():
        print(f"{name}: {path}")
    return 1 if (args.strict and result.n_failed) else 0


if __name__ == "__main__":
    sys.exit(main())
