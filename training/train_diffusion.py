"""train_diffusion.py: train a small class-conditional pixel-space diffusion model with a timestep curriculum.

    python training/train_diffusion.py --write_digits runs/digits --image_size 16   # the offline demo data
    python training/train_diffusion.py --data runs/digits/samples.csv --split train --output_dir runs/ddpm-cs \
        --sparsity cs --stage_epochs 5 10 15 20 30

Under `accelerate launch` it runs data parallel. A rerun with the same --output_dir resumes from the newest
checkpoint (with the same settings; a changed setting is an error). The trained model (EMA weights) is saved
to {output_dir}/model once the last stage is done, loadable with `ClassConditionalPixelPipeline.from_pretrained`
and usable as `gene_img.py --model_id {output_dir}/model` (the pixel-ddpm backend). training/README.md, section
"Diffusion training", describes every flag and file.
"""

from __future__ import annotations

import argparse
import logging
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

# the parser needs only names and defaults; torch and diffusers are imported once the arguments are parsed
from curriculum.config import add_list_flag, dataclass_from_args  # noqa: E402
from curriculum.presets import add_preset_arg, parse_args  # noqa: E402
from training.cli_names import DIFFUSION_DEFAULTS as D  # noqa: E402
from training.cli_names import (  # noqa: E402
    LOSS_WEIGHTING_NAMES,
    REGROWTH_NAMES,
    SPARSITY_NAMES,
    TIMESTEP_SAMPLER_NAMES,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of train_diffusion.py."""
    p = argparse.ArgumentParser(
        prog="train_diffusion.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("data / output")
    io.add_argument("--data", help="image folder (root/class_name/*.png) or sample table (CSV/Parquet)")
    io.add_argument(
        "--data_root", default=None, help="root for the table's relative filepaths (default: the table's folder)"
    )
    io.add_argument("--split", default=None, help="keep only table rows with this 'split' value (e.g. train)")
    io.add_argument("--output_dir", help="run folder: config, metrics, checkpoints, samples, model/")
    io.add_argument(
        "--write_digits",
        metavar="DIR",
        default=None,
        help="write scikit-learn's digits as RGB PNGs + samples.csv to DIR and exit",
    )
    m = p.add_argument_group("model")
    m.add_argument("--image_size", type=int, default=D.image_size, help=f"pixels per side (default {D.image_size})")
    add_list_flag(m, "--block_out_channels", int, D.block_out_channels, "UNet widths per level")
    m.add_argument("--layers_per_block", type=int, default=D.layers_per_block)
    m.add_argument("--norm_num_groups", type=int, default=D.norm_num_groups)
    m.add_argument("--no_mid_attention", action="store_true", help="no self-attention in the bottleneck")
    m.add_argument("--num_train_timesteps", type=int, default=D.num_train_timesteps)
    m.add_argument(
        "--beta_schedule", default=D.beta_schedule, help="diffusers beta schedule (linear, squaredcos_cap_v2, ...)"
    )
    c = p.add_argument_group("curriculum")
    c.add_argument(
        "--t_sampler", default=D.t_sampler, choices=TIMESTEP_SAMPLER_NAMES, help="timestep sampler (default stages)"
    )
    add_list_flag(c, "--stage_starts", float, D.stage_starts, "t_min of each stage (fraction of T)")
    add_list_flag(c, "--stage_epochs", int, D.stage_epochs, "epochs of each stage")
    c.add_argument(
        "--soft_kappa", type=float, default=D.soft_kappa, help="soft sampler: initial log-odds of t=T-1 over t=0"
    )
    c.add_argument("--loss_weighting", default=D.loss_weighting, choices=LOSS_WEIGHTING_NAMES)
    c.add_argument("--snr_gamma", type=float, default=D.snr_gamma, help="γ of Min-SNR-γ (default 5)")
    s = p.add_argument_group("channel sparsity")
    s.add_argument("--sparsity", default=D.sparsity, choices=SPARSITY_NAMES, help="none = C, cs = masks, cr = group-L1")
    s.add_argument(
        "--sparsity_start",
        type=float,
        default=D.sparsity_start,
        help="CS: masked fraction in stage 0 (-> 0 at the last)",
    )
    s.add_argument("--regrowth", default=D.regrowth, choices=REGROWTH_NAMES, help="CS: which channels grow back")
    s.add_argument("--cr_lambda_max", type=float, default=D.cr_lambda_max, help="CR: λ at the start (cosine to 0)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch_size", type=int, default=D.batch_size)
    o.add_argument("--learning_rate", type=float, default=D.learning_rate)
    o.add_argument("--weight_decay", type=float, default=D.weight_decay)
    o.add_argument("--max_grad_norm", type=float, default=D.max_grad_norm, help="0 disables clipping")
    o.add_argument("--ema_decay", type=float, default=D.ema_decay)
    o.add_argument("--p_uncond", type=float, default=D.p_uncond, help="label dropout for classifier-free guidance")
    o.add_argument("--seed", type=int, default=D.seed)
    o.add_argument("--device", default=None, help="cpu forces the CPU (default: accelerate's choice)")
    r = p.add_argument_group("samples / run")
    r.add_argument("--sample_steps", type=int, default=D.sample_steps, help="DDIM steps of the stage sample grids")
    r.add_argument("--sample_guidance", type=float, default=D.sample_guidance, help="guidance scale of the grids")
    r.add_argument("--samples_per_class", type=int, default=D.samples_per_class)
    r.add_argument("--no_resume", action="store_true", help="start over even if checkpoints exist")
    r.add_argument("--keep_checkpoints", type=int, default=D.keep_checkpoints, help="0 keeps all")
    r.add_argument("--stop_after_epoch", type=int, default=None, help="stop after this many epochs (a rerun resumes)")
    r.add_argument("--no_progress", action="store_true")
    add_preset_arg(p)  # also added by parse_args; here so that the built parser lists every flag
    return p


def config_from_args(args: argparse.Namespace) -> DiffusionTrainConfig:  # noqa: F821
    """Return the training config built from parsed flags."""
    from training.diffusion.trainer import DiffusionTrainConfig

    return dataclass_from_args(
        DiffusionTrainConfig,
        args,
        block_out_channels=tuple(args.block_out_channels),
        mid_attention=not args.no_mid_attention,
        stage_starts=tuple(args.stage_starts),
        stage_epochs=tuple(args.stage_epochs),
        resume=not args.no_resume,
        progress=not args.no_progress,
        preset=args.preset_record,
    )


def main(argv: list[str] | None = None) -> int:
    """Run train_diffusion with `argv`; return the exit code."""
    parser = build_parser()
    args = parse_args(parser, argv, "train_diffusion")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.write_digits:
        from training.diffusion.data import write_digits

        path = write_digits(args.write_digits, size=args.image_size, seed=args.seed)
        print(f"digits written: {path}")
        return 0
    if not args.data or not args.output_dir:
        parser.error("--data and --output_dir are required (or --write_digits DIR)")
    from training.diffusion.trainer import train_diffusion

    try:
        result = train_diffusion(config_from_args(args))
    except (ValueError, OSError) as err:
        print(f"train_diffusion: error: {err}", file=sys.stderr)
        return 2
    print(f"trained {result.epochs_done} epochs, {result.global_step} steps, final loss {result.final_loss:.4f}")
    print(f"metrics: {result.metrics_path}\nstages: {result.stages_path}")
    if result.model_dir:
        print(f"model: {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
