"""Building a config dataclass from parsed command-line flags, written once for every CLI."""

from __future__ import annotations

import argparse
import dataclasses
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
