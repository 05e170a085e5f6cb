"""Decoded-image cache: decode and resize every image once, so later epochs skip decoding.

Each image is stored as uint8 RGB with its shorter side resized to the eval transform's resize size, by
the very resize the eval transform applies. That transform's own Resize then leaves the stored image as
it is, so evaluation sees identical pixels with or without the cache. Training crops (RandomResizedCrop)
are cut from the same stored images rather than from the originals: with the default light augmentation
a crop is enlarged by at most 1.3x, a small price for never decoding a JPEG twice.

Pixels live in memory when they fit the budget (a quarter of RAM), otherwise in one file on disk read
through memory mapping and reused by later runs on the same data; when neither fits there is no cache,
and the note says why. The disk file's index records its byte count and CRC-32, checked when it is
opened: a torn or damaged file is deleted and decoded again, never trusted.

An image that cannot be read while the cache is built (deleted or damaged since the scan) leaves a gap:
handing it out raises its ImageError, which the training data loader turns into a skipped sample. A disk
cache with gaps is never reused, so a file that comes back is read again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torchvision.transforms import v2 as T

from engine.core.control import RunControl
from engine.core.files import atomic_path
from engine.core.memory import MEMORY_FRACTION, format_bytes, memory_budget
from engine.core.paths import cache_dir
from engine.core.progress import Progress
from engine.data.images import ImageError, load_image
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import interpolation_mode

FORMAT_VERSION = 2             # 2: the index holds the data file's bytes, CRC-32 and unreadable images
DISK_CACHES_KEPT = 2            # on-disk image caches kept besides the one in use
_ESTIMATE_SAMPLE = 64           # image headers read to estimate the cache size
_CHECK_CHUNK = 16 * 2**20       # bytes per CRC-32 step when a disk cache is opened

log = logging.getLogger("transferlab")


def resized_bytes(width: int, height: int, size: int) -> int:
    """Bytes of an RGB image whose shorter side is resized to `size` (torchvision's rounding)."""
    short, long = sorted((width, height))
    return size * int(size * long / short) * 3


def estimate_bytes(paths: Sequence[str], size: int) -> int:
    """Cache size from the headers of up to 64 evenly spaced images (reading headers is cheap)."""
    if not paths:
        return 0
    step = max(1, len(paths) // _ESTIMATE_SAMPLE)
    sample = paths[::step][:_ESTIMATE_SAMPLE]
    sizes = []
    for path in sample:
        try:
            with Image.open(path) as im:
                sizes.append(resized_bytes(*im.size, size))
        except (OSError, ValueError, Image.DecompressionBombError):  # gone or damaged since the scan
            continue
    return int(sum(sizes) / len(sizes) * len(paths)) if sizes else 0


class DecodedImages:
    """Stored uint8 pixels, one (H, W, 3) array per image, handed out as PIL images; `unreadable` maps the
    index of each image that could not be decoded to why (its array is a placeholder)."""

    def __init__(self, arrays: Sequence[np.ndarray], where: str, nbytes: int,
                 unreadable: dict[int, str] | None = None):
        self.arrays = arrays
        self.where = where             # 'memory' | 'disk'
        self.nbytes = nbytes
        self.unreadable = dict(unreadable or {})

    def __len__(self) -> int:
        return len(self.arrays)

    def image(self, index: int) -> Image.Image:
        if index in self.unreadable:
            raise ImageError(self.unreadable[index])
        return Image.fromarray(self.arrays[index])

    def source(self, indices: Sequence[int]) -> "ImageSource":
        """An `ImageDataset` image source for a subset, e.g. one split of the cached images."""
        return ImageSource(self, list(indices))


class ImageSource:
    """index within a subset -> PIL image; a class rather than a lambda so DataLoader workers can pickle it."""

    def __init__(self, images: DecodedImages, indices: list[int]):
        self.images = images
        self.indices = indices

    def __call__(self, index: int) -> Image.Image:
        return self.images.image(self.indices[index])


class _MappedArrays:
    """The disk layout: one flat uint8 file plus per-image offsets and shapes, read through mmap."""

    def __init__(self, flat: np.ndarray, offsets: list[int], shapes: list[list[int]]):
        self.flat, self.offsets, self.shapes = flat, offsets, shapes

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        shape = self.shapes[index]
        start = self.offsets[index]
        return self.flat[start:start + shape[0] * shape[1] * shape[2]].reshape(shape)


@dataclass
class DecodedImageCache:
    """Builds `DecodedImages` for a list of files at one preprocessing.

    Args:
        folder: where disk caches live (default: the user cache folder, `images/`).
        budget: bytes allowed in memory (default: a quarter of RAM).
        workers: decoding threads (Pillow releases the GIL while decoding and resizing).
    """

    folder: Path | None = None
    budget: int | None = None
    workers: int | None = None

    def __post_init__(self):
        self.folder = Path(self.folder) if self.folder else cache_dir() / "images"
        self.budget = memory_budget() if self.budget is None else self.budget
        self.workers = self.workers or _usable_cores()

    def key(self, paths: Sequence[str], content_hash: str, pre: Preprocessing) -> str:
        parts = {"version": FORMAT_VERSION, "paths": list(paths), "content": content_hash,
                 "size": pre.resize_size, "interpolation": pre.interpolation}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def build(self, paths: Sequence[str], content_hash: str, pre: Preprocessing,
              control: RunControl | None = None,
              progress: Progress | None = None) -> tuple[DecodedImages | None, str]:
        """(cached images or None, a one-line note saying where they are or why there is no cache)."""
        paths = list(paths)
        key = self.key(paths, content_hash, pre)
        reused, problem = self._reuse_disk(key)
        if reused is not None:
            return reused, f"decoded images: reused from disk ({format_bytes(reused.nbytes)})"
        if problem:
            log.warning("decoded-image cache %s not reused: %s; decoding the images again", key, problem)
        estimate = estimate_bytes(paths, pre.resize_size)
        decode = _decoder(pre)
        if estimate <= self.budget:
            images = self._decode_to_memory(paths, decode, control, progress)
            return images, f"decoded images: in memory ({format_bytes(images.nbytes)})"
        free = shutil.disk_usage(_existing_parent(self.folder)).free
        if estimate * 1.2 + 2**30 <= free:
            try:
                images = self._decode_to_disk(key, paths, decode, control, progress)
            except OSError as exc:       # e.g. a read-only cache folder: train without the cache
                return None, f"no decoded-image cache: cannot write to {self.folder} ({exc.strerror or exc})"
            return images, (f"decoded images: on disk ({format_bytes(images.nbytes)}, more than "
                            f"{MEMORY_FRACTION:.0%} of RAM)" + (f"; the cached copy was {problem}, "
                                                                "so it was rebuilt" if problem else ""))
        return None, (f"no decoded-image cache: about {format_bytes(estimate)} fits neither in memory "
                      f"(budget {format_bytes(self.budget)}) nor on disk ({format_bytes(free)} free)")

    def _decode_all(self, paths, decode, control, progress,
                    sink: Callable[[np.ndarray | ImageError], None]) -> None:
        chunk = 8 * self.workers
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(paths), chunk):
                if control is not None:
                    control.checkpoint()
                for array in pool.map(decode, paths[start:start + chunk]):
                    sink(array)
                if progress:
                    progress("images", min(start + chunk, len(paths)), len(paths))

    def _decode_to_memory(self, paths, decode, control, progress) -> DecodedImages:
        arrays: list[np.ndarray | None] = []
        unreadable: dict[int, str] = {}

        def keep(array: np.ndarray | ImageError) -> None:
            if isinstance(array, ImageError):
                unreadable[len(arrays)] = array.reason
                array = None
            arrays.append(array)
        self._decode_all(paths, decode, control, progress, keep)
        return DecodedImages(arrays, "memory", sum(a.nbytes for a in arrays if a is not None), unreadable)

    def _decode_to_disk(self, key, paths, decode, control, progress) -> DecodedImages:
        self._forget_old_disk_caches()
        offsets, shapes, unreadable, crc = [], [], {}, 0
        data = self.folder / f"{key}.u8"
        with atomic_path(data, durable=False) as tmp, open(tmp, "wb") as out:   # checksummed: see module
            def write(array: np.ndarray | ImageError) -> None:
                nonlocal crc
                offsets.append(out.tell())
                if isinstance(array, ImageError):              # a gap: no bytes, an empty shape
                    unreadable[len(shapes)] = array.reason
                    array = np.zeros((0, 0, 3), np.uint8)
                shapes.append(list(array.shape))
                raw = np.ascontiguousarray(array).tobytes()
                crc = zlib.crc32(raw, crc)
                out.write(raw)
            self._decode_all(paths, decode, control, progress, write)
            size = out.tell()
        index = {"version": FORMAT_VERSION, "bytes": size, "crc32": crc, "offsets": offsets, "shapes": shapes,
                 "unreadable": {str(i): reason for i, reason in unreadable.items()}}
        with atomic_path(self.folder / f"{key}.json") as tmp:
            tmp.write_text(json.dumps(index))
        images, problem = self._open_disk(key)
        if images is None:
            raise OSError(f"the decoded-image cache just written is {problem}")
        return images

    def _reuse_disk(self, key: str) -> tuple[DecodedImages | None, str]:
        """(the disk cache a run before left, or None, and why it cannot be used: '' when there is none)."""
        images, problem = self._open_disk(key)
        if images is not None and images.unreadable:
            images, problem = None, "missing images that could not be read when it was built"
            self._delete_disk(key)
        return images, problem

    def _open_disk(self, key: str) -> tuple[DecodedImages | None, str]:
        """(the memory-mapped disk cache, or None and what is wrong with it). Its size and CRC-32 are checked
        here, once: a torn or damaged file is deleted, never trusted."""
        data, index = self.folder / f"{key}.u8", self.folder / f"{key}.json"
        if not (data.exists() and index.exists()):
            return None, ""
        try:
            meta = json.loads(index.read_text())
            if meta.get("version") != FORMAT_VERSION:
                raise ValueError("in an older format")
            offsets, shapes, size = meta["offsets"], meta["shapes"], int(meta["bytes"])
            end = offsets[-1] + int(np.prod(shapes[-1])) if offsets else 0
            if data.stat().st_size != size or end != size:
                raise ValueError(f"truncated or damaged ({data.stat().st_size} bytes, the index says {size})")
            flat = np.memmap(data, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
            if _crc32(flat) != int(meta["crc32"]):
                raise ValueError("damaged (its checksum does not match)")
            unreadable = {int(i): str(reason) for i, reason in meta.get("unreadable", {}).items()}
        except (ValueError, TypeError, KeyError, IndexError, OSError) as exc:
            self._delete_disk(key)
            return None, str(exc) if isinstance(exc, ValueError) else f"unreadable ({exc})"
        os.utime(index)                          # most recently used: kept longest
        return DecodedImages(_MappedArrays(flat, offsets, shapes), "disk", size, unreadable), ""

    def _delete_disk(self, key: str) -> None:
        for suffix in (".u8", ".json"):
            try:
                (self.folder / f"{key}{suffix}").unlink(missing_ok=True)
            except OSError:                      # still mapped by another run (Windows): next time
                pass

    def _forget_old_disk_caches(self) -> None:
        """Image caches are large: keep only the few most recently used ones."""
        indexes = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for index in indexes[DISK_CACHES_KEPT:]:
            try:
                index.with_suffix(".u8").unlink(missing_ok=True)
                index.unlink(missing_ok=True)
            except OSError:                      # still mapped by another run (Windows): next time
                pass


def _decoder(pre: Preprocessing) -> Callable[[str], np.ndarray | ImageError]:
    """The eval transform's first step (same size, interpolation, antialias), then uint8 HWC; the
    ImageError of an image that cannot be read any more, to leave a gap for it."""
    resize = T.Resize(pre.resize_size, interpolation=interpolation_mode(pre), antialias=True)

    def decode(path: str) -> np.ndarray | ImageError:
        try:
            return np.asarray(resize(load_image(path)))
        except ImageError as exc:
            return exc
    return decode


def _crc32(flat: np.ndarray) -> int:
    """CRC-32 of a (memory-mapped) byte array, in steps so no copy of a large file is made."""
    crc = 0
    for start in range(0, len(flat), _CHECK_CHUNK):
        crc = zlib.crc32(flat[start:start + _CHECK_CHUNK], crc)
    return crc


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _existing_parent(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder
