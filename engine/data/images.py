"""Reading user images safely and consistently.

Every image that enters TransferLab goes through this module, so that
training, preview and export all see the same RGB pixels: EXIF rotation
applied, transparency flattened on white, 16-bit and float images scaled
instead of clipped.  `check_image` is the cheap-but-honest gate used by the
dataset scan: it really decodes the file, so truncated downloads are caught
before training starts instead of in the middle of an epoch.

Only Pillow (and numpy, lazily, for the rare high-bit-depth modes) is used,
so importing this module stays fast and Qt/torch free.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Same budget as Pillow's default, but enforced by us (see `_check_pixel_count`)
# so the reason shown to the user names the real size and the limit.
MAX_PIXELS = 89_478_485

# Pillow raises DecompressionBombError above twice this value even for code
# that calls Image.open directly (e.g. a training data loader).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "@eadir"})
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_THAT_SWAP_AXES = frozenset({5, 6, 7, 8})
_JPEG_CHECK_DRAFT_SIZE = (256, 256)
_WHITE = (255, 255, 255)
_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


class ImageError(Exception):
    """An image file cannot be used; `reason` is short and human readable."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """Size of an image as it will be displayed (after EXIF rotation)."""

    width: int
    height: int


def has_image_extension(path: str | os.PathLike) -> bool:
    """True when the file name ends with a supported image extension (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_hidden_or_system(path: str | os.PathLike) -> bool:
    """True for files/folders that OSes and NAS boxes create behind the user's back.

    Only the last path component is looked at, so an image inside a hidden
    parent folder is not flagged here (walkers skip hidden folders themselves).
    """
    name = Path(path).name
    return name.startswith(".") or name.lower() in _SYSTEM_FILE_NAMES


def check_image(path: str | os.PathLike) -> ImageInfo:
    """Decode `path` enough to be sure it is a usable image, and return its size.

    Raises ImageError with one of the reasons: "empty file (0 bytes)",
    "cannot be read (...)", "not an image", "corrupt or truncated image",
    "too large (W×H pixels, limit N)".
    """
    _reject_empty_or_unreadable(path)
    with _open_image(path) as im:
        info = _displayed_size(im)
        # JPEG only: decode at 1/8 scale, which still reads every byte.
        im.draft("RGB", _JPEG_CHECK_DRAFT_SIZE)
        _decode(im)
    return info


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load `path` as an 8-bit RGB image, upright, ready for a model.

    The file is closed before returning.  Raises ImageError for files that
    `check_image` would reject.
    """
    _reject_empty_or_unreadable(path)
    with _open_image(path) as im:
        im.seek(0)  # animated GIF/WebP/TIFF: the first frame
        _decode(im)
        upright = _apply_exif_orientation(im)
        return to_rgb(upright)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or black halos."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im.copy()
    if im.mode in _HIGH_BIT_DEPTH_MODES:
        return _high_bit_depth_to_rgb(im)
    try:
        if _has_alpha(im):
            return _flatten_on_white(_to_rgba(im))
        if im.mode == "LAB":
            return _lab_to_rgb(im)
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"unsupported colour mode ({im.mode})") from exc


# --- helpers ---------------------------------------------------------------


def _reject_empty_or_unreadable(path: str | os.PathLike) -> None:
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ImageError(_unreadable_reason(exc)) from exc
    if size == 0:
        raise ImageError("empty file (0 bytes)")


def _unreadable_reason(exc: OSError) -> str:
    detail = exc.strerror or type(exc).__name__
    return f"cannot be read ({detail.lower()})"


def _open_image(path: str | os.PathLike) -> Image.Image:
    """Image.open with every failure translated into an ImageError."""
    try:
        im = Image.open(path)
    except UnidentifiedImageError as exc:
        raise ImageError("not an image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_too_large_reason_from_pillow(exc)) from exc
    except OSError as exc:
        if exc.errno is None:  # raised by a Pillow decoder, not by the OS
            raise ImageError("corrupt or truncated image") from exc
        raise ImageError(_unreadable_reason(exc)) from exc
    except Exception as exc:  # Pillow plugins raise all sorts on garbage headers
        raise ImageError("corrupt or truncated image") from exc
    try:
        _check_pixel_count(im.size)
    except ImageError:
        im.close()
        raise
    return im


def _check_pixel_count(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(f"too large ({width}×{height} pixels, limit {MAX_PIXELS})")


def _too_large_reason_from_pillow(exc: Exception) -> str:
    """Pillow refused before we saw the size; its message carries the numbers."""
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if match:
        return f"too large ({match.group(1)} pixels, limit {match.group(2)})"
    return f"too large (limit {MAX_PIXELS})"


def _decode(im: Image.Image) -> None:
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_too_large_reason_from_pillow(exc)) from exc
    except Exception as exc:  # OSError, SyntaxError, zlib.error, struct.error...
        raise ImageError("corrupt or truncated image") from exc


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF must not make a good image unusable
        return 1


def _displayed_size(im: Image.Image) -> ImageInfo:
    width, height = im.size
    if _exif_orientation(im) in _ORIENTATIONS_THAT_SWAP_AXES:
        width, height = height, width
    return ImageInfo(width, height)


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # malformed EXIF: keep the pixels as stored
        return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _to_rgba(im: Image.Image) -> Image.Image:
    if im.mode == "La":  # Pillow has no direct La -> RGBA conversion
        im = im.convert("LA")
    return im.convert("RGBA")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    """A plain convert() would reinterpret L*a*b* numbers as RGB; use colour management."""
    from PIL import ImageCms

    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    return ImageCms.applyTransform(im, transform)


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    """Transparent pixels become white: most product/icon datasets assume that."""
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_bit_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit int and float images into 0..255 (Pillow clips)."""
    import numpy as np

    values = np.asarray(im).astype(np.float64)
    scaled = _scale_to_unit_range(values, im.mode) * 255.0
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _scale_to_unit_range(values, mode: str):
    """Map raw sample values to 0..1 using the range the mode implies.

    16-bit modes use 0..65535.  'I' (32-bit int) is nearly always a 16-bit
    PNG/TIFF in disguise, so 0..65535 is assumed when the data fits, else the
    data's own min..max.  'F' uses 0..1 or 0..255 when the data fits either,
    else min..max.  NaN/inf become black.
    """
    import numpy as np

    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        return values / 65535.0
    if mode == "F" and low >= 0 and high <= 1.0:
        return values
    if mode == "F" and low >= 0 and high <= 255.0:
        return values / 255.0
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)
