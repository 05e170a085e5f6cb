"""engine.data.scan and the modules it drives: every layout, every problem, the errors, a deterministic split,
progress and cancelling."""
from __future__ import annotations

import json
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.core.control import Cancelled, RunControl
from engine.data import images, ziparchive
from engine.data.checks import file_digest
from engine.data.report import SPLITS, DatasetError, DatasetReport
from engine.data.scan import scan_dataset
from engine.data.split import split_counts

_counter = iter(range(10**9))


def write_image(path: Path, seed: int | None = None, size: int = 16) -> Path:
    """A small noisy image; a fresh seed per call so every file has different bytes."""
    rng = np.random.default_rng(next(_counter) if seed is None else seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def write_classes(root: Path, counts: dict[str, int], suffix=".png") -> Path:
    for name, n in counts.items():
        for i in range(n):
            write_image(root / name / f"{name}_{i:02d}{suffix}")
    return root


def reasons(report: DatasetReport, severity: str | None = None) -> dict[str, str]:
    """file name -> reason, for quick assertions."""
    return {Path(p.path).name: p.reason for p in report.problems if severity in (None, p.severity)}


def problem_for(report: DatasetReport, name: str):
    matches = [p for p in report.problems if Path(p.path).name == name]
    assert matches, f"no problem for {name}: {report.problems}"
    return matches[0]


def names_by_split(report: DatasetReport, root: Path) -> dict[str, list[str]]:
    return {s: sorted(Path(x.path).relative_to(root).as_posix() for x in report.split(s)) for s in SPLITS}


# -- layouts -----------------------------------------------------------------------------------------
def test_class_folders_with_nested_subfolders(tmp_path):
    write_classes(tmp_path, {"cats": 10, "dogs": 10})
    write_image(tmp_path / "cats" / "indoor" / "deep" / "nested.png")
    report = scan_dataset(tmp_path)

    assert report.layout == "class-folders" and report.source_kind == "folder"
    assert report.classes == ["cats", "dogs"]
    assert not report.split_given and [p.kind for p in report.problems] == ["small validation split"]
    nested = [s for s in report.samples if s.path.endswith("nested.png")]
    assert len(nested) == 1 and report.classes[nested[0].label] == "cats"
    counts = report.counts()
    assert sum(counts[s]["cats"] for s in SPLITS) == 11
    assert all(counts[s]["dogs"] >= 1 for s in SPLITS)
    assert report.min_size == report.max_size == (16, 16)
    assert all(os.path.isabs(s.path) for s in report.samples)


def test_split_folders_with_valid_name(tmp_path):
    for split in ("train", "valid", "test"):
        write_classes(tmp_path / split, {"ants": 3, "bees": 3})
    report = scan_dataset(tmp_path)

    assert report.layout == "split-folders" and report.split_given
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert len(report.split(split)) == 6
        assert all(f"{os.sep}{folder}{os.sep}" in s.path for s in report.split(split))
    assert report.counts()["val"] == {"ants": 3, "bees": 3}


def test_train_and_test_folders_carve_val_from_train(tmp_path):
    write_classes(tmp_path / "train", {"ants": 10, "bees": 10})
    write_classes(tmp_path / "test", {"ants": 2, "bees": 2})
    report = scan_dataset(tmp_path)

    counts = report.counts()
    assert counts["test"] == {"ants": 2, "bees": 2}
    assert counts["val"]["ants"] >= 1 and counts["val"]["bees"] >= 1
    assert all(f"{os.sep}train{os.sep}" in s.path for s in report.split("val"))
    assert report.split_given


def test_csv_with_relative_paths_and_header(tmp_path):
    rows = ["path,label"]
    for name in ("cat", "dog"):
        for i in range(6):
            write_image(tmp_path / "imgs" / f"{name}{i}.jpg")
            rows.append(f"imgs/{name}{i}.jpg,{name}")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    report = scan_dataset(csv_path)

    assert report.layout == "csv" and report.source_kind == "csv"
    assert report.classes == ["cat", "dog"] and len(report.samples) == 12
    assert not report.split_given


def test_csv_split_column_absolute_paths_and_no_header(tmp_path):
    lines = []
    for name in ("cat", "dog"):
        for i, split in enumerate(["train"] * 4 + ["val", "test"]):
            path = write_image(tmp_path / f"{name}{i}.png")
            lines.append(f"{path},{name},{split}")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("\n".join(lines))
    report = scan_dataset(csv_path)

    assert report.split_given
    assert {s: sum(c.values()) for s, c in report.counts().items()} == {"train": 8, "val": 2, "test": 2}


def test_csv_row_problems(tmp_path):
    write_classes(tmp_path / "imgs", {"cat": 5, "dog": 5})
    rows = ["path,label"] + [f"imgs/{n}/{n}_{i:02d}.png,{n}" for n in ("cat", "dog") for i in range(5)]
    rows += ["imgs/missing.png,cat", "imgs/cat/cat_00.png,", ",dog"]
    (tmp_path / "data.csv").write_text("\n".join(rows))
    report = scan_dataset(tmp_path / "data.csv")

    found = reasons(report, "error")
    assert found["missing.png"] == "file listed in CSV does not exist (row 12)"
    assert any(r == "empty label in CSV (row 13)" for r in found.values())
    assert any(r == "empty path in CSV (row 14)" for r in found.values())
    assert len(report.samples) == 10


def test_csv_without_recognisable_header_is_an_error(tmp_path):
    (tmp_path / "bad.csv").write_text("foo,bar\nx.png,cat\n")
    with pytest.raises(DatasetError, match="header"):
        scan_dataset(tmp_path / "bad.csv")


def test_zip_of_a_folder_is_extracted_once_into_the_cache(tmp_path):
    source = write_classes(tmp_path / "src" / "pets", {"cats": 6, "dogs": 6})
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(source.rglob("*.png")):
            zf.write(file, file.relative_to(source.parent).as_posix())  # "pets/cats/..."
    report = scan_dataset(archive)

    assert report.source_kind == "zip" and report.layout == "class-folders"
    assert report.classes == ["cats", "dogs"] and len(report.samples) == 12
    zips = Path(os.environ["TRANSFERLAB_CACHE_DIR"]) / "zips"
    digest = file_digest(archive)
    assert all(s.path.startswith(str(zips / digest)) for s in report.samples)
    assert [p.name for p in zips.iterdir()] == [digest]  # no half-extracted leftovers

    again = scan_dataset(archive)
    assert again.content_hash == report.content_hash
    assert again.content_hash == scan_dataset(source).content_hash  # hash ignores where files live


def test_zip_slip_members_are_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    good = write_classes(tmp_path / "src", {"cats": 3, "dogs": 3})
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(good.rglob("*.png")):
            zf.write(file, file.relative_to(good).as_posix())
        zf.writestr("../escaped.png", b"x")
        zf.writestr(zipfile.ZipInfo("/absolute.png"), b"x")
        link = zipfile.ZipInfo("cats/link.png")
        link.external_attr = 0o120777 << 16  # a symlink member
        zf.writestr(link, "/etc/passwd")
    report = scan_dataset(archive)

    found = reasons(report, "error")
    assert found["escaped.png"].startswith("unsafe path in zip")
    assert found["absolute.png"].startswith("unsafe path in zip")
    assert found["link.png"] == "symbolic link in zip, not extracted"
    cache = Path(os.environ["TRANSFERLAB_CACHE_DIR"])
    assert not list(cache.rglob("escaped.png")) and not (cache / "zips" / "escaped.png").exists()
    assert not (tmp_path / "escaped.png").exists()
    assert len(report.samples) == 6


def test_zip_of_a_csv_dataset(tmp_path):
    archive = tmp_path / "listed.zip"
    rows = ["filename,class,split"]
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("cat", "dog"):
            for i, split in enumerate(["train"] * 3 + ["val", "test"]):
                image = write_image(tmp_path / "src" / f"{name}{i}.png")
                zf.write(image, f"images/{name}{i}.png")
                rows.append(f"images/{name}{i}.png,{name},{split}")
        zf.write(write_image(tmp_path / "src" / "stray.png"), "images/stray.png")
        zf.writestr("labels.csv", "\n".join(rows))
    report = scan_dataset(archive)

    assert report.layout == "csv" and report.source_kind == "zip" and report.split_given
    assert report.counts()["val"] == {"cat": 1, "dog": 1}
    assert problem_for(report, "stray.png").reason == "not listed in the CSV file"


def test_zip_size_and_member_caps(tmp_path, monkeypatch):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"a/{i}.png", b"x" * 100)
    monkeypatch.setattr(ziparchive, "MAX_ZIP_UNCOMPRESSED_BYTES", 200)
    with pytest.raises(DatasetError, match="would extract to"):
        scan_dataset(archive)
    monkeypatch.setattr(ziparchive, "MAX_ZIP_UNCOMPRESSED_BYTES", 10**9)
    monkeypatch.setattr(ziparchive, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(DatasetError, match="entries"):
        scan_dataset(archive)
    assert list((Path(os.environ["TRANSFERLAB_CACHE_DIR"]) / "zips").iterdir()) == []


def test_not_a_valid_zip(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DatasetError):
        scan_dataset(tmp_path / "broken.zip")


def test_several_folders_dropped_at_once(tmp_path):
    write_classes(tmp_path / "a", {"cats": 4})
    write_classes(tmp_path / "b", {"dogs": 4})
    write_classes(tmp_path / "c", {"birds": 4, "fish": 4})  # a dataset root, not a class
    report = scan_dataset([tmp_path / "a" / "cats", tmp_path / "b" / "dogs", tmp_path / "c"])
    assert report.classes == ["birds", "cats", "dogs", "fish"]
    assert report.source_kind == "multiple" and len(report.samples) == 16


# -- problems ------------------------------------------------------------------------------------------
def test_every_bad_file_is_reported(tmp_path, monkeypatch):
    write_classes(tmp_path, {"cats": 6, "dogs": 6})
    good_png = (tmp_path / "cats" / "cats_00.png").read_bytes()
    (tmp_path / "cats" / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    jpeg = write_image(tmp_path / "cats" / "whole.jpg", size=30).read_bytes()
    (tmp_path / "cats" / "whole.jpg").unlink()
    (tmp_path / "cats" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "cats" / "zero.png").touch()
    (tmp_path / "cats" / "notes.txt").write_text("hello")
    (tmp_path / "cats" / "fake.jpg").write_text("not really a jpeg")
    write_image(tmp_path / "dogs" / "huge.png", size=40)
    write_image(tmp_path / "loose.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "dogs" / "Thumbs.db").write_bytes(b"\0")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # 16×16 and 30×30 pass, 40×40 does not

    report = scan_dataset(tmp_path)
    found = reasons(report)
    assert found["truncated.png"] == "corrupt or truncated image"
    assert found["truncated.jpg"] == "corrupt or truncated image"
    assert found["zero.png"] == "empty file (0 bytes)"
    assert found["notes.txt"] == "not an image file (.txt)"
    assert found["fake.jpg"] == "not an image"
    assert found["huge.png"] == "too large (40×40 pixels, limit 1000)"
    assert found["loose.png"] == "image outside any class folder"
    assert problem_for(report, ".DS_Store").severity == "info"
    assert problem_for(report, "Thumbs.db").severity == "info"
    for name in ("truncated.png", "truncated.jpg", "zero.png", "notes.txt", "fake.jpg", "huge.png"):
        assert problem_for(report, name).severity == "error"
    assert len(report.samples) == 12
    text = report.format_text()
    assert "corrupt or truncated image" in text and "truncated.jpg" in text


def test_empty_class_is_dropped_and_small_class_warned(tmp_path):
    write_classes(tmp_path, {"cats": 6, "dogs": 6, "owls": 2})
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_hidden").mkdir()
    (tmp_path / "only_hidden" / ".DS_Store").write_bytes(b"\0")
    report = scan_dataset(tmp_path, min_images_per_class=5)

    assert report.classes == ["cats", "dogs", "owls"]
    empty = problem_for(report, "empty")
    assert empty.severity == "error" and empty.reason.startswith("empty class folder")
    assert problem_for(report, "only_hidden").severity == "error"
    few = problem_for(report, "owls")
    assert few.severity == "warning" and "only 2" in few.reason


def test_class_of_unreadable_files_is_dropped(tmp_path):
    write_classes(tmp_path, {"cats": 5, "dogs": 5})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("nope")
    report = scan_dataset(tmp_path)
    assert report.classes == ["cats", "dogs"]
    assert problem_for(report, "junk").reason == "no usable images for class 'junk' (class dropped)"
    assert problem_for(report, "a.jpg").reason == "not an image"


def test_class_only_in_test_folder_is_dropped(tmp_path):
    write_classes(tmp_path / "train", {"ants": 5, "bees": 5})
    write_classes(tmp_path / "val", {"ants": 2})
    write_classes(tmp_path / "test", {"ants": 2, "bees": 2, "wasps": 2})
    report = scan_dataset(tmp_path)
    assert report.classes == ["ants", "bees"]
    assert problem_for(report, "wasps_00.png").reason == "class 'wasps' has no training images"
    assert any(p.reason == "no val images for class 'bees'" for p in report.problems)


def test_files_outside_split_folders_are_reported(tmp_path):
    write_classes(tmp_path / "train", {"ants": 5, "bees": 5})
    write_classes(tmp_path / "test", {"ants": 2, "bees": 2})
    write_image(tmp_path / "extra" / "x.png")
    report = scan_dataset(tmp_path)
    assert problem_for(report, "x.png").reason == "outside the train/val/test folders"


def test_duplicate_across_splits_and_across_classes(tmp_path):
    write_classes(tmp_path / "train", {"cats": 5, "dogs": 5})
    write_classes(tmp_path / "test", {"cats": 2, "dogs": 2})
    leaked = (tmp_path / "train" / "cats" / "cats_00.png").read_bytes()
    (tmp_path / "test" / "cats" / "leaked.png").write_bytes(leaked)
    (tmp_path / "train" / "dogs" / "confused.png").write_bytes(leaked)
    report = scan_dataset(tmp_path)

    leak = problem_for(report, "leaked.png")
    assert leak.severity == "warning"
    assert leak.reason.startswith("duplicate across splits (data leakage): same content as ")
    assert leak.reason.endswith("cats_00.png")
    confused = problem_for(report, "confused.png")
    assert confused.reason.startswith("same image labelled as both 'cats' and 'dogs'")
    assert any(s.path.endswith("leaked.png") for s in report.samples)  # kept, only warned


def test_carved_split_keeps_identical_files_together(tmp_path):
    write_classes(tmp_path, {"cats": 20, "dogs": 20})
    original = (tmp_path / "cats" / "cats_00.png").read_bytes()
    for i in range(5):
        (tmp_path / "cats" / f"copy_{i}.png").write_bytes(original)
    report = scan_dataset(tmp_path)
    copies = {s.split for s in report.samples if "copy_" in s.path or s.path.endswith("cats_00.png")}
    assert len(copies) == 1
    assert not any("across splits" in p.reason for p in report.problems)
    assert sum("duplicate image" in p.reason for p in report.problems) == 5


def test_imbalance_warning(tmp_path):
    write_classes(tmp_path, {"common": 30, "rare": 3})
    report = scan_dataset(tmp_path, min_images_per_class=1)
    imbalance = [p for p in report.problems if p.kind == "class imbalance"]
    assert len(imbalance) == 1 and imbalance[0].severity == "warning"
    assert "'common' has 30" in imbalance[0].reason and "'rare' only 3" in imbalance[0].reason


def test_symlink_loop_does_not_hang(tmp_path):
    write_classes(tmp_path, {"cats": 5, "dogs": 5})
    try:
        os.symlink(tmp_path, tmp_path / "cats" / "loop", target_is_directory=True)
        os.symlink(tmp_path / "cats", tmp_path / "cats" / "self", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    report = scan_dataset(tmp_path)
    assert len(report.samples) == 10
    assert problem_for(report, "loop").reason.startswith("symbolic link loop skipped")
    assert problem_for(report, "self").severity == "warning"


def test_symlinked_class_folder_is_followed(tmp_path):
    write_classes(tmp_path / "elsewhere", {"dogs": 5})
    write_classes(tmp_path / "data", {"cats": 5})
    try:
        os.symlink(tmp_path / "elsewhere" / "dogs", tmp_path / "data" / "dogs", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symlinks not available")
    assert scan_dataset(tmp_path / "data").classes == ["cats", "dogs"]


# -- errors ---------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def test_not_a_folder_csv_or_zip(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_dataset(tmp_path / "notes.txt")


def test_single_class_names_what_was_found(tmp_path):
    write_classes(tmp_path, {"cats": 4})
    with pytest.raises(DatasetError, match=r"found 1: 'cats' \(4 images\)"):
        scan_dataset(tmp_path)


def test_no_images(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="No usable images") as caught:
        scan_dataset(tmp_path)
    assert caught.value.problems  # the reasons travel with the error, for display


def test_images_directly_in_the_folder(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png")
    with pytest.raises(DatasetError, match="no class folders"):
        scan_dataset(tmp_path)


def test_bad_fractions():
    with pytest.raises(ValueError):
        scan_dataset(".", val_fraction=0.6, test_fraction=0.5)


# -- split determinism -------------------------------------------------------------------------------------
def test_split_counts_rules():
    assert split_counts(1, 0.15, 0.15) == (0, 0)
    assert split_counts(2, 0.15, 0.15) == (0, 0)
    assert split_counts(3, 0.15, 0.15) == (0, 1)  # at least one val from 3 images
    assert split_counts(20, 0.15, 0.15) == (3, 3)
    assert split_counts(2, 0.5, 0.4) == (0, 1)  # one left for training; val wins over test
    assert split_counts(10, 0.0, 0.2) == (2, 0)


def test_same_seed_same_split_different_seed_differs(tmp_path):
    write_classes(tmp_path, {"cats": 20, "dogs": 20})
    first, second = scan_dataset(tmp_path, seed=7), scan_dataset(tmp_path, seed=7)
    assert first.samples == second.samples and first.content_hash == second.content_hash
    other = scan_dataset(tmp_path, seed=8)
    assert names_by_split(other, tmp_path) != names_by_split(first, tmp_path)
    assert other.content_hash != first.content_hash


class _ShuffledScandir:
    """os.scandir returning entries in a scrambled order, like some filesystems do."""

    def __init__(self, real, path):
        with real(path) as it:
            self.entries = list(it)
        random.Random(str(path)).shuffle(self.entries)

    def __enter__(self):
        return iter(self.entries)

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(self.entries)


def test_listing_order_and_worker_count_do_not_change_the_split(tmp_path, monkeypatch):
    write_classes(tmp_path, {"cats": 15, "dogs": 15})
    expected = scan_dataset(tmp_path, seed=3, workers=1)
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": _ShuffledScandir(real, path))
    scrambled = scan_dataset(tmp_path, seed=3, workers=8)
    assert scrambled.samples == expected.samples
    assert scrambled.content_hash == expected.content_hash


# -- progress, cancellation, serialisation ----------------------------------------------------
@pytest.mark.parametrize("workers", [1, 4])
def test_progress_is_reported_and_finishes(tmp_path, workers):
    write_classes(tmp_path, {"cats": 6, "dogs": 6})
    calls = []
    scan_dataset(tmp_path, progress=lambda *call: calls.append(call), workers=workers)
    assert calls[0] == ("scan", 0, 12) and calls[-1] == ("scan", 12, 12)
    assert len(calls) <= 13
    done = [d for _, d, _ in calls]
    assert done == sorted(done)  # never goes backwards


@pytest.mark.parametrize("workers", [1, 4])
def test_cancellation(tmp_path, workers):
    write_classes(tmp_path, {"cats": 10, "dogs": 10})
    control = RunControl()
    calls = []

    def progress(stage, done, total):
        calls.append((stage, done, total))
        if done >= 2:
            control.cancel()

    with pytest.raises(Cancelled):
        scan_dataset(tmp_path, progress=progress, control=control, workers=workers)
    assert 2 <= calls[-1][1] < 20  # stopped at the first checkpoint after the cancel, not at the end


def test_a_cancelled_control_stops_the_scan_before_any_image_is_decoded(tmp_path):
    write_classes(tmp_path, {"cats": 6, "dogs": 6})
    control = RunControl()
    control.cancel()
    calls = []
    with pytest.raises(Cancelled):
        scan_dataset(tmp_path, progress=lambda *call: calls.append(call), control=control)
    assert calls == [("scan", 0, 12)]


def test_cancelling_stops_a_long_listing(tmp_path):
    """Directory entries are checked against the control too (every few hundred), not only images."""
    write_classes(tmp_path, {"cats": 3, "dogs": 3})
    for i in range(600):
        (tmp_path / "cats" / f"note{i:03d}.txt").touch()
    control = RunControl()
    control.cancel()
    calls = []
    with pytest.raises(Cancelled):
        scan_dataset(tmp_path, progress=lambda *call: calls.append(call), control=control)
    assert calls == []  # cancelled while listing, before decoding began


def test_report_round_trips_through_json(tmp_path):
    write_classes(tmp_path, {"cats": 5, "dogs": 5})
    (tmp_path / "cats" / "x.txt").write_text("x")
    report = scan_dataset(tmp_path)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"]["train"]["cats"] == report.counts()["train"]["cats"]
    restored = DatasetReport.from_dict(data)
    assert restored == report
    text = report.format_text()
    assert "cats" in text and "dogs" in text and "x.txt" in text and "16×16" in text


def test_the_scan_does_not_import_torch_or_qt():
    import subprocess
    import sys
    code = ("import sys, engine.data.scan; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'PyQt6', 'PyQt5')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_validation_split_too_small_to_tell_recipes_apart_is_a_warning(tmp_path):
    """The smallest difference a paired test could see on it is stated; a larger split is not warned about."""
    write_classes(tmp_path / "small", {"cats": 20, "dogs": 20})
    (small,) = [p for p in scan_dataset(tmp_path / "small").problems if p.kind == "small validation split"]
    assert small.severity == "warning" and "with 6 images (16.7 points each)" in small.reason
    assert "differ by about" in small.reason and "keeps the default recipe" in small.reason
    from engine.data.split import validation_size_problems
    assert validation_size_problems(["train"] * 1000 + ["val"] * 400, "x", "images") == []
    assert validation_size_problems(["train"] * 1000, "x", "images") == []
