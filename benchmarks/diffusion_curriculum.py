"""Benchmark: timestep curriculum and channel sparsity at equal training steps, on scikit-learn's digits.

    python benchmarks/diffusion_curriculum.py            # --quick (default): 10 epochs per variant
    python benchmarks/diffusion_curriculum.py --full     # the seed recipe's 5/10/15/20/30 epochs

Trains five 16 px class-conditional models on the same data for the same number of steps - uniform t,
Min-SNR-γ (uniform t), C (stages), CS (stages + bottleneck masks), CR (stages + group-L1) - and judges each by a
logistic-regression classifier trained on held-out real digits (accuracy on 'class c' samples) and a
Fréchet distance between PCA features of samples and of the held-out real digits. Sparsity per stage, as
measured at each stage's end (stages.csv): bottleneck channels exactly zero on the probe batch, and conv
output channels whose filter norm is below 1e-2 × their layer's largest. Prints a Markdown table and
writes it to {out}/results.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from benchmarks.machine import progress, records, set_threads  # noqa: E402
from curriculum.tables import markdown_table, write_csv  # noqa: E402
from training.diffusion.data import load_pixel_dataset, write_digits  # noqa: E402
from training.diffusion.eval import fit_judge, grey_features, sample_classes  # noqa: E402
from training.diffusion.trainer import DiffusionTrainConfig, train_diffusion  # noqa: E402

VARIANTS = {
    "uniform": dict(t_sampler="uniform"),
    "min-snr": dict(t_sampler="uniform", loss_weighting="min_snr"),
    "C": dict(t_sampler="stages"),
    "CS": dict(t_sampler="stages", sparsity="cs"),
    "CR": dict(t_sampler="stages", sparsity="cr"),
}


@records("diffusion_curriculum")
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_diffusion", help="working folder (data, runs, results.csv)")
    p.add_argument("--full", action="store_true", help="5/10/15/20/30 epochs instead of the quick 1/1/2/2/4")
    p.add_argument("--stage_epochs", type=int, nargs=5, default=None, help="epochs of the 5 stages (overrides --full)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--per_class", type=int, default=None, help="samples per class for the judges (quick 30, full 100)")
    p.add_argument("--steps", type=int, default=25, help="DDIM sampling steps")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is the most robust on a shared machine)"
    )
    args = p.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    epochs = tuple(args.stage_epochs) if args.stage_epochs else (5, 10, 15, 20, 30) if args.full else (1, 1, 2, 2, 4)
    per_class = args.per_class or (100 if args.full else 30)

    progress("writing the digits and fitting the judge")
    table = write_digits(out / "digits", size=16, seed=args.seed)
    train = load_pixel_dataset(table, 16, split="train")
    held = load_pixel_dataset(table, 16, split="test")
    judge = fit_judge(grey_features(held.images), held.labels.numpy(), seed=args.seed)
    real_train = grey_features(train.images)
    rows = [
        {
            "variant": "real train images (reference)",
            "steps": 0,
            "classifier_acc": judge.accuracy(real_train, train.labels.numpy()),
            "frechet_pca32": judge.frechet(real_train),
            "train_s": 0.0,
            "final_loss": float("nan"),
            "bottleneck_zero_per_stage": "",
            "conv_near_zero_per_stage": "",
        }
    ]
    print(
        f"digits: {len(train)} train / {len(held)} held out; judge 5-fold CV accuracy on held-out real "
        f"{judge.cv_accuracy:.3f}; epochs per stage {epochs}",
        flush=True,
    )
    for name in args.variants:
        cfg = DiffusionTrainConfig(
            data=str(table),
            output_dir=str(out / "runs" / name),
            stage_epochs=epochs,
            seed=args.seed,
            resume=False,
            progress=False,
            device="cpu",
            sample_steps=args.steps,
            sample_guidance=args.guidance,
            **VARIANTS[name],
        )
        t0 = time.perf_counter()
        res = train_diffusion(cfg, train)
        train_s = time.perf_counter() - t0
        imgs, labels = sample_classes(res.model_dir, train.num_classes, per_class, args.steps, args.guidance, args.seed)
        feats = grey_features(imgs)
        stages = pd.read_csv(res.stages_path)
        rows.append(
            {
                "variant": name,
                "steps": res.global_step,
                "classifier_acc": judge.accuracy(feats, labels),
                "frechet_pca32": judge.frechet(feats),
                "train_s": train_s,
                "final_loss": res.final_loss,
                "bottleneck_zero_per_stage": _per_stage(stages["bottleneck_sparsity_reached"]),
                "conv_near_zero_per_stage": _per_stage(stages["conv_near_zero_channel_fraction"]),
            }
        )
        print(f"{name}: {rows[-1]}", flush=True)
    df = pd.DataFrame(rows)
    write_csv(df, out / "results.csv")
    print(markdown_table(df))
    return 0


def _per_stage(values) -> str:
    """Return the per-stage values as one space-separated string with two decimals."""
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
