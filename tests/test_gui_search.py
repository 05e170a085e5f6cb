"""The window's backbone assessment (Model step) and automatic recipe search (Train step), driven through
the real widgets and the real engine on small images. Every wait is armed before its trigger; no test
sleeps or leaves a QThread running."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from conftest import write_colour_dataset
from engine.project import Project, ProjectError, load_project
from gui_support import SMALL, TRAIN_TIMEOUT_MS, load

LITE0, LITE1 = "efficientnet_lite0", "efficientnet_lite1"
SEARCH_TIMEOUT_MS = 240_000


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_colour_dataset(tmp_path / "colours", per_class=8)


def test_assessing_backbones_fills_a_table_and_a_row_chooses_the_backbone(qtbot, window, dataset, tmp_path):
    view = window.model_panel.assessment
    window.tabs.setCurrentWidget(window.model_panel)
    window.model_panel.right_tabs.setCurrentWidget(view)
    assert not view.assess_button.isEnabled() and "Open a dataset first" in view.summary.text()
    load(qtbot, window, [dataset])
    window.train_panel.settings.set_values(image_size=64)      # the assessment uses the Train step's size
    window.search_backbones = [LITE0, LITE1]
    assert view.assess_button.isEnabled() and view.table.rowCount() == 0
    with qtbot.waitSignal(window.assessment_finished, timeout=SEARCH_TIMEOUT_MS) as finished:
        view.assess_button.click()
        assert view.progress.isVisibleTo(view) and view.cancel_button.isVisibleTo(view)
        assert not window.start_action.isEnabled(), "no training while the backbones are assessed"
    rows = finished.args[0]
    assert sorted(view.backbones_shown()) == [LITE0, LITE1] == sorted(row["backbone"] for row in rows)
    assert view.backbones_shown() == [row["backbone"] for row in rows], "best first"
    headers = [view.table.horizontalHeaderItem(c).text() for c in range(view.table.columnCount())]
    assert headers == ["Backbone", "Linear probe (95 % interval)", "CV inside train", "LogME", "Fit", "ms / image",
                       "Params"]
    assert re.fullmatch(r"\d+ % \(\d+–\d+\)", view.table.item(0, 1).text())     # on validation, with its interval
    assert re.fullmatch(r"\d+ %( ⚠)?", view.table.item(0, 2).text())
    assert view.table.item(0, 4).text() in ("strong", "fair", "weak")
    assert "You et al., 2021" in view.table.horizontalHeaderItem(3).toolTip()
    assert "fits these images best" in view.summary.text() and view.summary.text() == window.state.assessment_summary
    assert all(row["input_size"] == 64 for row in rows)
    assert not view.progress.isVisibleTo(view) and window.start_action.isEnabled()

    other = next(i for i, name in enumerate(view.backbones_shown()) if name != window.state.backbone)
    chosen = view.backbones_shown()[other]
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        view.table.selectRow(other)                          # what a click on the row does
    assert window.state.backbone == chosen and window.state.model.backbone == chosen
    assert window.model_panel.backbone_list.currentItem().data(Qt.ItemDataRole.UserRole) == chosen

    window.tabs.setCurrentWidget(window.train_panel)          # kept in the state across steps
    window.tabs.setCurrentWidget(window.model_panel)
    assert view.table.rowCount() == 2 and view.table.selectedItems()[0].text().startswith("EfficientNet")

    two_classes = write_colour_dataset(tmp_path / "two", per_class=6,
                                       colours={"red": (220, 40, 40), "blue": (40, 60, 220)})
    load(qtbot, window, [two_classes])                        # another dataset: the assessment was of the old one
    assert window.state.assessments == [] and view.table.rowCount() == 0
    assert view.summary.text() == "Not assessed yet."


def arm_on_start(qtbot, window) -> dict:
    """Blockers armed when the run is announced, before its thread starts: the first leaderboard row and
    the thread's end."""
    armed = {}

    def arm(run):
        task = window.training_task
        armed.update(run=run, first_row=qtbot.waitSignal(run.events.candidate, timeout=SEARCH_TIMEOUT_MS),
                     stopped=qtbot.waitSignals([task.worker.finished, task.thread.finished],
                                               timeout=SEARCH_TIMEOUT_MS))
    window.training_started.connect(arm)
    return armed


def test_automatic_search_shows_a_live_leaderboard_and_records_the_winner(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    panel = window.train_panel
    assert not panel.board.isVisibleTo(panel) and panel.start_button.text() == "Start training"
    panel.mode.set_mode("automatic", minutes=0.5)
    assert (window.state.training_mode, window.state.search_minutes) == ("automatic", 0.5)
    assert panel.board.isVisibleTo(panel) and panel.start_button.text() == "Start search"
    assert panel.mode.note.isVisibleTo(panel)
    panel.settings.set_values(**SMALL)
    window.state.search_minutes = 0.25          # below what the spin box offers: a quicker test
    window.search_backbones = [LITE0]
    armed = arm_on_start(qtbot, window)
    with qtbot.waitSignal(window.training_finished, timeout=SEARCH_TIMEOUT_MS) as finished:
        panel.start_button.click()
        armed["first_row"].wait()
        assert window.training_task is not None, "the leaderboard fills while the search runs"
        assert panel.board.table.rowCount() >= 1 and panel.board.table.item(0, 0).text() == "default recipe"
        assert not panel.mode.isEnabled() and not panel.settings.isEnabled()
        armed["stopped"].wait()
    result = finished.args[0]
    run = armed["run"]
    assert result.status == "completed" and result.run_dir == str(run.run_dir)
    assert (run.run_dir / "model.safetensors").is_file() and (run.run_dir / "leaderboard.json").is_file()
    board = panel.board
    assert board.table.rowCount() == len(result.leaderboard) >= 2
    winner = board.winner()
    assert winner["name"] == result.winner and board.table.item(board.best_row(), 0).text() == winner["name"]
    assert board.table.item(board.best_row(), 6).text() == "winner"
    assert board.table.item(board.best_row(), 0).font().bold()
    cells = [[board.table.item(row, column).text() for column in range(7)] for row in range(board.table.rowCount())]
    finalists = [row for row in cells if row[3].endswith("· validation")]
    screening = [row for row in cells if row[3].endswith("· CV inside train")]
    assert finalists and screening and cells.index(finalists[-1]) < cells.index(screening[0]), "finalists on top"
    assert all(re.fullmatch(r"\d+\.\d % \(\d+–\d+\) · validation", row[3]) for row in finalists)
    assert finalists[0][4] == "the incumbent" and all("p = " in row[4] for row in finalists[1:])
    assert board.scatter.count() == len(finalists)            # only the finalists, on one scale
    assert board.advice.isVisibleTo(board) and "Why" in board.advice.text()
    assert f"{result.winner} won" in panel.stage.text()
    assert f"{result.winner} won" in window.statusBar().currentMessage()
    record = window.state.runs[-1]
    assert (record.run_dir, record.status) == (result.run_dir, "completed")
    assert record.config["backbone"] == result.config["backbone"] and record.config["search_minutes"] == 0.25
    assert record.test_accuracy == result.metrics["test_accuracy"]
    assert window.state.latest_run is record
    assert "Validation accuracy" in window.results_panel.headline.text()
    assert window.training_task is None and window.start_action.isEnabled() and panel.mode.isEnabled()


def test_stopping_a_search_keeps_the_best_model_so_far(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    panel = window.train_panel
    panel.mode.set_mode("automatic", minutes=10)
    panel.settings.set_values(**SMALL)
    window.search_backbones = [LITE0]
    armed = arm_on_start(qtbot, window)
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        panel.start_button.click()
        armed["first_row"].wait()                # the default recipe has a model
        panel.stop_button.click()
        assert "keeping the best model so far" in panel.stage.text()
        armed["stopped"].wait()
    result = finished.args[0]
    assert result.status == "cancelled" and result.winner == "default recipe"
    assert Path(result.run_dir, "model.safetensors").is_file()
    assert window.state.latest_run.run_dir == result.run_dir and window.state.latest_run.status == "cancelled"
    assert "Search cancelled: default recipe won" in panel.stage.text()


def test_the_mode_and_minutes_survive_saving_and_opening_a_project(qtbot, window, tmp_path):
    panel = window.train_panel
    panel.mode.set_mode("automatic", minutes=2.5)
    window.projects.ask_save_path = lambda: str(tmp_path / "auto")
    saved = window.projects.save()
    stored = json.loads(Path(saved).read_text())
    assert (stored["training_mode"], stored["search_minutes"]) == ("automatic", 2.5)
    panel.mode.set_mode("manual", minutes=10)
    assert panel.start_button.text() == "Start training" and not panel.mode.note.isVisibleTo(panel)
    with qtbot.waitSignal(window.projects.opened, timeout=60_000):
        assert window.projects.open(saved)
    assert (window.state.training_mode, window.state.search_minutes) == ("automatic", 2.5)
    assert panel.mode.choice.currentData() == "automatic" and panel.mode.minutes.value() == 2.5
    assert panel.start_button.text() == "Start search"


def test_project_files_validate_the_mode_and_default_to_manual(tmp_path):
    from engine.search.auto import DEFAULT_BUDGET_S
    from gui.state import AppState
    assert Project().search_minutes == AppState().search_minutes == DEFAULT_BUDGET_S / 60
    old = Project().to_dict()
    del old["training_mode"], old["search_minutes"]
    (tmp_path / "old.tlproj").write_text(json.dumps(old))
    loaded = load_project(tmp_path / "old.tlproj")               # written before the automatic mode existed
    assert (loaded.training_mode, loaded.search_minutes) == ("manual", DEFAULT_BUDGET_S / 60)
    for bad in ({"training_mode": "fast"}, {"search_minutes": -1}, {"search_minutes": "ten"}):
        (tmp_path / "bad.tlproj").write_text(json.dumps({**old, **bad}))
        with pytest.raises(ProjectError, match="damaged"):
            load_project(tmp_path / "bad.tlproj")
