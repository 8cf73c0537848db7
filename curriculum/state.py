"""Curriculum state on disk (DESIGN.md §3 item 4): arrays keyed by sample id, plus the config that made them.

Two files, both written atomically and never pickled:

    <path>.safetensors   the arrays (e.g. difficulty, distances, assignments; features only when asked)
    <path>.json          {"format", "n_samples", "sample_ids", "ids_sha256", "arrays", "config"}

The SHA-256 of the sample ids is stored in both files, so a weights file paired with the wrong JSON, or
loaded against a dataset with other ids, fails loudly instead of silently misaligning scores and samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .contracts import STATE_ARRAYS_SUFFIX, STATE_CONFIG_SUFFIX
from .contracts import STATE_FORMAT as FORMAT
from .tables import atomic_path, write_json


def ids_digest(sample_ids: Sequence[str]) -> str:
    """Return the SHA-256 hex digest of the sample ids (order matters)."""
    h = hashlib.sha256()
    for s in sample_ids:
        h.update(str(s).encode())
        h.update(b"\0")
    return h.hexdigest()


def state_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return (arrays file, JSON file) for a state path given with or without a suffix."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in {STATE_ARRAYS_SUFFIX, STATE_CONFIG_SUFFIX, ".npz", ".npy"} else p
    return stem.with_name(stem.name + STATE_ARRAYS_SUFFIX), stem.with_name(stem.name + STATE_CONFIG_SUFFIX)


@dataclass
class CurriculumState:
    """Arrays (one row per sample) with the sample ids they belong to and the config that made them."""

    sample_ids: list[str]
    arrays: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    def aligned(self, sample_ids: Sequence[str]) -> CurriculumState:
        """Return a copy with rows reordered to `sample_ids` (KeyError naming ids this state lacks)."""
        pos = {s: i for i, s in enumerate(self.sample_ids)}
        missing = [s for s in sample_ids if str(s) not in pos]
        if missing:
            raise KeyError(f"{len(missing)} sample id(s) have no curriculum state, e.g. {missing[:3]}")
        idx = np.array([pos[str(s)] for s in sample_ids], dtype=np.int64)
        return CurriculumState(
            [str(s) for s in sample_ids], {k: v[idx] for k, v in self.arrays.items()}, dict(self.config)
        )


def save_curriculum_state(
    path: str | os.PathLike,
    sample_ids: Sequence[str],
    arrays: Mapping[str, np.ndarray],
    config: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the arrays (safetensors) and ids + config (JSON) atomically; return both paths."""
    from safetensors.numpy import save_file

    ids = [str(s) for s in sample_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("sample_ids must be unique")
    out = {}
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.shape[:1] != (len(ids),):
            raise ValueError(f"array {name!r} has {arr.shape[:1]} rows, expected one per sample id ({len(ids)})")
        out[name] = arr
    digest = ids_digest(ids)
    arrays_path, json_path = state_paths(path)
    with atomic_path(arrays_path) as tmp:
        save_file(out, str(tmp), metadata={"format": FORMAT, "ids_sha256": digest})
    write_json(
        {
            "format": FORMAT,
            "n_samples": len(ids),
            "sample_ids": ids,
            "ids_sha256": digest,
            "arrays": sorted(out),
            "config": dict(config or {}),
        },
        json_path,
    )
    return arrays_path, json_path


def load_curriculum_state(path: str | os.PathLike, sample_ids: Sequence[str] | None = None) -> CurriculumState:
    """Return the state at `path`; with `sample_ids`, check they are the stored ids (ValueError otherwise)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    arrays_path, json_path = state_paths(path)
    for p in (arrays_path, json_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such curriculum-state file")
    meta = json.loads(json_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{json_path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    with safe_open(str(arrays_path), framework="numpy") as f:
        file_digest = (f.metadata() or {}).get("ids_sha256")
    ids = [str(s) for s in meta["sample_ids"]]
    if file_digest != meta["ids_sha256"] or ids_digest(ids) != meta["ids_sha256"]:
        raise ValueError(f"{arrays_path} and {json_path} do not belong together (sample-id digests differ)")
    if sample_ids is not None and ids_digest([str(s) for s in sample_ids]) != meta["ids_sha256"]:
        raise ValueError(
            f"{json_path}: stored sample ids differ from the given dataset's ids "
            "(use CurriculumState.aligned(ids) to reorder by id)"
        )
    return CurriculumState(ids, load_file(str(arrays_path)), meta.get("config", {}))
