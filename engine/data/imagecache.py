"""Decoded-image cache: decode and resize every image once, so later epochs skip decoding.

Each image is stored as uint8 RGB with its shorter side resized to the eval transform's resize size, by
the very resize the eval transform applies. That transform's own Resize then leaves the stored image as
it is, so evaluation sees identical pixels with or without the cache. Training crops (RandomResizedCrop)
are cut from the same stored images rather than from the originals: with the default light augmentation
a crop is enlarged by at most 1.3x, a small price for never decoding a JPEG twice.

Pixels live in memory when they fit the budget (a quarter of RAM), otherwise in one file on disk read
through memory mapping and reused by later runs on the same data; when neither fits there is no cache,
and the note says why.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
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
from engine.data.images import load_image
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import interpolation_mode

FORMAT_VERSION = 1
DISK_CACHES_KEPT = 2            # on-disk image caches kept besides the one in use
_ESTIMATE_SAMPLE = 64           # image headers read to estimate the cache size


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
    total = 0
    for path in sample:
        with Image.open(path) as im:
            total += resized_bytes(*im.size, size)
    return int(total / len(sample) * len(paths))


class DecodedImages:
    """Stored uint8 pixels, one (H, W, 3) array per image, handed out as PIL images."""

    def __init__(self, arrays: Sequence[np.ndarray], where: str, nbytes: int):
        self.arrays = arrays
        self.where = where             # 'memory' | 'disk'
        self.nbytes = nbytes

    def __len__(self) -> int:
        return len(self.arrays)

    def image(self, index: int) -> Image.Image:
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
        reused = self._load_disk(key)
        if reused is not None:
            return reused, f"decoded images: reused from disk ({format_bytes(reused.nbytes)})"
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
                            f"{MEMORY_FRACTION:.0%} of RAM)")
        return None, (f"no decoded-image cache: about {format_bytes(estimate)} fits neither in memory "
                      f"(budget {format_bytes(self.budget)}) nor on disk ({format_bytes(free)} free)")

    def _decode_all(self, paths, decode, control, progress, sink: Callable[[np.ndarray], None]) -> None:
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
        arrays: list[np.ndarray] = []
        self._decode_all(paths, decode, control, progress, arrays.append)
        return DecodedImages(arrays, "memory", sum(a.nbytes for a in arrays))

    def _decode_to_disk(self, key, paths, decode, control, progress) -> DecodedImages:
        self._forget_old_disk_caches()
        offsets, shapes = [], []
        data = self.folder / f"{key}.u8"
        with atomic_path(data) as tmp, open(tmp, "wb") as out:
            def write(array: np.ndarray) -> None:
                offsets.append(out.tell())
                shapes.append(list(array.shape))
                out.write(np.ascontiguousarray(array).tobytes())
            self._decode_all(paths, decode, control, progress, write)
            out.flush()
        with atomic_path(self.folder / f"{key}.json") as tmp:
            tmp.write_text(json.dumps({"version": FORMAT_VERSION, "offsets": offsets, "shapes": shapes}))
        return self._load_disk(key)

    def _load_disk(self, key: str) -> DecodedImages | None:
        data, index = self.folder / f"{key}.u8", self.folder / f"{key}.json"
        if not (data.exists() and index.exists()):
            return None
        try:
            meta = json.loads(index.read_text())
            offsets, shapes = meta["offsets"], meta["shapes"]
            size = offsets[-1] + int(np.prod(shapes[-1])) if offsets else 0
            if meta.get("version") != FORMAT_VERSION or data.stat().st_size != size:
                raise ValueError("index does not match the data file")
            flat = np.memmap(data, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        except (ValueError, KeyError, IndexError, OSError):
            data.unlink(missing_ok=True)         # damaged: rebuilt, never trusted
            index.unlink(missing_ok=True)
            return None
        os.utime(index)                          # most recently used: kept longest
        return DecodedImages(_MappedArrays(flat, offsets, shapes), "disk", size)

    def _forget_old_disk_caches(self) -> None:
        """Image caches are large: keep only the few most recently used ones."""
        indexes = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for index in indexes[DISK_CACHES_KEPT:]:
            try:
                index.with_suffix(".u8").unlink(missing_ok=True)
                index.unlink(missing_ok=True)
            except OSError:                      # still mapped by another run (Windows): next time
                pass


def _decoder(pre: Preprocessing) -> Callable[[str], np.ndarray]:
    """The eval transform's first step (same size, interpolation, antialias), then uint8 HWC."""
    resize = T.Resize(pre.resize_size, interpolation=interpolation_mode(pre), antialias=True)
    return lambda path: np.asarray(resize(load_image(path)))


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _existing_parent(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder
