"""The package READMEs tell the truth about the command lines: every `--flag` they name for a CLI exists in that
CLI's argparse parser, every flag of a documented CLI is documented, every `path/to/file.py` they name exists,
and every relative link (file and `#anchor`) resolves.

A flag belongs to the CLI named last before it on the same command line or inline code span
(`mine_hard.py --prototype_state`); a flag with no CLI before it belongs to the CLI(s) of its section, i.e. of
the nearest heading that names one (`## Phase 1 — generation: data_generation/gene_img.py`). Flags after an
outside tool (`accelerate launch --num_processes 4 ...`, `hf download --local-dir`) are not ours and are skipped.
Parsers are only built, never run: `build_parser()` where a CLI has one, else its `main([])` is stopped at
argument parsing (nothing else runs before it in our CLIs). Fast: imports and string work only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGE_READMES = ("data_generation/README.md", "training/README.md")  # every flag of their CLIs is documented
ALL_READMES = ("README.md", *STAGE_READMES, "curriculum/README.md", "docs/DESIGN.md")
CLI_DIRS = ("data_generation", "training", "benchmarks")
# outside tools whose own flags may appear on our command lines
EXTERNAL = {
    "accelerate",
    "torchrun",
    "torch.distributed.run",
    "srun",
    "hf",
    "huggingface-cli",
    "pip",
    "pip3",
    "git",
    "bash",
    "ruff",
    "pytest",
}

FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
PY_PATH = re.compile(r"(?<![\w./-])((?:\.\./)?[\w.-]+(?:/[\w.-]+)*\.py)\b")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`]+)`")


# ---------------------------------------------------------------------------------------------- the CLIs
def _cli_files() -> dict[str, Path]:
    """Return {repo-relative path: file} of every module that builds an argparse parser."""
    out = {}
    for d in CLI_DIRS:
        for path in sorted((REPO / d).rglob("*.py")):
            text = path.read_text()
            # a CLI builds its parser itself or through a shared builder (training/trainers/cli.py:common_parser)
            if "argparse.ArgumentParser(" in text or ("common_parser(" in text and "__main__" in text):
                out[path.relative_to(REPO).as_posix()] = path
    return out


CLI_FILES = _cli_files()


def _module_of(rel: str) -> str:
    return rel[: -len(".py")].replace("/", ".")


def cli_key(token: str) -> str | None:
    """Return the CLI a token names (`data_generation/gene_img.py`, `gene_img.py`, `training.demo`), else None."""
    token = token.strip("`'\"(),;:")
    if token.startswith("../"):
        token = token[3:]
    if token.endswith(".py"):
        if token in CLI_FILES:
            return token
        same_name = [k for k in CLI_FILES if k.split("/")[-1] == token.split("/")[-1]]
        return same_name[0] if len(same_name) == 1 else None
    dotted = token.replace(".", "/")
    for cand in (f"{dotted}.py", f"{dotted}/run.py", f"{dotted}/__main__.py"):  # python -m training.demo
        if cand in CLI_FILES:
            return cand
    return None


class _Stop(Exception):
    pass


@cache
def parser_flags(key: str) -> frozenset[str]:
    """Return every option string of the CLI's parser (built, not run)."""
    module_name = _module_of(key)
    if key.startswith("benchmarks/"):  # a folder of scripts, not a package
        spec = importlib.util.spec_from_file_location(f"_docs_{module_name.replace('.', '_')}", REPO / key)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if hasattr(module, "build_parser"):
        parser = module.build_parser()
    else:
        box = {}
        original = argparse.ArgumentParser.parse_known_args  # parse_args goes through it too

        def capture(self, *args, **kwargs):
            box["parser"] = self
            raise _Stop

        argparse.ArgumentParser.parse_known_args = capture
        try:
            module.main([])
        except _Stop:
            pass
        finally:
            argparse.ArgumentParser.parse_known_args = original
        parser = box["parser"]
    return frozenset(s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help")


# ---------------------------------------------------------------------------------------------- the READMEs
def _sections(text: str):
    """Yield (section CLIs, line number, kind, text) for every prose line and every (joined) code line."""
    stack: list[tuple[int, tuple[str, ...]]] = []  # (heading level, CLIs named by that heading)
    fence = None
    pending = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if m:
            fence = None if fence is not None else (m.group(1) or "bash")
            continue
        if fence is None:
            h = HEADING.match(line)
            if h:
                level = len(h.group(1))
                stack = [s for s in stack if s[0] < level]
                named = tuple(k for k in (cli_key(t) for t in re.split(r"[\s,]+", h.group(2))) if k)
                stack.append((level, named))
                continue
        clis = next((s[1] for s in reversed(stack) if s[1]), ())
        if fence is None:
            yield clis, n, "prose", line
        elif fence in ("bash", "sh", "shell", "console"):
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield clis, n, "command", pending + line
            pending = ""


def _attribute(tokens: list[str], default: tuple[str, ...]):
    """Yield (CLIs, flag) for the flags among `tokens`, each owned by the last CLI named before it."""
    owner: tuple[str, ...] = default
    for tok in tokens:
        key = cli_key(tok)
        if key:
            owner = (key,)
        elif tok.strip("`(") in EXTERNAL or tok == "-c":
            owner = ()
        elif owner:
            yield from ((owner, f) for f in FLAG.findall(tok))


def documented_flags(rel: str):
    """Yield (README line, CLIs that may own it, flag) for every flag the README names for a CLI of ours."""
    for clis, n, _, line in _sections((REPO / rel).read_text()):
        yield from ((n, o, f) for o, f in _attribute(line.replace("`", " ").split(), clis))


def test_every_user_cli_has_a_section_in_its_package_readme():
    """Each CLI at the top of data_generation/ and training/ (and the demo) has a README section of its own."""
    documented = {rel: {k for clis, *_ in _sections((REPO / rel).read_text()) for k in clis} for rel in STAGE_READMES}
    for package in ("data_generation", "training"):
        top = {k for k in CLI_FILES if k.startswith(f"{package}/") and k.count("/") == 1}
        if package == "training":
            top.add("training/demo/run.py")
        assert len(top) >= 3
        assert sorted(top - documented[f"{package}/README.md"]) == []


@pytest.mark.parametrize("rel", ALL_READMES)
def test_every_flag_a_readme_names_exists_in_its_cli(rel):
    bad = []
    n_checked = 0
    for n, owners, flag in documented_flags(rel):
        n_checked += 1
        if not any(flag in parser_flags(o) for o in owners):
            bad.append(f"{rel}:{n}: {flag} is not a flag of {' or '.join(owners)}")
    assert not bad, "\n".join(bad)
    if rel in STAGE_READMES:
        assert n_checked > 100  # the parsing found the flags (a broken parser would check nothing)


@pytest.mark.parametrize("rel", STAGE_READMES)
def test_every_flag_of_a_documented_cli_is_in_its_section(rel):
    seen: dict[str, set[str]] = {}
    sections: set[str] = set()
    for clis, *_ in _sections((REPO / rel).read_text()):
        sections.update(clis)
    for _, owners, flag in documented_flags(rel):
        for o in owners:
            seen.setdefault(o, set()).add(flag)
    missing = {k: sorted(parser_flags(k) - seen.get(k, set())) for k in sorted(sections)}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, "flags missing from their CLI's section: " + "; ".join(f"{k}: {v}" for k, v in missing.items())


@pytest.mark.parametrize("rel", ALL_READMES)
def test_every_python_file_a_readme_names_exists(rel):
    text = (REPO / rel).read_text()
    names = set(PY_PATH.findall(text))
    all_files = {p.name for d in (*CLI_DIRS, "curriculum", "tests") for p in (REPO / d).rglob("*.py")}
    bad = []
    for name in sorted(names):
        if "/" in name:  # relative to the repository root or to the README's folder
            if not (REPO / name).is_file() and not ((REPO / rel).parent / name).is_file():
                bad.append(name)
        elif name not in all_files:
            bad.append(name)
    assert not bad, f"{rel} names Python files that do not exist: {bad}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation (not `_` or `-`) dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fence = not fence
        elif not fence and (h := HEADING.match(line)):
            out.add(_slug(h.group(2)))
    return out


@pytest.mark.parametrize("rel", ALL_READMES)
def test_every_relative_link_resolves(rel):
    src = REPO / rel
    bad = []
    for target in LINK.findall(src.read_text()):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file_part, _, anchor = target.partition("#")
        path = (src.parent / file_part).resolve() if file_part else src
        if not path.exists():
            bad.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            bad.append(f"{target}: no heading with anchor #{anchor}")
    assert not bad, "\n".join(bad)


def test_the_flag_finder_attributes_flags_to_the_right_cli():
    """The rules above, on a made-up README: a command line, an outside tool, a cross-reference, a section."""
    line = "accelerate launch --num_processes 2 data_generation/gene_img.py --data_csv x --merge"
    got = list(_attribute(line.split(), ()))
    assert got == [(("data_generation/gene_img.py",), "--data_csv"), (("data_generation/gene_img.py",), "--merge")]
    got = list(_attribute("mine_hard.py --prototype_state".split(), ("training/train_lt.py",)))
    assert got == [(("data_generation/mine_hard.py",), "--prototype_state")]
    got = list(_attribute(["--composition"], ("training/train_lt.py",)))
    assert got == [(("training/train_lt.py",), "--composition")]
    assert list(_attribute('python -c "import wilds" --x'.split(), ("training/train_lt.py",))) == []
    assert cli_key("training.demo") == "training/demo/run.py"
    assert "--quick" in parser_flags("training/demo/run.py")
    assert _slug("Phase 1 — hard samples: `data_generation/mine_hard.py`") == (
        "phase-1--hard-samples-data_generationmine_hardpy"
    )


def test_sections_inherit_the_cli_of_their_heading_and_join_continued_commands():
    text = (
        "# Title\n\nno CLI here `--x`\n\n## Stage: `data_generation/gene_img.py`\n### Flags\n`--steps`\n"
        "```bash\npython data_generation/merge_manifests.py \\\n    --strict\n```\n## Other\n`--y`\n"
    )
    got = [(clis, kind, line.split()) for clis, _, kind, line in _sections(text) if "--" in line]
    assert got == [
        ((), "prose", ["no", "CLI", "here", "`--x`"]),
        (("data_generation/gene_img.py",), "prose", ["`--steps`"]),
        (("data_generation/gene_img.py",), "command", ["python", "data_generation/merge_manifests.py", "--strict"]),
        ((), "prose", ["`--y`"]),
    ]
