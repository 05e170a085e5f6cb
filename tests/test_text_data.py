"""The text dataset scanner on real files: tables, folders and zips of texts, and every problem it reports."""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.core.control import Cancelled, RunControl
from engine.data.report import DatasetError, DatasetReport
from engine.modalities.text.data import is_text_dataset, scan_texts, text_columns

FORTUNES = Path("/usr/share/games/fortunes")
WORDS = ["apple", "river", "stone", "cloud", "green", "music", "table", "light", "paper", "quiet",
         "storm", "bread", "glass", "honey", "north", "ocean"]


def sentence(i: int, topic: str) -> str:
    """A distinct, sentence-like text per (i, topic)."""
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(5)]
    return f"The {topic} story number {i} talks about {' '.join(words)}."


def write_csv(path: Path, header, rows, delimiter=",", encoding="utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labelled_rows(per_class: int = 10, classes=("pos", "neg")) -> list[list[str]]:
    return [[sentence(i, name), name] for name in classes for i in range(per_class)]


def write_class_folders(root: Path, per_class: int = 8, classes=("pos", "neg")) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i:02d}.txt").write_text(sentence(i, name) + "\n", "utf-8")
    return root


def problems_of(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


# --- tables ---------------------------------------------------------------------------------------


def test_csv_columns_are_guessed_from_names_and_content(tmp_path):
    named = write_csv(tmp_path / "named.csv", ["id", "Review", "Sentiment"],
                      [[str(i), text, label] for i, (text, label) in enumerate(labelled_rows())])
    report = scan_texts(named)
    assert report.modality == "text" and report.layout == "csv" and report.source_kind == "csv"
    assert report.classes == ["neg", "pos"]
    assert len(report.samples) == 20
    assert report.min_size is None and report.max_size is None
    first = min(report.samples, key=lambda s: int(s.path.split("row ")[1]))
    assert first.path == "named.csv:row 2" and first.text == sentence(0, "pos")

    unnamed = write_csv(tmp_path / "unnamed.csv", ["a", "b", "c"],
                        [[label, text, str(i)] for i, (text, label) in enumerate(labelled_rows())])
    assert text_columns(unnamed) == {"columns": ["a", "b", "c"], "text": "b", "label": "a", "split": None}
    assert scan_texts(unnamed).classes == ["neg", "pos"]


def test_explicit_columns_and_an_unknown_column(tmp_path):
    path = write_csv(tmp_path / "data.csv", ["title", "body", "kind", "mood"],
                     [[f"t{i}", text, label, "x" if i % 2 else "y"]
                      for i, (text, label) in enumerate(labelled_rows())])
    report = scan_texts(path, text_column="title", label_column="mood")
    assert report.classes == ["x", "y"]
    assert {s.text for s in report.samples} == {f"t{i}" for i in range(20)}
    with pytest.raises(DatasetError, match="Column 'nope' not found.*title, body, kind, mood"):
        scan_texts(path, label_column="nope")


def test_a_csv_without_header_is_refused_rather_than_losing_its_first_row(tmp_path):
    path = tmp_path / "no_header.csv"
    path.write_text("".join(f"{text},{label}\n" for text, label in labelled_rows()), "utf-8")
    with pytest.raises(DatasetError, match="needs a header row such as 'text,label'"):
        scan_texts(path)


def test_semicolon_csv_and_tsv(tmp_path):
    rows = [[f"Hello, world; number {i}", "a" if i < 6 else "b"] for i in range(12)]
    semicolon = write_csv(tmp_path / "semi.csv", ["text", "label"], rows, delimiter=";")
    assert len(scan_texts(semicolon).samples) == 12
    tsv = write_csv(tmp_path / "data.tsv", ["sentence", "label"], rows, delimiter="\t")
    report = scan_texts(tsv)
    assert report.source_kind == "tsv" and report.layout == "csv"
    assert {s.text for s in report.samples} == {r[0] for r in rows}
    excel_unicode = write_csv(tmp_path / "excel.tsv", ["sentence", "label"], rows, "\t", "utf-16")
    assert scan_texts(excel_unicode).content_hash == report.content_hash
    assert not problems_of(scan_texts(excel_unicode), "not UTF-8")


def test_jsonl_with_a_broken_line(tmp_path):
    lines = [json.dumps({"text": sentence(i, "q"), "intent": i % 2}) for i in range(12)]
    lines.insert(4, '{"text": "unterminated')
    lines.insert(7, "")
    lines.insert(9, "[1, 2]")
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    report = scan_texts(path)
    assert report.layout == "jsonl" and report.source_kind == "jsonl"
    assert report.classes == ["0", "1"] and len(report.samples) == 12
    broken = problems_of(report, "not valid JSON")
    assert [(p.path, p.severity) for p in broken] == [("data.jsonl:row 5", "error")]
    assert [p.path for p in problems_of(report, "not a JSON object")] == ["data.jsonl:row 10"]


def test_split_column_is_honoured(tmp_path):
    rows = []
    for i, (text, label) in enumerate(labelled_rows(per_class=12)):
        rows.append([text, label, ["train", "Validation", "dev", "TEST", "train", "train"][i % 6]])
    path = write_csv(tmp_path / "data.csv", ["text", "label", "fold"], rows)
    report = scan_texts(path)
    assert report.split_given
    expected = {"train": "train", "Validation": "val", "dev": "val", "TEST": "test"}
    by_text = {s.text: s.split for s in report.samples}
    assert all(by_text[text] == expected[split] for text, _, split in rows)
    assert [s.split for s in report.samples] == sorted((s.split for s in report.samples),
                                                       key=["train", "val", "test"].index)


def test_bad_rows_are_listed_with_row_numbers_and_skipped(tmp_path):
    rows = labelled_rows()
    rows[2] = ["   ", "pos"]  # row 4
    rows[5] = [sentence(99, "pos"), ""]  # row 7
    rows[7] = [sentence(98, "pos")]  # row 9: one cell only
    path = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    report = scan_texts(path)
    assert len(report.samples) == 17
    assert [p.path for p in problems_of(report, "empty text")] == ["data.csv:row 4"]
    assert [p.path for p in problems_of(report, "missing label")] == ["data.csv:row 7"]
    assert [p.path for p in problems_of(report, "too few cells")] == ["data.csv:row 9"]
    assert all(p.severity == "error" for p in report.problems if p.kind in ("empty text", "missing label"))


def test_windows_1252_file_is_decoded_and_its_rows_reported(tmp_path):
    rows = labelled_rows()
    rows[3][0] = "Café crème – très “bon”"  # row 5
    rows[12][0] = "Naïve résumé"  # row 14
    path = write_csv(tmp_path / "excel.csv", ["text", "label"], rows, encoding="cp1252")
    report = scan_texts(path)
    encoding = problems_of(report, "not UTF-8")
    assert sorted(p.path for p in encoding) == ["excel.csv:row 14", "excel.csv:row 5"]
    assert all(p.reason == "not UTF-8: read as Windows-1252" and p.severity == "warning" for p in encoding)
    texts = {s.text for s in report.samples}
    assert "Café crème – très “bon”" in texts and "Naïve résumé" in texts


def test_replacement_and_nul_characters_warn(tmp_path):
    rows = labelled_rows()
    rows[0][0] = "broken \ufffd text"
    rows[1][0] = "nul \0 inside"
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label"], rows))
    assert [p.path for p in problems_of(report, "replacement character in text")] == ["data.csv:row 2"]
    assert [p.path for p in problems_of(report, "NUL character in text")] == ["data.csv:row 3"]


def test_duplicates_and_conflicting_labels(tmp_path):
    rows = labelled_rows()
    rows.append([sentence(0, "pos"), "pos"])  # row 22, same as row 2
    rows.append([f"  {sentence(1, 'pos')}  ".replace(" story", "   story"), "neg"])  # row 23 ~ row 3
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label"], rows))
    duplicate = problems_of(report, "duplicate text")
    conflict = problems_of(report, "same text labelled as both 'neg' and 'pos'")
    assert [(p.path, p.reason) for p in duplicate] == [
        ("data.csv:row 22", "duplicate text: same as data.csv:row 2")]
    assert len(conflict) == 1 and conflict[0].path in ("data.csv:row 3", "data.csv:row 23")
    assert len(report.samples) == 22  # kept, with warnings
    split_of = {s.path: s.split for s in report.samples}
    assert split_of["data.csv:row 22"] == split_of["data.csv:row 2"]
    assert split_of["data.csv:row 23"] == split_of["data.csv:row 3"]


def test_duplicate_across_given_splits_is_leakage(tmp_path):
    rows = [[text, label, "train"] for text, label in labelled_rows()]
    rows.append([sentence(0, "pos"), "pos", "test"])
    rows.append([sentence(1, "neg"), "neg", "val"])
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label", "split"], rows))
    leaks = problems_of(report, "duplicate across splits")
    assert sorted(p.path for p in leaks) == ["data.csv:row 22", "data.csv:row 23"]


def test_label_spellings_are_merged_with_a_warning(tmp_path):
    rows = labelled_rows(per_class=6)
    rows += [[sentence(50 + i, "x"), "Pos"] for i in range(2)] + [[sentence(60, "x"), "POS "]]
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label"], rows))
    assert report.classes == ["neg", "pos"]
    assert sum(per_class["pos"] for per_class in report.counts().values()) == 9
    reasons = sorted(p.reason for p in problems_of(report, "label spelled differently"))
    assert reasons == ["label spelled differently: 'POS ' in 1 row, merged into 'pos'",
                       "label spelled differently: 'Pos' in 2 rows, merged into 'pos'"]


def test_long_texts_are_counted_once(tmp_path):
    rows = labelled_rows()
    rows[0][0] = " ".join(["word"] * 40)
    rows[15][0] = " ".join(["word"] * 50) + " end"
    path = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    report = scan_texts(path, token_counter=lambda texts: [len(t.split()) for t in texts], max_tokens=20)
    long = problems_of(report, "long texts")
    assert len(long) == 1 and long[0].path == str(path) and long[0].severity == "info"
    assert long[0].reason == "long texts: 2 of 20 texts are longer than 20 tokens and will be truncated"
    assert not problems_of(scan_texts(path), "long texts")


def test_too_few_classes_and_class_warnings(tmp_path):
    one = write_csv(tmp_path / "one.csv", ["text", "label"], labelled_rows(classes=("pos",)))
    with pytest.raises(DatasetError, match="Need at least 2 classes with usable texts; found 1: 'pos'"):
        scan_texts(one)
    rows = labelled_rows(per_class=40, classes=("big",)) + labelled_rows(per_class=3, classes=("tiny",))
    report = scan_texts(write_csv(tmp_path / "skewed.csv", ["text", "label"], rows))
    assert [p.reason for p in problems_of(report, "few texts")] == [
        "few texts: class 'tiny' has only 3 usable (at least 5 recommended)"]
    assert problems_of(report, "class imbalance")


def test_class_without_training_texts_is_dropped(tmp_path):
    rows = [[text, label, "train"] for text, label in labelled_rows()]
    rows += [[sentence(i, "odd"), "odd", "test"] for i in range(3)]
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label", "split"], rows))
    assert report.classes == ["neg", "pos"]
    assert [p.reason for p in problems_of(report, "no training texts")] == [
        "no training texts: class 'odd' dropped (3 texts skipped)"]


# --- folders and zips -----------------------------------------------------------------------------


def test_folder_of_class_folders(tmp_path):
    root = write_class_folders(tmp_path / "texts")
    (root / "pos" / "notes.md").write_text("not a text sample", "utf-8")
    (root / "pos" / "empty.txt").write_text("  \n", "utf-8")
    (root / "README.txt").write_text("loose", "utf-8")
    report = scan_texts(root)
    assert report.layout == "class-folders" and report.source_kind == "folder"
    assert report.classes == ["neg", "pos"] and len(report.samples) == 16
    assert {s.path for s in report.samples} >= {"pos/00.txt", "neg/07.txt"}
    assert problems_of(report, "not a .txt file")[0].path == "pos/notes.md"
    assert problems_of(report, "empty text")[0].path == "pos/empty.txt"
    assert problems_of(report, "outside any class folder")[0].path == "README.txt"


def test_split_folders_and_a_zip_of_them(tmp_path):
    root = tmp_path / "corpus"
    write_class_folders(root / "train")
    write_class_folders(root / "test", per_class=3)
    report = scan_texts(root)
    assert report.layout == "split-folders" and report.split_given
    assert report.counts()["test"] == {"neg": 3, "pos": 3}
    assert report.counts()["val"]["pos"] >= 1  # carved out of train

    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(root.rglob("*.txt")):
            zf.write(file, file.relative_to(tmp_path).as_posix())
    zipped = scan_texts(archive)
    assert zipped.source_kind == "zip" and zipped.layout == "split-folders"
    assert zipped.content_hash == report.content_hash
    assert {s.path for s in zipped.samples} == {s.path for s in report.samples}
    assert is_text_dataset(archive)


def test_zip_of_a_jsonl_table(tmp_path):
    archive = tmp_path / "data.zip"
    lines = [json.dumps({"text": text, "label": label}) for text, label in labelled_rows()]
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/train.jsonl", "\n".join(lines))
        zf.writestr("data/README.md", "about the data")
    assert is_text_dataset(archive)
    assert text_columns(archive)["text"] == "text"
    report = scan_texts(archive)
    assert report.source_kind == "zip" and report.layout == "jsonl" and len(report.samples) == 20
    assert [(p.path, p.severity) for p in problems_of(report, "not used")] == [("README.md", "info")]


# --- recognising text datasets ----------------------------------------------------------------------


def test_is_text_dataset_tells_texts_from_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (4, 4), colour).save(images / f"{i}.png")
    image_csv = write_csv(tmp_path / "images.csv", ["path", "label"],
                          [["images/0.png", "a"], ["images/1.png", "b"]])
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("images/0.png,a\nimages/1.png,b\n", "utf-8")
    text_csv = write_csv(tmp_path / "texts.csv", ["text", "label"], labelled_rows())
    texts_folder = write_class_folders(tmp_path / "folder")
    assert not is_text_dataset(image_csv)
    assert not is_text_dataset(headerless)
    assert not is_text_dataset(images)
    assert is_text_dataset(text_csv)
    assert is_text_dataset(texts_folder)
    assert not is_text_dataset(tmp_path / "missing.csv")
    assert not is_text_dataset(None)
    assert not is_text_dataset(images / "0.png")
    image_zip = tmp_path / "images.zip"
    with zipfile.ZipFile(image_zip, "w") as zf:
        zf.write(images / "0.png", "cats/0.png")
    assert not is_text_dataset(image_zip)


# --- splitting and the report -----------------------------------------------------------------------


def test_seeded_split_is_deterministic_and_keeps_identical_texts_together(tmp_path):
    rows = labelled_rows(per_class=20)
    rows += [[rows[i][0], rows[i][1]] for i in range(0, 40, 3)]  # identical copies
    path = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    first, again = scan_texts(path, seed=3), scan_texts(path, seed=3)
    assert [(s.path, s.split) for s in first.samples] == [(s.path, s.split) for s in again.samples]
    assert first.content_hash == again.content_hash
    other = scan_texts(path, seed=4)
    assert {s.path: s.split for s in other.samples} != {s.path: s.split for s in first.samples}
    splits_of_text: dict[str, set] = {}
    for sample in first.samples:
        splits_of_text.setdefault(sample.text, set()).add(sample.split)
    assert all(len(splits) == 1 for splits in splits_of_text.values())
    assert not problems_of(first, "duplicate across splits")
    assert all(first.counts()[split]["pos"] > 0 for split in ("train", "val", "test"))

    reordered = write_csv(tmp_path / "reordered.csv", ["text", "label"], list(reversed(rows)))
    assert scan_texts(reordered, seed=3).content_hash == first.content_hash


def test_report_round_trips_with_texts(tmp_path):
    report = scan_texts(write_csv(tmp_path / "data.csv", ["text", "label"], labelled_rows()))
    data = json.loads(json.dumps(report.to_dict()))
    back = DatasetReport.from_dict(data)
    assert back == report
    assert back.samples[0].text and back.modality == "text"
    assert "20 texts" in report.format_text()


def test_real_texts_from_fortunes(tmp_path):
    categories = ["computers", "food", "science"]
    if not all((FORTUNES / name).is_file() for name in categories):
        pytest.skip("Debian fortunes are not installed")
    rows = []
    for name in categories:
        raw = (FORTUNES / name).read_bytes().decode("utf-8", errors="replace")
        fortunes = [f.strip() for f in raw.split("\n%\n") if f.strip() and "\ufffd" not in f]
        rows += [[fortune, name] for fortune in fortunes[:30]]
    path = write_csv(tmp_path / "fortunes.csv", ["quote", "category"], rows)
    report = scan_texts(path, seed=1)
    assert report.classes == categories
    assert len(report.samples) + len([p for p in report.problems if p.severity == "error"]) == 90
    counts = report.counts()
    assert all(counts["train"][name] >= 15 and counts["test"][name] >= 1 for name in categories)
    assert {s.text for s in report.samples} <= {r[0] for r in rows}
    assert any("\n" in s.text for s in report.samples)  # multi-line quotes survive the CSV round trip


def test_progress_is_reported_and_cancel_stops_the_scan(tmp_path):
    path = write_csv(tmp_path / "data.csv", ["text", "label"], labelled_rows(per_class=200))
    calls = []
    scan_texts(path, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls[-1] == ("texts", 400, 400) and {stage for stage, _, _ in calls} == {"texts"}
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        scan_texts(path, control=control)
