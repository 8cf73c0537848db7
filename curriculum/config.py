"""Command-line flags -> config dataclasses, written once for every CLI (and the list-valued flag they share)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

C = TypeVar("C")


def dataclass_from_args(cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
    """Return `cls(...)` with each field that has a flag of the same name taken from `args`, then `overrides`.

    `overrides` give the fields whose flag has another name or needs converting (`weight_decay=args.wd`,
    `progress=not args.no_progress`); fields with neither keep their defaults.
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    values = {n: getattr(args, n) for n in names if hasattr(args, n)}
    values.update(overrides)
    return cls(**values)


def add_list_flag(group: argparse._ActionsContainer, flag: str, type_: type, default: Sequence, help: str) -> None:
    """Add `flag` taking one or more values of `type_` (`nargs="+"`), whose default is `default` as a list."""
    group.add_argument(flag, type=type_, nargs="+", default=list(default), help=help)
