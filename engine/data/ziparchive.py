"""Safe extraction of a dropped zip into the cache: once per content, regular files only, within size
limits, never outside the target folder; a half extraction is never reused."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from engine.core.errors import STORAGE_ERRNOS
from engine.core.paths import cache_dir
from engine.data.checks import file_digest
from engine.data.report import DatasetError

MAX_ZIP_UNCOMPRESSED_BYTES = 20 * 1024**3
MAX_ZIP_MEMBERS = 1_000_000

_COPY_CHUNK = 1024 * 1024


def is_zip(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


def extract_zip(zip_path: Path, tick: Callable[[], None]) -> tuple[Path, list[tuple[str, str]]]:
    """Extract (once, cached by content); return the extracted folder and (member, reason) for each
    member left out. `tick()` is called per member, so a long extraction can be cancelled."""
    target = cache_dir() / "zips" / file_digest(zip_path)
    if not target.is_dir():
        _extract_into_place(zip_path, target, tick)
    return target / "files", _read_skipped_members(target)


def _read_skipped_members(extracted: Path) -> list[tuple[str, str]]:
    try:
        return json.loads((extracted / "skipped.json").read_text("utf-8"))
    except (OSError, ValueError):  # the cache was tampered with: nothing to add
        return []


def _extract_into_place(zip_path: Path, target: Path, tick: Callable[[], None]) -> None:
    """Extract into a temporary sibling, then rename: a half extraction is never reused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{target.name[:16]}-", dir=target.parent))
    try:
        skipped = _extract_safely(zip_path, partial / "files", tick)
        (partial / "skipped.json").write_text(json.dumps(skipped), "utf-8")
        try:
            os.rename(partial, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction of the same zip
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _extract_safely(zip_path: Path, destination: Path, tick: Callable[[], None]) -> list[tuple[str, str]]:
    """Extract regular files only; return (member, reason) for each member skipped."""
    destination.mkdir(parents=True)
    skipped = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            _check_zip_limits(zip_path, members)
            for member in members:
                tick()
                reason = _unsafe_member_reason(member) or _extract_member(archive, member, destination)
                if reason:
                    skipped.append((member.filename, reason))
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"'{zip_path.name}' is not a valid zip file ({exc})") from exc
    return skipped


def _check_zip_limits(zip_path: Path, members: list[zipfile.ZipInfo]) -> None:
    if len(members) > MAX_ZIP_MEMBERS:
        raise DatasetError(f"'{zip_path.name}' has {len(members)} entries (limit {MAX_ZIP_MEMBERS})")
    total = sum(m.file_size for m in members)
    if total > MAX_ZIP_UNCOMPRESSED_BYTES:
        raise DatasetError(
            f"'{zip_path.name}' would extract to {total / 1024**3:.1f} GB "
            f"(limit {MAX_ZIP_UNCOMPRESSED_BYTES / 1024**3:.0f} GB)"
        )


def _unsafe_member_reason(member: zipfile.ZipInfo) -> str | None:
    name = member.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return "unsafe path in zip (absolute or '..'), not extracted"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "symbolic link in zip, not extracted"
    if "\0" in name:
        return "invalid file name in zip, not extracted"
    return None


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path) -> str | None:
    parts = [p for p in member.filename.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return None
    out_path = destination.joinpath(*parts)
    if member.is_dir():  # kept so that an empty class folder is still reported
        out_path.mkdir(parents=True, exist_ok=True)
        return None
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, open(out_path, "wb") as sink:
            shutil.copyfileobj(source, sink, _COPY_CHUNK)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError, ValueError) as exc:
        out_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            raise          # the disk, not the member: no half extraction is kept as if it were complete
        return f"cannot be extracted from zip ({exc})"
    return None
