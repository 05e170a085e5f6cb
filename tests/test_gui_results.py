"""Results step: confusion matrix → gallery, per-class scores, corrections and retraining, Grad-CAM,
Compare runs. Panel tests share one tiny real run made by the engine; the retraining test drives the
whole window. Every wait arms `qtbot.waitSignal` before the action; no test sleeps or leaves a
QThread running (the fixture is in conftest).
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QInputDialog, QStyleOptionViewItem

from conftest import write_colour_dataset
from gui.confusion_view import ConfusionModel
from gui.gallery import LINE_BREAK, Gallery, GalleryItem
from gui.gc_guard import GuiThreadGarbageCollector
from gui.results_panel import ResultsPanel
from gui.state import AppState
from gui.workers import TaskGroup
from gui_support import TRAIN_TIMEOUT_MS, delete_now, load, start_run

TINY = dict(epochs=1, image_size=64, batch_size=8, lr=1e-2)


def write_dataset(root: Path) -> Path:
    """Three colour classes plus a few red images filed under "green": mistakes to look at."""
    write_colour_dataset(root, per_class=12)
    rng = np.random.default_rng(1)
    for i in range(3):
        pixels = np.clip(np.array([220, 40, 40]) + rng.integers(-40, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "green" / f"green_wrong_{i}.png")
    return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run folder (engine only, no Qt), shared by the panel tests."""
    from engine.data.scan import scan_dataset
    from engine.training.config import TrainConfig
    from engine.training.trainer import train
    base = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRANSFERLAB_CACHE_DIR", str(base / "cache"))
        report = scan_dataset(str(write_dataset(base / "colours")), seed=0)
        result = train(report, TrainConfig(**TINY), base / "run")
    assert result.status == "completed"
    return result


@pytest.fixture
def panel(qtbot, finished_run):
    """The panel alone, with the collector the window installs (workers must never free Qt objects)."""
    owner = QObject()
    tasks = TaskGroup(owner)
    widget = ResultsPanel(AppState(), tasks)
    GuiThreadGarbageCollector(widget)
    widget.resize(1100, 700)
    widget.show()
    with thumbnails_loaded(qtbot, widget, [w["path"] for w in finished_run.metrics["most_confident_wrong"]]):
        widget.show_result(finished_run)         # opens on the most confidently wrong gallery
    yield widget
    tasks.shutdown()
    widget.close()
    delete_now(widget)


def predictions(run) -> list[dict]:
    data = json.loads((Path(run.run_dir) / "predictions.json").read_text())
    return data[run.metrics["evaluated_on"]]


def thumbnails_loaded(qtbot, panel: ResultsPanel, paths: list[str]):
    """Armed wait for the panel's thumbnail job, when `paths` has some not decoded yet."""
    if all(path in panel.thumbnails for path in paths):
        return nullcontext()
    return qtbot.waitSignal(panel.thumbnails_loaded, timeout=30_000)


def click_cell(qtbot, panel: ResultsPanel, row: int, column: int) -> None:
    """A real mouse click on the matrix cell, then its thumbnails."""
    table = panel.confusion.table
    index = panel.confusion.model.index(row, column)
    table.scrollTo(index)
    paths = [p["path"] for p in panel.run.predictions[panel.run.split] if (p["true"], p["predicted"]) == (row, column)]
    with thumbnails_loaded(qtbot, panel, paths):
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(index).center())


# -- confusion matrix ---------------------------------------------------------------------------
def test_confusion_model_passes_qtmodeltester_and_normalises_rows(qtmodeltester):
    model = ConfusionModel()
    model.set_matrix(["cat", "dog"], [[3, 1], [0, 4]])
    qtmodeltester.check(model)
    display = Qt.ItemDataRole.DisplayRole
    assert model.data(model.index(0, 1), display) == "1"
    model.set_normalised(True)
    assert [model.data(model.index(0, c), display) for c in range(2)] == ["75 %", "25 %"]
    assert model.data(model.index(1, 0), Qt.ItemDataRole.BackgroundRole).name() == "#ffffff"
    assert "predicted as dog" in model.data(model.index(0, 1), Qt.ItemDataRole.ToolTipRole)


def shown_caption(gallery: Gallery, row: int) -> tuple[list[str], QStyleOptionViewItem]:
    """The lines a tile's caption is drawn with, and the drawing option (its rect and font)."""
    index = gallery.model.index(row)
    option = QStyleOptionViewItem()
    gallery.view.initViewItemOption(option)
    option.rect = gallery.view.visualRect(index)
    gallery.view.itemDelegateForIndex(index).initStyleOption(option, index)
    return option.text.split(LINE_BREAK), option


def test_a_caption_with_long_class_names_still_shows_the_predicted_class_and_score(qtbot):
    gallery = Gallery({})
    qtbot.addWidget(gallery)
    gallery.resize(600, 400)
    gallery.show()
    true, predicted = "Orange (navel, from the Valencia harvest)", "Grapefruit, pink, with a thick peel"
    gallery.show_items("mistakes", [GalleryItem("/nowhere/orange.png", true, predicted, 0.93)], [true, predicted])
    gallery.set_corrections({"/nowhere/orange.png": {"action": "relabel", "label": "Citrus, other kinds"}})
    lines, option = shown_caption(gallery, 0)
    assert len(lines) == 3 and lines[0].startswith("Orange") and lines[2].startswith("[moved to")
    assert lines[1].startswith("→ Grapefr") and lines[1].endswith("(0.93)"), lines
    assert all(option.fontMetrics.horizontalAdvance(line) <= option.rect.width() for line in lines), \
        "each line fits the tile, so the style cuts none of them"
    tooltip = gallery.model.index(0).data(Qt.ItemDataRole.ToolTipRole)
    assert f"True class: {true}" in tooltip and f"Predicted: {predicted} (score 0.930)" in tooltip


def test_clicking_a_confusion_cell_fills_the_gallery_with_exactly_those_images(qtbot, panel, finished_run):
    rows = predictions(finished_run)
    matrix = finished_run.metrics["confusion_matrix"]
    classes = finished_run.metrics["classes"]
    assert panel.confusion.model.rowCount() == len(classes) == 3
    cells = [(t, p) for t in range(3) for p in range(3) if matrix[t][p]]
    assert len(cells) >= 2
    for true, predicted in cells:
        click_cell(qtbot, panel, true, predicted)
        expected = {r["path"] for r in rows if (r["true"], r["predicted"]) == (true, predicted)}
        shown = panel.gallery.paths()
        assert len(shown) == matrix[true][predicted] and set(shown) == expected
        captions = [panel.gallery.model.index(i).data() for i in range(len(shown))]
        assert all(c.startswith(f"{classes[true]} → {classes[predicted]} (") for c in captions)
        icon = panel.gallery.model.index(0).data(Qt.ItemDataRole.DecorationRole)
        assert isinstance(icon, QImage) and not icon.isNull() and icon == panel.thumbnails[shown[0]]
        assert str(len(shown)) in panel.gallery.title.text()
    panel.wrong_button.click()
    assert panel.gallery.paths() == [w["path"] for w in finished_run.metrics["most_confident_wrong"]]


def test_per_class_table_is_sortable_and_matches_metrics(panel, finished_run):
    per_class = finished_run.metrics["per_class"]
    table, model = panel.class_table, panel.class_model
    assert [model.item(r, 0).text() for r in range(model.rowCount())] == [e["class"] for e in per_class]
    table.sortByColumn(3, Qt.SortOrder.DescendingOrder)          # F1, numerically
    shown = [model.item(r, 0).text() for r in range(model.rowCount())]
    assert shown == [e["class"] for e in sorted(per_class, key=lambda e: -e["f1"])]
    table.sortByColumn(4, Qt.SortOrder.AscendingOrder)
    supports = [int(model.item(r, 4).text()) for r in range(model.rowCount())]
    assert supports == sorted(supports)


# -- Grad-CAM ------------------------------------------------------------------------------------
def test_explain_shows_grad_cam_for_the_chosen_class(qtbot, panel, finished_run):
    click_cell(qtbot, panel, 0, 0)
    view = panel.gallery.view
    centre = view.visualRect(view.model().index(0)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=centre)     # a double-click's first press
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    dialog = panel.image_dialog
    assert dialog.isVisible() and dialog.item.path == panel.gallery.paths()[0], "double-click opens it larger"
    assert dialog.original.pixmap().width() > 100 and "Click Explain" in dialog.heat.text()
    with qtbot.waitSignal(panel.explanation_ready, timeout=60_000) as ready:
        panel.gallery.explain_button.click()
    first = ready.args[0]
    assert dialog.isVisible() and not dialog.heat.pixmap().isNull() and not dialog.original.pixmap().isNull()
    assert first.class_name == panel.gallery.model.items[0].predicted
    assert (first.overlay.width(), first.overlay.height()) == (64, 64)
    with qtbot.waitSignal(panel.explanation_ready, timeout=60_000) as ready:
        dialog.class_choice.setCurrentIndex(2)
        dialog.explain_button.click()
    assert ready.args[0].class_index == 2 and ready.args[0].class_name in dialog.heat_caption.text()
    assert len(panel.model_cache._models) == 1, "the run's model is loaded once"


def test_a_run_without_files_shows_messages_not_tracebacks(qtbot, panel, tmp_path):
    panel.show_run_folder(str(tmp_path))
    assert "no scores were saved" in panel.status.text()
    assert panel.confusion.model.rowCount() == 0 and panel.gallery.paths() == []
    with qtbot.waitSignal(panel.explanation_failed, timeout=5_000) as failed:
        panel.explain(str(tmp_path / "gone.png"), 0)
    assert "no model file" in failed.args[0]


# -- corrections, retraining, Compare runs (the whole window) -------------------------------------
def test_excluding_an_image_and_retraining_leaves_it_out(qtbot, window, tmp_path, monkeypatch):
    dataset = write_dataset(tmp_path / "colours")
    load(qtbot, window, [dataset])
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS):
        _, _, stopped = start_run(qtbot, window, **TINY)
        stopped.wait()
    panel = window.results_panel
    click_cell(qtbot, panel, 0, 0)
    excluded, relabelled = panel.gallery.paths()[:2]
    panel.gallery.select_path(excluded)
    panel.gallery.exclude_button.click()
    panel.gallery.select_path(relabelled)
    monkeypatch.setattr(QInputDialog, "getItem", lambda *args, **kwargs: ("green", True))
    panel.gallery.relabel_button.click()
    assert dict(window.state.corrections) == {excluded: {"action": "exclude", "label": None},
                                          relabelled: {"action": "relabel", "label": "green"}}
    row = panel.gallery.paths().index(excluded)
    assert "[excluded]" in panel.gallery.model.index(row).data()
    assert "2 corrections" in panel.corrections_note.text()

    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        armed = {}
        window.training_started.connect(lambda run: armed.update(run=run, stopped=qtbot.waitSignals(
            [window.training_task.worker.finished, window.training_task.thread.finished], timeout=TRAIN_TIMEOUT_MS)))
        panel.retrain_button.click()
        armed["stopped"].wait()
    run, result = armed["run"], finished.args[0]
    assert result.status == "completed"
    trained_on = {s.path: run.report.classes[s.label] for s in run.report.samples}
    assert excluded not in trained_on and trained_on[relabelled] == "green"
    evaluated = json.loads((Path(result.run_dir) / "predictions.json").read_text())
    assert excluded not in {p["path"] for split in evaluated.values() for p in split}
    assert excluded in {s.path for s in window.state.report.samples} and Path(excluded).is_file(), \
        "the user's dataset and files stay as they were"

    compare = panel.compare
    assert [r.status for r in window.state.runs] == ["completed", "completed"]
    assert compare.table.rowCount() == 2
    first_run = window.state.runs[0].run_dir
    assert compare.curve_points(first_run) == 1 and compare.curve_points(result.run_dir) == 1
    compare.table.item(next(r for r in range(2) if compare.table.item(r, 0).data(Qt.ItemDataRole.UserRole)
                            == first_run), 0).setCheckState(Qt.CheckState.Unchecked)
    assert compare.curve_points(first_run) == 0 and compare.checked_runs() == [result.run_dir]


def test_the_trust_tab_shows_calibration_and_moves_the_shares_with_the_slider(qtbot, panel, finished_run, tmp_path):
    from engine.models.checkpoint import read_checkpoint_meta
    from gui.trust_view import position_of
    trust = panel.trust
    panel.views.setCurrentWidget(trust)
    calibration = finished_run.metrics["calibration"]
    assert "Expected calibration error" in trust.calibration.text()
    assert f"{100 * calibration['test_ece_after']:.1f} %" in trust.calibration.text()
    assert trust.slider.isEnabled() and trust.accept == 0.95
    trust.slider.setValue(position_of(0.6))
    strict = trust.shares.text()
    assert "Accept 60.0 %" in trust.slider_label.text() and "Validation images accepted" in strict
    unfamiliar = tmp_path / "none-of-these"
    unfamiliar.mkdir()
    for i in range(4):          # grey noise: no colour class at all
        pixels = np.random.default_rng(i).integers(100, 160, (40, 40, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(unfamiliar / f"noise{i}.png")
    with qtbot.waitSignal(trust.unfamiliar_scored, timeout=60_000) as scored:
        trust.score_unfamiliar(str(unfamiliar))
    assert scored.args == [4] and "'None of these' images rejected" in trust.shares.text()
    trust.slider.setValue(position_of(1.0))
    assert trust.shares.text() != strict
    with qtbot.waitSignal(trust.accept_kept, timeout=10_000):
        trust.keep_button.click()
    kept = read_checkpoint_meta(finished_run.checkpoint)["trust"]
    assert kept["accept"] == 1.0 and kept["threshold"] == pytest.approx(trust.threshold)
    saved = json.loads((Path(finished_run.run_dir) / "metrics.json").read_text())["unknown"]
    assert saved["accept"] == 1.0 and saved["val_accepted"] == 1.0
