"""Generation throughput: gene_img vs the reference's naive loop vs a direct batched diffusers call.

Same pipeline, same work (images x strengths x seeds). Prints a table.

    python benchmarks/bench_generation.py                        # tiny SDXL-refiner-form pipeline, CPU
    python benchmarks/bench_generation.py --model_id DIR --device cuda --dtype fp16 --size 480 272
    # the real SDXL refiner architecture with random weights, built offline on the GPU (no download, ~6 GB fp16)
    python benchmarks/bench_generation.py --build_refiner_arch --device cuda --dtype fp16 --size 480 272 --json OUT.json

* naive: one pipeline call per (image, strength, seed), reloading and resizing the source image each time and
  letting the pipeline encode the prompt and the image every call (what DisCL's script does), then saving.
* direct batched: one diffusers call per batch of `--batch_size` variants (lists of prompts, images and
  generators); no file I/O at all. The ceiling for pure batching.
* gene_img: `run_generation` (the library call behind gene_img.py) with everything included: reading the
  table, planning, hashing seeds, decoding sources, batching, atomic JPEG writes, the Parquet manifest.
  Model loading (or building) is excluded from all three (it is done once, before timing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.machine import check_device, progress, records, set_threads  # noqa: E402
from curriculum.images import load_rgb, resize_to, save_image_atomic, to_pil  # noqa: E402
from data_generation.generation.backends import load_generator  # noqa: E402
from data_generation.generation.generate import GenerationConfig, run_generation  # noqa: E402
from data_generation.generation.seeding import make_generator  # noqa: E402
from data_generation.model_builders.refiner import load_refiner_generator  # noqa: E402
from data_generation.model_builders.tiny import save_tiny_pipeline  # noqa: E402

PHOTO = ROOT / "data_generation" / "iWildCam" / "sample_imgs" / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"


def make_sources(folder: Path, n: int) -> Path:
    """Write n distinct crops of the bundled photo and a sample table; return the table path."""
    photo = Image.open(PHOTO).convert("RGB")
    rows = []
    for i in range(n):
        p = folder / "src" / f"img{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        photo.crop((i * 30, i * 10, i * 30 + 560, i * 10 + 315)).save(p, quality=95)
        rows.append({"sample_id": f"img{i}", "filepath": str(p), "label": i % 4, "label_name": f"class{i % 4}"})
    table = folder / "samples.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def run_naive(gen, table: Path, strengths, seeds, steps, size, out: Path) -> int:
    """The reference pattern: one pipeline call per variant; return the number of images."""
    pipe = gen.pipe
    n = 0
    for row in pd.read_csv(table).itertuples():
        for s in strengths:
            for seed in seeds:
                img = resize_to(load_rgb(row.filepath), *size)
                arr = pipe(
                    prompt=f"a photo of a {row.label_name}.",
                    image=img,
                    strength=s,
                    guidance_scale=10.0,
                    num_inference_steps=steps,
                    generator=make_generator(row.sample_id, seed),
                    output_type="np",
                ).images[0]
                save_image_atomic(to_pil(arr), out / f"{row.sample_id}_{s}_{seed}.jpg")
                n += 1
    return n


def run_direct_batched(gen, table: Path, strengths, seeds, steps, size, batch_size: int) -> int:
    """Lists of prompts/images/generators per call, no I/O; return the number of images."""
    pipe = gen.pipe
    rows = list(pd.read_csv(table).itertuples())
    images = {r.sample_id: resize_to(load_rgb(r.filepath), *size) for r in rows}
    n = 0
    for s in strengths:
        items = [(r, seed) for r in rows for seed in seeds]
        for b in range(0, len(items), batch_size):
            chunk = items[b : b + batch_size]
            out = pipe(
                prompt=[f"a photo of a {r.label_name}." for r, _ in chunk],
                image=[images[r.sample_id] for r, _ in chunk],
                strength=s,
                guidance_scale=10.0,
                num_inference_steps=steps,
                generator=[make_generator(r.sample_id, seed) for r, seed in chunk],
                output_type="np",
            ).images
            n += len(out)
    return n


@records("bench_generation")
def main(argv: list[str] | None = None) -> int:
    """Run the three methods and print the table; return 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model_id", default=None, help="pipeline folder (default: build the tiny SDXL-refiner form)")
    src.add_argument(
        "--build_refiner_arch",
        nargs="?",
        const="full",
        choices=["full", "small"],
        default=None,
        help="build the SDXL refiner architecture with random weights on --device (full: the real "
        "sizes, ~6 GB in fp16, for a GPU; small: narrow widths, a quick CPU check)",
    )
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 20, 30, 40, 42, 50, 60, 70])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("W", "H"))
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"])
    p.add_argument("--skip_naive", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results (and the setup) to this JSON file")
    args = p.parse_args(argv)
    check_device("bench_generation", args.device)
    set_threads(args.threads or torch.get_num_threads())
    dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")

    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    try:
        t_build = time.perf_counter()
        progress(f"building/loading the pipeline on {args.device}")
        if args.build_refiner_arch:
            gen = load_refiner_generator(
                work / "refiner", small=args.build_refiner_arch == "small", device=args.device, dtype=dtype
            )
            model_id = gen.model_id
        else:
            model_id = args.model_id or str(save_tiny_pipeline("sdxl-refiner", work / "tiny-sdxl-refiner"))
            gen = load_generator(model_id, device=args.device, dtype=dtype)
        t_build = time.perf_counter() - t_build
        n_params = sum(
            p.numel() for m in gen.pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()
        )
        table = make_sources(work, args.images)
        size = tuple(args.size)
        work_items = args.images * len(args.strengths) * len(args.seeds)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        # warm-up (kernels, allocator) on a small batch
        progress("warm-up")
        run_direct_batched(gen, table, args.strengths[:1], args.seeds[:2], args.steps, size, args.batch_size)

        results = []

        def timed(name, fn):
            progress(f"timing {name}: {work_items} images ...")
            sync()
            t0 = time.perf_counter()
            n = fn()
            sync()
            dt = time.perf_counter() - t0
            assert n == work_items, (name, n, work_items)
            results.append((name, dt, n / dt))
            progress(f"  {name}: {dt:.1f} s, {n / dt:.2f} images/s")

        if not args.skip_naive:
            timed(
                "naive loop (reference)",
                lambda: run_naive(gen, table, args.strengths, args.seeds, args.steps, size, work / "naive"),
            )
        timed(
            "direct batched diffusers",
            lambda: run_direct_batched(gen, table, args.strengths, args.seeds, args.steps, size, args.batch_size),
        )

        def gene():
            cfg = GenerationConfig(
                data_csv=str(table),
                output_path=str(work / "gene"),
                model_id=model_id,
                strengths=args.strengths,
                seeds=args.seeds,
                text_guidance=[10.0],
                steps=args.steps,
                width=size[0],
                height=size[1],
                batch_size=args.batch_size,
                progress=False,
                prompt_template="a photo of a {name}.",
            )
            return run_generation(cfg, generator=gen).generated

        timed("gene_img (run_generation)", gene)

        desc = gen.describe()
        what = model_id if (args.model_id or args.build_refiner_arch) else "tiny, random weights"
        device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
        peak = torch.cuda.max_memory_allocated(args.device) / 2**30 if args.device.startswith("cuda") else None
        print(
            f"\nmodel: {desc['pipeline']} ({what}), {n_params / 1e9:.2f} B parameters, built/loaded in {t_build:.1f}s; "
            f"device {args.device} ({device_name}), {desc['dtype']}, {size[0]}x{size[1]}, {args.steps} steps, "
            f"batch {args.batch_size}, torch threads {torch.get_num_threads()}"
            + (f", peak GPU memory {peak:.1f} GiB" if peak is not None else "")
        )
        print(
            f"work: {args.images} images x {len(args.strengths)} strengths {args.strengths} x {len(args.seeds)} seeds"
            f" = {work_items} images\n"
        )
        base = {name: rate for name, _, rate in results}
        ref = base.get("naive loop (reference)")
        ceiling = base["direct batched diffusers"]
        print("| method | seconds | images/s | vs naive | vs direct batched |")
        print("|---|---:|---:|---:|---:|")
        for name, dt, rate in results:
            vs_naive = f"{rate / ref:.2f}x" if ref else "-"
            print(f"| {name} | {dt:.1f} | {rate:.2f} | {vs_naive} | {rate / ceiling:.2f}x |")
        if args.json:
            setup = {
                "model": what,
                "pipeline": desc["pipeline"],
                "parameters": n_params,
                "device": args.device,
                "device_name": device_name,
                "dtype": desc["dtype"],
                "size": list(size),
                "steps": args.steps,
                "batch_size": args.batch_size,
                "images": args.images,
                "strengths": args.strengths,
                "seeds": args.seeds,
                "work_items": work_items,
                "build_seconds": t_build,
                "peak_gpu_gib": peak,
            }
            rows = [
                {
                    "method": name,
                    "seconds": dt,
                    "images_per_s": rate,
                    "vs_naive": rate / ref if ref else None,
                    "vs_direct_batched": rate / ceiling,
                }
                for name, dt, rate in results
            ]
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"setup": setup, "results": rows}, indent=2) + "\n")
            print(f"results written to {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
