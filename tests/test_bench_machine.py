"""Every benchmark records its machine and writes its table under benchmarks/results/; CUDA runs check first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks import machine

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_records_writes_the_output_with_the_machine_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "RESULTS", tmp_path)

    @machine.records("bench_fake")
    def main(argv=None):
        print("| measure | value |\n|---|---|\n| x | 1 |")
        return 0

    assert main(["--n", "3"]) == 0
    text = (tmp_path / "bench_fake-latest.md").read_text()
    assert "Command: `python benchmarks/bench_fake.py --n 3`" in text and "| x | 1 |" in text
    assert "1-min load average" in text and "thread(s)" in text and "CPUs" in text
    assert "| x | 1 |" in capsys.readouterr().out  # still printed


def test_a_failed_benchmark_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "RESULTS", tmp_path)

    @machine.records("bench_fake")
    def main(argv=None):
        print("half a table")
        return 1

    assert main([]) == 1 and not list(tmp_path.iterdir())


def test_cuda_device_without_cuda_exits_2_with_one_line(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        machine.check_device("bench_x", "cuda:0")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench_x: error: --device cuda:0") and "--device cpu" in err[0]
    machine.check_device("bench_x", "cpu")  # no CUDA needed


# every script of benchmarks/ but its two helper modules (the machine line; the quoted time figures) and the
# hardening fault search (fault_injection.py: a table of exit codes, not of timings)
HELPERS = {"machine.py", "times.py", "fault_injection.py"}


@pytest.mark.parametrize("name", sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS))
def test_every_benchmark_has_threads_and_writes_results(name):
    src = (BENCH / name).read_text()
    assert '"--threads"' in src
    tree = ast.parse(src)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    decorated = any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "records" for d in main.decorator_list)
    assert decorated or "write_result(" in src, f"{name} does not write benchmarks/results/"
    if '"--device"' in src:
        assert "check_device(" in src, f"{name} takes --device but does not check CUDA first"
