"""Atomic writes: a file is either the old one or the complete new one, never half-written, even when the
process is killed or the machine loses power; a disk that refuses the write says so in plain words."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from engine.core.errors import storage_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike, durable: bool = True):
    """Yield a temporary path beside `target`; rename it over `target` only if the block succeeds.

    `durable`: the bytes reach the disk before the rename and the rename itself after it (fsync), so a
    power cut leaves the old file or the new one. Caches whose entries carry a checksum pass False: a torn
    entry is detected and recomputed, and flushing hundreds of MB would stall training.

    A write the disk refuses (full, file size limit, read-only, no permission) raises
    `engine.core.errors.StorageError` naming `target`; the temporary file is always removed.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:          # whichever file it names (the folder, a temporary name) is ours
        refused = storage_error(exc, target, exc.filename)
        if refused is None:
            raise
        raise refused from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            _flush_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes owner-only files; keep the usual mode
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        refused = storage_error(exc, target, tmp)
        if refused is not None:
            raise refused from exc
        raise
    if durable:
        _flush_directory(target.parent)


def _flush_file(path: Path) -> None:
    """Make the file's bytes durable before it replaces the old one (else a crash can leave it empty)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush_directory(folder: Path) -> None:
    """Make the rename durable. POSIX only (Windows has no O_DIRECTORY and cannot open a folder this way);
    some file systems refuse to sync a folder: the rename is done, so that is not an error."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(target: str | os.PathLike, data) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(target: str | os.PathLike, text: str) -> None:
    """`Path.write_text`, atomically and durably."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
