"""What a dataset scan hands out: samples, problems and the report, as plain data.

Paths, ints and strings only, so a report can cross thread and process boundaries and be written as
JSON next to a trained model. Everyone who reads a scan imports from here; no torch and no Qt.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

SPLITS = ("train", "val", "test")
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Sample:
    path: str  # where the sample is, its identity: an image's absolute file path; a text's 'reviews.csv:row 14'
    label: int  # index into report.classes
    split: str  # 'train' | 'val' | 'test'
    text: str | None = None  # the text itself, for a text dataset (None for images)


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
    source_kind: str = "folder"  # 'folder' | 'csv' | 'zip' | 'multiple' | 'jsonl' | 'tsv'
    modality: str = "image"  # 'image' | 'text': what one sample is, a noun ("20 texts")

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
            "samples": [_sample_dict(s) for s in self.samples],
            "problems": [asdict(p) for p in self.problems],
            "split_given": self.split_given,
            "min_size": list(self.min_size) if self.min_size else None,
            "max_size": list(self.max_size) if self.max_size else None,
            "content_hash": self.content_hash,
            "modality": self.modality,
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
            modality=data.get("modality", "image"),
        )

    def format_text(self, max_paths_per_group: int = 20) -> str:
        """A readable multi-line report for the log panel or a text export."""
        lines = [f"Dataset: {self.root}", _describe_layout(self)]
        lines += ["", *_format_counts_table(self)]
        if self.min_size and self.max_size:
            lines.append(
                f"Image sizes: {_format_size(self.min_size)} to {_format_size(self.max_size)}"
            )
        lines += ["", *format_problems(self.problems, max_paths_per_group)]
        return "\n".join(lines)


class DatasetError(ValueError):
    """The dataset cannot be used at all.  The message is one clear line;
    `problems` holds whatever was found on the way, for display."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        super().__init__(message)
        self.problems = list(problems)


def _sample_dict(sample: Sample) -> dict:
    """An image sample as before texts existed (no "text" key); a text sample with its text."""
    data = asdict(sample)
    if data["text"] is None:
        del data["text"]
    return data


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Errors first, then warnings and infos; grouped by kind, so similar problems sit together."""
    return sorted(problems, key=lambda p: (SEVERITIES.index(p.severity), p.kind, p.path, p.reason))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- text formatting -----------------------------------------------------------------


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
    lines.append(f"{len(report.classes)} classes, {plural(len(report.samples), report.modality)}")
    return lines


def format_problems(problems: list[Problem], max_paths: int) -> list[str]:
    """Problems grouped by severity and kind, a few paths each, as lines."""
    if not problems:
        return ["No problems found."]
    tally = {s: sum(1 for p in problems if p.severity == s) for s in SEVERITIES}
    summary = [f"{n} info" if s == "info" else plural(n, s) for s, n in tally.items() if n]
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
