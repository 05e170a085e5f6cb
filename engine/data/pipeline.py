"""One scan for every modality: a reader turns what the user dropped into candidate samples and the
problems only it can see (unreadable images, long texts); this module assigns the splits, runs the checks
every dataset needs (classes without training samples, dropped and empty classes, duplicates, class sizes
and imbalance, missing splits, a small validation split) and builds the DatasetReport.

A new modality plugs in a `SampleReader`; nothing here names a modality: messages take the reader's noun.
No torch and no Qt here.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.control import RunControl
from engine.core.progress import Progress, no_progress
from engine.data.report import SPLITS, DatasetError, DatasetReport, Problem, Sample, plural, sorted_problems
from engine.data.split import (assign_splits, class_location, class_size_problems, duplicate_problems,
                               missing_split_problems, validation_size_problems)


@dataclass(frozen=True)
class Candidate:
    """One usable sample as a reader found it, before splits are chosen and checks run."""

    where: str  # what problems and Sample.path show: an absolute file path, or 'reviews.csv:row 14'
    label: str  # the class name
    split: str | None  # a given split ('train' | 'val' | 'test'), split.CARVE_VAL or split.CARVE_ALL
    content: str  # what identical samples share (a file digest, a normalised text): duplicates, split units
    sort_key: tuple  # a place independent of listing order: units are shuffled from this order
    position: tuple  # the sample's order within its split in the report
    hash_fields: tuple[str, ...]  # what content_hash records of the sample, beside its label and split
    text: str | None = None  # the sample itself when it is a text (Sample.text)
    size: tuple[int, int] | None = None  # (w, h) of an image: the report's min_size/max_size


@dataclass
class Reading:
    """What a reader found: the usable candidates, the problems met on the way and the dataset's shape."""

    root: str  # what the user gave (DatasetReport.root)
    candidates: list[Candidate]
    problems: list[Problem]
    layout: str  # DatasetReport.layout
    source_kind: str  # DatasetReport.source_kind
    split_given: bool = False
    class_locations: dict[str, list[str]] = field(default_factory=dict)  # class -> folders or files, first first
    empty_folders: list[tuple[str, str]] = field(default_factory=list)  # (class, folder)
    empty_message: str | None = None  # the reader's own words when no sample is usable at all


class SampleReader:
    """What a modality supplies to `scan_samples`: subclass, set the attributes, implement `read`.

    `read(source, progress, control) -> Reading` lists and reads every sample once, calling
    `progress(stage, done, total)` and `control.checkpoint()` between steps.  `review(kept, root, control)`
    adds problems that need the final samples (long texts); it may be left as is.
    """

    modality = ""  # DatasetReport.modality: 'image', 'text'
    noun = ""  # one sample in messages: 'image' gives "3 images", "no val images for class 'a'"
    same_as = "same as"  # how a duplicate names its first copy: "same content as red/a.png"
    hash_version = ""  # salts DatasetReport.content_hash; change it when hash_fields change
    hash_ascii = False  # escape non-ASCII in the hashed JSON (images' stored hashes have it)
    # a class without training samples: one error per skipped sample (files a user opens), or one warning
    # per class (rows of a table)
    lists_each_skipped_sample = True
    # identical samples labelled differently (or one given as train, one not) share one split unit; False:
    # one unit per class and given split, the rule image splits were chosen by before texts existed
    units_span_classes = True

    def read(self, source, progress: Progress, control: RunControl) -> Reading:
        raise NotImplementedError

    def review(self, kept: list[Candidate], root: str, control: RunControl) -> list[Problem]:
        return []


@dataclass(frozen=True)
class SplitSettings:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    min_per_class: int = 5


def scan_samples(reader: SampleReader, source, settings: SplitSettings, *, progress: Progress | None = None,
                 control: RunControl | None = None) -> DatasetReport:
    """Read `source` with `reader`, choose the splits, check the result and report it.

    Raises ValueError for fractions that leave nothing to train on, DatasetError when the result would
    be unusable (its `problems` say why), Cancelled when `control` is cancelled.
    """
    check_fractions(settings.val_fraction, settings.test_fraction, reader.noun)
    control = control or RunControl()
    reading = reader.read(source, progress or no_progress, control)
    return _build_report(reader, reading, settings, control)


def check_fractions(val_fraction: float, test_fraction: float, noun: str) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must leave {noun}s for training")


def existing_path(item) -> Path:
    """The absolute path of one dataset source, which must exist."""
    if item is None:
        raise DatasetError("No dataset given")
    path = Path(os.path.abspath(os.fspath(item)))
    if not os.path.lexists(path):
        raise DatasetError(f"'{path}' does not exist")
    return path


# --- from candidates to the report ------------------------------------------------------------------


def _build_report(reader: SampleReader, reading: Reading, settings: SplitSettings,
                  control: RunControl) -> DatasetReport:
    problems = list(reading.problems)
    candidates = reading.candidates
    unit_of = _content if reader.units_span_classes else _content_in_class
    splits = assign_splits(candidates, settings.val_fraction, settings.test_fraction, settings.seed, unit_of)
    kept = _drop_classes_without_training(reader, reading, list(zip(candidates, splits)), problems)
    classes = sorted({candidate.label for candidate, _ in kept})
    problems += _dropped_class_problems(reading, classes, {c.label for c in candidates}, reader.noun)
    _raise_if_unusable(reader.noun, reading, classes, len(kept), problems)

    label_index = {name: i for i, name in enumerate(classes)}
    rows = sorted(kept, key=lambda row: (SPLITS.index(row[1]), row[0].position))
    samples = [Sample(c.where, label_index[c.label], split, text=c.text) for c, split in rows]
    problems += _checks_of_the_splits(reader, reading, rows, classes, settings)
    problems += reader.review([c for c, _ in rows], reading.root, control)
    sizes = [c.size for c, _ in rows if c.size is not None]
    return DatasetReport(
        root=reading.root,
        layout=reading.layout,
        classes=classes,
        samples=samples,
        problems=sorted_problems(problems),
        split_given=reading.split_given,
        min_size=min(sizes, key=_area_then_width) if sizes else None,
        max_size=max(sizes, key=_area_then_width) if sizes else None,
        content_hash=_content_hash(reader, rows),
        source_kind=reading.source_kind,
        modality=reader.modality,
    )


def _checks_of_the_splits(reader: SampleReader, reading: Reading, rows, classes: list[str],
                          settings: SplitSettings) -> list[Problem]:
    noun, locations = reader.noun, reading.class_locations
    return [*duplicate_problems(rows, noun, reader.same_as),
            *class_size_problems(rows, classes, locations, reading.root, noun, settings.min_per_class),
            *missing_split_problems(rows, classes, locations, noun),
            *validation_size_problems([split for _, split in rows], reading.root, f"{noun}s")]


def _drop_classes_without_training(reader: SampleReader, reading: Reading, rows, problems: list[Problem]):
    """A class with no training sample cannot be learned: its samples are skipped, and said so."""
    trainable = {candidate.label for candidate, split in rows if split == "train"}
    dropped: dict[str, list] = {}
    for candidate, _ in rows:
        if candidate.label not in trainable:
            dropped.setdefault(candidate.label, []).append(candidate)
    noun = reader.noun
    for label, members in sorted(dropped.items()):
        if reader.lists_each_skipped_sample:
            problems += [Problem(c.where, f"class '{label}' has no training {noun}s", "error") for c in members]
        else:
            location = class_location(reading.class_locations, label, reading.root)
            reason = f"no training {noun}s: class '{label}' dropped ({plural(len(members), noun)} skipped)"
            problems.append(Problem(location, reason, "warning"))
    return [row for row in rows if row[0].label in trainable]


def _dropped_class_problems(reading: Reading, classes: list[str], labels_found: set[str],
                            noun: str) -> list[Problem]:
    """Class-level problems: empty class folders, and classes none of whose samples could be used.
    Samples of classes dropped for want of training samples already have their own."""
    kept = set(classes)
    problems = []
    for label, folder in reading.empty_folders:
        if label in kept:
            problems.append(Problem(folder, "empty folder", "warning"))
        else:
            problems.append(Problem(folder, "empty class folder (class dropped)", "error"))
    empty = set(reading.empty_folders)
    for label, locations in reading.class_locations.items():
        if label in kept or label in labels_found:
            continue
        problems += [Problem(location, f"no usable {noun}s for class '{label}' (class dropped)", "error")
                     for location in locations if (label, location) not in empty]
    return problems


def _raise_if_unusable(noun: str, reading: Reading, classes: list[str], n_kept: int,
                       problems: list[Problem]) -> None:
    problems = sorted_problems(problems)
    if not reading.candidates:
        raise DatasetError(reading.empty_message or _nothing_usable_message(noun, reading.root, problems),
                           problems)
    if len(classes) < 2:
        found = f"'{classes[0]}' ({plural(n_kept, noun)})" if classes else "none"
        dropped = sorted(set(reading.class_locations) - set(classes))
        extra = f"; without usable {noun}s: {', '.join(repr(d) for d in dropped[:5])}" if dropped else ""
        raise DatasetError(f"Need at least 2 classes with usable {noun}s; found {len(classes)}: {found}{extra}",
                           problems)


def _nothing_usable_message(noun: str, root: str, problems: list[Problem]) -> str:
    by_kind: dict[str, int] = {}
    for problem in problems:
        if problem.severity == "error":
            by_kind[problem.kind] = by_kind.get(problem.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return f"No usable {noun}s in '{root}'" + (f" ({summary})" if summary else "")


def _content(candidate: Candidate) -> str:
    return candidate.content


def _content_in_class(candidate: Candidate) -> tuple:
    return candidate.content, candidate.label, candidate.split


def _area_then_width(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] * size[1], size[0])


def _content_hash(reader: SampleReader, rows) -> str:
    """Stable across runs, machines and listing order: what the reader hashes of each sample, sorted."""
    entries = sorted([*candidate.hash_fields, candidate.label, split] for candidate, split in rows)
    payload = json.dumps([reader.hash_version, entries], ensure_ascii=reader.hash_ascii, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
