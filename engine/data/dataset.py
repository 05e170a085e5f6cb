"""Turning whatever the user dropped into a checked, split, labelled dataset.

`scan_dataset` accepts a folder (class folders or train/val/test folders), a
CSV of `path,label[,split]`, a zip of any of these, or several of them at
once.  It decodes every image once, so that problems surface here, in one
readable report, instead of as a crash in the middle of training.  Nothing
is dropped silently: every skipped file appears in `DatasetReport.problems`.

The result is plain data (paths, ints, strings) so it can cross thread and
process boundaries and be written as JSON.  No torch and no Qt here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import stat
import tempfile
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from engine.data import images
from engine.core.control import Cancelled
from engine.core.paths import cache_dir

SPLITS = ("train", "val", "test")
SEVERITIES = ("error", "warning", "info")

SPLIT_FOLDER_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

IMBALANCE_RATIO = 10
MAX_ZIP_UNCOMPRESSED_BYTES = 20 * 1024**3
MAX_ZIP_MEMBERS = 1_000_000

_PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress calls per second
_STOP_CHECK_EVERY = 256  # directory entries between should_stop() calls
_HASH_CHUNK = 1024 * 1024
_CONTENT_HASH_VERSION = "transferlab-dataset-v1"

# Split markers for files whose split we must choose ourselves.
_CARVE_ALL = None  # no split given: carve train/val/test
_CARVE_VAL = "train-pool"  # given as train, but no val given: carve val out of it

_CSV_PATH_COLUMNS = {"path", "file", "filename", "filepath", "file_path", "image", "image_path"}
_CSV_LABEL_COLUMNS = {"label", "class", "category", "class_name", "target"}
_CSV_SPLIT_COLUMNS = {"split", "subset", "set"}
_CSV_COLUMN_ALIASES = {"path": _CSV_PATH_COLUMNS, "label": _CSV_LABEL_COLUMNS, "split": _CSV_SPLIT_COLUMNS}


# --- public data -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path to the image file
    label: int  # index into report.classes
    split: str  # 'train' | 'val' | 'test'


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str  # human readable, e.g. "corrupt or truncated image"
    severity: str  # 'error' (file skipped) | 'warning' (kept but suspicious) | 'info'

    @property
    def kind(self) -> str:
        """The reason without its details, used to group similar problems."""
        return _problem_kind(self.reason)


@dataclass
class DatasetReport:
    root: str  # what the user gave (folder, csv or zip path; common folder for several)
    layout: str  # 'class-folders' | 'split-folders' | 'csv' | 'mixed'
    classes: list[str]  # sorted class names
    samples: list[Sample]
    problems: list[Problem]
    split_given: bool  # True when the user's folders/CSV decided train vs test
    min_size: tuple[int, int] | None  # (w, h) of the smallest usable image (by area)
    max_size: tuple[int, int] | None  # (w, h) of the largest usable image (by area)
    content_hash: str  # digest of relative paths, file hashes, labels, splits
    source_kind: str = "folder"  # 'folder' | 'csv' | 'zip' | 'multiple'

    def split(self, name: str) -> list[Sample]:
        """Samples of one split, in report order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> number of samples, with every class present (zeros too)."""
        table = {split: {name: 0 for name in self.classes} for split in SPLITS}
        for sample in self.samples:
            table[sample.split][self.classes[sample.label]] += 1
        return table

    def to_dict(self) -> dict:
        """JSON-friendly copy (tuples become lists); `counts` is included for convenience."""
        return {
            "root": self.root,
            "layout": self.layout,
            "source_kind": self.source_kind,
            "classes": list(self.classes),
            "samples": [asdict(s) for s in self.samples],
            "problems": [asdict(p) for p in self.problems],
            "split_given": self.split_given,
            "min_size": list(self.min_size) if self.min_size else None,
            "max_size": list(self.max_size) if self.max_size else None,
            "content_hash": self.content_hash,
            "counts": self.counts(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DatasetReport":
        """Inverse of `to_dict`, for reports stored next to a trained model."""
        return cls(
            root=data["root"],
            layout=data["layout"],
            classes=list(data["classes"]),
            samples=[Sample(**s) for s in data["samples"]],
            problems=[Problem(**p) for p in data["problems"]],
            split_given=bool(data["split_given"]),
            min_size=tuple(data["min_size"]) if data.get("min_size") else None,
            max_size=tuple(data["max_size"]) if data.get("max_size") else None,
            content_hash=data["content_hash"],
            source_kind=data.get("source_kind", "folder"),
        )

    def format_text(self, max_paths_per_group: int = 20) -> str:
        """A readable multi-line report for the log panel or a text export."""
        lines = [f"Dataset: {self.root}", _describe_layout(self)]
        lines += ["", *_format_counts_table(self)]
        if self.min_size and self.max_size:
            lines.append(
                f"Image sizes: {_format_size(self.min_size)} to {_format_size(self.max_size)}"
            )
        lines += ["", *_format_problems(self.problems, max_paths_per_group)]
        return "\n".join(lines)


class DatasetError(ValueError):
    """The dataset cannot be used at all.  The message is one clear line;
    `problems` holds whatever was found on the way, for display."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


class ScanCancelled(Cancelled):
    """Raised by scan_dataset when `should_stop()` returned True; a `Cancelled` like any other job's."""


ProgressCallback = Callable[[int, int], None]
StopCallback = Callable[[], bool]


def scan_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_images_per_class: int = 5,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    workers: int = 4,
) -> DatasetReport:
    """Find, check, label and split every image of `source`.

    `source` is a folder, a CSV, a zip, or a list of those (several folders
    dropped at once: a folder that directly holds images is one class, any
    other folder is a dataset root; everything is merged).
    `progress(done, total)` is called from this thread while images are
    decoded; `should_stop()` is polled and makes the scan raise ScanCancelled.
    Raises DatasetError when the result would be unusable.
    """
    _check_fractions(val_fraction, test_fraction)
    sources = _as_path_list(source)
    stop = _StopCheck(should_stop)
    lister = _Lister(stop)
    for path in sources:
        lister.add_source(path, several=len(sources) > 1)
    root = _describe_root(sources)

    candidates = _remove_repeated_files(lister.candidates, lister.problems)
    checks = _check_files(candidates, workers, progress, stop)
    settings = _SplitSettings(val_fraction, test_fraction, seed, min_images_per_class)
    return _build_report(root, _source_kind(sources), lister, candidates, checks, settings)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks (datasets hold big files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- input normalisation -------------------------------------------------------


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must leave images for training")


def _as_path_list(source) -> list[Path]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise DatasetError("No dataset given")
    paths = [Path(os.path.abspath(os.fspath(item))) for item in items]
    for path in paths:
        if not os.path.lexists(path):
            raise DatasetError(f"'{path}' does not exist")
    return paths


def _describe_root(sources: list[Path]) -> str:
    if len(sources) == 1:
        return str(sources[0])
    try:
        return os.path.commonpath([str(p) for p in sources])
    except ValueError:  # different drives on Windows
        return str(sources[0].parent)


def _source_kind(sources: list[Path]) -> str:
    if len(sources) > 1:
        return "multiple"
    if _is_zip(sources[0]):
        return "zip"
    if _is_csv(sources[0]):
        return "csv"
    return "folder"


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv" and path.is_file()


def _is_zip(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


class _StopCheck:
    """Polls should_stop() without calling it for every single directory entry."""

    def __init__(self, should_stop: StopCallback | None):
        self._should_stop = should_stop
        self._ticks = 0

    def now(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise ScanCancelled("dataset scan cancelled")

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % _STOP_CHECK_EVERY == 0:
            self.now()


# --- listing: which files, which label, which given split ---------------------


@dataclass
class _Candidate:
    path: str  # absolute
    key: str  # posix path relative to its dataset root: stable sort and hash key
    label: str
    split: str | None  # a SPLITS value, _CARVE_VAL or _CARVE_ALL


class _Lister:
    """Walks sources and records candidates and every file it will not use."""

    def __init__(self, stop: _StopCheck):
        self.stop = stop
        self.candidates: list[_Candidate] = []
        self.problems: list[Problem] = []
        self.class_locations: dict[str, list[str]] = {}  # class -> folders or CSV
        self.empty_folders: list[tuple[str, str]] = []  # (class, folder)
        self.layouts: set[str] = set()
        self.split_given = False
        self.loose_images = 0  # images outside any class folder

    def problem(self, path, reason: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(path), reason, severity))

    # sources

    def add_source(self, path: Path, several: bool) -> None:
        if path.is_dir():
            if several and _directly_contains_images(path):
                self.layouts.add("class-folders")
                self.add_class_folder(path, path.name, _CARVE_ALL, key_root=path.parent)
            else:
                self.add_dataset_folder(path)
        elif _is_csv(path):
            self.add_csv(path)
        elif _is_zip(path):
            self.add_dataset_folder(_extract_zip(path, self))
        else:
            raise DatasetError(f"'{path}' is not a folder, a .csv file or a .zip file")

    def add_dataset_folder(self, root: Path) -> None:
        entries = self.entries(root)
        split_dirs = _split_folders(entries)
        if "train" in split_dirs:
            self.add_split_folders(root, entries, split_dirs)
            return
        labels_csv = _find_labels_csv(entries)
        if labels_csv is not None:
            listed = self.add_csv(Path(labels_csv.path))
            self.report_unused_entries(entries, keep={labels_csv.path}, listed=listed)
            return
        self.layouts.add("class-folders")
        self.add_class_folders(root, entries, _CARVE_ALL, key_root=root)

    def add_split_folders(self, root: Path, entries, split_dirs) -> None:
        self.layouts.add("split-folders")
        self.split_given = self.split_given or "val" in split_dirs or "test" in split_dirs
        train_split = "train" if "val" in split_dirs else (_CARVE_VAL if "test" in split_dirs else _CARVE_ALL)
        split_of = {"train": train_split, "val": "val", "test": "test"}
        used = set()
        for split in SPLITS:  # train first, so class-level problems point at train/<class>
            for folder in split_dirs.get(split, []):
                used.add(folder.path)
                folder_entries = self.entries(folder.path)
                self.add_class_folders(Path(folder.path), folder_entries, split_of[split], key_root=root)
        self.report_unused_entries(entries, keep=used)

    def add_class_folders(self, parent: Path, entries, split, key_root: Path) -> None:
        for entry in entries:
            self.stop.tick()
            if _is_hidden_entry(entry):
                self.report_hidden(entry)
            elif _is_dir(entry):
                self.add_class_folder(Path(entry.path), entry.name, split, key_root)
            else:
                self.report_loose_file(entry)

    def add_class_folder(self, folder: Path, label: str, split, key_root: Path) -> None:
        self.class_locations.setdefault(label, []).append(str(folder))
        found_files = False
        for entry in self.walk_files(folder):
            found_files = True
            self.add_file(entry, label, split, key_root)
        if not found_files:
            self.empty_folders.append((label, str(folder)))

    def walk_files(self, folder: Path) -> Iterable[os.DirEntry]:
        """Every non-hidden file under `folder`, following symlinked folders once."""
        visited = {os.path.realpath(folder)}
        pending = [str(folder)]
        while pending:
            current = pending.pop()
            for entry in self.entries(current):
                self.stop.tick()
                if _is_hidden_entry(entry):
                    self.report_hidden(entry)
                elif not _is_dir(entry):
                    yield entry
                elif self.should_enter(entry, current, visited):
                    pending.append(entry.path)

    def should_enter(self, entry: os.DirEntry, parent: str, visited: set[str]) -> bool:
        real = os.path.realpath(entry.path)
        if entry.is_symlink() and (real in visited or _is_same_or_ancestor(real, os.path.realpath(parent))):
            self.problem(entry.path, f"symbolic link loop skipped (points to {real})", "warning")
            return False
        visited.add(real)
        return True

    def add_file(self, entry: os.DirEntry, label: str, split, key_root: Path) -> None:
        reason = _unusable_entry_reason(entry)
        if reason:
            self.problem(entry.path, reason)
            return
        key = _relative_key(entry.path, key_root)
        self.candidates.append(_Candidate(entry.path, key, label, split))

    # CSV

    def add_csv(self, csv_path: Path) -> set[str]:
        """Add the rows of a CSV; return the normalised paths it mentions."""
        self.layouts.add("csv")
        rows = _read_csv_rows(csv_path)
        columns, data_rows = _csv_columns(csv_path, rows)
        given_splits = {_csv_cell(cells, columns.get("split")).lower() for _, cells in data_rows}
        has_val = any(SPLIT_FOLDER_NAMES.get(s) == "val" for s in given_splits)
        listed = set()
        for row_number, cells in data_rows:
            self.stop.tick()
            path = self.add_csv_row(csv_path, row_number, cells, columns, has_val)
            if path:
                listed.add(os.path.normcase(path))
        return listed

    def add_csv_row(self, csv_path: Path, row: int, cells: list[str], columns: dict,
                    has_val: bool) -> str | None:
        """Add one row; return the absolute path it names (None when it names none)."""
        raw_path = _csv_cell(cells, columns["path"])
        label = _csv_cell(cells, columns["label"])
        if not raw_path:
            self.problem(f"{csv_path} (row {row})", f"empty path in CSV (row {row})")
            return None
        path = _resolve_csv_path(csv_path.parent, raw_path)
        if not label:
            self.problem(path, f"empty label in CSV (row {row})")
            return path
        if not os.path.lexists(path):
            self.problem(path, f"file listed in CSV does not exist (row {row})")
            return path
        reason = _unusable_path_reason(path)
        if reason:
            self.problem(path, reason)
            return path
        split = self.csv_split(path, row, _csv_cell(cells, columns.get("split")), has_val)
        self.class_locations.setdefault(label, [])
        if str(csv_path) not in self.class_locations[label]:
            self.class_locations[label].append(str(csv_path))
        key = _relative_key(path, csv_path.parent)
        self.candidates.append(_Candidate(path, key, label, split))
        return path

    def csv_split(self, path: str, row: int, raw: str, has_val: bool):
        if not raw:
            return _CARVE_ALL
        split = SPLIT_FOLDER_NAMES.get(raw.lower())
        if split is None:
            self.problem(path, f"unknown split '{raw}' in CSV (row {row}), chosen automatically", "warning")
            return _CARVE_ALL
        self.split_given = True
        return _CARVE_VAL if split == "train" and not has_val else split

    # reporting what is not used

    def entries(self, folder) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as iterator:
                return sorted(iterator, key=lambda e: e.name)
        except OSError as exc:
            self.problem(folder, f"folder cannot be read ({(exc.strerror or str(exc)).lower()})")
            return []

    def report_hidden(self, entry: os.DirEntry) -> None:
        what = "folder" if _is_dir(entry) else "file"
        self.problem(entry.path, f"hidden or system {what} ignored", "info")

    def report_loose_file(self, entry: os.DirEntry) -> None:
        reason = _unusable_entry_reason(entry)
        if reason is None:
            self.loose_images += 1
            reason = "image outside any class folder"
        self.problem(entry.path, reason)

    def report_unused_entries(self, entries, keep: set[str], listed: set[str] | None = None) -> None:
        """Root entries a split/CSV layout does not use: every file gets a problem.

        `listed` (CSV layout): files the CSV names, already accounted for.
        """
        for entry in entries:
            if entry.path in keep:
                continue
            if _is_hidden_entry(entry):
                self.report_hidden(entry)
            elif not _is_dir(entry):
                self.report_unused_file(entry, listed)
            else:
                for inner in self.walk_files(Path(entry.path)):
                    self.report_unused_file(inner, listed)

    def report_unused_file(self, entry: os.DirEntry, listed: set[str] | None) -> None:
        if listed is None:
            self.problem(entry.path, "outside the train/val/test folders")
        elif os.path.normcase(os.path.abspath(entry.path)) not in listed:
            self.problem(entry.path, _unusable_entry_reason(entry) or "not listed in the CSV file")


def _is_hidden_entry(entry: os.DirEntry) -> bool:
    return images.is_hidden_or_system(entry.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _is_same_or_ancestor(candidate: str, path: str) -> bool:
    try:
        return os.path.commonpath([candidate, path]) == candidate
    except ValueError:
        return False


def _directly_contains_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as iterator:
            return any(_is_visible_image_file(entry) for entry in iterator)
    except OSError:
        return False


def _is_visible_image_file(entry: os.DirEntry) -> bool:
    return not _is_hidden_entry(entry) and images.has_image_extension(entry.name) and not _is_dir(entry)


def _split_folders(entries) -> dict[str, list[os.DirEntry]]:
    found: dict[str, list[os.DirEntry]] = {}
    for entry in entries:
        split = SPLIT_FOLDER_NAMES.get(entry.name.lower())
        if split and _is_dir(entry):
            found.setdefault(split, []).append(entry)
    return found


def _find_labels_csv(entries) -> os.DirEntry | None:
    """A folder (or zip) holding exactly one `path,label` CSV is read through it."""
    matches = [
        e
        for e in entries
        if e.name.lower().endswith(".csv") and not _is_dir(e) and _has_labels_header(Path(e.path))
    ]
    return matches[0] if len(matches) == 1 else None


def _unusable_entry_reason(entry: os.DirEntry) -> str | None:
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "broken symbolic link"
    return _unusable_path_reason(entry.path)


def _unusable_path_reason(path: str) -> str | None:
    """Why a listed path cannot even be tried as an image (None: worth decoding)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "broken symbolic link" if os.path.islink(path) else "cannot be read"
    if stat.S_ISDIR(mode):
        return "a folder, not an image file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not images.has_image_extension(path):
        suffix = Path(path).suffix.lower()
        return f"not an image file ({suffix})" if suffix else "not an image file (no extension)"
    return None


def _relative_key(path: str, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


# --- CSV ------------------------------------------------------------------------


def _read_csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """(1-based row number, stripped cells) for every non-blank row."""
    text = _read_text(csv_path)
    dialect = _sniff_dialect(text)
    rows = []
    for number, cells in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        cells = [c.strip() for c in cells]
        if any(cells):
            rows.append((number, cells))
    if not rows:
        raise DatasetError(f"CSV file '{csv_path}' is empty")
    return rows


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read '{path}': {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # Excel on Windows


def _sniff_dialect(text: str):
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _header_columns(cells: list[str]) -> dict[str, int] | None:
    names = [c.strip().lower() for c in cells]
    columns = {}
    for index, name in enumerate(names):
        for role, aliases in _CSV_COLUMN_ALIASES.items():
            if name in aliases and role not in columns:
                columns[role] = index
    return columns if "path" in columns and "label" in columns else None


def _has_labels_header(csv_path: Path) -> bool:
    try:
        with open(csv_path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            first_line = handle.readline()
    except OSError:
        return False
    first_row = next(csv.reader([first_line], _sniff_dialect(first_line)), [])
    return _header_columns(first_row) is not None


def _csv_columns(csv_path: Path, rows):
    """Column roles, and the data rows (the header removed when there is one)."""
    _, first = rows[0]
    header = _header_columns(first)
    if header is not None:
        return header, rows[1:]
    if first and first[0] and os.path.exists(_resolve_csv_path(csv_path.parent, first[0])):
        columns = {"path": 0, "label": 1}
        if len(first) > 2:
            columns["split"] = 2
        return columns, rows
    shown = ",".join(first)[:80]
    raise DatasetError(
        f"CSV '{csv_path.name}' needs a header row 'path,label' (optionally ',split'); "
        f"its first row is '{shown}'"
    )


def _csv_cell(cells: list[str], index: int | None) -> str:
    return cells[index] if index is not None and index < len(cells) else ""


def _resolve_csv_path(base: Path, raw: str) -> str:
    path = Path(raw)
    if not path.is_absolute():
        path = base / raw
    if not os.path.lexists(path) and "\\" in raw and os.sep == "/":
        path = base / raw.replace("\\", "/")  # CSV written on Windows
    return os.path.abspath(path)


# --- zip --------------------------------------------------------------------------


def _extract_zip(zip_path: Path, lister: _Lister) -> Path:
    """Extract (once, cached by content) and return the folder to scan."""
    digest = file_digest(zip_path)
    target = cache_dir() / "zips" / digest
    if not target.is_dir():
        _extract_into_place(zip_path, target, lister.stop)
    for member, reason in _read_skipped_members(target):
        lister.problem(f"{zip_path}/{member}", reason)
    return _descend_single_folder(target / "files", lister)


def _read_skipped_members(extracted: Path) -> list[tuple[str, str]]:
    try:
        return json.loads((extracted / "skipped.json").read_text("utf-8"))
    except (OSError, ValueError):  # the cache was tampered with: nothing to add
        return []


def _extract_into_place(zip_path: Path, target: Path, stop: _StopCheck) -> None:
    """Extract into a temporary sibling, then rename: a half extraction is never reused."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{target.name[:16]}-", dir=target.parent))
    try:
        skipped = _extract_safely(zip_path, partial / "files", stop)
        (partial / "skipped.json").write_text(json.dumps(skipped), "utf-8")
        try:
            os.rename(partial, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction of the same zip
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _extract_safely(zip_path: Path, destination: Path, stop: _StopCheck) -> list[tuple[str, str]]:
    """Extract regular files only; return (member, reason) for each member skipped."""
    destination.mkdir(parents=True)
    skipped = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            _check_zip_limits(zip_path, members)
            for member in members:
                stop.tick()
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
            shutil.copyfileobj(source, sink, _HASH_CHUNK)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError, ValueError) as exc:
        out_path.unlink(missing_ok=True)
        return f"cannot be extracted from zip ({exc})"
    return None


def _descend_single_folder(folder: Path, lister: _Lister) -> Path:
    """zips of 'dataset/...' hold one top folder: the dataset is inside it."""
    entries = lister.entries(folder)
    visible = [e for e in entries if not _is_hidden_entry(e)]
    if len(visible) == 1 and _is_dir(visible[0]):
        for entry in entries:
            if entry is not visible[0]:
                lister.report_hidden(entry)
        return Path(visible[0].path)
    return folder


# --- checking every file -----------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    reason: str | None = None  # None: usable
    digest: str = ""
    size: tuple[int, int] = (0, 0)


def _inspect_file(path: str) -> _Check:
    try:
        info = images.check_image(path)
        digest = file_digest(path)
    except images.ImageError as exc:
        return _Check(reason=exc.reason)
    except OSError as exc:
        return _Check(reason=f"cannot be read ({(exc.strerror or str(exc)).lower()})")
    return _Check(digest=digest, size=(info.width, info.height))


class _Progress:
    """Forwards progress at most every _PROGRESS_INTERVAL_S, plus the final call."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback = callback
        self.total = total
        self.last_call = 0.0

    def __call__(self, done: int) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if done == self.total or done == 0 or now - self.last_call >= _PROGRESS_INTERVAL_S:
            self.last_call = now
            self.callback(done, self.total)


def _check_files(candidates: list[_Candidate], workers: int, progress, stop: _StopCheck) -> list[_Check]:
    """Decode + hash every candidate, in a thread pool (Pillow releases the GIL)."""
    report = _Progress(progress, len(candidates))
    report(0)
    stop.now()
    images.Image.init()  # register all decoders once, before threads race to do it
    if workers <= 1:
        return _check_sequentially(candidates, report, stop)
    return _check_in_pool(candidates, workers, report, stop)


def _check_sequentially(candidates, report: _Progress, stop: _StopCheck) -> list[_Check]:
    results = []
    for candidate in candidates:
        stop.now()
        results.append(_inspect_file(candidate.path))
        report(len(results))
    return results


def _check_in_pool(candidates, workers: int, report: _Progress, stop: _StopCheck) -> list[_Check]:
    results: list[_Check | None] = [None] * len(candidates)
    queue = iter(enumerate(candidates))
    max_in_flight = workers * 4  # bounded, so cancelling is quick
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataset-scan") as pool:
        in_flight = {}
        try:
            while True:
                for index, candidate in queue:
                    in_flight[pool.submit(_inspect_file, candidate.path)] = index
                    if len(in_flight) >= max_in_flight:
                        break
                if not in_flight:
                    break
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[in_flight.pop(future)] = future.result()
                done += len(finished)
                report(done)
                stop.now()
        finally:
            for future in in_flight:
                future.cancel()
    return results  # type: ignore[return-value]


# --- from checked files to the report ------------------------------------------------


def _remove_repeated_files(candidates: list[_Candidate], problems: list[Problem]) -> list[_Candidate]:
    """The same file reached twice (CSV rows, overlapping sources) is kept once."""
    first_seen: dict[str, _Candidate] = {}
    unique = []
    for candidate in candidates:
        identity = os.path.normcase(os.path.abspath(candidate.path))
        earlier = first_seen.get(identity)
        if earlier is None:
            first_seen[identity] = candidate
            unique.append(candidate)
        elif earlier.label != candidate.label:
            reason = (f"same file listed twice with labels '{earlier.label}' and '{candidate.label}'; "
                      f"kept as '{earlier.label}'")
            problems.append(Problem(candidate.path, reason, "warning"))
        else:
            problems.append(Problem(candidate.path, "same file listed twice; kept once", "warning"))
    return unique


@dataclass(frozen=True)
class _SplitSettings:
    val_fraction: float
    test_fraction: float
    seed: int
    min_images_per_class: int


def _build_report(root: str, source_kind: str, lister: _Lister, candidates: list[_Candidate],
                  checks: list[_Check], settings: _SplitSettings) -> DatasetReport:
    problems = list(lister.problems)
    usable = []
    for candidate, check in zip(candidates, checks):
        if check.reason is None:
            usable.append((candidate, check))
        else:
            problems.append(Problem(candidate.path, check.reason, "error"))

    labels_with_images = {c.label for c, _ in usable}
    usable = _drop_classes_without_training_images(usable, problems)
    classes = sorted({c.label for c, _ in usable})
    _report_dropped_classes(lister, classes, labels_with_images, problems)
    _raise_if_unusable(root, lister, classes, usable, problems)

    splits = _assign_splits(usable, settings.val_fraction, settings.test_fraction, settings.seed)
    label_index = {name: i for i, name in enumerate(classes)}
    rows = sorted(
        ((c, chk, splits[c.path]) for c, chk in usable),
        key=lambda row: (SPLITS.index(row[2]), label_index[row[0].label], row[0].key, row[0].path),
    )
    samples = [Sample(c.path, label_index[c.label], split) for c, _, split in rows]

    problems += _duplicate_problems(rows)
    problems += _class_size_problems(rows, classes, lister, root, settings.min_images_per_class)
    problems += _missing_split_problems(rows, classes, lister)
    sizes = [chk.size for _, chk, _ in rows]
    return DatasetReport(
        root=root,
        layout=_layout_name(lister.layouts),
        classes=classes,
        samples=samples,
        problems=_sorted_problems(problems),
        split_given=lister.split_given,
        min_size=min(sizes, key=_area_then_width),
        max_size=max(sizes, key=_area_then_width),
        content_hash=_content_hash(rows),
        source_kind=source_kind,
    )


def _drop_classes_without_training_images(usable, problems: list[Problem]):
    """A class seen only in given val/test folders cannot be learned: skip its files."""
    trainable = {c.label for c, _ in usable if c.split not in ("val", "test")}
    kept = []
    for candidate, check in usable:
        if candidate.label in trainable:
            kept.append((candidate, check))
        else:
            reason = f"class '{candidate.label}' has no training images"
            problems.append(Problem(candidate.path, reason, "error"))
    return kept


def _report_dropped_classes(lister: _Lister, classes: list[str], labels_with_images: set[str],
                            problems: list[Problem]) -> None:
    """Class-level problems; files of dropped classes already have their own."""
    kept = set(classes)
    empty = set(lister.empty_folders)
    for label, folder in lister.empty_folders:
        if label in kept:
            problems.append(Problem(folder, "empty folder", "warning"))
        else:
            problems.append(Problem(folder, "empty class folder (class dropped)", "error"))
    for label, locations in lister.class_locations.items():
        if label in kept or label in labels_with_images:
            continue
        for location in locations:
            if (label, location) not in empty:
                reason = f"no usable images for class '{label}' (class dropped)"
                problems.append(Problem(location, reason, "error"))


def _raise_if_unusable(root: str, lister: _Lister, classes: list[str], usable, problems) -> None:
    problems = _sorted_problems(problems)
    if not usable:
        raise DatasetError(_no_images_message(root, lister, problems), problems)
    if len(classes) < 2:
        found = f"'{classes[0]}' ({_plural(len(usable), 'image')})"
        dropped = sorted(set(lister.class_locations) - set(classes))
        extra = f"; without usable images: {', '.join(repr(d) for d in dropped[:5])}" if dropped else ""
        raise DatasetError(f"Need at least 2 classes with usable images; found 1: {found}{extra}", problems)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _no_images_message(root: str, lister: _Lister, problems: list[Problem]) -> str:
    if lister.loose_images and not lister.class_locations:
        return (
            f"'{root}' holds {lister.loose_images} images directly but no class folders: "
            "put the images in one sub-folder per class"
        )
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        return f"No images found in '{root}' (expected one sub-folder of images per class)"
    by_kind: dict[str, int] = {}
    for problem in errors:
        by_kind[problem.kind] = by_kind.get(problem.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return f"No usable images in '{root}' ({summary})"


# --- splitting ---------------------------------------------------------------------


def _assign_splits(usable, val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """path -> split.  Given splits are kept; the rest is a stratified, seeded split.

    Files with identical content are kept together so a carved split never leaks.
    """
    splits: dict[str, str] = {}
    pools: dict[tuple[str, str | None], list] = {}
    for candidate, check in usable:
        if candidate.split in SPLITS:
            splits[candidate.path] = candidate.split
        else:
            pools.setdefault((candidate.label, candidate.split), []).append((candidate, check))
    for (label, mode), members in sorted(pools.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        test = 0.0 if mode == _CARVE_VAL else test_fraction
        splits.update(_split_one_class(label, members, val_fraction, test, seed))
    return splits


def _split_one_class(label: str, members, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, str]:
    units = _units_of_identical_content(members)
    random.Random(f"{seed}:{label}").shuffle(units)
    n_test, n_val = split_counts(len(units), val_fraction, test_fraction)
    result = {}
    for position, unit in enumerate(units):
        split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
        for candidate in unit:
            result[candidate.path] = split
    return result


def _units_of_identical_content(members) -> list[list[_Candidate]]:
    """Groups of same-bytes files, in an order independent of directory listing."""
    groups: dict[str, list[_Candidate]] = {}
    for candidate, check in members:
        groups.setdefault(check.digest, []).append(candidate)
    units = [sorted(group, key=lambda c: (c.key, c.path)) for group in groups.values()]
    return sorted(units, key=lambda unit: (unit[0].key, unit[0].path))


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(test, val) counts for a class of n: rounded, >= 1 val from 3 images, >= 1 train."""
    n_test = int(n * test_fraction + 0.5)
    n_val = int(n * val_fraction + 0.5)
    if n >= 3 and val_fraction > 0:
        n_val = max(n_val, 1)
    excess = n_test + n_val - max(n - 1, 0)
    if excess > 0:
        cut_test = min(excess, n_test)
        n_test -= cut_test
        n_val -= excess - cut_test
    return n_test, n_val


# --- dataset-level warnings -------------------------------------------------------------


def _duplicate_problems(rows) -> list[Problem]:
    by_digest: dict[str, list] = {}
    for candidate, check, split in rows:
        by_digest.setdefault(check.digest, []).append((candidate, split))
    problems = []
    for group in by_digest.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: (SPLITS.index(item[1]), item[0].key, item[0].path))
        first, first_split = group[0]
        for candidate, split in group[1:]:
            reason = _duplicate_reason(first, first_split, candidate, split)
            problems.append(Problem(candidate.path, reason, "warning"))
    return problems


def _duplicate_reason(first: _Candidate, first_split: str, other: _Candidate, split: str) -> str:
    if first.label != other.label:
        a, b = sorted((first.label, other.label))
        return f"same image labelled as both '{a}' and '{b}': same content as {first.path}"
    if first_split != split:
        return f"duplicate across splits (data leakage): same content as {first.path}"
    return f"duplicate image: same content as {first.path}"


def _class_size_problems(rows, classes, lister: _Lister, root: str, min_images: int) -> list[Problem]:
    totals = {name: 0 for name in classes}
    for candidate, _, _ in rows:
        totals[candidate.label] += 1
    problems = []
    for name in classes:
        if totals[name] < min_images:
            problems.append(Problem(
                _class_location(lister, name, root),
                f"few images: class '{name}' has only {totals[name]} usable "
                f"(at least {min_images} recommended)",
                "warning",
            ))
    largest = max(classes, key=lambda n: totals[n])
    smallest = min(classes, key=lambda n: totals[n])
    if totals[largest] >= IMBALANCE_RATIO * totals[smallest]:
        problems.append(Problem(
            root,
            f"class imbalance: '{largest}' has {totals[largest]} images, "
            f"'{smallest}' only {totals[smallest]}",
            "warning",
        ))
    return problems


def _missing_split_problems(rows, classes, lister: _Lister) -> list[Problem]:
    """With a given val/test split, a class absent from it cannot be evaluated there."""
    present = {(c.label, split) for c, _, split in rows}
    given = {c.split for c, _, _ in rows if c.split in ("val", "test")}
    problems = []
    for split in sorted(given, key=SPLITS.index):
        for name in classes:
            if (name, split) not in present:
                problems.append(Problem(
                    _class_location(lister, name, ""), f"no {split} images for class '{name}'", "warning"
                ))
    return problems


def _class_location(lister: _Lister, name: str, fallback: str) -> str:
    locations = lister.class_locations.get(name)
    return locations[0] if locations else fallback


# --- report helpers --------------------------------------------------------------------


def _layout_name(layouts: set[str]) -> str:
    return next(iter(layouts)) if len(layouts) == 1 else "mixed"


def _area_then_width(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] * size[1], size[0])


def _content_hash(rows) -> str:
    """Stable across machines and folder moves: relative keys, not absolute paths."""
    entries = sorted([c.key, chk.digest, c.label, split] for c, chk, split in rows)
    payload = json.dumps([_CONTENT_HASH_VERSION, entries], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _sorted_problems(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (SEVERITIES.index(p.severity), p.kind, p.path, p.reason))


def _problem_kind(reason: str) -> str:
    """'too large (10×10 pixels, limit 5)' -> 'too large'; 'a: detail' -> 'a'."""
    return re.split(r":| \(", reason, maxsplit=1)[0].strip()


def _format_size(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _describe_layout(report: DatasetReport) -> str:
    how = "splits taken from the dataset where given" if report.split_given else "split chosen by seed"
    kind = f", from a {report.source_kind}" if report.source_kind in ("zip", "csv") else ""
    return f"Layout: {report.layout}{kind}; {how}"


def _format_counts_table(report: DatasetReport) -> list[str]:
    counts = report.counts()
    width = max([5] + [len(name) for name in report.classes])
    header = f"{'class':<{width}}  {'train':>7}{'val':>7}{'test':>7}{'total':>8}"
    lines = [header, "-" * len(header)]
    for name in report.classes:
        per_split = [counts[s][name] for s in SPLITS]
        lines.append(f"{name:<{width}}  " + "".join(f"{n:>7}" for n in per_split) + f"{sum(per_split):>8}")
    totals = [sum(counts[s].values()) for s in SPLITS]
    lines.append(f"{'total':<{width}}  " + "".join(f"{n:>7}" for n in totals) + f"{sum(totals):>8}")
    lines.append(f"{len(report.classes)} classes, {len(report.samples)} images")
    return lines


def _format_problems(problems: list[Problem], max_paths: int) -> list[str]:
    if not problems:
        return ["No problems found."]
    tally = {s: sum(1 for p in problems if p.severity == s) for s in SEVERITIES}
    summary = [f"{n} info" if s == "info" else _plural(n, s) for s, n in tally.items() if n]
    lines = ["Problems: " + ", ".join(summary)]
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.severity, problem.kind), []).append(problem)
    for (severity, kind), members in groups.items():
        lines.append(f"  [{severity}] {kind} ({len(members)}):")
        for problem in members[:max_paths]:
            detail = "" if problem.reason == kind else f"  -- {problem.reason}"
            lines.append(f"    {problem.path}{detail}")
        if len(members) > max_paths:
            lines.append(f"    ... and {len(members) - max_paths} more")
    return lines
