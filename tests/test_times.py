"""README.md and the module docstrings quote each time figure the same way, from benchmarks/times.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.times import QUOTED_IN, STALE, TIMES

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(TIMES))
def test_each_figure_is_quoted_word_for_word_where_listed(name):
    for rel in QUOTED_IN[name]:
        text = " ".join((REPO / rel).read_text().split())  # line breaks and indentation do not count
        assert TIMES[name] in text, f"{rel} does not quote the {name} figure {TIMES[name]!r}"


def test_no_unmeasured_time_claim_is_left():
    files = [REPO / "README.md"]
    for pkg in ("data_generation", "training", "curriculum", "benchmarks"):
        files += [p for p in (REPO / pkg).rglob("*") if p.suffix in (".py", ".md") and p.name != "times.py"]
    hits = []
    for path in files:
        text = " ".join(path.read_text().split()).lower()
        hits += [f"{path.relative_to(REPO)}: {claim!r}" for claim in STALE if claim in text]
    assert hits == []
