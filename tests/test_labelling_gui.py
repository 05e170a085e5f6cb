"""The labelling window through the real window: the Data step's "Unlabelled pool…" and "Label…", a real labelling
session (engine.active.session, the default backbone's offline weights) on the demo photos and on fortunes, decided
by keys only (3, Enter, Backspace, Ctrl+Z), a new head after each batch, and the labels kept as the project's
additions, in its file and in the next run's training split.

Every wait arms `qtbot.waitSignal` before the key or click that triggers it; no test sleeps.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import Qt

from engine.project import load_project
from gui.project_io import project_from_state
from gui_support import load
from test_gui_text import FORTUNES, TOPICS, fortunes, write_fortunes_csv

ROUND_TIMEOUT_MS = 120_000
LABELLED_PER_CLASS = 6
UNDO = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def photos(tmp_path, demo_dataset) -> tuple[Path, Path]:
    """The demo as a small labelled set (6 photos a class) and an unlabelled pool of the rest, renamed so no
    file name tells its class."""
    labelled, pool = tmp_path / "labelled", tmp_path / "pool"
    pool.mkdir()
    number = 0
    for folder in sorted(demo_dataset.iterdir()):
        photos = sorted(folder.glob("*.png"))
        (labelled / folder.name).mkdir(parents=True)
        for photo in photos[:LABELLED_PER_CLASS]:
            shutil.copy(photo, labelled / folder.name / photo.name)
        for photo in photos[LABELLED_PER_CLASS:]:
            shutil.copy(photo, pool / f"photo_{number:03d}.png")
            number += 1
    return labelled, pool


def choose_pool(qtbot, window, sources: list[Path]):
    """"Unlabelled pool…" with the dialog answered; waits for the Data step's line."""
    panel = window.data_panel
    panel.ask_unlabelled_pool = lambda modality: [str(source) for source in sources]
    with qtbot.waitSignal(window.labelling.pool_read, timeout=30_000) as read:
        panel.pool_button.click()
    return read.args[0]


def open_labelling(qtbot, window, batch: int):
    """"Label…" with a batch of `batch` samples; waits for the first round."""
    window.labelling.batch_size = batch
    with qtbot.waitSignal(window.labelling_ready, timeout=ROUND_TIMEOUT_MS) as ready:
        window.data_panel.label_button.click()
    return ready.args[0]


def press(qtbot, view, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """A key where the keyboard is: the window's focus widget."""
    assert view.window().focusWidget() is view.classes
    qtbot.keyClick(view.classes, key, modifier)


def test_labelling_photos_by_keys_records_additions_and_retrains(qtbot, window, photos, tmp_path):
    labelled, pool = photos
    report = load(qtbot, window, [labelled])
    panel, state, view = window.data_panel, window.state, window.data_panel.labelling_dialog.view
    assert panel.pool_button.isEnabled() and not panel.label_button.isEnabled()
    assert choose_pool(qtbot, window, [pool]).summary() == panel.pool_note.text() == "240 unlabelled images"
    assert state.unlabelled_sources == [str(pool)] and panel.label_button.isEnabled()

    first = open_labelling(qtbot, window, batch=3)
    assert panel.labelling_dialog.isVisible() and len(first.batch) == 3 and first.given == 0
    rows = first.batch
    shown_is(view, rows[0], 1, 3)
    assert [view.classes.item(i).text().split()[:2] for i in (0, 2)] == [["1", report.classes[0]],
                                                                         ["3", report.classes[2]]]
    assert "240 unlabelled images" in view.pool_line.text()
    assert "validation split" in view.accuracy.text() and view.plot is not None

    press(qtbot, view, Qt.Key.Key_3)                             # choose the 3rd class, then Enter labels
    assert view.current_class() == report.classes[2]
    press(qtbot, view, Qt.Key.Key_Return)
    assert state.additions[rows[0]["path"]] == {"label": report.classes[2], "text": None}
    shown_is(view, rows[1], 2, 3)
    press(qtbot, view, Qt.Key.Key_Backspace)                     # skip
    assert rows[1]["path"] not in state.additions and window.labelling.skipped == {rows[1]["path"]}
    shown_is(view, rows[2], 3, 3)
    press(qtbot, view, Qt.Key.Key_Z, UNDO)                       # takes back the skip
    assert not window.labelling.skipped
    shown_is(view, rows[1], 2, 3)
    view.undo_button.click()                                    # and the label
    assert rows[0]["path"] not in state.additions
    shown_is(view, rows[0], 1, 3)
    assert not view.undo_button.isEnabled()

    second = label_the_batch(qtbot, window, view, rows)
    assert second.given == 3 and second.labels == first.labels + 3 and len(second.batch) == 3
    assert not {row["path"] for row in second.batch} & set(state.additions)
    assert len(view.curve.getData()[0]) == 2, "a point per round"
    shown_is(view, second.batch[0], 1, 3)
    assert "Labelled from the pool: <b>3</b>" in view.counts.text() and "237" in view.counts.text()
    assert panel.pool_note.text() == "240 unlabelled images · 3 labelled by you, for the next run's training split"

    press(qtbot, view, Qt.Key.Key_Z, UNDO)                       # the last label of the batch before
    assert rows[2]["path"] not in state.additions and view.row is rows[2]
    press(qtbot, view, Qt.Key.Key_Return)
    assert state.additions[rows[2]["path"]]["label"] == rows[2]["suggested"]
    shown_is(view, second.batch[0], 2, 4)           # the undone one came first

    kept_in_the_project(window, state, tmp_path)


def shown_is(view, row: dict, position: int, total: int) -> None:
    """`row` on screen, its suggestion selected, where it is in the batch."""
    assert view.row is row and view.current_class() == row["suggested"]
    assert f"{position} of {total}" in view.position.text() and "Asked because" in view.reason.text()
    assert view.shows_pictures and not view.picture.pixmap().isNull()
    assert view.accept_button.text().startswith(f"Label as {row['suggested']}")


def label_the_batch(qtbot, window, view, rows: list[dict]):
    """Enter on the first two (the suggestion), 1 then Enter on the last; the new round it brings."""
    press(qtbot, view, Qt.Key.Key_Return)
    press(qtbot, view, Qt.Key.Key_Enter)
    press(qtbot, view, Qt.Key.Key_1)
    with qtbot.waitSignal(window.labelling_ready, timeout=ROUND_TIMEOUT_MS) as ready:
        press(qtbot, view, Qt.Key.Key_Return)
        assert view.row is None and view.progress.isVisible()    # learning from the labels, in the background
    state, classes = window.state, window.state.report.classes
    assert [state.additions[row["path"]]["label"] for row in rows] == [rows[0]["suggested"], rows[1]["suggested"],
                                                                       classes[0]]
    return ready.args[0]


def kept_in_the_project(window, state, tmp_path) -> None:
    """The labels are the project's: in its file, and in the next run's training split."""
    assert project_from_state(state).additions == dict(state.additions)
    window.projects.ask_save_path = lambda: str(tmp_path / "labelled.tlproj")
    saved = load_project(window.projects.save_as())
    assert saved.additions == dict(state.additions) and saved.unlabelled_sources == state.unlabelled_sources
    training = state.training_report()
    added = {s.path: s for s in training.samples if s.path in state.additions}
    assert len(added) == len(state.additions) == 3
    assert all(s.split == "train" and training.classes[s.label] == state.additions[path]["label"]
               for path, s in added.items())


def test_a_bad_pool_is_one_line_and_a_small_one_shows_its_problems_and_runs_out(qtbot, window, photos, tmp_path):
    labelled, pool = photos
    load(qtbot, window, [labelled])
    panel, view = window.data_panel, window.data_panel.labelling_dialog.view
    empty = tmp_path / "empty"
    empty.mkdir()
    panel.ask_unlabelled_pool = lambda modality: [str(empty)]
    with qtbot.waitSignal(window.labelling_failed, timeout=ROUND_TIMEOUT_MS) as failed:
        panel.pool_button.click()
        panel.label_button.click()
    assert "no unlabelled images" in failed.args[0] and "\n" not in failed.args[0]
    assert "Labelling stopped" in view.status.text() and view.restart_button.isVisible()
    assert "Traceback" not in view.status.text()
    qtbot.waitUntil(lambda: "no unlabelled images" in panel.pool_note.text(), timeout=10_000)

    panel.labelling_dialog.hide()                         # closed: choosing another pool starts nothing
    small = tmp_path / "small"
    small.mkdir()
    for photo in sorted(pool.glob("*.png"))[:2]:
        shutil.copy(photo, small / photo.name)
    Image.new("RGB", (28, 28)).save(small / "black.png")
    (small / "broken.png").write_bytes(b"not a picture")
    kept = "3 unlabelled images, 1 skipped (cannot be read), 1 flagged"
    assert choose_pool(qtbot, window, [small]).summary() == kept == panel.pool_note.text()   # before any model
    assert not window.labelling.slot.running
    first = open_labelling(qtbot, window, batch=5)
    assert view.pool_line.text() == f"Pool: {kept}" and panel.pool_note.text() == kept
    assert view.problems_button.text() == "Problems (2)" and not view.problems.isVisible()
    view.problems_button.click()
    assert view.problems.isVisible() and view.problems.item(0).text() == "skipped: cannot be read · broken.png"
    assert view.problems.item(1).text().startswith("flagged: nearly blank")
    assert len(first.batch) == 3 and not view.restart_button.isVisible()
    reasons = {}
    for key in (Qt.Key.Key_Return, Qt.Key.Key_Return):
        reasons[Path(view.row["path"]).name] = view.reason.text()
        press(qtbot, view, key)
    with qtbot.waitSignal(window.labelling_ready, timeout=ROUND_TIMEOUT_MS) as ready:
        reasons[Path(view.row["path"]).name] = view.reason.text()
        press(qtbot, view, Qt.Key.Key_Backspace)
    assert "Flagged: nearly blank" in reasons.pop("black.png")
    assert not any("Flagged" in reason for reason in reasons.values())
    assert ready.args[0].batch == [] and ready.args[0].left == 0
    assert view.row is None and "Nothing left to ask" in view.status.text()
    assert len(window.state.additions) == 2


@pytest.mark.skipif(not all((FORTUNES / topic).is_file() for topic in TOPICS),
                    reason="needs the Debian fortunes (fortunes-min/fortunes)")
def test_labelling_texts_shows_the_text_and_records_it(qtbot, window, tmp_path):
    """A CSV of fortunes labelled by topic and a .txt pool of other fortunes, one a line."""
    load(qtbot, window, [write_fortunes_csv(tmp_path / "fortunes.csv")])
    lines = [" ".join(text.split()) for topic in TOPICS for text in fortunes(topic, 28)[20:]]
    pool = tmp_path / "unlabelled.txt"
    pool.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert choose_pool(qtbot, window, [pool]).summary() == f"{len(lines)} unlabelled texts"

    first = open_labelling(qtbot, window, batch=4)
    view, state = window.data_panel.labelling_dialog.view, window.state
    row = first.batch[0]
    assert view.row is row and not view.shows_pictures and view.sample.currentWidget() is view.text
    assert row["text"] in lines and view.text.toPlainText() == row["text"]
    assert view.where.text() == row["path"] == f"unlabelled.txt:line {lines.index(row['text']) + 1}"
    assert view.current_class() == row["suggested"] in TOPICS
    press(qtbot, view, Qt.Key.Key_Return)
    assert state.additions[row["path"]] == {"label": row["suggested"], "text": row["text"]}
    assert view.row is first.batch[1]
    added = [s for s in state.training_report().samples if s.path == row["path"]]
    assert [(s.text, s.split) for s in added] == [(row["text"], "train")]
