"""engine.data.pipeline with a reader of its own: a third modality plugs in without editing the pipeline, and
every message of the shared checks names its samples with the reader's noun."""
from __future__ import annotations

import pytest

from engine.core.control import Cancelled, RunControl
from engine.data.pipeline import Candidate, Reading, SampleReader, SplitSettings, scan_samples
from engine.data.report import DatasetError, Problem
from engine.data.split import CARVE_ALL


class ClipReader(SampleReader):
    """Audio clips named 'label/name:digest' in a list: a modality the pipeline has never heard of."""

    modality = "clip"
    noun = "clip"
    hash_version = "test-clips-v1"

    def read(self, source, progress, control) -> Reading:
        candidates, problems = [], []
        for order, item in enumerate(source):
            control.checkpoint()
            where, content = item.split(":")
            label, split = where.split("/")[0], _given_split(where)
            if content == "broken":
                problems.append(Problem(where, "cannot be decoded", "error"))
            else:
                candidates.append(Candidate(where, label, split, content=content, sort_key=(where,),
                                            position=(order,), hash_fields=(content,)))
            progress("clips", order + 1, len(source))
        locations = {c.label: [c.label] for c in candidates}
        return Reading("clips.list", candidates, problems, "class-folders", "list", class_locations=locations)

    def review(self, kept, root, control) -> list[Problem]:
        return [Problem(root, f"reviewed {len(kept)} clips", "info")]


def _given_split(where: str):
    for split in ("val", "test"):
        if f"/{split}/" in where:
            return split
    return CARVE_ALL


def clips(counts: dict[str, int]) -> list[str]:
    return [f"{label}/{i}:{label}-{i}" for label, n in counts.items() for i in range(n)]


def test_a_new_modality_gets_splits_checks_and_a_report():
    source = clips({"birds": 20, "frogs": 3}) + ["birds/copy:birds-0", "frogs/x:broken", "owls/val/1:owl"]
    calls = []
    report = scan_samples(ClipReader(), source, SplitSettings(seed=1), progress=lambda *c: calls.append(c))

    assert report.modality == "clip" and report.classes == ["birds", "frogs"] and report.source_kind == "list"
    assert len(report.samples) == 24 and calls[-1] == ("clips", 26, 26)
    reasons = {p.reason for p in report.problems}
    assert "few clips: class 'frogs' has only 3 usable (at least 5 recommended)" in reasons
    assert "class 'owls' has no training clips" in reasons  # one error per skipped sample by default
    assert "duplicate clip: same as birds/0" in reasons
    assert "reviewed 24 clips" in reasons and "cannot be decoded" in reasons
    assert not any("image" in p.reason or "text" in p.reason for p in report.problems)
    assert "24 clips" in report.format_text()
    split_of = {s.path: s.split for s in report.samples}
    assert split_of["birds/copy"] == split_of["birds/0"]  # identical content, one split

    again = scan_samples(ClipReader(), list(reversed(source)), SplitSettings(seed=1))
    assert again.content_hash == report.content_hash  # listing order does not choose the split


def test_a_reader_that_summarises_dropped_classes_and_the_errors_it_raises():
    summarising = type("RowClipReader", (ClipReader,), {"lists_each_skipped_sample": False})()
    report = scan_samples(summarising, clips({"a": 6, "b": 6}) + ["c/test/1:c1", "c/test/2:c2"], SplitSettings())
    assert [p.reason for p in report.problems if p.kind == "no training clips"] == [
        "no training clips: class 'c' dropped (2 clips skipped)"]

    with pytest.raises(DatasetError, match=r"found 1: 'a' \(6 clips\)"):
        scan_samples(ClipReader(), clips({"a": 6}), SplitSettings())
    with pytest.raises(DatasetError, match="No usable clips in 'clips.list' \\(1 cannot be decoded\\)"):
        scan_samples(ClipReader(), ["a/1:broken"], SplitSettings())
    with pytest.raises(ValueError, match="leave clips for training"):
        scan_samples(ClipReader(), clips({"a": 6}), SplitSettings(val_fraction=0.5, test_fraction=0.5))
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        scan_samples(ClipReader(), clips({"a": 6, "b": 6}), SplitSettings(), control=control)
