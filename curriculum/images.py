"""Reading source images robustly and writing generated ones atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curriculum.tables import atomic_path


class SourceImageError(ValueError):
    """A source image that cannot be used; the message says which file and why."""


class UnsafeNameError(ValueError):
    """A class or image name that would write outside the output folder."""


def safe_component(name: str, what: str) -> str:
    """Return `name` if it is usable as one path component inside the output folder, else raise.

    Rejects empty names, `.`/`..`, path separators and NUL, so `../x` can never write outside
    `--output_path`.
    """
    name = str(name)
    if not name.strip() or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafeNameError(f"{what} {name!r} is not a safe file name (it would write outside --output_path)")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnsafeNameError(
            f"{what} {name[:40]!r}... is not a safe file name: {len(name.encode('utf-8', 'surrogateescape'))} bytes, "
            f"past the {MAX_NAME_BYTES} a file name (with its suffix and temporary-file prefix) may have"
        )
    return name


#: longest name component accepted: the file-system limit (255 bytes) less a suffix and the temporary-file
#: decoration of an atomic write (`.{name}.XXXXXXXX.tmp`)
MAX_NAME_BYTES = 255 - 32


def ensure_inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Return `path` if its folder, symlinks resolved, lies inside `root` (resolved); else raise UnsafeNameError.

    A symlink inside the output folder (a class folder linked elsewhere) must not make images land outside it.
    """
    root_r, path = Path(root).resolve(), Path(path)
    parent = path.parent.resolve()
    if parent != root_r and root_r not in parent.parents:
        raise UnsafeNameError(f"{path} is not a safe file name: its folder resolves to {parent}, outside {root_r}")
    return path


# Characters a class name may hold that cannot stand in one folder name. Each becomes `%XX` (its byte in hex,
# as in URLs), and so does `%` itself, so the mapping is one-to-one and `class_from_folder_name` undoes it:
# ImageNet's "baluster / handrail" is the folder "baluster %2F handrail". Every other name is its own folder.
_FOLDER_ESCAPES = {"%": "%25", "/": "%2F", "\\": "%5C", "\x00": "%00"}


def class_folder_name(name: str) -> str:
    """Return the folder name of a class: the name itself when it is a safe path component, else the name with
    `%`, `/`, `\\` and NUL written as `%XX` (and `.`/`..` as `%2E`/`%2E%2E`); raise UnsafeNameError for an empty
    name. Stable and reversible (`class_from_folder_name`)."""
    name = str(name)
    if not name.strip():
        raise UnsafeNameError(f"class name {name!r} is empty: it has no folder name")
    out = "".join(_FOLDER_ESCAPES.get(ch, ch) for ch in name)
    if out in {".", ".."}:
        out = out.replace(".", "%2E")
    return safe_component(out, "class folder")


def class_from_folder_name(folder: str) -> str:
    """Return the class name a folder of `class_folder_name` stands for (`%XX` decoded; other text unchanged)."""
    from urllib.parse import unquote

    return unquote(str(folder)) if "%" in str(folder) else str(folder)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Return the image at `path` as an 8-bit RGB PIL image (EXIF rotation applied).

    Grayscale, palette, RGBA (composited on white), CMYK and 16-bit/float images are converted; a missing
    or undecodable file raises SourceImageError.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceImageError(f"missing source image {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as err:  # not an OSError: without this it ends the whole run
        raise SourceImageError(f"unreadable source image {path}: too many pixels ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SourceImageError(f"unreadable source image {path}: {err}") from err
    return to_rgb8(im)


def to_rgb8(im: Image.Image) -> Image.Image:
    """Return `im` converted to 8-bit RGB, scaling high-bit-depth data instead of clipping it."""
    if im.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if im.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        im = Image.fromarray((arr * 255.0 + 0.5).clip(0, 255).astype(np.uint8), mode="L")
    if im.mode in {"RGBA", "LA"} or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Return (width, height) of an image from its header, without decoding it."""
    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the sides
            width, height = height, width
    return width, height


def is_readable_image(path: str | os.PathLike) -> bool:
    """Return True if `path` exists and decodes fully (a truncated file counts as not done)."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def looks_complete(path: str | os.PathLike) -> bool:
    """Return True if `path` exists and, for a JPEG, holds both its start (FF D8) and end (FF D9) markers.

    A cheap completeness check (two small reads, no decoding) for images a manifest already records: a file
    truncated or overwritten after it was written loses its end marker. Other formats: existence.
    """
    p = os.fspath(path)
    try:
        size = os.path.getsize(p)
    except OSError:
        return False
    if not p.lower().endswith((".jpg", ".jpeg")):
        return True
    if size < 4:
        return False
    with open(p, "rb") as f:
        head = f.read(2)
        f.seek(-2, os.SEEK_END)
        return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"


def to_pil(array: np.ndarray) -> Image.Image:
    """Return an HxWx3 float array in [0, 1] as an 8-bit RGB image (rounded as diffusers' numpy_to_pil)."""
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8), mode="RGB")


def save_image_atomic(image: Image.Image, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write `image` to `path` (format from the suffix) via a temporary file and a rename; return the path."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "JPEG")
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            image.save(tmp, format=fmt, quality=quality)
        else:
            image.save(tmp, format=fmt)
    return path


def resize_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """Return `image` resized to exactly (width, height) with Lanczos filtering."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample=Image.Resampling.LANCZOS)


def center_crop_to_aspect(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Return the largest central crop of `im` whose aspect equals that of `size` (w, h); `im` if it already has it."""
    w, h = im.size
    tw, th = size
    if w * th == h * tw:
        return im
    if w * th > h * tw:  # too wide: keep the full height
        cw, ch = max(1, round(h * tw / th)), h
    else:  # too tall: keep the full width
        cw, ch = w, max(1, round(w * th / tw))
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def crop_resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Return `im` as RGB, center-cropped to the aspect of `size` (w, h) and resized to it (bicubic): never squashed.

    The one crop-resize of the pixel-space models, so training images and generation sources match.
    """
    im = center_crop_to_aspect(im.convert("RGB"), size)
    return im if im.size == tuple(size) else im.resize(tuple(size), Image.Resampling.BICUBIC)


def to_signed_array(im: Image.Image) -> np.ndarray:
    """Return an 8-bit RGB image as an HxWx3 float32 array in [-1, 1] (the pixel-space models' range)."""
    return np.asarray(im, dtype=np.float32) / 127.5 - 1.0
