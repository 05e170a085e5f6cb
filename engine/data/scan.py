"""Turning whatever the user dropped into a checked, split, labelled dataset.

`scan_dataset` accepts a folder (class folders or train/val/test folders), a
CSV of `path,label[,split]`, a zip of any of these, or several of them at
once.  It decodes every image once, so that problems surface here, in one
readable report, instead of as a crash in the middle of training.  Nothing
is dropped silently: every skipped file appears in `DatasetReport.problems`.

This module orchestrates: listing (engine.data.listing), checking
(engine.data.checks), splitting (engine.data.split) and the report it
returns (engine.data.report).  No torch and no Qt here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.core.control import RunControl
from engine.core.progress import Progress, no_progress
from engine.data.checks import FileCheck, check_files
from engine.data.csvfile import is_csv
from engine.data.listing import Candidate, Lister
from engine.data.report import SPLITS, DatasetError, DatasetReport, Problem, Sample, plural, sorted_problems
from engine.data.split import (assign_splits, class_size_problems, duplicate_problems, missing_split_problems,
                               validation_size_problems)
from engine.data.ziparchive import is_zip

_CONTENT_HASH_VERSION = "transferlab-dataset-v1"


def scan_dataset(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_images_per_class: int = 5,
    progress: Progress | None = None,
    control: RunControl | None = None,
    workers: int = 4,
) -> DatasetReport:
    """Find, check, label and split every image of `source`.

    `source` is a folder, a CSV, a zip, or a list of those (several folders
    dropped at once: a folder that directly holds images is one class, any
    other folder is a dataset root; everything is merged).
    `progress("scan", done, total)` is called from this thread after every
    step of decoding; `control.checkpoint()` is called between steps (and
    every few hundred directory entries), so pausing blocks the scan and
    cancelling raises `engine.core.control.Cancelled`.
    Raises DatasetError when the result would be unusable.
    """
    _check_fractions(val_fraction, test_fraction)
    sources = _as_path_list(source)
    control = control or RunControl()
    lister = Lister(control)
    for path in sources:
        lister.add_source(path, several=len(sources) > 1)
    root = _describe_root(sources)

    candidates = _remove_repeated_files(lister.candidates, lister.problems)
    checks = check_files([c.path for c in candidates], workers, progress or no_progress, control)
    settings = _SplitSettings(val_fraction, test_fraction, seed, min_images_per_class)
    return _build_report(root, _source_kind(sources), lister, candidates, checks, settings)


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
    if is_zip(sources[0]):
        return "zip"
    if is_csv(sources[0]):
        return "csv"
    return "folder"


# --- from checked files to the report ------------------------------------------------


def _remove_repeated_files(candidates: list[Candidate], problems: list[Problem]) -> list[Candidate]:
    """The same file reached twice (CSV rows, overlapping sources) is kept once."""
    first_seen: dict[str, Candidate] = {}
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


def _build_report(root: str, source_kind: str, lister: Lister, candidates: list[Candidate],
                  checks: list[FileCheck], settings: _SplitSettings) -> DatasetReport:
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

    splits = assign_splits(usable, settings.val_fraction, settings.test_fraction, settings.seed)
    label_index = {name: i for i, name in enumerate(classes)}
    rows = sorted(
        ((c, chk, splits[c.path]) for c, chk in usable),
        key=lambda row: (SPLITS.index(row[2]), label_index[row[0].label], row[0].key, row[0].path),
    )
    samples = [Sample(c.path, label_index[c.label], split) for c, _, split in rows]

    problems += duplicate_problems(rows)
    problems += class_size_problems(rows, classes, lister.class_locations, root, settings.min_images_per_class)
    problems += missing_split_problems(rows, classes, lister.class_locations)
    problems += validation_size_problems([split for _, _, split in rows], root, "images")
    sizes = [chk.size for _, chk, _ in rows]
    return DatasetReport(
        root=root,
        layout=_layout_name(lister.layouts),
        classes=classes,
        samples=samples,
        problems=sorted_problems(problems),
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


def _report_dropped_classes(lister: Lister, classes: list[str], labels_with_images: set[str],
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


def _raise_if_unusable(root: str, lister: Lister, classes: list[str], usable, problems) -> None:
    problems = sorted_problems(problems)
    if not usable:
        raise DatasetError(_no_images_message(root, lister, problems), problems)
    if len(classes) < 2:
        found = f"'{classes[0]}' ({plural(len(usable), 'image')})"
        dropped = sorted(set(lister.class_locations) - set(classes))
        extra = f"; without usable images: {', '.join(repr(d) for d in dropped[:5])}" if dropped else ""
        raise DatasetError(f"Need at least 2 classes with usable images; found 1: {found}{extra}", problems)


def _no_images_message(root: str, lister: Lister, problems: list[Problem]) -> str:
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
