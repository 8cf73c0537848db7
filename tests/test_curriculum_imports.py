"""curriculum/ is the bottom of the import graph: it imports neither data_generation nor training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "curriculum"
FORBIDDEN = ("data_generation", "training")


def test_no_module_of_curriculum_imports_a_sibling_package():
    offenders = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 8
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_curriculum_loads_no_sibling_package():
    code = (
        "import sys, curriculum, curriculum.prototypes, curriculum.samplers, curriculum.state; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('data_generation', 'training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
