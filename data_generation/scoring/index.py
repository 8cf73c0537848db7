"""Find the synthetic images to score: read the generation manifest, or walk DisCL's folder layout.

Both give the same table: the manifest columns (`curriculum.contracts.MANIFEST_COLUMNS`) plus two helper columns,
`syn_file` (the synthetic image on disk) and `real_file` (its real source image, or "" if not found).

The manifest is the truth. The walk exists so folders made by the reference scripts (which write no
manifest) can be scored too: `{syn_path}/{class}/Strength{100s}_guidance{10g}_seed{seed}/{img}.jpg`. The
prompt is not in the folder, so it is rebuilt from the class folder name with the dataset's template.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from curriculum.contracts import (
    IMAGE_EXTENSIONS,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    SHARD_GLOB,
    is_image_file,
    parse_variant_dirname,
    shard_manifests,
    synthetic_id,
)
from curriculum.images import class_from_folder_name
from curriculum.tables import read_parquet_metadata, read_sample_table
from data_generation.generation.plan import DEFAULT_TEMPLATE, IWILDCAM_TEMPLATE, class_prompt_name

log = logging.getLogger(__name__)

TEMPLATES = {"iwildcam": IWILDCAM_TEMPLATE, "imagenet_lt": DEFAULT_TEMPLATE, "default": DEFAULT_TEMPLATE}


class SpectrumError(ValueError):
    """A generation folder or manifest that cannot be scored; the message names the file."""


@dataclass
class SpectrumIndex:
    """The synthetic images of one generation folder, with where each row came from."""

    rows: pd.DataFrame
    source: str  # "manifest:<file>", "shard manifests:<n> files" or "walk:<folder>"
    metadata: dict = field(default_factory=dict)  # the manifest's own metadata (generation config)
    real_root: str = ""
    #: image files a --walk left out because their name starts with "." (reported in the summary)
    n_hidden_skipped: int = 0


def resolve_template(template: str | None, layout: str | None = None) -> str:
    """Return a prompt template: a preset name (`iwildcam`, `imagenet_lt`, `default`), a literal with
    `{name}`, or (None) the default for the sample-table layout."""
    if template is None:
        return IWILDCAM_TEMPLATE if layout == "iwildcam" else DEFAULT_TEMPLATE
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{name}" not in template:
        raise SpectrumError(
            f"--prompt_template {template!r} needs a {{name}} placeholder (or one of {sorted(TEMPLATES)})"
        )
    return template


# ------------------------------------------------------------------------------------------------------
# the manifest
def read_manifest(
    syn_path: str | os.PathLike, manifest: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, dict, str] | None:
    """Return (rows, metadata, source) from `manifest`, `{syn_path}/manifest.parquet` or the shard
    manifests (merged in memory, deduplicated by synthetic_id); None if the folder has no manifest."""
    syn_path = Path(syn_path)
    if manifest is not None:
        files = [Path(manifest)]
        if not files[0].is_file():
            raise SpectrumError(f"--manifest {manifest}: no such file")
    elif (syn_path / MANIFEST_FILE).is_file():
        files = [syn_path / MANIFEST_FILE]
    else:
        files = shard_manifests(syn_path)
    if not files:
        return None
    need = ["synthetic_id", "sample_id", "prompt", "strength", "path"]
    frames = []
    for f in files:  # each shard on its own: one without a column must not turn into junk rows of the others
        try:
            frame = pd.read_parquet(f)
        except Exception as err:
            raise SpectrumError(f"{f}: cannot read this manifest ({err})") from err
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise SpectrumError(f"{f}: manifest lacks column(s) {missing}")
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True).drop_duplicates("synthetic_id", keep="last")
    source = f"manifest:{files[0]}" if len(files) == 1 else f"shard manifests:{len(files)} files in {syn_path}"
    return rows.reset_index(drop=True), read_parquet_metadata(files[0]), source


# ------------------------------------------------------------------------------------------------------
# the folder walk
def walk_spectrum(
    syn_path: str | os.PathLike,
    prompt_template: str,
    samples: pd.DataFrame | None = None,
    class_names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Return one manifest-shaped row per image found in DisCL's layout under `syn_path`.

    `sample_id` is the image's file stem. With `samples` (a sample table), `label`, `label_name` and
    `filepath` come from the matching row; otherwise `label` is -1, `label_name` the class folder and
    `filepath` empty. The prompt is `prompt_template` with the class name (`class_names[label]` when a map
    and a label are known, else the folder name). Unknown columns (model, steps, size) are left empty.
    """
    syn_path = Path(syn_path)
    if not syn_path.is_dir():
        raise SpectrumError(f"--syn_path {syn_path}: no such folder")
    by_id = samples.set_index("sample_id") if samples is not None else None
    rows = []
    hidden = 0
    for class_dir in sorted(p for p in syn_path.iterdir() if p.is_dir()):
        for var_dir in sorted(p for p in class_dir.iterdir() if p.is_dir()):
            variant = parse_variant_dirname(var_dir.name)
            if variant is None:
                continue
            strength, guidance, seed = variant
            for img in sorted(var_dir.iterdir()):
                if img.name.startswith(".") and is_image_file(img.name[1:]):
                    hidden += 1  # a hidden image file: left out, but counted in the summary
                    continue
                if not is_image_file(img):
                    continue  # also skips the hidden temporary files of an interrupted atomic write
                sid = img.stem
                folder_class = class_from_folder_name(class_dir.name)  # "a %2F b" is the class "a / b"
                label, label_name, filepath = -1, folder_class, ""
                if by_id is not None and sid in by_id.index:
                    hit = by_id.loc[sid]
                    label, label_name, filepath = int(hit["label"]), str(hit["label_name"]), str(hit["filepath"])
                try:
                    name = class_prompt_name(label, label_name, class_names) if label >= 0 else folder_class
                except KeyError:
                    name = folder_class
                rows.append(
                    {
                        "synthetic_id": synthetic_id(sid, strength, guidance, seed),
                        "sample_id": sid,
                        "label": label,
                        "label_name": label_name,
                        "prompt": prompt_template.format(name=name),
                        "strength": strength,
                        "image_guidance": round(1.0 - strength, 6),
                        "text_guidance": guidance,
                        "seed": seed,
                        "model_id": None,
                        "steps": pd.NA,
                        "width": pd.NA,
                        "height": pd.NA,
                        "path": img.relative_to(syn_path).as_posix(),
                        "filepath": filepath,
                    }
                )
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for col in ("steps", "width", "height"):
        df[col] = df[col].astype("Int64")
    df = df.sort_values("synthetic_id").reset_index(drop=True)
    if hidden:
        log.warning("%s: %d image file(s) whose name starts with '.' were left out of the walk", syn_path, hidden)
    df.attrs["n_hidden_skipped"] = hidden
    return df


# ------------------------------------------------------------------------------------------------------
# real images
class RealImageFinder:
    """Finds a real image by sample id under a root: `{root}/{class}/{id}.*`, `{root}/{id}.*`, then an index
    of every image under the root by file stem (built once, only if the direct guesses fail)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._index: dict[str, Path] | None = None

    def find(self, sample_id: str, class_dir: str = "") -> Path | None:
        """Return the path of the real image of `sample_id`, or None."""
        for folder in ([self.root / class_dir] if class_dir else []) + [self.root]:
            for suf in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
                cand = folder / f"{sample_id}{suf}"
                if cand.is_file():
                    return cand
        if self._index is None:
            self._index = {}
            for p in sorted(self.root.rglob("*")):
                if is_image_file(p) and p.is_file():
                    self._index.setdefault(p.stem, p)
        return self._index.get(sample_id)


def _real_file(filepath: str, root: Path) -> str:
    if not filepath:
        return ""
    p = Path(filepath)
    return str(p if p.is_absolute() else root / p)


def build_index(
    syn_path: str | os.PathLike,
    real_path: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    walk: bool = False,
    data_csv: str | os.PathLike | None = None,
    prompt_template: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> SpectrumIndex:
    """Return the synthetic images under `syn_path` with their real images resolved.

    Uses the manifest unless `walk` is set or none exists. The real image of a row is, in order:
    `real_path/filepath` (`--real_path` as the data root), `{config.data_root}/filepath` from the manifest
    metadata (the current directory if none was recorded). When `real_path` is given but that file does not
    exist (or the row has no filepath), the image is looked up under `real_path` by its file name, then by the
    sample id (`{real_path}/{class}/{id}.*`, `{real_path}/{id}.*`, anywhere below).
    """
    syn_path = Path(syn_path)
    if not syn_path.is_dir():
        raise SpectrumError(f"--syn_path {syn_path}: no such folder")
    samples = read_sample_table(data_csv, real_path) if data_csv else None
    found = None if walk else read_manifest(syn_path, manifest)
    hidden = 0
    if found is not None:
        rows, meta, source = found
        for col in MANIFEST_COLUMNS:
            if col not in rows.columns:
                rows[col] = "" if col == "filepath" else pd.NA
        extra = [c for c in rows.columns if c not in MANIFEST_COLUMNS]
        rows = rows[MANIFEST_COLUMNS + extra].copy()
        rows["filepath"] = rows["filepath"].fillna("").astype(str)
        if samples is not None:  # fill filepaths a manifest lacks (older manifests) from the sample table
            fp = samples.set_index("sample_id")["filepath"]
            empty = rows["filepath"] == ""
            rows.loc[empty, "filepath"] = rows.loc[empty, "sample_id"].map(fp).fillna("")
    else:
        if manifest is not None:
            raise SpectrumError(f"--manifest {manifest}: no such file")
        layout = samples.attrs.get("layout") if samples is not None else None
        rows = walk_spectrum(syn_path, resolve_template(prompt_template, layout), samples, class_names)
        meta, source = {}, f"walk:{syn_path}"
        hidden = int(rows.attrs.get("n_hidden_skipped", 0))
        if rows.empty:
            raise SpectrumError(
                f"{syn_path}: no manifest ({MANIFEST_FILE} / {SHARD_GLOB}) and no images in DisCL's "
                "layout {class}/Strength{100s}_guidance{10g}_seed{seed}/{img}.jpg"
            )
    data_root = (meta.get("config") or {}).get("data_root")
    root = Path(real_path) if real_path is not None else Path(data_root) if data_root else Path.cwd()
    finder = RealImageFinder(real_path) if real_path is not None else None
    real_files = []
    for fp, sid, path in zip(rows["filepath"], rows["sample_id"], rows["path"]):
        if fp and (finder is None or Path(_real_file(fp, root)).is_file()):
            real_files.append(_real_file(fp, root))
        elif finder is not None:
            # --real_path may name the image folder itself rather than the data root (as DisCL's scripts did)
            by_name = root / Path(fp).name if fp else None
            hit = by_name if by_name is not None and by_name.is_file() else finder.find(str(sid), Path(path).parts[0])
            # nothing found: keep the expected path, so the report names where the real image should be
            real_files.append(str(hit) if hit else _real_file(fp, root))
        else:
            real_files.append("")
    rows["syn_file"] = [str(syn_path / p) for p in rows["path"]]
    rows["real_file"] = real_files
    return SpectrumIndex(
        rows=rows.reset_index(drop=True), source=source, metadata=meta, real_root=str(root), n_hidden_skipped=hidden
    )
