"""gene_img.py: generate DisCL's synthetic-to-real spectrum for a CSV of hard samples.

    python data_generation/gene_img.py --data_csv assets/sample_iwildcam.csv --output_path runs/syn \
        --part 1 --total_parts 4

Images go to {output_path}/{class}/Strength{100s}_guidance{10g}_seed{seed}/{img}.jpg with a Parquet manifest
per shard; a rerun resumes. data_generation/README.md describes every flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names; torch and diffusers are imported by main() once the arguments are parsed
from curriculum.config import add_list_flag  # noqa: E402
from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from data_generation.cli_names import DEFAULT_MODEL_ID, GENERATOR_NAMES  # noqa: E402
from data_generation.generation.plan import DEFAULT_SEEDS, DEFAULT_STRENGTHS, DEFAULT_TEXT_GUIDANCE  # noqa: E402

#: how long the processes of one launch wait for each other before the merge (shares finish at different times)
BARRIER_TIMEOUT = timedelta(days=7)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of gene_img.py."""
    p = argparse.ArgumentParser(
        prog="gene_img.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("input / output (DisCL's flags)")
    io.add_argument(
        "--data_csv", required=True, help="hard-sample table: CSV/Parquet, canonical or either DisCL layout"
    )
    io.add_argument("--output_path", required=True, help="output folder (DisCL layout + manifests)")
    io.add_argument("--data_root", default=None, help="root for relative filepaths (default: current directory)")
    io.add_argument("--part", type=int, default=1, help="1-based shard index (default 1)")
    io.add_argument("--total_parts", type=int, default=1, help="number of shards of the image list (default 1)")
    m = p.add_argument_group("model")
    m.add_argument(
        "--model_id", default=DEFAULT_MODEL_ID, help=f"hub id or local pipeline folder (default {DEFAULT_MODEL_ID})"
    )
    m.add_argument(
        "--generator",
        default=None,
        choices=GENERATOR_NAMES,
        help="backend (default: from the folder's model_index.json)",
    )
    m.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"], help="default fp16 on GPU, fp32 on CPU")
    m.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    g = p.add_argument_group("spectrum")
    add_list_flag(g, "--strengths", float, DEFAULT_STRENGTHS, "img2img strengths (image guidance = 1 - strength)")
    add_list_flag(g, "--text_guidance", float, DEFAULT_TEXT_GUIDANCE, "classifier-free guidance scales (default 10)")
    add_list_flag(g, "--seeds", int, DEFAULT_SEEDS, "seeds (default 10 20 30 40 42 50 60 70)")
    g.add_argument("--steps", type=int, default=50, help="denoising steps of the full schedule (default 50)")
    g.add_argument("--width", type=int, default=None, help="output width (default: keep the source aspect)")
    g.add_argument("--height", type=int, default=None, help="output height (DisCL used 480x270 for iWildCam)")
    g.add_argument("--max_side", type=int, default=1024, help="longest side when neither --width nor --height is given")
    pr = p.add_argument_group("prompts")
    pr.add_argument(
        "--prompt_template",
        default=None,
        help="default 'a photo of {name} in the wild' (iWildCam), 'a photo of a {name}.' otherwise",
    )
    pr.add_argument(
        "--prompt_prefix",
        default="",
        help="text put before every prompt (the reference's ImageNet-LT: 'a 8k real photo: ' before a description)",
    )
    pr.add_argument(
        "--class_names", default=None, help="class-name map CSV (label,classname or iWildCam's y,...,english)"
    )
    pr.add_argument(
        "--prompt_json", default=None, help="JSON {class name: [prompt, ...]}; one is chosen per (image, seed)"
    )
    c = p.add_argument_group("CLIP check during generation (the reference's ImageNet-LT retries; off by default)")
    c.add_argument(
        "--retry_clip_model",
        default=None,
        help="CLIP hub id / folder: regenerate an image whose cosine with --retry_text_template is <= "
        "--retry_threshold, with the class's next description, keeping the best attempt",
    )
    c.add_argument("--retry_clip_backend", default="transformers", choices=["transformers", "open_clip"])
    c.add_argument("--retry_threshold", type=float, default=0.30, help="default 0.30 (the reference's)")
    c.add_argument("--retry_attempts", type=int, default=6, help="attempts per image, the first included (default 6)")
    c.add_argument("--retry_text_template", default="a photo of {name}", help="default 'a photo of {name}'")
    r = p.add_argument_group("run")
    r.add_argument("--batch_size", type=int, default=8, help="images per pipeline call (default 8)")
    r.add_argument("--strict", action="store_true", help="exit non-zero if any variant failed")
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate every variant of this shard, even those made before with other settings (a rerun with "
        "changed --model_id/--steps/--prompt_template/... is refused without it)",
    )
    r.add_argument(
        "--merge",
        action="store_true",
        help="merge the shard manifests into manifest.parquet afterwards (several processes: the main process, "
        "once all have finished)",
    )
    r.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def main(argv: list[str] | None = None) -> int:
    """Run gene_img with `argv`; return the exit code."""
    args = parse_args(build_parser(), argv, "gene_img")
    from curriculum.distributed import DistributedSetupError, barrier, init_process_group
    from data_generation.generation.backends import ModelLoadError
    from data_generation.generation.generate import GenerationConfig, run_generation
    from data_generation.generation.merge import merge_manifests
    from data_generation.scoring.backends import ScorerLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = GenerationConfig(
        data_csv=args.data_csv,
        output_path=args.output_path,
        data_root=args.data_root,
        part=args.part,
        total_parts=args.total_parts,
        model_id=args.model_id,
        generator=args.generator,
        strengths=args.strengths,
        text_guidance=args.text_guidance,
        seeds=args.seeds,
        steps=args.steps,
        width=args.width,
        height=args.height,
        max_side=args.max_side,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        prompt_template=args.prompt_template,
        prompt_prefix=args.prompt_prefix,
        class_names=args.class_names,
        prompt_json=args.prompt_json,
        strict=args.strict,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        preset=args.preset_record,
        retry_clip_model=args.retry_clip_model,
        retry_clip_backend=args.retry_clip_backend,
        retry_threshold=args.retry_threshold,
        retry_attempts=args.retry_attempts,
        retry_text_template=args.retry_text_template,
    )
    try:
        # several processes (torchrun, accelerate, srun): each takes a share of the part; the group (gloo, also
        # on GPUs: it only carries the barrier before the merge) waits as long as the slowest share takes
        process = init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
        summary = run_generation(cfg, process=process)
    except (ModelLoadError, ScorerLoadError, ValueError, OSError, DistributedSetupError) as err:
        print(f"gene_img: error: {err}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.failures_path:
        print(f"failures listed in {summary.failures_path}")
    if summary.failed and not args.strict:
        # exit 0 keeps a long sharded run going, so say it where it cannot be missed
        print(
            f"gene_img: WARNING: {summary.failed} of {summary.planned} planned images were NOT generated "
            f"({'; '.join(f'{k} x{v}' for k, v in summary.failure_reasons.most_common())}); "
            f"see {summary.failures_path}; --strict makes this exit 1",
            file=sys.stderr,
        )
    print(f"manifest: {summary.manifest_path}")
    if args.merge:
        barrier()  # every process's shard manifest is written before the main process reads them
        if process.is_main:
            try:
                merged = merge_manifests(args.output_path)
            except (ValueError, OSError) as err:
                print(f"gene_img: error: --merge: {err}", file=sys.stderr)
                return 2
            print(f"merged manifest: {merged.path} ({merged.rows} rows from {merged.parts} shard file(s))")
    return 1 if (args.strict and summary.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
