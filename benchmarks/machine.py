"""What every benchmark table records about the machine it ran on, and where its results go.

A time means little without the machine: `machine_line()` names the CPU count, the threads the run used and the
1-minute load average (other jobs on a shared machine slow every figure), `write_result` puts each benchmark's
Markdown under benchmarks/results/ atomically (`records` does both for a benchmark's `main`), `check_device`
stops a CUDA run on a machine without CUDA at once, and `progress` prints a timestamped line to stderr.
"""

from __future__ import annotations

import io
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(n: int | None) -> int:
    """Limit torch (if imported) and the OpenMP/BLAS pools of child processes to `n` threads; return the count."""
    n = int(n or os.cpu_count() or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


def load_average() -> float:
    """Return the 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def machine_line(threads: int, load_start: float | None = None) -> str:
    """Return one line naming the machine: CPUs, threads used, the load at the start and now, the date."""
    start = f"{load_start:.1f} at the start, " if load_start is not None else ""
    return (
        f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}), {threads} thread(s), 1-min load average {start}{load_average():.1f} at the "
        f"end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def write_result(name: str, text: str) -> Path:
    """Write `text` to benchmarks/results/{name}.md (temp file + rename); return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)
    return path


def progress(message: str) -> None:
    """Print one progress line at once (benchmarks run for minutes; silence looks like a hang)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check_device(prog: str, device: str) -> None:
    """Exit with code 2 and one line when `device` asks for CUDA on a machine without it (before any work)."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        print(
            f"{prog}: error: --device {device}, but torch sees no CUDA device on this machine; "
            "run it on a GPU machine or pass --device cpu",
            file=sys.stderr,
        )
        raise SystemExit(2)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def records(name: str):
    """Decorate a benchmark's `main(argv)`: tee its stdout, then (exit code 0) print `machine_line` and write
    everything to benchmarks/results/{name}-latest.md. The thread count is torch's at the end (the one the run
    used) or OMP_NUM_THREADS."""

    def deco(main):
        def wrapped(argv: list[str] | None = None) -> int:
            load0 = load_average()
            buf = io.StringIO()
            stdout = sys.stdout
            sys.stdout = _Tee(stdout, buf)
            t0 = time.perf_counter()
            try:
                code = main(argv)
                torch = sys.modules.get("torch")
                threads = torch.get_num_threads() if torch else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
                print(f"\n{machine_line(threads, load0)}")
            finally:
                sys.stdout = stdout
            if code in (0, None):
                args = " ".join(sys.argv[1:] if argv is None else argv)
                command = f"python benchmarks/{name}.py {args}".strip()
                path = write_result(
                    f"{name}-latest",
                    f"# `benchmarks/{name}.py`, latest run\n\nCommand: `{command}` (wall "
                    f"{time.perf_counter() - t0:.0f} s)\n\n{buf.getvalue().strip()}\n",
                )
                progress(f"results written to {path}")
            return code

        wrapped.__doc__, wrapped.__name__ = main.__doc__, main.__name__
        return wrapped

    return deco
