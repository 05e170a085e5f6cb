"""Texts through the real window: drop a CSV of fortunes, read its report and texts, get the text encoder's
layer tree, train the head, open the misclassified texts of a confusion-matrix cell, type a text in Try it.

Real widgets, the real engine (MiniLM from its PyPI package), no mocks; every wait arms a signal before the
action that triggers it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from PySide6.QtCore import Qt

from engine.modalities.text.catalog import encoder_folder
from engine.project import apply_corrections, load_project
from gui_support import TRAIN_TIMEOUT_MS, drop, load

FORTUNES = Path("/usr/share/games/fortunes")
TOPICS = ("computers", "food", "science")

pytestmark = pytest.mark.skipif(not all((FORTUNES / t).is_file() for t in TOPICS),
                                reason="needs the Debian fortunes (fortunes-min/fortunes)")


def fortunes(topic: str, count: int = 20, longest: int = 200) -> list[str]:
    """The first `count` short fortunes of a topic (fortunes are separated by lines holding only '%')."""
    raw = (FORTUNES / topic).read_text(encoding="utf-8", errors="replace")
    texts, current = [], []
    for line in raw.splitlines():
        if line.strip() == "%":
            text = "\n".join(current).strip()
            if text and len(text) <= longest:
                texts.append(text)
            current = []
        else:
            current.append(line)
    return texts[:count]


def write_fortunes_csv(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for topic in TOPICS:
            writer.writerows((text, topic) for text in fortunes(topic))
    return path


@pytest.fixture
def fortunes_csv(tmp_path) -> Path:
    return write_fortunes_csv(tmp_path / "fortunes.csv")


def test_a_text_dataset_from_drop_to_try_it(qtbot, windows, fortunes_csv, tmp_path):
    win = windows(tmp_path / "settings.ini")
    image_backbone = win.state.backbone
    thumbnails_asked = []
    win.data_panel.show_thumbnails = lambda strips: thumbnails_asked.append(strips)   # images only

    # 1. Data: the report of 60 texts, the texts table, the column choosers; no thumbnail work
    report = load(qtbot, win, [fortunes_csv])
    assert report.modality == "text" and report.classes == list(TOPICS) and len(report.samples) == 60
    panel = win.data_panel
    assert "60 texts in 3 classes" in panel.summary.text()
    assert panel.texts.isVisible() and panel.texts.row_count() == 60
    assert all(strips == {} for strips in thumbnails_asked)
    panel.texts.set_class("food")
    assert panel.texts.row_count() == 20 and set(panel.texts.texts()) == set(fortunes("food"))
    assert panel.columns_row.isVisible()
    assert panel.text_column.currentData() == "text" and panel.label_column.currentData() == "label"

    # 2. Model: the text encoder, its layer tree (embeddings, 6 encoder layers, classifier), presets
    assert win.state.backbone == "all-minilm-l6-v2" != image_backbone
    model = win.model_panel
    assert model.backbone_list.count() == 1 and "MiniLM" in model.backbone_list.item(0).text()
    assert win.state.model.modality == "text" and win.state.model.num_classes == 3
    assert not model.right_tabs.isTabEnabled(1), "the backbone comparison is for images"
    assert "tokens per text" in model.input_size.text()
    model.train_last_blocks()
    assert any(name.startswith("encoder.encoder.layer.5.") for name, p in
               win.state.model.tree.model.named_parameters() if p.requires_grad)
    assert "each epoch runs only the layers that train" in model.counts.text()
    # a user's Hugging Face folder joins the encoders (a broken one is said under the list)
    broken = tmp_path / "broken-encoder"
    broken.mkdir()
    assert not model.add_encoder_folder(str(broken)) and "no config.json" in model.text_note.text()
    folder = tmp_path / "my-encoder"
    folder.mkdir()
    for item in encoder_folder("all-minilm-l6-v2").iterdir():
        (folder / item.name).symlink_to(item)
    with qtbot.waitSignal(win.model_ready, timeout=60_000):
        assert model.add_encoder_folder(str(folder))
    assert win.state.backbone == str(folder) and win.state.model.modality == "text"
    assert model.backbone_list.currentItem().data(Qt.ItemDataRole.UserRole) == str(folder)
    model.train_head_only()
    assert "only the head trains" in model.counts.text()
    form = win.train_panel.settings
    assert not form.augmentation.isEnabled() and not form.image_size.isEnabled() and not form.tta.isEnabled()
    assert form.max_tokens.isEnabled() and form.max_tokens.itemText(0) == "Encoder default (256)"
    mode = win.train_panel.mode.choice
    assert mode.model().item(mode.findData("automatic")).isEnabled(), "texts have a recipe search too"

    # 3. Train: three epochs of the head on the cached sentence vectors
    form.set_values(epochs=3, batch_size=16, max_tokens=64)
    epochs = []
    win.epoch_ended.connect(lambda epoch, _logs: epochs.append(epoch))
    with qtbot.waitSignal(win.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        win.train_panel.start_button.click()
    result = finished.args[0]
    assert result.status == "completed" and epochs == [1, 2, 3]
    assert json.loads(Path(result.run_dir, "config.json").read_text())["max_tokens"] == 64
    qtbot.waitUntil(lambda: win.state.active_run is None, timeout=30_000)

    # 4. Results: the confusion matrix; a cell lists its texts, and the worst mistakes are texts
    results = win.results_panel
    assert results.run.shows_texts and results.examples.currentWidget() is results.text_list
    matrix = results.confusion.model
    assert matrix.rowCount() == 3
    row, column = max(((r, c) for r in range(3) for c in range(3)), key=lambda cell: matrix.counts[cell[0]][cell[1]])
    results.confusion.table.clicked.emit(matrix.index(row, column))
    listed = results.text_list.texts()
    assert len(listed) == matrix.counts[row][column]
    assert set(listed) <= {s.text for s in report.samples}
    # corrections from the list: one text excluded, one moved; the next run's report follows them
    texts = results.text_list
    assert len(listed) >= 2
    texts.table.selectRow(0)
    excluded = texts.current_row()[0]
    texts.exclude_action.trigger()
    texts.table.selectRow(1)
    moved, true = texts.current_row()[0], texts.current_row()[1]
    other = next(name for name in TOPICS if name != true)
    texts.relabel_current(other)
    assert win.state.corrections[excluded]["action"] == "exclude"
    assert win.state.corrections[moved] == {"action": "relabel", "label": other}
    fixed = apply_corrections(report, dict(win.state.corrections))
    by_path = {s.path: s for s in fixed.samples}
    assert excluded not in by_path and fixed.classes[by_path[moved].label] == other and by_path[moved].text
    assert "2 corrections" in results.corrections_note.text()
    win.state.corrections.clear()
    results.show_most_confident_wrong()
    wrong = results.run.metrics["most_confident_wrong"]
    assert results.text_list.row_count() == len(wrong)
    assert results.text_list.texts() == [w["text"] for w in wrong]

    # 5. Export: a verified ONNX file with its tokenizer and sidecar beside it
    dialog = win.show_export_dialog()
    assert dialog.text and not dialog.with_weights.isVisibleTo(dialog)
    dialog.path.setText(str(tmp_path / "exported" / "fortunes"))
    with qtbot.waitSignal(dialog.export_finished, timeout=120_000) as exported:
        dialog.export_button.click()
    onnx = exported.args[0].onnx
    assert onnx.top1_agreement == 1.0 and "Verified</b> on" in dialog.result.text() and "texts" in dialog.result.text()
    for suffix in (".onnx", ".json", ".tokenizer.json"):
        assert (tmp_path / "exported" / f"fortunes{suffix}").is_file()
    qtbot.waitUntil(lambda: dialog.task is None, timeout=10_000)
    dialog.close()

    # 6. Try it: a typed text gets a label of the dataset with a probability
    tryit = win.predict_panel
    assert tryit.text_model and tryit.text_input.isVisibleTo(tryit) and not tryit.drop_zone.isVisibleTo(tryit)
    tryit.text_box.setPlainText("The compiler crashed and the program has a segmentation fault.")
    with qtbot.waitSignal(tryit.predictions_shown, timeout=60_000):
        tryit.predict_button.click()
    [(shown, label, score)] = tryit.predicted_labels()
    assert label in TOPICS and 0 < score <= 1 and shown.startswith("The compiler")
    qtbot.waitUntil(lambda: tryit.task is None, timeout=10_000)
    tryit.text_box.setPlainText("   ")
    tryit.predict_button.click()
    assert "Type or paste a text" in tryit.summary.text()
    lines = tmp_path / "to-classify.txt"
    lines.write_text("Bake the bread for an hour\n\nThe kernel panicked at boot\n", encoding="utf-8")
    tryit.ask_text_file = lambda: str(lines)
    assert tryit.open_texts_button.isVisibleTo(tryit)
    with qtbot.waitSignal(tryit.predictions_shown, timeout=60_000):
        tryit.open_texts_button.click()
    assert [text for text, _label, _score in tryit.predicted_labels()] == ["Bake the bread for an hour",
                                                                           "The kernel panicked at boot"]
    qtbot.waitUntil(lambda: tryit.task is None, timeout=10_000)

    # 7. The project saves and opens again: the texts rescanned, the encoder, the run and Try it
    win.projects.ask_save_path = lambda: str(tmp_path / "work" / "fortunes")
    saved = win.projects.save()
    assert win.close()
    again = windows(tmp_path / "settings.ini")
    assert again.state.backbone == image_backbone, "images keep their backbone in the settings"
    with qtbot.waitSignal(again.projects.opened, timeout=60_000):
        assert again.projects.open(saved)
    qtbot.waitUntil(lambda: again.state.report is not None and again.state.model_is_current(), timeout=60_000)
    assert again.state.report.modality == "text" and len(again.state.report.samples) == 60
    assert again.state.backbone == str(folder), "the user's encoder folder, listed again"
    assert again.state.model.modality == "text"
    assert again.predict_panel.text_model and again.state.latest_run.run_dir == str(result.run_dir)


def test_choosing_another_label_column_rescans_and_bad_columns_explain(qtbot, windows, tmp_path):
    """A table whose guessed columns are wrong: the user picks others; a column that cannot be a label
    gives a message in the window, never a traceback."""
    path = tmp_path / "notes.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "topic"])
        for topic in TOPICS:
            writer.writerows((text, "x", topic) for text in fortunes(topic, 8))
    win = windows()
    assert drop(win.data_panel.drop_zone, [path])
    qtbot.waitUntil(lambda: not win.state.scanning, timeout=60_000)
    panel = win.data_panel
    assert panel.columns_row.isVisible(), "offered whether the guess gave a dataset or not"
    with qtbot.waitSignal(win.scan_finished, timeout=60_000) as rescanned:
        panel.label_column.setCurrentIndex(panel.label_column.findData("topic"))
        panel.label_column.activated.emit(panel.label_column.currentIndex())
    assert rescanned.args[0].classes == list(TOPICS)
    assert panel.label_column.currentData() == "topic"
    # the project keeps the chosen columns: opened again, the table is read with them
    win.projects.ask_save_path = lambda: str(tmp_path / "notes-project")
    saved = win.projects.save()
    assert load_project(saved).text_columns == {"text_column": "text", "label_column": "topic"}
    again = windows(tmp_path / "again.ini")
    with qtbot.waitSignal(again.scan_finished, timeout=60_000) as reopened:
        assert again.projects.open(saved)
    assert reopened.args[0].classes == list(TOPICS)
    assert again.data_panel.label_column.currentData() == "topic"
    with qtbot.waitSignal(win.scan_failed, timeout=60_000) as failed:
        panel.label_column.setCurrentIndex(panel.label_column.findData("label"))
        panel.label_column.activated.emit(panel.label_column.currentIndex())
    assert failed.args[0] in panel.summary.text() and "Traceback" not in panel.summary.text()


def test_a_text_run_pauses_stops_and_resumes_to_its_last_epoch(qtbot, windows, fortunes_csv):
    """The Train step's controls work for texts as for images: pause after epoch 1, stop, resume the run."""
    from gui_support import PauseAfterFirstEpoch
    win = windows()
    load(qtbot, win, [fortunes_csv])
    win.train_panel.settings.set_values(epochs=3, batch_size=16)
    pauser, armed = PauseAfterFirstEpoch(), {}

    def arm(run):
        task = win.training_task
        armed.update(run=run, stopped=qtbot.waitSignals([task.worker.finished, task.thread.finished],
                                                        timeout=TRAIN_TIMEOUT_MS))
        pauser.attach(run)

    win.training_started.connect(arm)
    with qtbot.waitSignal(win.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        with qtbot.waitSignal(pauser.paused, timeout=TRAIN_TIMEOUT_MS):
            win.train_panel.start_button.click()
        win.training_started.disconnect(arm)
        assert win.train_panel.stop_button.isEnabled() and not win.train_panel.start_button.isEnabled()
        win.train_panel.stop_button.click()
        armed["stopped"].wait()
    assert finished.args[0].status == "cancelled"
    offer = win.train_panel.resume_offer
    qtbot.waitUntil(lambda: offer.isVisibleTo(win))
    assert offer.run_dir == str(armed["run"].run_dir) and "after epoch 1 of 3" in offer.text.text()
    with qtbot.waitSignal(win.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        offer.resume_button.click()
    result = finished.args[0]
    assert result.status == "completed" and [h["epoch"] for h in result.history] == [1, 2, 3]
    qtbot.waitUntil(lambda: win.state.active_run is None, timeout=30_000)


def test_a_folder_of_text_files_is_a_text_dataset_without_column_choosers(qtbot, windows, tmp_path):
    root = tmp_path / "notes"
    for topic in TOPICS:
        (root / topic).mkdir(parents=True)
        for i, text in enumerate(fortunes(topic, 6)):
            (root / topic / f"{i}.txt").write_text(text, encoding="utf-8")
    win = windows()
    report = load(qtbot, win, [root])
    panel = win.data_panel
    assert report.modality == "text" and panel.texts.row_count() == 18
    assert not panel.columns_row.isVisible() and panel.class_table.isColumnHidden(5)
    assert win.state.model.modality == "text"
    with qtbot.waitSignal(win.scan_failed, timeout=30_000) as failed:
        assert drop(panel.drop_zone, [root, write_fortunes_csv(tmp_path / "more.csv")])
    assert "one file or folder at a time" in failed.args[0] and "one file or folder" in panel.summary.text()
    assert win.state.report is report, "the dataset before stays"


def test_the_automatic_search_runs_on_texts_and_records_its_winner(qtbot, windows, fortunes_csv, tmp_path):
    win = windows(tmp_path / "settings.ini")
    load(qtbot, win, [fortunes_csv])
    panel = win.train_panel
    panel.mode.set_mode("automatic", minutes=0.5)
    win.state.search_minutes = 0.25          # below what the spin box offers: a quicker test
    assert panel.start_button.text() == "Start search"
    with qtbot.waitSignal(win.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        panel.start_button.click()
    result = finished.args[0]
    assert result.status == "completed" and result.config["backbone"] == "all-minilm-l6-v2"
    board = panel.board
    names = [board.table.item(row, 0).text() for row in range(board.table.rowCount())]
    assert names[0] == "default recipe" and any(name.startswith("head trial") for name in names)
    texts = [board.table.item(row, 3).text() for row in range(board.table.rowCount())]
    assert texts[0].endswith("· validation") and any(text.endswith("· CV inside train") for text in texts)
    assert board.winner()["name"] == result.winner
    assert win.state.runs[-1].test_accuracy == result.metrics["test_accuracy"] is not None
    qtbot.waitUntil(lambda: win.training_task is None, timeout=30_000)
