"""The embedded default: gene_img on the bundled DisCL sample with a tiny pipeline built on the spot.

    python -m data_generation.quickstart            # writes runs/quickstart/

Builds a tiny random-weight SDXL-refiner-form pipeline (real diffusers classes, real CLIP tokenizer), saves
it with `save_pretrained`, then runs gene_img exactly as a user would with a real model folder: the reference
iWildCam hard-sample CSV (a real camera-trap photo of a cheetah), 10 strengths x 8 seeds, prompts from the
iWildCam common-name map, shard manifest merged. Offline: 42 CPU-seconds (135 s wall at a load average of about 15
on 2 CPU cores), measured 2026-12-02. The images are
noise-like: the weights are random. The point is the whole pipeline, files and formats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_generation import gene_img

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Build the tiny pipeline (once) and run gene_img on the bundled sample; return the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="where the model and images go")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--max_side", type=int, default=128)
    args = p.parse_args(argv)
    from data_generation.model_builders.tiny import save_tiny_pipeline  # torch: after the arguments

    t0 = time.perf_counter()
    out = Path(args.out)
    model = out / "tiny-sdxl-refiner"
    if not (model / "model_index.json").is_file():
        print(f"building a tiny SDXL-refiner-form pipeline in {model}")
        try:
            save_tiny_pipeline("sdxl-refiner", model)
        except OSError as err:
            print(f"quickstart: error: --out {out}: cannot write the tiny pipeline ({err})", file=sys.stderr)
            return 2
    code = gene_img.main(
        [
            "--data_csv",
            str(REPO / "assets" / "sample_iwildcam.csv"),
            "--data_root",
            str(REPO),
            "--class_names",
            str(REPO / "assets" / "iwildcam_class_names.csv"),
            "--output_path",
            str(out / "synthetic"),
            "--model_id",
            str(model),
            "--steps",
            str(args.steps),
            "--max_side",
            str(args.max_side),
            "--merge",
        ]
    )
    if code != 0:  # gene_img said why (e.g. a rerun with another --steps into the same --out)
        return code
    print(
        f"quickstart finished in {time.perf_counter() - t0:.1f}s: images under {out / 'synthetic'}, "
        f"manifest {out / 'synthetic' / 'manifest.parquet'}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
