"""Benchmark: gene_img and comp_clip_scores with 1 and 2 processes (torchrun, gloo) on the same work.

    python benchmarks/bench_multiprocess.py                # 8 images x 3 strengths x 4 seeds, 1 thread each
    python benchmarks/bench_multiprocess.py --threads 1 --processes 1 2 --images 8

Each run is the real CLI under `python -m torch.distributed.run --nproc_per_node P` (P = 1 is the same
launcher with one process), OMP_NUM_THREADS = --threads per process. Generation uses the tiny SDXL-refiner-form
pipeline (64x64, --steps); scoring uses open_clip ViT-B-32 with random weights (the real model's compute) on the
images the 1-process generation wrote, without the embedding cache. Wall time includes starting the
processes and loading the model; each process's own rate is read from its summary line. The load average of
the machine is recorded before every run: on a shared machine, other jobs' load is in the numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.machine import machine_line, write_result  # noqa: E402
from curriculum.tables import markdown_table  # noqa: E402

PHOTO = REPO / "data_generation" / "iWildCam" / "sample_imgs" / "8b5d271c-21bc-11ea-a13a-137349068a90.jpg"
GEN_RE = re.compile(r"generated (\d+), .* in ([\d.]+)s \(([\d.]+) img/s\)")
EMB_RE = re.compile(r"process (\d+)/(\d+) embedded (\d+) of (\d+) synthetic images")


def make_table(root: Path, n: int) -> Path:
    """Write `n` hard images (the sample photo with noise) and their table; return the CSV."""
    rng = np.random.default_rng(0)
    base = np.asarray(Image.open(PHOTO).convert("RGB").resize((96, 64)), dtype=np.float32)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "imgs" / f"img{i:03d}.jpg", quality=95)
        rows.append({"sample_id": f"img{i:03d}", "filepath": f"imgs/img{i:03d}.jpg", "label": i % 3})
    table = pd.DataFrame(rows).assign(label_name=lambda d: "class" + d["label"].astype(str))
    table.to_csv(root / "hard.csv", index=False)
    return root / "hard.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list[str], processes: int, threads: int) -> tuple[float, str, float]:
    """Run `script` under torchrun with `processes` processes; return (wall seconds, output, load average)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    cmd += ["--master_port", str(free_port()), script, *args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return wall, done.stdout + done.stderr, load


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write it to benchmarks/results/multiprocess.md; return 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.6, 0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 20, 30, 40])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process (default 1)")
    p.add_argument("--clip_model", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--out", default=None, help="also write the table here (it always goes to benchmarks/results/)")
    args = p.parse_args(argv)
    from data_generation.model_builders.tiny import save_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-mp-"))
    rows = []
    try:
        model = save_tiny_pipeline("sdxl-refiner", work / "tiny-sdxl-refiner")
        csv = make_table(work / "data", args.images)
        n_work = args.images * len(args.strengths) * len(args.seeds)
        gen_flags = ["--data_csv", str(csv), "--data_root", str(work / "data"), "--model_id", str(model)]
        gen_flags += ["--strengths", *map(str, args.strengths), "--seeds", *map(str, args.seeds)]
        gen_flags += ["--steps", str(args.steps), "--width", "64", "--height", "64", "--no_progress", "--merge"]
        first = None
        for n in args.processes:
            out = work / f"syn-{n}"
            gen_args = [*gen_flags, "--output_path", str(out)]
            wall, log, load = launch("data_generation/gene_img.py", gen_args, n, args.threads)
            per = [(int(a), float(b), float(c)) for a, b, c in GEN_RE.findall(log)]
            assert sum(a for a, _, _ in per) == n_work, log[-2000:]
            first = first or out
            rows.append(
                {
                    "command": "gene_img",
                    "processes": n,
                    "threads each": args.threads,
                    "images": n_work,
                    "wall s": round(wall, 1),
                    "images/s (wall)": round(n_work / wall, 2),
                    "per process: images, s, images/s": "; ".join(f"{a}, {b:.1f}, {c:.2f}" for a, b, c in per),
                    "load avg before": round(load, 1),
                }
            )
            print(rows[-1], flush=True)
        score_flags = ["--syn_path", str(first), "--real_path", str(work / "data"), "--clip_backend", "open_clip"]
        score_flags += ["--clip_model", args.clip_model, "--clip_pretrained", "none", "--no_cache", "--no_plots"]
        score_flags += ["--batch_size", "16", "--num_workers", "1", "--no_progress", "--threshold", "0.0"]
        for n in args.processes:
            out = work / f"scores-{n}"
            wall, log, load = launch(
                "data_generation/comp_clip_scores.py", [*score_flags, "--output_dir", str(out)], n, args.threads
            )
            per = [int(k) for _, _, k, _ in EMB_RE.findall(log)] or [n_work]
            rows.append(
                {
                    "command": "comp_clip_scores",
                    "processes": n,
                    "threads each": args.threads,
                    "images": n_work,
                    "wall s": round(wall, 1),
                    "images/s (wall)": round(n_work / wall, 2),
                    "per process: images, s, images/s": "; ".join(f"{k} synthetic" for k in per),
                    "load avg before": round(load, 1),
                }
            )
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    frame = pd.DataFrame(rows)
    for cmd in ("gene_img", "comp_clip_scores"):
        sel = frame["command"] == cmd
        base = frame.loc[sel & (frame["processes"] == min(args.processes)), "wall s"]
        if len(base):
            frame.loc[sel, "speed-up (wall)"] = (float(base.iloc[0]) / frame.loc[sel, "wall s"]).round(2)
    header = (
        f"# bench_multiprocess: {args.images} images x {len(args.strengths)} strengths x {len(args.seeds)} seeds, "
        f"{args.steps} steps, 64x64, tiny SDXL-refiner form; scoring open_clip {args.clip_model} (random weights)\n\n"
        f"CPU cores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.1f} "
        f"(other jobs share this machine); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
    )
    text = header + markdown_table(frame, floatfmt="{:.2f}") + "\n\n" + machine_line(args.threads) + "\n"
    write_result("multiprocess", text)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
