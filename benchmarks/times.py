"""The time figures README.md and the module docstrings quote, each stated once with its machine and date.

Every figure here was measured (the command is named); where a figure could not be re-measured honestly on the
shared machine, it is the last measurement, with its date. tests/test_times.py checks that each figure appears,
word for word, in every file listed in QUOTED_IN, and that none of the old unmeasured claims is left.
Re-measure: `python -m training.demo` (full), `python -m training.demo --quick`, `/usr/bin/time python -m
data_generation.quickstart`, `python benchmarks/bench_startup.py`, `python -m pytest -q` (CPU time).
"""

from __future__ import annotations

TIMES = {
    # python -m training.demo (last measured for commit 61c966a; not re-measured: the machine is shared now)
    "demo_full": "496 s (8.3 min) on 2 CPU cores with 1 torch thread, measured 2026-12-01",
    # python -m training.demo --quick --out /tmp/q, OMP_NUM_THREADS=1 (the steps: 440 s)
    "demo_quick": "447 s on 2 CPU cores with 1 torch thread at a load average of about 15, measured 2026-12-02",
    # /usr/bin/time python -m data_generation.quickstart, OMP_NUM_THREADS=1: 37.5 s user + 4.4 s system
    "quickstart": "42 CPU-seconds (135 s wall at a load average of about 15 on 2 CPU cores), measured 2026-12-02",
    # the whole suite, `time python -m pytest -q` (real 3m25.6s, user 243 s + sys 21 s), after issues 12-17
    "tests": (
        "425 tests in 3.4 min wall (265 CPU-seconds) on 2 CPU cores at a load average of about 1, measured 2026-12-02"
    ),
    # benchmarks/bench_startup.py: the slowest --help, and the offline default-model errors (results/startup.md)
    "help": "at most 0.5 CPU-seconds per CLI (benchmarks/results/startup.md)",
    "offline_error": "about 1.8 s for gene_img.py and mine_hard.py at load 1 (benchmarks/results/startup.md)",
}

QUOTED_IN = {
    "demo_full": ("README.md", "training/demo/run.py"),
    "demo_quick": ("README.md", "training/demo/run.py"),
    "quickstart": ("README.md", "data_generation/quickstart.py"),
    "tests": ("README.md",),
    "help": ("README.md",),
    "offline_error": ("README.md", "data_generation/generation/backends/diffusers_img2img.py"),
}

#: claims that were never measured or no longer hold; none may come back
STALE = (
    "about 8.5 minutes",
    "about 15 minutes",
    "under 3 minutes",
    "under-3-minute",
    "about a minute",
    "about 2 minutes",
    "within seconds",
)
