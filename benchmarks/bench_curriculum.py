"""Benchmark curriculum/ at scale: fit time and memory, per-step weight cost against the seed library, sampler.

    python benchmarks/bench_curriculum.py                # N = 100,000 (quick)
    python benchmarks/bench_curriculum.py --n 1000000    # the reported run

Features are a synthetic 32-component Gaussian mixture (384-d float32, unit-normalised like DINO features).
The seed-library baseline is its per-call temperature search, reproduced here: up to 200 bisection steps,
each a float32 softmax over N plus (1 - p)^N, stopping at |Neff - target| < 1e-4, then one more softmax.
Both seed figures are timed calls: "as coded" with that early stop, "200 bisection steps" with the stop
disabled (tol = 0), so every call runs all 200 passes. "ours per step through CurriculumSampler" is timed
too: a fresh sampler iterated over the whole warm-up (`--warmup` steps of batch 256, a refresh every 100
steps), divided by the steps.
"""

from __future__ import annotations

import argparse
import os

# Idle OpenMP pools of two runtimes (scikit-learn's and torch's libgomp) spin and steal the CPU from each
# other on a small machine, which distorts whatever is timed next: let idle threads sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine import progress, records, set_threads
from curriculum import CurriculumLearning, CurriculumSampler


def rss_peak_gb() -> float:
    """Return this process's peak resident memory in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def make_features(n: int, dim: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Return n unit-normalised float32 features (n, dim) from a 32-component Gaussian mixture."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(32, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        x = centers[rng.integers(0, 32, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def seed_library_call(
    d: torch.Tensor, target: float, max_iter: int = 200, tol: float = 1e-4
) -> tuple[torch.Tensor, int]:
    """Return (weights, bisection steps run): the seed library's warm-up get_curriculum_weights, a fresh float32
    bisection per call (`tol=0` disables its early stop, so all `max_iter` steps run)."""
    n = d.numel()
    lo, hi = 1e-6, 10.0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (`it` is returned: the steps run)
        tau = (lo + hi) / 2
        p = torch.softmax(-d / tau, dim=0)
        eff = (torch.sum(1 - (1 - p) ** n) / n).item()
        if abs(eff - target) < tol:
            break
        if eff > target:
            hi = tau
        else:
            lo = tau
    return torch.softmax(-d / tau, dim=0), it


@records("bench_curriculum")
def main(argv=None) -> None:
    """Run the benchmark and print its Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--n-clusters", type=int, default=None, help="default: chosen by Davies-Bouldin on (2, 20)")
    ap.add_argument("--backend", default="sklearn")
    ap.add_argument("--warmup", type=int, default=1000, help="warm-up iterations the per-step cost amortises over")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--seed-calls", type=int, default=3)
    ap.add_argument("--sampler-indices", type=int, default=2_000_000)
    ap.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (1 is the most robust on a shared machine)"
    )
    args = ap.parse_args(argv)
    set_threads(args.threads)
    load_start = os.getloadavg()[0]
    rows = []

    t = time.perf_counter()
    progress(f"making {args.n:,} x {args.dim} features")
    feats = make_features(args.n, args.dim)
    rows.append(
        (
            "features (synthetic, float32)",
            f"{feats.nbytes / 1024**3:.2f} GB",
            f"{time.perf_counter() - t:.1f} s to make",
        )
    )
    rss_before = rss_peak_gb()

    cl = CurriculumLearning(
        None,
        n_clusters=args.n_clusters,
        backend=args.backend,
        warmup_iterations=args.warmup,
        initial_effective_percentage=0.3,
    )
    t = time.perf_counter()
    progress("fitting prototypes (k-select, k-means, assign)")
    cl.fit_features(feats)
    fit_s = time.perf_counter() - t
    rows.append(
        ("fit (k-select on 10k, k-means on 100k, assign all, scale)", f"{fit_s:.1f} s", f"k={cl.optimal_clusters_}")
    )
    rows.append(
        (
            "peak RSS (process, incl. features)",
            f"{rss_peak_gb():.2f} GB",
            f"+{max(0.0, rss_peak_gb() - rss_before):.2f} GB above features",
        )
    )

    t = time.perf_counter()
    table = cl.table("prototypes_first", warmup_only=True)  # the table get_curriculum_weights uses
    build_s = time.perf_counter() - t
    rows.append(("warm-up temperature table (once per fit)", f"{build_s:.2f} s", f"{table.n_evaluations} Neff passes"))

    progress("timing the warm-up weights (ours and the seed library's search)")
    its = np.linspace(0, args.warmup - 1, args.calls).astype(int)
    cl.get_curriculum_weights("prototypes_first", 1)  # warm up
    t = time.perf_counter()
    for it in its:
        p = cl.get_curriculum_weights("prototypes_first", int(it))
    ours = (time.perf_counter() - t) / len(its)
    assert abs(p.sum() - 1) < 1e-9
    amortised = ours + build_s / max(1, args.warmup)

    d32 = torch.from_numpy(cl.get_difficulty_weights().astype(np.float32))
    targets = [cl.target_effective_size(int(it)) for it in np.linspace(0, args.warmup - 1, args.seed_calls)]
    seed_library_call(d32, targets[0], max_iter=2)  # warm up torch's kernels
    t = time.perf_counter()
    n_iter = [seed_library_call(d32, tg)[1] for tg in targets]
    seed = (time.perf_counter() - t) / len(targets)
    t = time.perf_counter()
    n_iter200 = [seed_library_call(d32, tg, max_iter=200, tol=0.0)[1] for tg in targets]
    seed200 = (time.perf_counter() - t) / len(targets)
    assert n_iter200 == [200] * len(targets), n_iter200
    rows.append(
        (
            "seed library: one warm-up call, as coded",
            f"{seed * 1e3:.1f} ms",
            f"timed, {len(targets)} calls; {np.mean(n_iter):.0f} bisection steps avg "
            "(stops at abs(Neff - target) < 1e-4)",
        )
    )
    rows.append(
        (
            "seed library: one warm-up call, 200 bisection steps",
            f"{seed200 * 1e3:.1f} ms",
            f"timed, {len(targets)} calls of 200 float32 softmax + Neff passes (early stop off) + 1 softmax",
        )
    )
    rows.append(
        ("ours: one warm-up call", f"{ours * 1e3:.2f} ms", f"timed, {len(its)} calls: table lookup + 1 softmax")
    )
    rows.append(
        (
            f"ours per call, table amortised over {args.warmup} steps",
            f"{amortised * 1e3:.2f} ms",
            f"call + table / {args.warmup}: {seed / amortised:.0f}x less than the seed as coded, "
            f"{seed200 / amortised:.0f}x less than 200 steps",
        )
    )

    steps = args.warmup
    sampler = CurriculumSampler(
        cl.schedule("prototypes_first"), batch_size=256, num_samples=steps * 256, refresh_every=100, seed=0
    )
    t = time.perf_counter()
    count = sum(1 for _ in sampler)
    per_step = (time.perf_counter() - t) / steps
    assert count == steps * 256
    per_step_table = per_step + build_s / max(1, steps)
    rows.append(
        (
            "ours per step through CurriculumSampler (refresh every 100 steps)",
            f"{per_step * 1e3:.3f} ms",
            f"timed over {steps} steps of batch 256 ({steps // 100} refreshes); with the table amortised "
            f"{per_step_table * 1e3:.3f} ms: {seed200 / per_step_table:.0f}x less than 200 steps, "
            f"{seed / per_step_table:.0f}x less than the seed as coded",
        )
    )

    sampler = CurriculumSampler(
        cl.schedule("prototypes_first"), batch_size=256, num_samples=args.sampler_indices, refresh_every=100, seed=0
    )
    t = time.perf_counter()
    count = sum(1 for _ in sampler)
    rate = count / (time.perf_counter() - t)
    rows.append(
        ("CurriculumSampler (batch 256, refresh/100 steps)", f"{rate / 1e6:.2f} M indices/s", f"{count:,} indices")
    )

    print(
        f"\ncurriculum/ benchmark: N = {args.n:,}, dim = {args.dim}, torch threads = {args.threads}, "
        f"CPUs = {len(os.sched_getaffinity(0))}, 1-min load average {load_start:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value | note |")
    print(f"|{'-' * (w + 2)}|-------|------|")
    for name, val, note in rows:
        print(f"| {name.ljust(w)} | {val} | {note} |")


if __name__ == "__main__":
    main()
