"""train_probe.py: train the offline stand-in for CLIP (a small image classifier with a cosine head).

    python data_generation/train_probe.py --data runs/demo/data/samples.csv --split pool --out runs/demo/probe
    python data_generation/comp_clip_scores.py --syn_path runs/syn --clip_backend probe --clip_model runs/demo/probe \
        --threshold 0.5

The folder it writes is what `--clip_backend probe --clip_model DIR` loads: image-image similarity is the
cosine of the probe's features, image-text similarity its probability of the prompt's class (so
`--threshold` is a probability). See data_generation/scoring/backends/probe.py.
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, ""):
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.ensure_importable()

from curriculum.presets import parse_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Train a probe from a sample table and save it; return the exit code."""
    p = argparse.ArgumentParser(
        prog="train_probe.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="sample table (CSV/Parquet)")
    p.add_argument("--split", default=None, help="train on the rows of this split only (e.g. pool)")
    p.add_argument("--data_root", default=None, help="root of relative filepaths (default: the table's folder)")
    p.add_argument("--out", required=True, help="probe folder to write")
    p.add_argument("--arch", default="test_efficientnet", help="timm architecture of the backbone")
    p.add_argument("--img_size", type=int, default=16, help="input side in pixels")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    a = parse_args(p, argv, "train_probe")
    from data_generation.scoring.backends.probe import train_probe  # torch and timm: after the arguments

    try:
        s = train_probe(
            a.data,
            a.out,
            a.split,
            a.data_root,
            a.arch,
            a.img_size,
            a.epochs,
            a.batch_size,
            a.lr,
            seed=a.seed,
            progress=not a.no_progress,
        )
    except (ValueError, OSError, KeyError) as err:
        print(f"train_probe: error: {err}", file=sys.stderr)
        return 2
    print(f"probe {a.out}: {s['n_images']} images, training accuracy {s['train_accuracy']:.3f}, {s['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
