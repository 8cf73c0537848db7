"""The import graph of curriculum/, data_generation/ and training/, read with ast (nothing is imported).

* no import cycle between modules (module-level imports; a function-local import is the lazy kind that keeps
  `--help` fast, never one that closes a circle);
* curriculum/ is the bottom: it imports neither sibling; data_generation/ never imports training/;
* training/ -> data_generation/ only through the named edges below (every import, function-local ones too):
  the demo and reproduce drive the Phase-1 CLIs, and the pixel diffusion model is one class both phases use.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("curriculum", "data_generation", "training")

# training module -> data_generation modules it may import; nothing else crosses from Phase 2 to Phase 1
ALLOWED_TRAINING_TO_DATA_GENERATION = {
    "training.demo.run": {
        "data_generation.comp_clip_scores",
        "data_generation.gene_img",
        "data_generation.mine_hard",
        "data_generation.train_probe",
    },
    # reproduce drives the Phase-1 CLIs like the demo (by path); its dry run counts the hard set with the mining
    # rule and the generation grid with gene_img's defaults
    "training.reproduce.run": {"data_generation.generation.plan", "data_generation.mining.rules"},
    "training.diffusion.trainer": {"data_generation.generation.backends.pixel_pipeline"},
    "training.diffusion.eval": {"data_generation.generation.backends.pixel_pipeline"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """Return the longest known module that `name` (a dotted import target) lies in, or None (third party)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def _imports(module: str, path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """Return the project modules `module` imports (module-level statements only, or every import)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if top_level_only:
        # statements at module level, including those nested in module-level if/try blocks
        nodes, stack = [], list(tree.body)
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack += node.body + node.orelse + getattr(node, "finalbody", [])
                stack += [s for h in getattr(node, "handlers", []) for s in h.body]
    else:
        nodes = list(ast.walk(tree))
    out = set()
    for node in nodes:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
        for t in targets:
            hit = _resolve(t, modules)
            if hit is not None and hit != module:
                out.add(hit)
    return out


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules, top_level_only) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_graph_sees_every_package_and_known_edges():
    graph = _graph(top_level_only=True)
    assert {_top(m) for m in graph} == set(PACKAGES) and len(graph) >= 80
    # a few edges the rest of the file relies on being found
    assert "curriculum.contracts" in graph["curriculum.tables"]
    assert "data_generation.mining.scorer_runs" in graph["data_generation.mining"]
    assert "data_generation.generation.backends.diffusers_img2img" in graph["data_generation.generation.backends"]
    every = _graph(top_level_only=False)
    assert "data_generation.generation.backends.pixel_pipeline" in every["training.diffusion.trainer"]


def test_no_import_cycles_between_modules():
    assert _cycles(_graph(top_level_only=True)) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_curriculum_imports_neither_sibling():
    graph = _graph(top_level_only=False)
    assert len([m for m in graph if _top(m) == "curriculum"]) >= 8
    bad = {
        m: sorted(d for d in deps if _top(d) != "curriculum") for m, deps in graph.items() if _top(m) == "curriculum"
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_data_generation_never_imports_training():
    graph = _graph(top_level_only=False)
    bad = {m: sorted(d for d in deps if _top(d) == "training") for m, deps in graph.items()}
    assert {m: d for m, d in bad.items() if d and _top(m) == "data_generation"} == {}


def test_training_reaches_data_generation_only_through_the_named_edges():
    graph = _graph(top_level_only=False)
    crossing = {
        m: {d for d in deps if _top(d) == "data_generation"} for m, deps in graph.items() if _top(m) == "training"
    }
    crossing = {m: d for m, d in crossing.items() if d}
    assert crossing == ALLOWED_TRAINING_TO_DATA_GENERATION


def test_importing_curriculum_loads_no_sibling_package():
    code = (
        "import sys, curriculum, curriculum.contracts, curriculum.prototypes, curriculum.samplers, curriculum.state; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('data_generation', 'training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_difficulty_registry_is_full_when_its_module_alone_is_imported():
    # the scorers register at import of data_generation.mining, so a prefixed column resolves to its base score
    code = (
        "from data_generation.mining.difficulty import DIFFICULTY_SCORERS, base_score_name; "
        "print(sorted(DIFFICULTY_SCORERS.names()), base_score_name('checkpoint_true_prob'), base_score_name('mine'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == [
        "['checkpoint',",
        "'dynamics',",
        "'predefined',",
        "'prototype',",
        "'random',",
        "'zero_shot_clip']",
        "true_prob",
        "mine",
    ]
