"""Text classification datasets: a CSV/TSV or JSONL table of (text, label[, split]), a folder of class
folders holding one .txt file per text (optionally under train/val/test folders), or a zip of either.

Like the image scan, every text is read once here so that problems surface in one readable report
instead of in the middle of training: rows that cannot be used (empty text, missing label, broken JSON)
are listed with the row number a user sees in a spreadsheet or editor and skipped; suspicious ones
(not UTF-8, duplicates, conflicting labels, label spellings, long texts) are kept with a warning.
Nothing is dropped silently.  No torch and no Qt here.
"""
from __future__ import annotations

import csv
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data.csvfile import _CSV_PATH_COLUMNS, resolve_csv_path
from engine.data.images import has_image_extension, is_hidden_or_system
from engine.data.listing import CHECKPOINT_EVERY, SparseCheckpoint
from engine.data.pipeline import Candidate, Reading, SampleReader, SplitSettings, existing_path, scan_samples
from engine.data.report import SPLITS, DatasetError, DatasetReport, Problem, plural
from engine.data.split import CARVE_ALL, CARVE_VAL, SPLIT_FOLDER_NAMES
from engine.data.ziparchive import extract_zip

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".txt")

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TEXT_NAMES = ("text", "sentence", "content", "body", "review", "message", "comment", "document",
               "description", "utterance", "question")
_LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "topic", "intent", "y")
_SPLIT_NAMES = ("split", "set", "subset", "fold", "partition")
_SPLIT_VALUES = {**SPLIT_FOLDER_NAMES, "dev": "val"}
_PEEK_BYTES = 64 * 1024  # what is_text_dataset reads of a file
_PEEK_ENTRIES = 2000  # directory entries is_text_dataset looks at, at most
_WARN_TRUNCATED_FRACTION = 0.25  # above this share of long texts, truncation is a warning, not info
_CSV_FIELD_LIMIT = 2**31 - 1  # reviews and documents exceed csv's default 128 KiB per cell

TokenCounter = Callable[[list[str]], list[int]]


# --- public API -------------------------------------------------------------------------------------


def is_text_dataset(source) -> bool:
    """Whether `source` looks like a text dataset rather than images; cheap, and never raises."""
    try:
        path = Path(os.path.abspath(os.fspath(source)))
        if path.is_dir():
            return _folder_holds_texts(path)
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix in (".tsv", *_JSONL_SUFFIXES):
            return True
        if suffix in (".csv", ".txt"):
            return _is_text_csv(_peek_file(path), path.parent, tab_only=suffix == ".txt")
        if suffix == ".zip" or zipfile.is_zipfile(path):
            return _zip_holds_texts(path)
    except Exception:  # a probe: whatever the path is (None, unreadable, corrupt), it is not one of ours
        return False
    return False


def scan_texts(
    source,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_texts_per_class: int = 5,
    token_counter: TokenCounter | None = None,
    max_tokens: int | None = None,
    progress: Progress | None = None,
    control: RunControl | None = None,
) -> DatasetReport:
    """Read, check, label and split every text of `source` (a table file, a folder or a zip).

    Columns not named are guessed (`text_columns`).  `progress("texts", done, total)` is called per row
    or file; `control.checkpoint()` between steps, so cancelling raises Cancelled.  With `token_counter`
    (texts -> token counts) and `max_tokens`, one problem tells how many texts will be truncated.
    Raises DatasetError when the result would be unusable.
    """
    reader = TextReader(_ColumnRequest(text_column, label_column, split_column), token_counter, max_tokens)
    settings = SplitSettings(val_fraction, test_fraction, seed, min_texts_per_class)
    return scan_samples(reader, source, settings, progress=progress, control=control)


def text_columns(path) -> dict:
    """The columns of a table (or of the table inside a zip) and the guessed roles, for a column picker.

    A folder of .txt files has no columns: every value is then empty/None.
    """
    source = existing_path(path)
    table_path = source if _is_table_file(source) else _table_inside(source)
    if table_path is None:
        return {"columns": [], "text": None, "label": None, "split": None}
    table = _read_table(table_path, table_path.name, RunControl())
    try:
        roles = _choose_columns(table, _ColumnRequest())
    except DatasetError:
        roles = _Roles(None, None, None)
    name = lambda index: None if index is None else table.columns[index]  # noqa: E731
    return {"columns": list(table.columns), "text": name(roles.text), "label": name(roles.label),
            "split": name(roles.split)}


class TextReader(SampleReader):
    """Texts from a table (CSV/TSV/JSONL), class folders of .txt files, or a zip of either; a sample is
    where it is ('reviews.csv:row 14', 'pos/a.txt') and its text."""

    modality = "text"
    noun = "text"
    hash_version = "transferlab-text-dataset-v1"
    lists_each_skipped_sample = False

    def __init__(self, request: "_ColumnRequest", token_counter: TokenCounter | None = None,
                 max_tokens: int | None = None):
        self.request = request
        self.token_counter = token_counter
        self.max_tokens = max_tokens

    def read(self, source, progress: Progress, control: RunControl) -> Reading:
        path = existing_path(source)
        found = _SourceReader(control, progress, self.request).read_source(path)
        problems = list(found.problems)
        rows = _merge_label_spellings(found.rows, problems)
        return Reading(str(path), [_candidate(row) for row in rows], problems, found.layout, found.source_kind,
                       found.split_given, _class_locations(rows), _spelled_as_classes(found.empty_folders, rows))

    def review(self, kept: list[Candidate], root: str, control: RunControl) -> list[Problem]:
        """How many texts the encoder will truncate (with a token counter and a limit)."""
        if self.token_counter is None or self.max_tokens is None:
            return []
        return _long_text_problems(root, [c.text for c in kept], self.token_counter, self.max_tokens, control)


# --- what reading produces ----------------------------------------------------------------------------


@dataclass
class _Row:
    """One text as found, before labels are merged and splits chosen."""

    where: str  # 'reviews.csv:row 14' or 'pos/a.txt'
    order: int  # position in the source, for a stable sample order
    text: str  # stripped
    label: str  # as spelled in the source (surrounding whitespace kept, to report typos)
    mode: str | None  # a given split, CARVE_VAL (given train, val to carve) or CARVE_ALL
    location: str  # the file or class folder, for class-level problems


@dataclass
class _Found:
    rows: list[_Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    layout: str = "csv"
    source_kind: str = "csv"
    split_given: bool = False
    empty_folders: list[tuple[str, str]] = field(default_factory=list)  # (label, folder)


@dataclass(frozen=True)
class _ColumnRequest:
    text: str | None = None
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class _Roles:
    text: int | None
    label: int | None
    split: int | None


@dataclass
class _Table:
    name: str  # as shown in row locations: 'reviews.csv'
    kind: str  # 'csv' | 'tsv' | 'jsonl'
    columns: list[str]
    records: list[tuple[int, list[str | None]]]  # (row number, cells aligned to columns)
    non_utf8_rows: list[int]
    fallback_encoding: str | None
    problems: list[Problem]  # rows that could not even be parsed


# --- input normalisation ------------------------------------------------------------------------------


def _is_table_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (*_TABLE_SUFFIXES, ".txt")


# --- reading the source -------------------------------------------------------------------------------


class _SourceReader:
    """Turns a file, folder or zip into rows and the problems met on the way."""

    def __init__(self, control: RunControl, progress: Progress, request: _ColumnRequest):
        self.control = control
        self.progress = progress
        self.request = request
        self.tick = SparseCheckpoint(control).tick

    def read_source(self, path: Path) -> _Found:
        if path.is_dir():
            return self.read_folder(path, "folder")
        if _is_table_file(path):
            return self.read_table_file(path, path.name)
        if path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)):
            return self.read_zip(path)
        raise DatasetError(
            f"'{path}' is not a .csv, .tsv or .jsonl file, a folder of class folders of .txt files, "
            "or a .zip of these"
        )

    def read_zip(self, zip_path: Path) -> _Found:
        folder, skipped = extract_zip(zip_path, self.tick)
        found = self.read_folder(_descend_single_folder(folder), "zip")
        found.problems += [Problem(f"{zip_path}/{member}", reason, "error") for member, reason in skipped]
        return found

    def read_folder(self, root: Path, source_kind: str) -> _Found:
        found = _Found(source_kind=source_kind)
        entries = _visible_entries(root, found.problems, root)
        split_dirs = {}
        for entry in entries:
            split = SPLIT_FOLDER_NAMES.get(entry.name.lower())
            if split and entry.is_dir():
                split_dirs.setdefault(split, []).append(entry)
        if "train" in split_dirs:
            files = self.list_split_folders(root, entries, split_dirs, found)
        else:
            table = _single_table(entries)
            if table is not None:
                inner = self.read_table_file(table, _relative(table, root))
                inner.source_kind = source_kind
                unused = [Problem(_relative(e, root), f"not used: the dataset is read from '{table.name}'",
                                  "info") for e in entries if e.path != str(table)]
                inner.problems = found.problems + unused + inner.problems
                return inner
            found.layout = "class-folders"
            files = self.list_class_folders(root, root, entries, CARVE_ALL, found)
        if not files and not found.empty_folders:
            raise DatasetError(f"No .txt files found in '{root}' (expected one sub-folder of .txt files "
                               "per class, or a .csv/.tsv/.jsonl file)", found.problems)
        self.read_text_files(root, files, found)
        return found

    def list_split_folders(self, root: Path, entries, split_dirs, found: _Found):
        found.layout = "split-folders"
        found.split_given = "val" in split_dirs or "test" in split_dirs
        train_mode = "train" if "val" in split_dirs else (CARVE_VAL if "test" in split_dirs else CARVE_ALL)
        mode_of = {"train": train_mode, "val": "val", "test": "test"}
        used = {e.path for folders in split_dirs.values() for e in folders}
        for entry in entries:
            if entry.path not in used:
                found.problems.append(Problem(_relative(entry, root), "outside the train/val/test folders",
                                              "error"))
        files = []
        for split in SPLITS:  # train first, so class-level problems point at train/<class>
            for folder in split_dirs.get(split, []):
                inner = _visible_entries(Path(folder.path), found.problems, root)
                files += self.list_class_folders(root, Path(folder.path), inner, mode_of[split], found)
        return files

    def list_class_folders(self, root: Path, parent: Path, entries, mode, found: _Found):
        """(path, label, mode, class folder) of every .txt file under the class folders of `parent`."""
        files = []
        for entry in entries:
            self.tick()
            if not entry.is_dir():
                found.problems.append(Problem(_relative(entry, root), "outside any class folder", "error"))
                continue
            class_files = self.list_class_folder(root, Path(entry.path), found.problems)
            location = _relative(entry, root)
            if not class_files:
                found.empty_folders.append((entry.name, location))
            files += [(path, entry.name, mode, location) for path in class_files]
        return files

    def list_class_folder(self, root: Path, folder: Path, problems: list[Problem]) -> list[Path]:
        files = []
        for current, dirs, names in os.walk(folder):
            for hidden in sorted(d for d in dirs if is_hidden_or_system(d)):
                problems.append(Problem(_relative(Path(current, hidden), root), "hidden or system folder "
                                        "ignored", "info"))
            dirs[:] = sorted(d for d in dirs if not is_hidden_or_system(d))
            for name in sorted(names):
                self.tick()
                path = Path(current, name)
                if is_hidden_or_system(name):
                    problems.append(Problem(_relative(path, root), "hidden or system file ignored", "info"))
                elif path.suffix.lower() != ".txt":
                    suffix = path.suffix.lower() or "no extension"
                    problems.append(Problem(_relative(path, root), f"not a .txt file ({suffix})", "error"))
                else:
                    files.append(path)
        return files

    def read_text_files(self, root: Path, files, found: _Found) -> None:
        self.progress("texts", 0, len(files))
        for order, (path, label, mode, location) in enumerate(files):
            self.tick()
            where = _relative(path, root)
            text = self.read_one_text_file(path, where, found.problems)
            if text is not None:
                _check_characters(text, where, found.problems)
                found.rows.append(_Row(where, order, text, label, mode, location))
            self.progress("texts", order + 1, len(files))

    def read_one_text_file(self, path: Path, where: str, problems: list[Problem]) -> str | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(Problem(where, f"cannot be read ({(exc.strerror or str(exc)).lower()})", "error"))
            return None
        lines, bad_lines, fallback = _decode_lines(data)
        if bad_lines:
            problems.append(Problem(where, f"not UTF-8: read as {fallback}", "warning"))
        text = "".join(lines).strip()
        if not text:
            problems.append(Problem(where, "empty text", "error"))
            return None
        return text

    def read_table_file(self, path: Path, name: str) -> _Found:
        table = _read_table(path, name, self.control)
        roles = _choose_columns(table, self.request)
        found = _Found(layout="jsonl" if table.kind == "jsonl" else "csv", source_kind=table.kind,
                       problems=list(table.problems))
        found.problems += _encoding_problems(table)
        self.rows_from_table(table, roles, found)
        return found

    def rows_from_table(self, table: _Table, roles: _Roles, found: _Found) -> None:
        split_values = _split_values(table, roles.split)
        has_val = "val" in split_values
        found.split_given = bool(split_values)
        total = len(table.records)
        for done, (number, cells) in enumerate(table.records, start=1):
            self.tick()
            where = f"{table.name}:row {number}"
            row = _row_from_cells(cells, roles, where, number, table, has_val, found.problems)
            if row is not None:
                found.rows.append(row)
            self.progress("texts", done, total)


def _row_from_cells(cells, roles: _Roles, where: str, order: int, table: _Table, has_val: bool,
                    problems: list[Problem]) -> _Row | None:
    needed = max(roles.text, roles.label) + 1
    if table.kind != "jsonl" and len(cells) < needed:
        problems.append(Problem(where, f"too few cells: {len(cells)}, expected {needed}", "error"))
        return None
    if table.kind != "jsonl" and len(cells) > len(table.columns):
        problems.append(Problem(where, f"more cells than the header: {len(cells)}, expected "
                                f"{len(table.columns)} (unquoted delimiter in a text?)", "warning"))
    text = (cells[roles.text] or "").strip()
    label = cells[roles.label] or ""
    if not text:
        problems.append(Problem(where, "empty text", "error"))
        return None
    if not label.strip():
        problems.append(Problem(where, "missing label", "error"))
        return None
    _check_characters(text, where, problems)
    mode = _row_mode(_cell(cells, roles.split), where, has_val, problems)
    return _Row(where, order, text, label, mode, table.name)


def _cell(cells, index: int | None) -> str:
    return (cells[index] or "") if index is not None and index < len(cells) else ""


def _row_mode(raw: str, where: str, has_val: bool, problems: list[Problem]):
    """A given split; CARVE_VAL for 'train' when no row is 'val'; CARVE_ALL for none or an unknown one."""
    if not raw.strip():
        return CARVE_ALL
    split = _SPLIT_VALUES.get(raw.strip().lower())
    if split is None:
        problems.append(Problem(where, f"unknown split value (chosen automatically): '{raw.strip()}'",
                                "warning"))
        return CARVE_ALL
    return CARVE_VAL if split == "train" and not has_val else split


def _split_values(table: _Table, index: int | None) -> set[str]:
    if index is None:
        return set()
    values = {_SPLIT_VALUES.get(_cell(cells, index).strip().lower()) for _, cells in table.records}
    return values - {None}


def _check_characters(text: str, where: str, problems: list[Problem]) -> None:
    if "\ufffd" in text:
        problems.append(Problem(where, "replacement character in text (U+FFFD): damaged before it was "
                                "saved", "warning"))
    if "\0" in text:
        problems.append(Problem(where, "NUL character in text", "warning"))


def _encoding_problems(table: _Table) -> list[Problem]:
    return [Problem(f"{table.name}:row {number}", f"not UTF-8: read as {table.fallback_encoding}", "warning")
            for number in table.non_utf8_rows]


# --- folders and zips ---------------------------------------------------------------------------------


def _visible_entries(folder: Path, problems: list[Problem], root: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as iterator:
            entries = sorted(iterator, key=lambda e: e.name)
    except OSError as exc:
        problems.append(Problem(str(folder), f"folder cannot be read ({(exc.strerror or str(exc)).lower()})",
                                "error"))
        return []
    visible = []
    for entry in entries:
        if is_hidden_or_system(entry.name):
            what = "folder" if entry.is_dir() else "file"
            problems.append(Problem(_relative(entry, root), f"hidden or system {what} ignored", "info"))
        else:
            visible.append(entry)
    return visible


def _descend_single_folder(folder: Path) -> Path:
    """Zips of 'dataset/...' hold one top folder: the dataset is inside it."""
    visible = [e for e in os.scandir(folder) if not is_hidden_or_system(e.name)]
    if len(visible) == 1 and visible[0].is_dir():
        return Path(visible[0].path)
    return folder


def _single_table(entries) -> Path | None:
    """A folder with no sub-folders and exactly one table file is read through that file."""
    if any(e.is_dir() for e in entries):
        return None
    tables = [e for e in entries if Path(e.name).suffix.lower() in _TABLE_SUFFIXES]
    return Path(tables[0].path) if len(tables) == 1 else None


def _table_inside(source: Path) -> Path | None:
    """The table file that `source` (a folder or zip) is read through, or None."""
    if source.is_file():
        if not (source.suffix.lower() == ".zip" or zipfile.is_zipfile(source)):
            return None
        folder, _ = extract_zip(source, lambda: None)
        source = _descend_single_folder(folder)
    if not source.is_dir():
        return None
    return _single_table([e for e in os.scandir(source) if not is_hidden_or_system(e.name)])


def _relative(path, root: Path) -> str:
    try:
        return Path(os.path.relpath(os.fspath(path), root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(os.fspath(path)).as_posix()


# --- decoding ------------------------------------------------------------------------------------------


def _decode_lines(data: bytes) -> tuple[list[str], list[int], str | None]:
    """(lines with their endings, 1-based numbers of the lines that were not UTF-8, the encoding used
    for those: 'Windows-1252' or 'Latin-1').  Decoding per line keeps the UTF-8 rows of a mixed file
    right and tells exactly which rows held other bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        return _split_text_lines(data.decode("utf-16")), [], None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.splitlines(keepends=True)  # bytes split on \n, \r and \r\n only, like csv
    decoded: list[str | None] = []
    bad = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            decoded.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            decoded.append(None)
            bad.append(number)
    if not bad:
        return decoded, [], None  # type: ignore[return-value]
    encoding, label = _fallback_encoding([raw_lines[n - 1] for n in bad])
    lines = [line if line is not None else raw.decode(encoding) for line, raw in zip(decoded, raw_lines)]
    return lines, bad, label


def _fallback_encoding(raw_lines: list[bytes]) -> tuple[str, str]:
    try:
        for raw in raw_lines:
            raw.decode("cp1252")
        return "cp1252", "Windows-1252"
    except UnicodeDecodeError:  # cp1252 leaves 5 bytes undefined; Latin-1 decodes anything
        return "latin-1", "Latin-1"


def _split_text_lines(text: str) -> list[str]:
    """Split on \\n, \\r and \\r\\n only, as csv does (str.splitlines also splits on U+2028 and others)."""
    return [line.decode("utf-8", "surrogatepass")
            for line in text.encode("utf-8", "surrogatepass").splitlines(keepends=True)]


def _peek_file(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_PEEK_BYTES)


# --- tables -------------------------------------------------------------------------------------------


def _read_table(path: Path, name: str, control: RunControl) -> _Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read '{path}': {exc.strerror or exc}") from exc
    lines, bad_lines, fallback = _decode_lines(data)
    control.checkpoint()
    if path.suffix.lower() in _JSONL_SUFFIXES:
        table = _parse_jsonl(lines, name)
        table.non_utf8_rows, table.fallback_encoding = bad_lines, fallback
    else:
        table = _parse_delimited(lines, name, path.suffix.lower() == ".tsv", set(bad_lines), fallback)
    if not table.columns:
        raise DatasetError(f"'{name}' is empty")
    return table


def _parse_delimited(lines: list[str], name: str, is_tsv: bool, bad_lines: set[int],
                     fallback: str | None) -> _Table:
    """Header row + rows; a row number is the record number a spreadsheet shows (blank rows count)."""
    delimiter = "\t" if is_tsv else _guess_delimiter(lines)
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    columns: list[str] = []
    records, non_utf8_rows = [], []
    last_line = 0
    try:
        for number, cells in enumerate(reader, start=1):
            if any(n in bad_lines for n in range(last_line + 1, reader.line_num + 1)):
                non_utf8_rows.append(number)
            last_line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if not columns:
                columns = _header_names(cells)
            else:
                records.append((number, list(cells)))
    except csv.Error as exc:
        raise DatasetError(f"'{name}' cannot be read as CSV after line {reader.line_num}: {exc}") from exc
    kind = "tsv" if delimiter == "\t" else "csv"
    return _Table(name, kind, columns, records, non_utf8_rows, fallback, [])


def _guess_delimiter(lines: list[str]) -> str:
    """From the header line: texts hold commas and semicolons freely, column names rarely do."""
    header = next((line for line in lines if line.strip()), "")
    counts = {d: header.count(d) for d in ("\t", ";", ",")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _header_names(cells: list[str]) -> list[str]:
    return [c.strip() or f"column {i + 1}" for i, c in enumerate(cells)]


def _parse_jsonl(lines: list[str], name: str) -> _Table:
    columns: dict[str, int] = {}
    objects, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:row {number}"
        try:
            value = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(where, f"not valid JSON: {getattr(exc, 'msg', exc)}", "error"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(where, f"not a JSON object: {type(value).__name__}", "error"))
            continue
        for key in value:
            columns.setdefault(str(key), len(columns))
        objects.append((number, value))
    names = list(columns)
    records = [(number, [_json_cell(obj.get(key)) for key in names]) for number, obj in objects]
    return _Table(name, "jsonl", names, records, [], None, problems)


def _json_cell(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


# --- which column is which ---------------------------------------------------------------------------


def _choose_columns(table: _Table, request: _ColumnRequest) -> _Roles:
    """Columns named by the caller, else by their header name, else by their content."""
    split = _named_column(table, request.split) if request.split else _guess_split_column(table)
    text = _named_column(table, request.text) if request.text else _column_by_name(table, _TEXT_NAMES)
    label = _named_column(table, request.label) if request.label else _column_by_name(table, _LABEL_NAMES)
    taken = {split, text, label} - {None}
    if text is None:
        text = _longest_column(table, taken)
        taken.add(text)
    if label is None:
        label = _fewest_values_column(table, taken)
    if text is None or label is None:
        raise DatasetError(f"'{table.name}' needs a text column and a label column; "
                           f"its columns are: {_list_columns(table)}")
    if text == label:
        raise DatasetError(f"'{table.name}': the text and label columns must differ "
                           f"(both are '{table.columns[text]}')")
    if request == _ColumnRequest() and _header_looks_like_data(table, text, label):
        shown = ",".join(table.columns)[:80]
        raise DatasetError(f"'{table.name}' needs a header row such as 'text,label'; "
                           f"its first row '{shown}' looks like data")
    return _Roles(text, label, split if split not in (text, label) else None)


def _header_looks_like_data(table: _Table, text: int, label: int) -> bool:
    """No column named like a role, and the 'label' header is itself one of the labels: no header."""
    if table.kind == "jsonl" or _column_by_name(table, (*_TEXT_NAMES, *_LABEL_NAMES)) is not None:
        return False
    header_label = table.columns[label].strip()
    return any(_cell(cells, label).strip() == header_label for _, cells in table.records)


def _named_column(table: _Table, name: str) -> int:
    lowered = [c.strip().lower() for c in table.columns]
    if name in table.columns:
        return table.columns.index(name)
    if name.strip().lower() in lowered:
        return lowered.index(name.strip().lower())
    raise DatasetError(f"Column '{name}' not found in '{table.name}'; "
                       f"its columns are: {_list_columns(table)}")


def _list_columns(table: _Table) -> str:
    return ", ".join(table.columns) or "(none)"


def _column_by_name(table: _Table, names: Sequence[str]) -> int | None:
    lowered = [c.strip().lower() for c in table.columns]
    for name in names:
        for index, column in enumerate(lowered):
            if column == name:
                return index
    return None


def _guess_split_column(table: _Table) -> int | None:
    """A column named like a split whose values are (mostly) split names."""
    lowered = [c.strip().lower() for c in table.columns]
    for index, column in enumerate(lowered):
        if column not in _SPLIT_NAMES:
            continue
        values = [_cell(cells, index).strip().lower() for _, cells in table.records]
        values = [v for v in values if v]
        known = sum(1 for v in values if v in _SPLIT_VALUES)
        if values and known * 2 >= len(values):
            return index
    return None


def _longest_column(table: _Table, taken: set[int]) -> int | None:
    free = [i for i in range(len(table.columns)) if i not in taken]
    if not free:
        return None
    return max(free, key=lambda i: (_mean_length(table, i), -i))


def _mean_length(table: _Table, index: int) -> float:
    lengths = [len(_cell(cells, index)) for _, cells in table.records]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _fewest_values_column(table: _Table, taken: set[int]) -> int | None:
    """Labels repeat; prefer a column with at least 2 different values over a constant one."""
    free = [i for i in range(len(table.columns)) if i not in taken]
    if not free:
        return None

    distinct = {i: len({_cell(cells, i).strip() for _, cells in table.records} - {""}) for i in free}
    return min(free, key=lambda i: (distinct[i] < 2, distinct[i], i))


# --- from rows to candidates ------------------------------------------------------------------------


def _candidate(row: _Row) -> Candidate:
    content = _normalised(row.text)
    return Candidate(row.where, row.label, row.mode, content=content, sort_key=(content,), position=(row.order,),
                     hash_fields=(row.text,), text=row.text)


def _normalised(text: str) -> str:
    """What makes two texts 'identical': same words, whitespace aside; case kept."""
    return " ".join(text.split())


def _class_locations(rows: list[_Row]) -> dict[str, list[str]]:
    """class -> the tables or class folders its texts come from, in reading order."""
    locations: dict[str, list[str]] = {}
    for row in rows:
        seen = locations.setdefault(row.label, [])
        if row.location not in seen:
            seen.append(row.location)
    return locations


def _spelled_as_classes(empty_folders, rows: list[_Row]) -> list[tuple[str, str]]:
    """An empty 'POS' folder belongs to the class 'pos' once label spellings are merged."""
    spelling = {_label_key(row.label): row.label for row in rows}
    return [(spelling.get(_label_key(label), label), folder) for label, folder in empty_folders]


def _merge_label_spellings(rows: list[_Row], problems: list[Problem]) -> list[_Row]:
    """'Positive', 'positive ' and 'POSITIVE' are one class, spelled as most rows spell it."""
    spellings: dict[str, Counter] = {}
    first_where: dict[str, str] = {}
    for row in rows:
        spellings.setdefault(_label_key(row.label), Counter())[row.label] += 1
        first_where.setdefault(row.label, row.where)
    canonical = {}
    for counts in spellings.values():
        # ties: a spelling without stray whitespace, then the one seen first
        chosen = min(counts, key=lambda s: (-counts[s], s != s.strip())).strip()
        for spelling, count in sorted(counts.items()):
            canonical[spelling] = chosen
            if spelling != chosen:
                problems.append(Problem(
                    first_where[spelling],
                    f"label spelled differently: '{spelling}' in {plural(count, 'row')}, "
                    f"merged into '{chosen}'",
                    "warning",
                ))
    return [_replace_label(row, canonical[row.label]) for row in rows]


def _label_key(label: str) -> str:
    return label.strip().casefold()


def _replace_label(row: _Row, label: str) -> _Row:
    return row if row.label == label else _Row(row.where, row.order, row.text, label, row.mode, row.location)


def _long_text_problems(root: str, texts: list[str], token_counter: TokenCounter, max_tokens: int,
                        control: RunControl) -> list[Problem]:
    """One summary, not one line per text: truncation is expected, its extent is what matters."""
    if not texts:
        return []
    long_texts = 0
    for start in range(0, len(texts), CHECKPOINT_EVERY):
        control.checkpoint()
        counts = token_counter(texts[start:start + CHECKPOINT_EVERY])
        long_texts += sum(1 for n in counts if n > max_tokens)
    if not long_texts:
        return []
    severity = "warning" if long_texts > _WARN_TRUNCATED_FRACTION * len(texts) else "info"
    reason = (f"long texts: {long_texts} of {plural(len(texts), 'text')} are longer than "
              f"{max_tokens} tokens and will be truncated")
    return [Problem(root, reason, severity)]


# --- is_text_dataset helpers -------------------------------------------------------------------------


def _folder_holds_texts(folder: Path) -> bool:
    """(split/)class folders with .txt files and no images, or one text table and no images."""
    counts = Counter()
    seen = 0
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden_or_system(d))
        depth = len(Path(current).relative_to(folder).parts)
        for name in names:
            seen += 1
            if is_hidden_or_system(name):
                continue
            if has_image_extension(name):
                return False
            suffix = Path(name).suffix.lower()
            if suffix == ".txt" and depth >= 1:
                counts["txt"] += 1
            elif depth == 0 and suffix in _TABLE_SUFFIXES:
                counts["table"] += 1
                counts["text table"] += _is_table_of_texts(Path(current, name))
        if seen > _PEEK_ENTRIES:
            break
    only_table = counts["table"] == 1 and counts["text table"] == 1
    return counts["txt"] > 0 or only_table


def _is_table_of_texts(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return True
    return _is_text_csv(_peek_file(path), path.parent)


def _is_text_csv(head: bytes, base: Path | None, tab_only: bool = False) -> bool:
    """A header with 2+ columns, none of them an image path column, and no cell an existing image."""
    lines = [line for line in _decode_peek(head).splitlines()[:20] if line.strip()]
    if not lines:
        return False
    delimiter = "\t" if tab_only else _guess_delimiter(lines)
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [c.strip().lower() for c in rows[0]]
    if len(header) < 2 or _CSV_PATH_COLUMNS & set(header):
        return False
    cells = [c.strip() for row in rows for c in row if has_image_extension(c.strip())]
    return base is None or not any(os.path.isfile(resolve_csv_path(base, c)) for c in cells)


def _decode_peek(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="replace")
    return head.decode("utf-8-sig", errors="replace")


def _zip_holds_texts(zip_path: Path) -> bool:
    """From member names only (a CSV member's first bytes are peeked): no images, and .txt files in
    folders or one text table."""
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        names = [PurePosixPath(m.filename.replace("\\", "/")) for m in members]
        visible = [(m, n) for m, n in zip(members, names) if not any(is_hidden_or_system(p) for p in n.parts)]
        if any(has_image_extension(n.name) for _, n in visible):
            return False
        if any(n.suffix.lower() == ".txt" and len(n.parts) >= 2 for _, n in visible):
            return True
        tables = [(m, n) for m, n in visible if n.suffix.lower() in _TABLE_SUFFIXES]
        if len(tables) != 1:
            return False
        member, name = tables[0]
        if name.suffix.lower() != ".csv":
            return True
        with archive.open(member) as handle:
            return _is_text_csv(handle.read(_PEEK_BYTES), None)
