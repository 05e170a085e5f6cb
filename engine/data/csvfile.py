"""Reading a labels CSV (`path,label[,split]`) the way people actually write them: any of the usual
column names, comma/semicolon/tab, Excel's encodings, Windows paths, or no header at all."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from engine.data.report import DatasetError

_CSV_PATH_COLUMNS = {"path", "file", "filename", "filepath", "file_path", "image", "image_path"}
_CSV_LABEL_COLUMNS = {"label", "class", "category", "class_name", "target"}
_CSV_SPLIT_COLUMNS = {"split", "subset", "set"}
_CSV_COLUMN_ALIASES = {"path": _CSV_PATH_COLUMNS, "label": _CSV_LABEL_COLUMNS, "split": _CSV_SPLIT_COLUMNS}


def is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv" and path.is_file()


def read_csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
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


def csv_columns(csv_path: Path, rows):
    """Column roles, and the data rows (the header removed when there is one)."""
    _, first = rows[0]
    header = _header_columns(first)
    if header is not None:
        return header, rows[1:]
    if first and first[0] and os.path.exists(resolve_csv_path(csv_path.parent, first[0])):
        columns = {"path": 0, "label": 1}
        if len(first) > 2:
            columns["split"] = 2
        return columns, rows
    shown = ",".join(first)[:80]
    raise DatasetError(
        f"CSV '{csv_path.name}' needs a header row 'path,label' (optionally ',split'); "
        f"its first row is '{shown}'"
    )


def csv_cell(cells: list[str], index: int | None) -> str:
    return cells[index] if index is not None and index < len(cells) else ""


def resolve_csv_path(base: Path, raw: str) -> str:
    path = Path(raw)
    if not path.is_absolute():
        path = base / raw
    if not os.path.lexists(path) and "\\" in raw and os.sep == "/":
        path = base / raw.replace("\\", "/")  # CSV written on Windows
    return os.path.abspath(path)


def has_labels_header(csv_path: Path) -> bool:
    try:
        with open(csv_path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            first_line = handle.readline()
    except OSError:
        return False
    first_row = next(csv.reader([first_line], _sniff_dialect(first_line)), [])
    return _header_columns(first_row) is not None


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
