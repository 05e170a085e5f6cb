"""What a user reads when something fails: one line, never a traceback (that goes to the log file)."""
from __future__ import annotations

import errno
import os
import re

# A write the disk refused: no room (full disk, quota, file size limit) or no right (read-only, permissions).
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set()))
NO_RIGHT = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
STORAGE_ERRNOS = NO_ROOM | NO_RIGHT

_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")     # how Rust libraries (safetensors) report an errno


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), cut to `limit`."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def readable_error(exc: BaseException) -> str:
    """The engine's own words for bad input (every input error is a ValueError: DatasetError, ModelError,
    bad settings) and for a disk that refused a write, else the exception's type and first line."""
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return storage_message(exc.errno, exc.filename, earlier_kept=False)
    if isinstance(exc, ValueError) and str(exc).strip():
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def storage_message(code: int, path, earlier_kept: bool = True) -> str:
    """One line saying why the disk refused to write `path` and what to do about it."""
    where = f" {path}" if path else ""
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        text = f"the disk is full while writing{where}: free some space and try again"
    elif code == errno.EFBIG:
        text = (f"no room to write{where} (the file is larger than the disk or this account allows): "
                "free some space or choose another folder, then try again")
    elif code == errno.EROFS:
        text = f"the disk is read-only while writing{where}: choose a folder you can write to and try again"
    else:
        text = f"no permission to write{where}: choose a folder you can write to and try again"
    return text + ("; any earlier version of the file is unchanged" if earlier_kept else "")


class StorageError(OSError):
    """An atomic write the disk refused (full, quota, file size limit, read-only, no permission). It stays an
    OSError with its errno, names the file meant to be written (not the temporary one), and reads as a
    plain sentence wherever it is printed, e.g. the CLI's one-line failure."""

    def __str__(self) -> str:
        return storage_message(self.errno, self.filename)


def storage_error(exc: BaseException, target, temporary=None) -> StorageError | None:
    """`exc` as a StorageError about `target` when it is a refused write of `target` (or of its temporary
    file, or of no file named), also when a library reports the errno only in its message; else None."""
    if isinstance(exc, StorageError):
        return None
    if isinstance(exc, OSError):
        code, named = exc.errno, exc.filename
        if named is not None and str(named) not in (str(target), str(temporary)):
            return None                          # about another file, e.g. a source being read
    else:
        match = _OS_ERROR_CODE.search(str(exc))
        code = int(match.group(1)) if match else None
    if code not in STORAGE_ERRNOS:
        return None
    return StorageError(code, os.strerror(code), str(target))
