"""Setup presets: one YAML file per paper setup (`assets/presets/{name}.yaml`) holding every setting of every
stage, grouped by the command that takes it.

A preset's top-level keys are the commands' names (`mine_hard`, `gene_img`, `train_lt`, ... and `reproduce`),
each mapping flag destinations (the names `argparse` stores, e.g. `tail_max_count`) to values, plus `setup`
(free-form facts about the setup: the paper's numbers, expected sizes) and `base` (the name or path of a preset
this one extends: its sections are merged key by key, this file's keys win).

`parse_args(parser, argv, section)` is what every CLI calls instead of `parser.parse_args(argv)`: with
`--preset NAME|FILE` the preset's section becomes the parser's defaults (`parser.set_defaults`), so a flag
given on the command line still wins; an unknown key, or a value the flag does not accept (its type or
choices), stops the command with exit code 2 and one line naming the preset file and the key. The parsed
namespace carries `preset_record` (the preset's name, file, sha256 and each explicit override), which the
commands write into the config they record.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).resolve().parent.parent / "assets" / "presets"
#: the sections that are not one command's flags
META_SECTIONS = ("setup", "base")
#: every command that takes --preset, by its section name
COMMANDS = (
    "make_table",
    "mine_hard",
    "get_text_prompt",
    "gene_img",
    "merge_manifests",
    "comp_clip_scores",
    "train_probe",
    "train_diffusion",
    "train_lt",
    "finetune_flyp",
    "reproduce",
)


class PresetError(ValueError):
    """A preset that cannot be used; the message names the file and the key."""


@dataclass
class Preset:
    """A loaded preset: its `name`, `path`, `sha256` (of the file's bytes; with a base, of every file in the
    chain, in order) and `sections` (section -> {dest: value}, bases merged)."""

    name: str
    path: Path
    sha256: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def section(self, name: str) -> dict[str, Any]:
        """Return the settings of one command (raises PresetError when the preset has none for it)."""
        if name not in self.sections:
            have = ", ".join(s for s in self.sections if s not in META_SECTIONS) or "none"
            raise PresetError(f"preset {self.path}: no section {name!r} (it has: {have})")
        return dict(self.sections[name] or {})


def available_presets() -> list[str]:
    """Return the names of the bundled presets (assets/presets/*.yaml)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset_path(ref: str | Path, relative_to: Path | None = None) -> Path:
    """Return the file a preset reference names: an existing file (also relative to `relative_to`), else a
    bundled preset's name; raises PresetError listing the bundled ones."""
    ref = str(ref)
    for cand in [Path(ref)] + ([relative_to / ref] if relative_to is not None else []):
        if cand.is_file():
            return cand
    if not ref.endswith((".yaml", ".yml")) and "/" not in ref:
        bundled = PRESET_DIR / f"{ref}.yaml"
        if bundled.is_file():
            return bundled
    raise PresetError(
        f"preset {ref!r}: no such file and no bundled preset of that name (bundled: {', '.join(available_presets())})"
    )


def load_preset(ref: str | Path, _seen: tuple[Path, ...] = ()) -> Preset:
    """Return the preset a name or file names, with its `base` chain merged (raises PresetError)."""
    path = resolve_preset_path(ref, _seen[-1].parent if _seen else None).resolve()
    if path in _seen:
        raise PresetError(f"preset {path}: `base` forms a cycle ({' -> '.join(map(str, _seen + (path,)))})")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as err:
        raise PresetError(f"preset {path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise PresetError(f"preset {path}: the top level must be a mapping of sections")
    for key, value in data.items():
        if key not in COMMANDS and key not in META_SECTIONS:
            raise PresetError(f"preset {path}: unknown key {key!r} (sections: {', '.join(COMMANDS + META_SECTIONS)})")
        if key != "base" and value is not None and not isinstance(value, dict):
            raise PresetError(f"preset {path}: section {key!r} must be a mapping of settings")
    sections: dict[str, dict[str, Any]] = {}
    files, digest = [str(path)], hashlib.sha256(raw)
    if data.get("base"):
        base = load_preset(data["base"], _seen + (path,))
        sections = {k: dict(v) for k, v in base.sections.items()}
        files = base.files + files
        digest = hashlib.sha256(bytes.fromhex(base.sha256) + raw)
    for key, value in data.items():
        if key != "base":
            sections.setdefault(key, {}).update(value or {})
    name = path.stem if path.parent == PRESET_DIR.resolve() else str(path)
    return Preset(name=name, path=path, sha256=digest.hexdigest(), sections=sections, files=files)


# --------------------------------------------------------------------------------------------------------
# applying a section to an argparse parser
def _actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in (argparse.SUPPRESS, "help")}


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    """Return `value` converted the way argparse converts a command-line string for `action`."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise PresetError(f"{where}: expected a single value, got {value!r}")
    typ = action.type
    if typ is None or typ is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PresetError(f"{where}: expected a string, got {value!r}")
        out: Any = str(value)
    else:
        if isinstance(value, bool):
            raise PresetError(f"{where}: expected {getattr(typ, '__name__', 'a value')}, got {value!r}")
        try:
            # through str, as argparse does: int('0.5') fails instead of truncating 0.5 to 0
            out = typ(value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise PresetError(f"{where}: {value!r} is not a valid {getattr(typ, '__name__', 'value')} ({err})") from err
    if action.choices is not None and out not in action.choices:
        raise PresetError(f"{where}: {value!r} is not one of {list(action.choices)}")
    return out


def convert_value(action: argparse.Action, value: Any, where: str) -> Any:
    """Return a preset value as the parser would store it for `action`; raise PresetError naming `where`."""
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise PresetError(f"{where}: this switch takes true or false, got {value!r}")
        if isinstance(action, argparse._StoreTrueAction):
            return value
        if isinstance(action, argparse._StoreFalseAction):
            return not value
        return action.const if value else action.default
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise PresetError(f"{where}: needs at least one value")
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise PresetError(f"{where}: needs exactly {action.nargs} values, got {len(items)}")
        return [_convert_one(action, v, f"{where}[{i}]") for i, v in enumerate(items)]
    return _convert_one(action, value, where)


def preset_defaults(parser: argparse.ArgumentParser, preset: Preset, section: str) -> dict[str, Any]:
    """Return {dest: converted value} of the preset's section for `parser`; raise PresetError on an unknown key
    or a value the flag does not accept."""
    actions = _actions_by_dest(parser)
    out = {}
    for key, value in preset.section(section).items():
        where = f"preset {preset.path}: key {section}.{key}"
        if key == "preset" or key not in actions:
            flags = ", ".join(sorted(d for d in actions if d != "preset"))
            raise PresetError(f"{where}: unknown key (not a flag of {parser.prog}; its flags: {flags})")
        out[key] = convert_value(actions[key], value, where)
    return out


def _explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Return the destinations of the optional flags written in `argv` (exact or unambiguous prefixes)."""
    options = parser._option_string_actions
    dests = []
    for tok in argv:
        if tok == "--":
            break
        if not tok.startswith("-") or tok in ("-", "--help", "-h"):
            continue
        flag = tok.split("=", 1)[0]
        action = options.get(flag)
        if action is None and flag.startswith("--"):
            hits = {a for s, a in options.items() if s.startswith(flag)}
            action = hits.pop() if len(hits) == 1 else None
        if action is not None and action.dest not in dests:
            dests.append(action.dest)
    return dests


def _preset_ref(argv: Sequence[str]) -> str | None:
    ref = None
    for i, tok in enumerate(argv):
        if tok == "--preset" and i + 1 < len(argv):
            ref = argv[i + 1]
        elif tok.startswith("--preset="):
            ref = tok.split("=", 1)[1]
    return ref


def add_preset_arg(parser: argparse.ArgumentParser) -> None:
    """Add `--preset NAME|FILE` to a parser (once)."""
    if "--preset" not in parser._option_string_actions:
        parser.add_argument(
            "--preset",
            default=None,
            metavar="NAME|FILE",
            help=f"settings of a paper setup ({', '.join(available_presets())}, or a YAML file): they become the "
            "defaults, flags given here override them",
        )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, section: str) -> argparse.Namespace:
    """Return `parser.parse_args(argv)` with the `--preset` section `section` as defaults.

    The namespace gains `preset_record`: None without a preset, else {name, file, files, sha256, section,
    settings (the section as applied), overrides ({dest: value} of flags given on the command line that a preset
    key also sets), explicit (every flag given)}. A bad preset exits 2 with one line naming file and key.
    """
    add_preset_arg(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    ref = _preset_ref(argv)
    record = None
    if ref is not None:
        try:
            preset = load_preset(ref)
            defaults = preset_defaults(parser, preset, section)
        except (PresetError, OSError) as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        parser.set_defaults(**defaults)
        for action in parser._actions:
            if action.dest in defaults and defaults[action.dest] is not None:
                action.required = False  # the preset supplies it
        record = {
            "name": preset.name,
            "file": str(preset.path),
            "files": preset.files,
            "sha256": preset.sha256,
            "section": section,
            "settings": defaults,
        }
    args = parser.parse_args(argv)
    if record is not None:
        explicit = [d for d in _explicit_dests(parser, argv) if d != "preset"]
        record["explicit"] = {d: getattr(args, d) for d in explicit}
        record["overrides"] = {d: getattr(args, d) for d in explicit if d in record["settings"]}
    args.preset_record = record
    return args


def preset_line(record: dict | None) -> str:
    """Return a one-line description of a preset record for a command's log ('' without one)."""
    if not record:
        return ""
    over = ", ".join(f"{k}={v!r}" for k, v in record["overrides"].items()) or "none"
    return f"preset {record['name']} ({record['file']}, sha256 {record['sha256'][:12]}); overrides: {over}"
