"""Decoding, measuring and hashing every candidate image once, in parallel, so that a broken file shows
up in the scan's report instead of as a crash in the middle of training."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data import images

_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileCheck:
    reason: str | None = None  # None: usable
    digest: str = ""
    size: tuple[int, int] = (0, 0)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks (datasets hold big files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(paths: list[str], workers: int, progress: Progress, control: RunControl) -> list[FileCheck]:
    """Decode + hash every file, in a thread pool (Pillow releases the GIL); results in `paths` order.

    Reports `progress("scan", done, total)` after every step and stops at `control`'s checkpoints.
    """
    progress("scan", 0, len(paths))
    control.checkpoint()
    images.Image.init()  # register all decoders once, before threads race to do it
    if workers <= 1:
        return _check_sequentially(paths, progress, control)
    return _check_in_pool(paths, workers, progress, control)


def _inspect_file(path: str) -> FileCheck:
    try:
        info = images.check_image(path)
        digest = file_digest(path)
    except images.ImageError as exc:
        return FileCheck(reason=exc.reason)
    except OSError as exc:
        return FileCheck(reason=f"cannot be read ({(exc.strerror or str(exc)).lower()})")
    return FileCheck(digest=digest, size=(info.width, info.height))


def _check_sequentially(paths: list[str], progress: Progress, control: RunControl) -> list[FileCheck]:
    results = []
    for path in paths:
        control.checkpoint()
        results.append(_inspect_file(path))
        progress("scan", len(results), len(paths))
    return results


def _check_in_pool(paths: list[str], workers: int, progress: Progress,
                   control: RunControl) -> list[FileCheck]:
    results: list[FileCheck | None] = [None] * len(paths)
    queue = iter(enumerate(paths))
    max_in_flight = workers * 4  # bounded, so cancelling is quick
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataset-scan") as pool:
        in_flight = {}
        try:
            while True:
                for index, path in queue:
                    in_flight[pool.submit(_inspect_file, path)] = index
                    if len(in_flight) >= max_in_flight:
                        break
                if not in_flight:
                    break
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[in_flight.pop(future)] = future.result()
                done += len(finished)
                progress("scan", done, len(paths))
                control.checkpoint()
        finally:
            for future in in_flight:
                future.cancel()
    return results  # type: ignore[return-value]
