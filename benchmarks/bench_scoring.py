"""Benchmark: CLIPScore filtering, ours (batched, each real image and prompt once, cached) against the
reference approach (DisCL: one synthetic image at a time, re-embedding its prompt and real image each time),
with the same model on the same work. Prints a table.

    # open_clip ViT-B-32, random weights, 80 images (~2 min on 2 CPU cores)
    python benchmarks/bench_scoring.py
    python benchmarks/bench_scoring.py --backends open_clip transformers --sources 4 --device cuda

Random weights have exactly the compute of the real ViT-B/32, so throughput is honest; scores are not.
The work is DisCL's shape: every source image has `--strengths` x `--seeds` variants at 480x270 (its
iWildCam size), one prompt per class.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks.machine import check_device, progress, records, set_threads
from curriculum.contracts import (
    CLIP_IMG_SIM,
    CLIP_TXT_SIM,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    synthetic_id,
    variant_dirname,
)
from curriculum.images import load_rgb
from curriculum.tables import write_parquet
from data_generation.scoring.score import ScoringConfig, score_spectrum

PHOTO = (
    Path(__file__).resolve().parent.parent
    / "data_generation"
    / "iWildCam"
    / "sample_imgs"
    / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"
)


def make_work(root: Path, n_sources: int, strengths: list[float], seeds: list[int], size=(480, 270)) -> Path:
    """Write real images, synthetic variants (DisCL layout) and a manifest under `root`; return the syn folder."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(PHOTO).convert("RGB").resize(size), dtype=np.float32)
    rows, syn = [], root / "syn"
    for i in range(n_sources):
        sid, cls = f"img{i:03d}", f"class{i % 3}"
        real = np.clip(base + rng.normal(0, 10, base.shape), 0, 255)
        (root / "real").mkdir(parents=True, exist_ok=True)
        Image.fromarray(real.astype(np.uint8)).save(root / "real" / f"{sid}.jpg", quality=95)
        for s in strengths:
            for seed in seeds:
                # a stand-in for img2img: more noise at higher strength
                img = np.clip((1 - s) * real + s * rng.uniform(0, 255, base.shape), 0, 255).astype(np.uint8)
                rel = f"{cls}/{variant_dirname(s, 10.0, seed)}/{sid}.jpg"
                (syn / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(syn / rel, quality=95)
                rows.append(
                    {
                        "synthetic_id": synthetic_id(sid, s, 10.0, seed),
                        "sample_id": sid,
                        "label": i % 3,
                        "label_name": cls,
                        "prompt": f"a photo of {cls} in the wild",
                        "strength": s,
                        "image_guidance": round(1 - s, 6),
                        "text_guidance": 10.0,
                        "seed": seed,
                        "model_id": "bench",
                        "steps": 50,
                        "width": size[0],
                        "height": size[1],
                        "path": rel,
                        "filepath": f"{sid}.jpg",
                    }
                )
    write_parquet(
        pd.DataFrame(rows, columns=MANIFEST_COLUMNS),
        syn / MANIFEST_FILE,
        {"config": {"data_root": str(root / "real")}},
    )
    return syn


def reference_scores(scorer, syn: Path, real_root: Path, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """DisCL's loop: per synthetic image, load + embed it, its real image and its prompt; return (img, txt) sims."""
    img_sims, txt_sims = [], []
    for row in manifest.itertuples():
        s = scorer.embed_images([load_rgb(syn / row.path)])[0]
        r = scorer.embed_images([load_rgb(real_root / row.filepath)])[0]
        t = scorer.embed_texts([row.prompt])[0]
        img_sims.append(float(s @ r))
        txt_sims.append(float(s @ t))
    return np.array(img_sims), np.array(txt_sims)


def load_bench_scorer(backend: str, device: str):
    """Return a real-size CLIP ViT-B/32 with random weights for `backend`."""
    from data_generation.scoring.backends import load_scorer

    if backend == "open_clip":
        return load_scorer("open_clip", "ViT-B-32", pretrained="none", device=device)
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from data_generation.model_builders.tiny import write_clip_tokenizer
    from data_generation.scoring.backends.hf_clip import HFClipScorer

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())  # the defaults are openai/clip-vit-base-patch32's architecture
    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    model.save_pretrained(tmp)  # through the same folder-loading path users take
    tok = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tmp / "tok")))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(tmp)
    return HFClipScorer.from_pretrained(str(tmp), device=device)


@records("bench_scoring")
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["open_clip"], choices=["open_clip", "transformers"])
    p.add_argument("--sources", type=int, default=2, help="real source images (default 2)")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 20, 30, 40, 42, 50, 60, 70])
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both methods (default: torch's)")
    args = p.parse_args(argv)
    check_device("bench_scoring", args.device)
    set_threads(args.threads or torch.get_num_threads())

    with tempfile.TemporaryDirectory(prefix="bench-scoring-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        syn = make_work(root, args.sources, args.strengths, args.seeds)
        manifest = pd.read_parquet(syn / MANIFEST_FILE)
        n = len(manifest)
        print(
            f"work: {args.sources} real images x {len(args.strengths)} strengths x {len(args.seeds)} seeds = {n} "
            f"synthetic images at 480x270; device {args.device}, {torch.get_num_threads()} torch threads, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (a busy shared CPU slows batch-1 calls most)"
        )
        lines = []
        for backend in args.backends:
            progress(f"{backend}: loading the scorer, then the reference loop and ours (cold, warm cache) ...")
            scorer = load_bench_scorer(backend, args.device)
            scorer.embed_images([load_rgb(PHOTO)]), scorer.embed_texts(["warm-up"])  # first-call overheads
            t0 = time.perf_counter()
            ref_img, ref_txt = reference_scores(scorer, syn, root / "real", manifest)
            t_ref = time.perf_counter() - t0
            cache = root / f"cache-{backend}"
            cfg = ScoringConfig(
                syn_path=str(syn),
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                plots=False,
                progress=False,
                cache_dir=str(cache),
                output_dir=str(root / f"out-{backend}"),
            )
            timings = {}
            for label in ("cold", "warm"):
                t0 = time.perf_counter()
                res = score_spectrum(cfg, scorer=scorer)
                timings[label] = (time.perf_counter() - t0, res)
            ours = timings["cold"][1].scores.set_index("synthetic_id").loc[manifest["synthetic_id"]]
            diff = max(
                np.abs(ours[CLIP_IMG_SIM].to_numpy() - ref_img).max(),
                np.abs(ours[CLIP_TXT_SIM].to_numpy() - ref_txt).max(),
            )
            name = f"{backend} ViT-B-32"
            lines.append((name, "reference: 1 image at a time, re-embeds prompt + real", t_ref, 1.0, float("nan")))
            lines.append(
                (
                    name,
                    f"ours: batch {args.batch_size}, real/prompt once (cold)",
                    timings["cold"][0],
                    t_ref / timings["cold"][0],
                    diff,
                )
            )
            lines.append(
                (
                    name,
                    "ours: rerun / new threshold (cache)",
                    timings["warm"][0],
                    t_ref / timings["warm"][0],
                    float("nan"),
                )
            )
        print()
        print("| model | method | seconds | images/s | speedup | max abs score diff vs reference |")
        print("|---|---|---:|---:|---:|---:|")
        for name, method, secs, speed, diff in lines:
            d = "" if np.isnan(diff) else f"{diff:.1e}"
            print(f"| {name} | {method} | {secs:.2f} | {n / secs:.1f} | {speed:.1f}x | {d} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
