"""Merge shard manifests (`manifest-part{i}-of-{n}.parquet`) into one `manifest.parquet`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from curriculum.contracts import MANIFEST_FILE, SHARD_GLOB, parse_shard_name, shard_manifests
from curriculum.tables import read_parquet_metadata, write_parquet


@dataclass
class MergeResult:
    """What `merge_manifests` wrote: the merged file's `path`, its `rows`, how many shard files (`parts`) it
    read and the `missing_parts` of their layouts (e.g. "part 3 of 4")."""

    path: Path
    rows: int
    parts: int
    missing_parts: list[str]


def merge_manifests(output_path: str | Path, out_name: str = MANIFEST_FILE) -> MergeResult:
    """Merge every shard manifest under `output_path`; return where it went and what it held.

    Rows are deduplicated by `synthetic_id` (shard layouts may have changed between runs). Parts missing
    from a layout (e.g. part 3 of 4 never ran) are listed in the result and the file's metadata.
    """
    output_path = Path(output_path)
    files = shard_manifests(output_path)
    if not files:
        raise FileNotFoundError(f"{output_path}: no shard manifests ({SHARD_GLOB}) to merge")
    seen: dict[int, set[int]] = {}
    for f in files:
        i, n = parse_shard_name(f.name)
        seen.setdefault(n, set()).add(i)
    missing = [f"part {i} of {n}" for n, got in seen.items() for i in range(1, n + 1) if i not in got]
    frames = []
    for f in files:  # each shard on its own: one that is unreadable or lacks the key is named, never merged as junk
        try:
            frame = pd.read_parquet(f)
        except Exception as err:  # pyarrow raises several types
            raise ValueError(
                f"{f}: cannot read this shard manifest ({err}); regenerate that shard or move it away"
            ) from None
        if "synthetic_id" not in frame.columns or frame["synthetic_id"].isna().any():
            raise ValueError(
                f"{f}: not a shard manifest: no 'synthetic_id' for every row (columns {list(frame.columns)})"
            )
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True).drop_duplicates("synthetic_id", keep="last")
    merged = merged.sort_values("synthetic_id").reset_index(drop=True)
    meta = read_parquet_metadata(files[0])
    meta.update({"merged_from": [f.name for f in files], "missing_parts": missing})
    path = write_parquet(merged, output_path / out_name, meta)
    return MergeResult(path=path, rows=len(merged), parts=len(files), missing_parts=missing)
