"""The file contracts between stages (DESIGN.md §3), in one place: every reader and writer imports them here.

* **Sample table**: canonical columns and DisCL's two hard-sample layouts.
* **Generation output**: the manifest columns, DisCL's variant folder name `Strength{100s}_guidance{10g}_seed{seed}`
  and its parser, the synthetic id, shard-manifest names and their pattern. The class folder above a variant
  folder is `curriculum.images.class_folder_name(label_name)` (the name, or `%XX`-escaped when it is not a safe
  path component: `baluster %2F handrail`), read back by `class_from_folder_name`.
* **Scores**: the columns comp_clip_scores adds to the manifest and the files it writes.
* **Curriculum state**: the format tag and file suffixes of a state (see `curriculum.state`).
* The image file extensions every walker accepts.

One level vocabulary: a synthetic image's **level** is its image guidance in percent,
`guidance_level(strength) = 100 - round(100 * strength)`; level 100 is real data. The number in DisCL's folder
name is the img2img strength in percent, `strength_percent(strength) = round(100 * strength)`, and is called that.

This module is pure (no I/O, no third-party import), so both phases import it without coupling to each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# --------------------------------------------------------------------------------------------------------
# sample table (§3.1)
SAMPLE_COLUMNS = ["sample_id", "filepath", "label", "label_name"]  # optional: split, domain, difficulty, hard

# DisCL's two hard-sample layouts, mapped onto the canonical columns. The iWildCam file starts with an
# unnamed pandas index column; the ImageNet-LT file has none.
IWILDCAM_LAYOUT = {"label id": "label", "label name": "label_name", "filepath": "filepath", "img_name": "sample_id"}
IMAGENET_LT_LAYOUT = {"filepath": "filepath", "image_name": "image_name", "label": "label", "classname": "label_name"}
IWILDCAM_HEADER = ["", "label id", "label name", "filepath", "img_name"]
IMAGENET_LT_HEADER = ["filepath", "image_name", "label", "classname"]

# --------------------------------------------------------------------------------------------------------
# images
# lower case; compare with `is_image_file`, which lowers the suffix (".JPEG" is ImageNet's)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image_file(path: str | os.PathLike) -> bool:
    """Return True when `path`'s suffix is an image extension (case-insensitive) and its name is not hidden.

    Hidden names are left out because an interrupted atomic write leaves a `.{name}.tmp` file behind.
    """
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


# --------------------------------------------------------------------------------------------------------
# guidance levels and DisCL's variant folder (§3.2)
REAL_LEVEL = 100


def strength_percent(strength: float) -> int:
    """Return the img2img strength in percent, round(100 * strength), as DisCL's folder name writes it (0.3 -> 30)."""
    return int(round(100 * float(strength)))


def guidance_level(strength: float) -> int:
    """Return the level (image guidance in percent) of an img2img strength: 100 - round(100 * strength)."""
    return REAL_LEVEL - strength_percent(strength)


VARIANT_RE = re.compile(r"^Strength(\d+)_guidance(\d+)_seed(-?\d+)$")


def variant_dirname(strength: float, text_guidance: float, seed: int) -> str:
    """Return DisCL's folder name `Strength{100s}_guidance{10g}_seed{seed}` (rounded, not truncated)."""
    return f"Strength{strength_percent(strength)}_guidance{int(round(10 * float(text_guidance)))}_seed{int(seed)}"


def parse_variant_dirname(name: str) -> tuple[float, float, int] | None:
    """Return (strength, text guidance, seed) of a folder named by `variant_dirname`, or None for another name."""
    m = VARIANT_RE.match(name)
    if not m:
        return None
    return int(m.group(1)) / 100, int(m.group(2)) / 10, int(m.group(3))


def synthetic_id(sample_id: str, strength: float, text_guidance: float, seed: int) -> str:
    """Return the stable id of one synthetic image: `{sample_id}/{variant folder}`."""
    return f"{sample_id}/{variant_dirname(strength, text_guidance, seed)}"


# --------------------------------------------------------------------------------------------------------
# generation manifest (§3.2)
MANIFEST_COLUMNS = [
    "synthetic_id",
    "sample_id",
    "label",
    "label_name",
    "prompt",
    "strength",
    "image_guidance",
    "text_guidance",
    "seed",
    "model_id",
    "steps",
    "width",
    "height",
    "path",
    "filepath",
]
# `path`: the synthetic image, relative to the output folder. `filepath`: the real source image as the sample
# table gave it (relative to --data_root, recorded in the manifest metadata), so scorers find the real image.
MANIFEST_FILE = "manifest.parquet"
SHARD_GLOB = "manifest-part*-of-*.parquet"
SHARD_RE = re.compile(r"manifest-part(\d+)-of-(\d+)\.parquet$")


def shard_manifest_name(part: int, total_parts: int) -> str:
    """Return the file name of the manifest of 1-based shard `part` of `total_parts`."""
    return f"manifest-part{int(part)}-of-{int(total_parts)}.parquet"


def shard_failures_name(part: int, total_parts: int) -> str:
    """Return the file name of the failure list (CSV) of 1-based shard `part` of `total_parts`."""
    return f"failures-part{int(part)}-of-{int(total_parts)}.csv"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """Return (part, total parts) of a shard-manifest file name, or None for another name."""
    m = SHARD_RE.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def shard_manifests(folder: str | os.PathLike) -> list[Path]:
    """Return the shard manifests in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).glob(SHARD_GLOB) if SHARD_RE.search(p.name))


# --------------------------------------------------------------------------------------------------------
# scores (§3.3)
CLIP_IMG_SIM = "clip_img_sim"  # cosine(synthetic image, its real source image)
CLIP_TXT_SIM = "clip_txt_sim"  # cosine(synthetic image, its prompt) (a probe: p(class | image))
KEEP = "keep"  # the CLIP filter's verdict
SCORE_STATUS = "score_status"  # "ok" or why the row could not be (fully) scored
SCORES_FILE = "clip_scores.parquet"
FILTERED_FILE = "manifest-filtered.parquet"
SUMMARY_FILE = "clip_summary.csv"
FAILURES_FILE = "clip_failures.csv"
DISTRIBUTIONS_PLOT = "clip_score_distributions.png"
GRID_PLOT = "clip_spectrum_grid.png"

# --------------------------------------------------------------------------------------------------------
# curriculum state (§3.4): `<path>.safetensors` (arrays) + `<path>.json` (ids, digest, config)
STATE_FORMAT = "discl-curriculum-state/1"
STATE_ARRAYS_SUFFIX = ".safetensors"
STATE_CONFIG_SUFFIX = ".json"
