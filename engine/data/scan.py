"""Turning whatever the user dropped into a checked, split, labelled image dataset.

`scan_dataset` accepts a folder (class folders or train/val/test folders), a
CSV of `path,label[,split]`, a zip of any of these, or several of them at
once.  It decodes every image once, so that problems surface here, in one
readable report, instead of as a crash in the middle of training.  Nothing
is dropped silently: every skipped file appears in `DatasetReport.problems`.

`ImageReader` is the image modality's reader for the shared scan
(engine.data.pipeline): listing (engine.data.listing) and decoding
(engine.data.checks); the pipeline splits, checks and reports.  No torch and
no Qt here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data.checks import check_files
from engine.data.csvfile import is_csv
from engine.data.listing import ListedFile, Lister
from engine.data.pipeline import Candidate, Reading, SampleReader, SplitSettings, existing_path, scan_samples
from engine.data.report import DatasetError, DatasetReport, Problem
from engine.data.ziparchive import is_zip


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
    settings = SplitSettings(val_fraction, test_fraction, seed, min_images_per_class)
    return scan_samples(ImageReader(workers), source, settings, progress=progress, control=control)


class ImageReader(SampleReader):
    """Image files from folders, CSVs and zips, each decoded and hashed once (`workers` threads)."""

    modality = "image"
    noun = "image"
    same_as = "same content as"
    hash_version = "transferlab-dataset-v1"
    hash_ascii = True
    units_span_classes = False

    def __init__(self, workers: int = 4):
        self.workers = workers

    def read(self, source, progress: Progress, control: RunControl) -> Reading:
        sources = _as_path_list(source)
        lister = Lister(control)
        for path in sources:
            lister.add_source(path, several=len(sources) > 1)
        root = _describe_root(sources)
        listed = _remove_repeated_files(lister.candidates, lister.problems)
        checks = check_files([f.path for f in listed], self.workers, progress, control)
        problems = list(lister.problems)
        candidates = []
        for file, check in zip(listed, checks):
            if check.reason is None:
                candidates.append(Candidate(file.path, file.label, file.split, content=check.digest,
                                            sort_key=(file.key, file.path), position=(file.label, file.key, file.path),
                                            hash_fields=(file.key, check.digest), size=check.size))
            else:
                problems.append(Problem(file.path, check.reason, "error"))
        return Reading(root, candidates, problems, _layout_name(lister.layouts), _source_kind(sources),
                       lister.split_given, lister.class_locations, lister.empty_folders,
                       _empty_message(root, lister, problems))


# --- input normalisation -------------------------------------------------------


def _as_path_list(source) -> list[Path]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise DatasetError("No dataset given")
    return [existing_path(item) for item in items]


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


def _layout_name(layouts: set[str]) -> str:
    return next(iter(layouts)) if len(layouts) == 1 else "mixed"


# --- what only files have ----------------------------------------------------------------


def _remove_repeated_files(listed: list[ListedFile], problems: list[Problem]) -> list[ListedFile]:
    """The same file reached twice (CSV rows, overlapping sources) is kept once."""
    first_seen: dict[str, ListedFile] = {}
    unique = []
    for file in listed:
        identity = os.path.normcase(os.path.abspath(file.path))
        earlier = first_seen.get(identity)
        if earlier is None:
            first_seen[identity] = file
            unique.append(file)
        elif earlier.label != file.label:
            reason = (f"same file listed twice with labels '{earlier.label}' and '{file.label}'; "
                      f"kept as '{earlier.label}'")
            problems.append(Problem(file.path, reason, "warning"))
        else:
            problems.append(Problem(file.path, "same file listed twice; kept once", "warning"))
    return unique


def _empty_message(root: str, lister: Lister, problems: list[Problem]) -> str | None:
    """What to say when no image is usable, where a count of errors would not help: images without class
    folders, or nothing found at all."""
    if lister.loose_images and not lister.class_locations:
        return (
            f"'{root}' holds {lister.loose_images} images directly but no class folders: "
            "put the images in one sub-folder per class"
        )
    if lister.class_locations or lister.empty_folders or any(p.severity == "error" for p in problems):
        return None
    return f"No images found in '{root}' (expected one sub-folder of images per class)"
