"""The desktop app driven offscreen through its real window: drop, freeze, train, cancel, close.

Every wait arms `qtbot.waitSignal(s)` before the action that triggers it; no test sleeps. A fixture
fails any test that leaves a QThread running.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from conftest import ROOT, write_colour_dataset
from gui.layer_model import LayerTreeModel
from gui.train_panel import FIELDS
from gui_support import (TRAIN_TIMEOUT_MS, PauseAfterFirstEpoch, changed_settings, drop, load, requires_grad,
                         start_run)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = write_colour_dataset(tmp_path / "colours", per_class=8)
    (root / "red" / "broken.png").write_bytes(b"not really a png")
    return root


# -- start-up -----------------------------------------------------------------------------------
def test_window_is_shown_before_torch_and_pyqtgraph_are_imported():
    """numpy too: it alone cost the first paint about 0.3 s (bench/RESULTS.md)."""
    code = ("import os, sys\n"
            "from gui.app import create_window\n"
            "app, window = create_window([])\n"
            "print(window.isVisible(), [m for m in ('torch', 'timm', 'pyqtgraph', 'numpy') if m in sys.modules])\n"
            "sys.stdout.flush(); os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "True []", done.stdout + done.stderr


# -- data ---------------------------------------------------------------------------------------
def labels_csv(dataset: Path) -> Path:
    csv = dataset.parent / "labels.csv"
    rows = [f"{p.relative_to(csv.parent).as_posix()},{p.parent.name}" for p in sorted(dataset.rglob("*.png"))]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    return csv


@pytest.mark.parametrize("form", ["folder", "two-class-folders", "zip", "csv"])
def test_dropping_a_dataset_shows_classes_thumbnails_and_problems(qtbot, window, dataset, tmp_path, form):
    sources = {"folder": lambda: [dataset],
               "two-class-folders": lambda: [dataset / "red", dataset / "green"],
               "zip": lambda: [Path(shutil.make_archive(str(tmp_path / "colours"), "zip", dataset))],
               "csv": lambda: [labels_csv(dataset)]}[form]()
    report = load(qtbot, window, sources)
    expected = ["blue", "green", "red"] if form != "two-class-folders" else ["green", "red"]
    table = window.data_panel.class_table
    assert report.classes == expected
    assert [table.item(row, 0).text() for row in range(table.rowCount())] == expected
    assert int(table.item(0, 4).text()) == 8
    assert table.item(0, 5).data(Qt.ItemDataRole.DecorationRole) is not None, "thumbnail strip"
    problems = window.data_panel.problems
    rows = [[problems.item(row, column).text() for column in range(problems.columnCount())]
            for row in range(problems.rowCount())]
    assert len(rows) == 2 and rows[0][2].endswith("broken.png")
    assert rows[1][0] == "warning" and re.match(r"small validation split: with \d images", rows[1][1]), \
        "too few validation images to tell recipes apart"
    assert window.state.model.num_classes == len(expected)


def test_dropping_a_plain_file_is_refused_and_an_unusable_folder_explains_why(qtbot, window, tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("not a dataset")
    assert not drop(window.data_panel.drop_zone, [note])
    empty = tmp_path / "empty"
    empty.mkdir()
    with qtbot.waitSignal(window.scan_failed, timeout=30_000) as failed:
        drop(window.data_panel.drop_zone, [empty])
    assert failed.args[0] in window.data_panel.summary.text()
    assert window.state.report is None and not window.start_action.isEnabled()


# -- layer tree ---------------------------------------------------------------------------------
def test_layer_tree_model_passes_qtmodeltester(qtmodeltester):
    from engine.models.catalog import create_model
    from engine.models.layers import LayerTree
    model = LayerTreeModel()
    model.set_tree(LayerTree(create_model("resnet18", 3, weights="random").model))
    qtmodeltester.check(model)
    model.setData(model.index_of("layer4"), Qt.CheckState.Checked.value, Qt.ItemDataRole.CheckStateRole)
    qtmodeltester.check(model, force_py=True)


def test_checkboxes_and_presets_set_requires_grad(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    panel, layer_model = window.model_panel, window.model_panel.layer_model
    model = window.state.model.tree.model
    assert {n for n, g in requires_grad(model).items() if g} == {"classifier.weight", "classifier.bias"}
    assert "only the head trains" in panel.counts.text()
    panel.tree.expandAll()
    panel.tree.setCurrentIndex(layer_model.index_of("blocks.6"))
    qtbot.keyClick(panel.tree, Qt.Key.Key_Space)           # what a user does to toggle a checkbox
    trainable = {n for n, g in requires_grad(model).items() if g}
    assert trainable == {n for n in requires_grad(model) if n.startswith(("blocks.6.", "classifier."))}
    root = layer_model.index(0, 0)
    assert layer_model.data(root, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.PartiallyChecked
    assert layer_model.data(layer_model.index_of("blocks.6"), Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    trainable_count = sum(model.get_parameter(n).numel() for n in trainable)
    assert f"Training {trainable_count:,} of" in panel.counts.text()
    assert "frozen blocks run once" in panel.counts.text()
    panel.everything_button.click()
    assert all(requires_grad(model).values())
    assert "Every epoch runs the whole network" in panel.counts.text()
    assert layer_model.data(root, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    panel.head_button.click()
    assert {n for n, g in requires_grad(model).items() if g} == {"classifier.weight", "classifier.bias"}


# -- training -----------------------------------------------------------------------------------
def test_training_uses_exactly_the_tree_freeze_state_and_plots_live(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    panel = window.model_panel
    panel.n_blocks.setValue(1)
    panel.last_n_button.click()
    panel.layer_model.setData(panel.layer_model.index_of("blocks.6.0.bn3"), Qt.CheckState.Unchecked.value,
                              Qt.ItemDataRole.CheckStateRole)
    gui_flags = requires_grad(window.state.model.tree.model)
    assert not gui_flags["blocks.6.0.bn3.weight"] and gui_flags["blocks.6.0.conv_pwl.weight"]
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        run, task, stopped = start_run(qtbot, window)
        stopped.wait()
    result = finished.args[0]
    assert result.status == "completed"
    assert run.trainer.model is not window.state.model.tree.model, "the worker trains its own model"
    assert requires_grad(run.trainer.tree.model) == gui_flags
    assert run.config.frozen_parameters == window.state.model.tree.frozen_parameter_names()
    plots = window.train_panel.plots
    assert plots.points("val_loss") == 2 and plots.points("val_accuracy") == 2
    assert plots.points("batch_loss") >= 2 and plots.points("lr") >= 2
    assert Path(result.checkpoint).is_file()
    path_line = window.train_panel.path.text()
    assert "frozen blocks ran once" in path_line, "the window says which path trained"
    assert "Augmentation does not apply" in path_line, "light augmentation (the default) is set but unused"
    headline = window.results_panel.headline.text()
    assert "Validation accuracy" in headline
    assert re.search(r"Test accuracy <b>\d+\.\d %</b> <span[^>]*>\(\d+–\d+\)</span>", headline), \
        "each accuracy with its 95 % interval"
    assert window.start_action.isEnabled() and window.training_task is None
    assert panel.layer_model.flags(panel.layer_model.index(0, 0)) & Qt.ItemFlag.ItemIsUserCheckable


def test_pause_then_stop_keeps_the_best_checkpoint(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    pauser = PauseAfterFirstEpoch()
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        with qtbot.waitSignal(pauser.paused, timeout=TRAIN_TIMEOUT_MS):
            run, task, stopped = start_run(qtbot, window, pauser, epochs=20)
        assert run.control.paused
        window.set_paused(True)
        assert window.train_panel.pause_button.text() == "Resume" and window.pause_action.isChecked()
        layer_model = window.model_panel.layer_model
        assert not layer_model.flags(layer_model.index(0, 0)) & Qt.ItemFlag.ItemIsUserCheckable, \
            "the tree is locked while training"
        window.train_panel.stop_button.click()
        stopped.wait()
    result = finished.args[0]
    assert result.status == "cancelled"
    assert len(result.history) == 1 and Path(result.checkpoint).is_file()
    assert not window.train_panel.pause_button.isChecked()


def test_an_error_in_training_is_shown_in_the_window(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    layer_model = window.model_panel.layer_model
    layer_model.setData(layer_model.index(0, 0), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    with qtbot.waitSignal(window.training_failed, timeout=TRAIN_TIMEOUT_MS) as failed:
        _, _, stopped = start_run(qtbot, window)
        stopped.wait()
    banner = window.train_panel.error
    assert "every layer is frozen" in failed.args[0]
    assert banner.isVisibleTo(window) and failed.args[0] in banner.text()


def test_invalid_settings_are_explained_without_starting(qtbot, window, dataset):
    load(qtbot, window, [dataset])
    window.train_panel.settings.set_values(epochs=3, recipe="two-stage", head_epochs=3)
    assert window.start_training() is None
    assert "head_epochs" in window.train_panel.error.text() and window.training_task is None


def test_the_fitted_head_is_chosen_in_the_form_and_solved(qtbot, window, dataset):
    """Optimizer: Fitted head solves the linear head by logistic regression: one history entry with the L2
    strength cross-validation chose, and a model the Results step shows."""
    load(qtbot, window, [dataset])
    combo = window.train_panel.settings.optimizer
    assert combo.itemText(combo.findData("lbfgs")).startswith("Fitted head")
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        run, task, stopped = start_run(qtbot, window, optimizer="lbfgs")
        stopped.wait()
    result = finished.args[0]
    assert result.status == "completed" and run.config.optimizer == "lbfgs"
    assert len(result.history) == 1 and result.history[0]["l2"] > 0 and Path(result.checkpoint).is_file()
    assert "Validation accuracy" in window.results_panel.headline.text()

def test_every_setting_in_the_form_reaches_the_engine_config(qtbot, window):
    from engine.training.config import TrainConfig
    settings, defaults = window.train_panel.settings, TrainConfig()
    changed = changed_settings(settings)
    assert all(changed[key] != getattr(defaults, key) for key, _ in FIELDS), "every field leaves its default"
    settings.set_values(**changed)
    config = window.training_config()                   # validated, as Start uses it
    assert {key: getattr(config, key) for key, _ in FIELDS} == changed == settings.values()
    settings.set_values(cached_views=1)
    assert settings.cached_views.text() == "1 (as it is)"


def test_closing_during_training_asks_then_stops_and_joins(qtbot, window, dataset, monkeypatch):
    load(qtbot, window, [dataset])
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: answers.pop(0))
    pauser = PauseAfterFirstEpoch()
    with qtbot.waitSignal(pauser.paused, timeout=TRAIN_TIMEOUT_MS):
        run, task, _ = start_run(qtbot, window, pauser, epochs=20)
    assert not window.close(), "answering No keeps the window and the run"
    assert window.training_task is task
    assert window.close()
    assert not answers and window.training_task is None
    assert (run.run_dir / "model.safetensors").is_file() and (run.run_dir / "history.json").is_file()
    assert window.settings.value("window/geometry") is not None


# -- the application state, without a window ----------------------------------------------------
def test_the_state_imports_neither_qt_nor_torch():
    code = "import sys, gui.state; print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'torch', 'timm'}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_state_events_keep_the_freeze_state_the_runs_and_the_corrections(tmp_path):
    from engine.core.runfolder import RunFolder
    from gui.jobs import build_model
    from gui.state import AppState
    state = AppState(backbone="resnet18")
    seen = []
    state.events.frozen_parameters.connect(lambda frozen: seen.append(("frozen", len(frozen))))
    state.events.latest_run.connect(lambda record: seen.append(("latest", record and record.run_dir)))
    state.corrections.events.added.connect(lambda path, _value: seen.append(("corrected", path)))
    state.corrections.events.removed.connect(lambda path, _value: seen.append(("restored", path)))

    info = build_model("resnet18", 3, lambda *_: None)
    state.use_model(info)                                  # no freeze state yet: the head trains
    tree = info.tree
    assert state.frozen_parameters == tree.frozen_parameter_names() and "fc.weight" not in state.frozen_parameters
    tree.set_trainable("layer4", True)                     # a checkbox in the layer tree
    assert state.frozen_parameters == tree.frozen_parameter_names() and "layer4.0.conv1.weight" not in state.frozen_parameters
    state.frozen_parameters = []                           # an opened project: everything trains
    assert tree.frozen_parameter_names() == []
    state.backbone = "efficientnet_lite0"                  # the tree left over says nothing about the new one
    tree.set_trainable("layer1", False)
    assert state.frozen_parameters == []
    n_frozen = [n for kind, n in seen if kind == "frozen"]
    assert n_frozen[-1] == 0 and len(n_frozen) == 3

    run_dir = str(tmp_path / "run")
    state.record_run(run_dir, "running", {"backbone": "resnet18"}, 0.5)
    created = state.runs[0].created
    state.record_run(run_dir, "completed", {"backbone": "resnet18"}, 0.75)
    assert state.latest_run is None, "no checkpoint on disk: not usable"
    RunFolder(run_dir).checkpoint.parent.mkdir(parents=True)
    RunFolder(run_dir).checkpoint.write_bytes(b"")
    state.record_run(run_dir, "completed", {"backbone": "resnet18"}, 0.8)
    assert [(r.run_dir, r.created, r.status, r.val_accuracy) for r in state.runs] == [(run_dir, created, "completed", 0.8)]
    assert state.latest_run is state.runs[0] and ("latest", run_dir) in seen

    state.correct("/data/red/1.png", "exclude")
    state.correct("/data/red/2.png", "relabel", "green")
    state.correct("/data/red/1.png", "restore")
    assert dict(state.corrections) == {"/data/red/2.png": {"action": "relabel", "label": "green"}}
    assert [e for e in seen if e[0] in ("corrected", "restored")] == [
        ("corrected", "/data/red/1.png"), ("corrected", "/data/red/2.png"), ("restored", "/data/red/1.png")]
