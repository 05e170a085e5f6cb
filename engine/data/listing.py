"""Walking what the user dropped: which files are candidates, with which label and which given split,
and a problem for every entry that will not be used (hidden, loose, unreadable, not an image, outside
the split folders, not listed in the CSV). Nothing is dropped silently."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.core.control import RunControl
from engine.data import images
from engine.data.csvfile import (csv_cell, csv_columns, has_labels_header, is_csv, read_csv_rows,
                                 resolve_csv_path)
from engine.data.report import SPLITS, DatasetError, Problem
from engine.data.split import CARVE_ALL, CARVE_VAL, SPLIT_FOLDER_NAMES
from engine.data.ziparchive import extract_zip, is_zip

CHECKPOINT_EVERY = 256  # directory entries (or rows) between control.checkpoint() calls


class SparseCheckpoint:
    """control.checkpoint() every CHECKPOINT_EVERY ticks: a directory entry is too cheap to check each."""

    def __init__(self, control: RunControl):
        self._control = control
        self._ticks = 0

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % CHECKPOINT_EVERY == 0:
            self._control.checkpoint()


@dataclass
class ListedFile:
    """A file worth decoding, with the label and split its place in the dataset gives it."""

    path: str  # absolute
    key: str  # posix path relative to its dataset root: stable sort and hash key
    label: str
    split: str | None  # a SPLITS value, CARVE_VAL or CARVE_ALL


class Lister:
    """Walks sources and records candidates and every file it will not use."""

    def __init__(self, control: RunControl):
        self._checkpoints = SparseCheckpoint(control)
        self.candidates: list[ListedFile] = []
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
                self.add_class_folder(path, path.name, CARVE_ALL, key_root=path.parent)
            else:
                self.add_dataset_folder(path)
        elif is_csv(path):
            self.add_csv(path)
        elif is_zip(path):
            self.add_zip(path)
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
        self.add_class_folders(root, entries, CARVE_ALL, key_root=root)

    def add_zip(self, zip_path: Path) -> None:
        folder, skipped = extract_zip(zip_path, self._checkpoints.tick)
        for member, reason in skipped:
            self.problem(f"{zip_path}/{member}", reason)
        self.add_dataset_folder(self.descend_single_folder(folder))

    def descend_single_folder(self, folder: Path) -> Path:
        """zips of 'dataset/...' hold one top folder: the dataset is inside it."""
        entries = self.entries(folder)
        visible = [e for e in entries if not _is_hidden_entry(e)]
        if len(visible) == 1 and _is_dir(visible[0]):
            for entry in entries:
                if entry is not visible[0]:
                    self.report_hidden(entry)
            return Path(visible[0].path)
        return folder

    def add_split_folders(self, root: Path, entries, split_dirs) -> None:
        self.layouts.add("split-folders")
        self.split_given = self.split_given or "val" in split_dirs or "test" in split_dirs
        train_split = "train" if "val" in split_dirs else (CARVE_VAL if "test" in split_dirs else CARVE_ALL)
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
            self._checkpoints.tick()
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
                self._checkpoints.tick()
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
        self.candidates.append(ListedFile(entry.path, key, label, split))

    # CSV

    def add_csv(self, csv_path: Path) -> set[str]:
        """Add the rows of a CSV; return the normalised paths it mentions."""
        self.layouts.add("csv")
        rows = read_csv_rows(csv_path)
        columns, data_rows = csv_columns(csv_path, rows)
        given_splits = {csv_cell(cells, columns.get("split")).lower() for _, cells in data_rows}
        has_val = any(SPLIT_FOLDER_NAMES.get(s) == "val" for s in given_splits)
        listed = set()
        for row_number, cells in data_rows:
            self._checkpoints.tick()
            path = self.add_csv_row(csv_path, row_number, cells, columns, has_val)
            if path:
                listed.add(os.path.normcase(path))
        return listed

    def add_csv_row(self, csv_path: Path, row: int, cells: list[str], columns: dict,
                    has_val: bool) -> str | None:
        """Add one row; return the absolute path it names (None when it names none)."""
        raw_path = csv_cell(cells, columns["path"])
        label = csv_cell(cells, columns["label"])
        if not raw_path:
            self.problem(f"{csv_path} (row {row})", f"empty path in CSV (row {row})")
            return None
        path = resolve_csv_path(csv_path.parent, raw_path)
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
        split = self.csv_split(path, row, csv_cell(cells, columns.get("split")), has_val)
        self.class_locations.setdefault(label, [])
        if str(csv_path) not in self.class_locations[label]:
            self.class_locations[label].append(str(csv_path))
        key = _relative_key(path, csv_path.parent)
        self.candidates.append(ListedFile(path, key, label, split))
        return path

    def csv_split(self, path: str, row: int, raw: str, has_val: bool):
        if not raw:
            return CARVE_ALL
        split = SPLIT_FOLDER_NAMES.get(raw.lower())
        if split is None:
            self.problem(path, f"unknown split '{raw}' in CSV (row {row}), chosen automatically", "warning")
            return CARVE_ALL
        self.split_given = True
        return CARVE_VAL if split == "train" and not has_val else split

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
        if e.name.lower().endswith(".csv") and not _is_dir(e) and has_labels_header(Path(e.path))
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
