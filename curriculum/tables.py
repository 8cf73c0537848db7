"""Readers and writers of the file contracts between stages (DESIGN.md §3; the column lists and names live in
`curriculum.contracts`): sample tables, class-name maps, atomic writers and Parquet files that carry their own
metadata.

Everything downstream is keyed by `sample_id`, never by row position.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curriculum.contracts import (
    IMAGE_EXTENSIONS,
    IMAGENET_LT_HEADER,
    IMAGENET_LT_LAYOUT,
    IWILDCAM_HEADER,
    IWILDCAM_LAYOUT,
    SAMPLE_COLUMNS,
    is_image_file,
)

log = logging.getLogger(__name__)

METADATA_KEY = b"discl"


class TableError(ValueError):
    """A table that cannot be used, with the file, column and row that are wrong in the message."""


# --------------------------------------------------------------------------------------------------------
# reading
TRUE_STRINGS = frozenset({"true", "1", "yes", "y", "t"})
FALSE_STRINGS = frozenset({"false", "0", "no", "n", "f", ""})


def parse_bool_column(values: pd.Series, path: str | os.PathLike, column: str) -> pd.Series:
    """Return `values` (a keep/hard/correct column of the file at `path`) as a strict boolean Series.

    Booleans stay as they are; the integers 0/1 and the strings true/false, 1/0, yes/no, t/f, y/n (any case,
    surrounding spaces ignored) are mapped, and an empty cell or missing value is False. Anything else - "maybe",
    2, 0.5 - is a TableError naming the file, column and row: a CSV's "False" must never be truthy.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    out = []
    for i, v in enumerate(values.tolist()):
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
            continue
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            out.append(False)  # an empty cell (CSV) or a missing value
            continue
        if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and np.isfinite(v)):
            if v in (0, 1):
                out.append(bool(v))
                continue
        elif isinstance(v, str):
            key = v.strip().lower()
            if key in TRUE_STRINGS or key in FALSE_STRINGS:
                out.append(key in TRUE_STRINGS)
                continue
        raise TableError(
            f"{path}: row {i + 1}: column {column!r} must be a boolean (true/false, 1/0, yes/no), got {v!r}"
        )
    return pd.Series(out, index=values.index, dtype=bool, name=values.name)


def check_labels(labels: pd.Series, path: str | os.PathLike, n_classes: int | None = None, column: str = "label"):
    """Return `labels` as int64 after checking each is an integer in [0, n_classes) (>= 0 when n_classes is None).

    Non-numbers, fractions, values past int64 (1e30) and negatives are a TableError naming the file and row.
    """
    raw = labels.reset_index(drop=True)
    num = pd.to_numeric(raw, errors="coerce")
    hi = float(n_classes) if n_classes is not None else float(2**62)
    bad = num.isna() | (num != num.round()) | ~np.isfinite(num)
    rng = ""
    if not bad.any():
        bad = (num < 0) | (num >= hi)
        rng = f" in [0, {n_classes})" if n_classes is not None else " >= 0 (and below 2**62)"
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise TableError(f"{path}: row {row + 1}: column {column!r} must be an integer{rng}, got {raw.iloc[row]!r}")
    return pd.Series(num.to_numpy().astype("int64"), index=labels.index, name=labels.name)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Return the CSV or Parquet file at `path` as a DataFrame (raises TableError if missing/unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        # keep_default_na=False: a class called "NA" or an empty label name must not turn into NaN silently
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    except Exception as err:  # pandas raises many types; the user needs the file name
        raise TableError(f"{path}: cannot read table ({err})") from err


# what each layout needs, for the error on a header that is none of them. The canonical table needs
# `filepath` and `label`, plus `label_name` or `sample_id` (an id alone takes the name from a class map).
LAYOUT_NAMES = {
    "canonical": "the canonical layout",
    "iwildcam": "DisCL's iWildCam layout",
    "imagenet_lt": "DisCL's ImageNet-LT layout",
}
LAYOUT_COLUMNS = {
    "canonical": SAMPLE_COLUMNS,
    "iwildcam": IWILDCAM_HEADER[1:],
    "imagenet_lt": IMAGENET_LT_HEADER,
}


def _layout_missing(layout: str, cols: set[str]) -> list[str]:
    if layout == "canonical":
        miss = [c for c in ("filepath", "label") if c not in cols]
        return miss + ([] if {"label_name", "sample_id"} & cols else ["label_name"])
    return [c for c in LAYOUT_COLUMNS[layout] if c not in cols]


def closest_layout(columns: list[str]) -> tuple[str, list[str]] | None:
    """Return (layout, missing columns) of the layout the header `columns` comes closest to, or None.

    Closest = most of the layout's columns present (ties: fewest missing, then canonical, iWildCam,
    ImageNet-LT); None when the header shares no column with any layout.
    """
    cols = set(columns)
    scored = []
    for order, layout in enumerate(LAYOUT_COLUMNS):
        present = len(cols & set(LAYOUT_COLUMNS[layout]))
        missing = _layout_missing(layout, cols)
        scored.append((-present, len(missing), order, layout, missing))
    best = min(scored)
    return None if best[0] == 0 else (best[3], best[4])


def _rename_hints(missing: list[str], columns: list[str]) -> str:
    """Return ' (is 'x' meant to be 'y'?)'-style hints for missing columns that have a near-miss in the header."""
    import difflib

    spare = [c for c in columns if c and c not in set().union(*LAYOUT_COLUMNS.values())]
    lowered = {c.lower().replace("_", " ").strip(): c for c in spare}
    hints = []
    for m in missing:
        key = m.lower().replace("_", " ")
        match = lowered.get(key) or next(iter(difflib.get_close_matches(m, spare, n=1, cutoff=0.75)), None)
        if match is not None:
            hints.append(f"is {match!r} meant to be {m!r}?")
    return f" ({'; '.join(hints)})" if hints else ""


def detect_layout(columns: list[str]) -> str:
    """Return 'canonical', 'iwildcam' or 'imagenet_lt' for a header, or raise TableError.

    The error names the closest layout and the column(s) it lacks, e.g. DisCL's iWildCam header without
    `img_name`; the caller adds the file name.
    """
    cols = set(columns)
    if {"filepath", "label"} <= cols and ("label_name" in cols or "sample_id" in cols):
        return "canonical"
    if {"label id", "label name", "filepath", "img_name"} <= cols:
        return "iwildcam"
    if {"filepath", "image_name", "label", "classname"} <= cols:
        return "imagenet_lt"
    found = [c if c else "(unnamed index)" for c in columns]
    near = closest_layout(list(columns))
    if near is not None:
        layout, missing = near
        raise TableError(
            f"unknown sample-table layout: closest is {LAYOUT_NAMES[layout]} ({','.join(LAYOUT_COLUMNS[layout])}); "
            f"missing column(s) {missing}{_rename_hints(missing, list(columns))}; found columns {found}"
        )
    raise TableError(
        "unknown sample-table layout; expected the canonical columns "
        f"{SAMPLE_COLUMNS}, DisCL's iWildCam header {IWILDCAM_HEADER[1:]} or DisCL's ImageNet-LT header "
        f"{IMAGENET_LT_HEADER}; found {found}"
    )


def _missing(columns: list[str], needed: list[str]) -> list[str]:
    return [c for c in needed if c not in columns]


def read_sample_table(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return the sample table at `path` in canonical form.

    Columns: `sample_id, filepath, label (int), label_name, source_path` plus any optional/extra columns of
    the file. `source_path` is `filepath` resolved against `data_root` (default: the current directory,
    as in DisCL). Accepts the canonical table and both DisCL layouts, CSV or Parquet. Exact duplicate rows
    are dropped (the count is logged and kept in `df.attrs['n_duplicates_dropped']`); a `sample_id` that
    names two different images, a missing column, an empty table or a non-integer label raise TableError
    naming the file and row.

    ImageNet-LT as distributed is read as it is: an ImageNet root holding `ImageNet_LT_{train,val,test}.txt`
    (one table with a `split` column) or one such `.txt` list (`curriculum.imagenet_lt`; relative paths then
    resolve against the root / the list's folder unless `data_root` is given).
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".txt":
        from curriculum.imagenet_lt import read_imagenet_lt

        return read_imagenet_lt(path, data_root)
    raw = read_table(path)
    raw.columns = [str(c).strip() if not str(c).startswith("Unnamed") else "" for c in raw.columns]
    if raw.empty:
        raise TableError(f"{path}: the table has no rows")
    try:
        layout = detect_layout(list(raw.columns))
    except TableError as err:
        raise TableError(f"{path}: {err}") from None
    df = raw.drop(columns=[c for c in raw.columns if c == ""])
    if layout == "iwildcam":
        df = df.rename(columns=IWILDCAM_LAYOUT)
    elif layout == "imagenet_lt":
        df = df.rename(columns=IMAGENET_LT_LAYOUT)
        df["sample_id"] = df["image_name"].map(lambda s: Path(str(s)).stem)
    if "sample_id" not in df.columns:
        df["sample_id"] = df["filepath"].map(lambda s: Path(str(s)).stem)
    if "label_name" not in df.columns:
        df["label_name"] = ""
    miss = _missing(list(df.columns), SAMPLE_COLUMNS)
    if miss:
        raise TableError(f"{path}: missing column(s) {miss}")

    for col in ("sample_id", "filepath"):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise TableError(f"{path}: row {row + 1}: empty '{col}'")
    df["label"] = check_labels(df["label"], path).to_numpy()
    if "hard" in df.columns:
        df["hard"] = parse_bool_column(df["hard"], path, "hard").to_numpy()
    df["sample_id"] = df["sample_id"].astype(str).str.strip()
    df["filepath"] = df["filepath"].astype(str).str.strip()
    df["label_name"] = df["label_name"].fillna("").astype(str).str.strip()

    n_before = len(df)
    df = df.drop_duplicates().reset_index(drop=True)
    n_dup = n_before - len(df)
    if n_dup:
        log.warning("%s: dropped %d duplicated row(s)", path, n_dup)
    clash = df["sample_id"].duplicated(keep=False)
    if clash.any():
        sid = df.loc[clash, "sample_id"].iloc[0]
        rows = (df.index[df["sample_id"] == sid] + 1).tolist()
        raise TableError(f"{path}: sample_id {sid!r} names different rows (rows {rows} after dropping duplicates)")

    root = Path(data_root) if data_root is not None else Path.cwd()
    df["source_path"] = [str(p if Path(p).is_absolute() else root / p) for p in df["filepath"]]
    front = SAMPLE_COLUMNS + ["source_path"]
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs["n_duplicates_dropped"] = n_dup
    df.attrs["layout"] = layout
    df.attrs["path"] = str(path)
    return df


def read_image_folder(root: str | os.PathLike) -> pd.DataFrame:
    """Return the sample table of an image folder `root/class_name/**/*.{jpg,png,...}` in canonical form.

    Labels are the sorted class folders (as torchvision's ImageFolder; hidden folders and files are skipped,
    the hidden folders with a warning giving their count).
    The one `sample_id` rule: the file stem, or `class__stem` for every image whose stem repeats across the
    folder, so ids stay stable and unique. `filepath` is relative to `root`, `source_path` absolute under it.
    Raises TableError for a missing folder, a folder without images, or two images that get one id.
    """
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"{root}: image folder not found")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    hidden = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.startswith("."))
    if hidden:  # never silently: a class folder named ".x" is not a class
        log.warning("%s: %d hidden folder(s) left out (not classes): %s", root, len(hidden), hidden[:5])
    rows = []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if is_image_file(f) and f.is_file():
                rows.append(
                    {"filepath": f.relative_to(root).as_posix(), "label": label, "label_name": cls, "stem": f.stem}
                )
    if not rows:
        raise TableError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders {root}/<class_name>/")
    df = pd.DataFrame(rows)
    clash = df["stem"].duplicated(keep=False)
    df["sample_id"] = np.where(clash, df["label_name"] + "__" + df["stem"], df["stem"])
    if df["sample_id"].duplicated().any():
        dup = df.loc[df["sample_id"].duplicated(), "filepath"].iloc[0]
        raise TableError(f"{root}: two images map to the same sample_id (e.g. {dup})")
    df["source_path"] = [str(root / p) for p in df["filepath"]]
    df = df[SAMPLE_COLUMNS + ["source_path"]].reset_index(drop=True)
    df.attrs.update(layout="canonical", path=str(root))
    return df


def select_split(df: pd.DataFrame, split: str | None, path: str | os.PathLike) -> pd.DataFrame:
    """Return the rows of sample table `df` (read from `path`) whose `split` is `split` (all rows for None).

    A table without a `split` column, or with no row of that split, is a ValueError naming the file.
    """
    if split is None:
        return df
    if "split" not in df.columns:
        raise ValueError(f"--split {split!r}: {path} has no 'split' column")
    rows = df[df["split"].astype(str) == split]
    if rows.empty:
        raise ValueError(f"--split {split!r}: no rows of {path} have that split")
    return rows


def read_class_names(path: str | os.PathLike) -> dict[int, str]:
    """Return `{label: name}` from a class-name CSV (labels listed with several names are left out).

    Accepted headers: `label,classname` (ImageNet), `y,...,english` (iWildCam labels; the English name is
    used) and the canonical `label,label_name`.
    """
    path = Path(path)
    df = read_table(path)
    cols = list(df.columns)
    for key, val in (("label", "classname"), ("label", "label_name"), ("y", "english"), ("y", "name")):
        if key in cols and val in cols:
            break
    else:
        raise TableError(
            f"{path}: a class-name map needs columns 'label,classname', 'label,label_name' or 'y,english'; found {cols}"
        )
    out: dict[int, str] = {}
    ambiguous: set[int] = set()
    for i, (k, v) in enumerate(zip(df[key], df[val])):
        try:
            k = int(k)
        except ValueError:
            raise TableError(f"{path}: row {i + 1}: column {key!r} must be an integer, got {k!r}") from None
        if k in out and out[k] != str(v).strip():
            ambiguous.add(k)
        out.setdefault(k, str(v).strip())
    # e.g. iWildCam's y=99999 groups every category outside the WILDS label set: no single name
    for k in ambiguous:
        del out[k]
    if ambiguous:
        log.warning("%s: label(s) %s have several names and were left out of the map", path, sorted(ambiguous))
    return out


def to_discl_layout(df: pd.DataFrame, layout: str) -> pd.DataFrame:
    """Return `df` (canonical columns) in DisCL's 'iwildcam' or 'imagenet_lt' hard-sample CSV layout."""
    if layout == "iwildcam":
        out = pd.DataFrame(
            {
                "label id": df["label"].to_numpy(),
                "label name": df["label_name"].to_numpy(),
                "filepath": df["filepath"].to_numpy(),
                "img_name": df["sample_id"].to_numpy(),
            }
        )
        return out  # written with index=True, giving DisCL's leading unnamed column
    if layout == "imagenet_lt":
        names = df["image_name"] if "image_name" in df.columns else df["filepath"].map(lambda p: Path(p).name)
        return pd.DataFrame(
            {
                "filepath": df["filepath"].to_numpy(),
                "image_name": names.to_numpy(),
                "label": df["label"].to_numpy(),
                "classname": df["label_name"].to_numpy(),
            }
        )
    raise ValueError(f"unknown DisCL layout {layout!r}; use 'iwildcam' or 'imagenet_lt'")


# --------------------------------------------------------------------------------------------------------
# writing: atomic (temporary file in the same folder, then rename), so a kill never leaves a half file
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        follow_umask(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give a file made by `tempfile.mkstemp` (always mode 0600) the mode any other tool's file gets: 0666 & ~umask."""
    os.chmod(path, 0o666 & ~_umask())


def write_parquets(items: list[tuple[pd.DataFrame, str | os.PathLike, Mapping[str, Any] | None]]) -> list[Path]:
    """Write several Parquet files as one unit: every file to a temporary name first, then all renamed in order.

    A failure while writing leaves every target as it was. Return the paths.
    """
    with contextlib.ExitStack() as stack:
        tmps = []
        for df, path, metadata in items:
            tmp = stack.enter_context(_deferred_path(Path(path)))
            _write_parquet_file(df, tmp, metadata)
            tmps.append(tmp)
        for tmp, (_, path, _) in zip(tmps, items):
            follow_umask(tmp)
            os.replace(tmp, path)
    return [Path(p) for _, p, _ in items]


@contextlib.contextmanager
def _deferred_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` that is removed on exit unless it was renamed away."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_parquet_file(df: pd.DataFrame, path: Path, metadata: Mapping[str, Any] | None) -> None:
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, path)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Atomically write `df` to Parquet with `metadata` (JSON) in the schema; return the path."""
    with atomic_path(path) as tmp:
        _write_parquet_file(df, tmp, metadata)
    return Path(path)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the JSON metadata written by `write_parquet` (empty dict if none)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """Atomically write `df` as CSV; return the path."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return Path(path)


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """Return `df` as a Markdown table, floats formatted with `floatfmt` (no tabulate needed)."""

    def cell(v) -> str:
        return floatfmt.format(v) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write `obj` as indented JSON; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


# --------------------------------------------------------------------------------------------------------
# assets shared by Phase 1 and Phase 2
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def read_prompt_templates(dataset: str, path: str | os.PathLike | None = None) -> list[str]:
    """Return the class-prompt templates of `dataset` ('iwildcam', 'imagenet', 'generic'); `{name}` is the class."""
    table = json.loads(Path(path or ASSETS / "prompt_templates.json").read_text())
    if dataset not in table:
        raise KeyError(f"no prompt templates for dataset {dataset!r}; available: {sorted(table)}")
    return list(table[dataset])
