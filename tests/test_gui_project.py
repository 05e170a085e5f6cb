"""Export dialog, Try-it panel and project files, driven through the real widgets offscreen.

One small run is trained once with the engine (64 px, two epochs, 30 solid-colour images) and shared;
one test trains through the window to check autosave and the wiring to Export and Try it. Every wait
arms its `qtbot.waitSignal` before the action; no test sleeps, and none leaves a QThread running.
"""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QObject, QSettings, Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from conftest import write_colour_dataset
from engine.project import Project, RunRecord
from engine.training.config import TrainConfig
from gui.export_dialog import ExportDialog
from gui.main_window import MainWindow
from gui.predict_panel import PredictPanel
from gui.project_io import RECENT_KEY, autosave_path, project_from_state
from gui.state import AppState
from gui.train_panel import FIELDS
from gui.workers import Task, TaskGroup
from gui_support import changed_settings, drop, load

JOB_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained with the engine on red/green/blue images; it tells them apart perfectly."""
    from engine.data.scan import scan_dataset
    from engine.training.trainer import Trainer
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as env:             # never the real user folders
        env.setenv("TRANSFERLAB_DATA_DIR", str(base / "user"))
        env.setenv("TRANSFERLAB_CACHE_DIR", str(base / "cache"))
        data = write_colour_dataset(base / "colours", per_class=10)
        result = Trainer(scan_dataset(data), TrainConfig(image_size=64, epochs=2, batch_size=8, lr=0.01),
                         base / "run").fit()
    assert result.metrics["val_accuracy"] == 1.0
    return SimpleNamespace(data=data, run=Path(result.run_dir), result=result)


class Tasks(TaskGroup):
    """The task group for a panel or dialog used without the window: each task gets a blocker armed on
    its end before it starts, so `wait()` never misses it."""

    def __init__(self, qtbot, before_start=None):
        self.owner_object = QObject()
        super().__init__(self.owner_object)
        self.qtbot, self.blockers = qtbot, []
        self.before_start = before_start

    def prepare(self, job, control=None) -> Task:
        task = super().prepare(job, control)
        if self.before_start is not None:
            self.before_start(task)
        self.blockers.append(self.qtbot.waitSignal(task.done, timeout=JOB_TIMEOUT_MS))
        return task

    def wait(self) -> None:
        for blocker in self.blockers:
            blocker.wait()


# -- export ---------------------------------------------------------------------------------------
def test_export_dialog_writes_a_verified_onnx_and_opens_its_folder(qtbot, trained, tmp_path, monkeypatch):
    from engine.outputs.export import read_metadata
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    tasks = Tasks(qtbot)
    dialog = ExportDialog(str(trained.run), str(tmp_path / "out" / "colours"), tasks)   # suffix left out
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.with_weights.setChecked(True)
    dialog.exporter.setCurrentIndex(dialog.exporter.findData("legacy"))      # the fast exporter, for the test
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert not dialog.export_button.isEnabled() and dialog.progress.isVisible()
    tasks.wait()
    onnx = tmp_path / "out" / "colours.onnx"
    result = dialog.outcome.onnx
    assert result.path == str(onnx) and onnx.is_file() and onnx.with_suffix(".json").is_file()
    assert result.top1_agreement == 1.0 and result.max_abs_diff <= 1e-3
    verification = read_metadata(onnx)["verification"]
    assert verification["top1_agreement"] == 1.0 and verification["images"] == result.n_samples
    assert dialog.outcome.weights == str(onnx.with_suffix(".safetensors")) and Path(dialog.outcome.weights).is_file()
    text = dialog.result.text()
    assert "Verified" in text and f"{result.max_abs_diff:.2g}" in text and "100 %" in text and str(onnx) in text
    assert dialog.export_button.isEnabled() and dialog.open_folder_button.isVisible()
    qtbot.mouseClick(dialog.open_folder_button, Qt.MouseButton.LeftButton)
    assert opened == [str(onnx.parent)]


def test_export_dialog_refuses_an_int8_file_that_loses_accuracy_and_says_so(qtbot, trained, tmp_path):
    """The colour run tells red, green and blue apart by small margins after two epochs at 64 px: int8
    loses most of them, so the dialog writes the verified fp32 file and says why, with the figures."""
    from engine.outputs.export import read_metadata
    tasks = Tasks(qtbot)
    dialog = ExportDialog(str(trained.run), str(tmp_path / "small.onnx"), tasks)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.precision.setCurrentIndex(dialog.precision.findData("int8"))
    dialog.exporter.setCurrentIndex(dialog.exporter.findData("legacy"))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert not dialog.precision.isEnabled()
    tasks.wait()
    result = dialog.outcome.onnx
    card = read_metadata(tmp_path / "small.onnx")
    assert result.precision == card["precision"] == "fp32" and card["precision_check"]["asked"] == "int8"
    text = dialog.result.text()
    assert "⚠ int8 refused, fp32 written instead" in text and "accuracy points" in text and "x the fp32 file" in text
    assert dialog.precision.isEnabled()


def test_export_dialog_writes_an_openvino_folder_that_try_it_runs(qtbot, trained, tmp_path):
    tasks = Tasks(qtbot)
    dialog = ExportDialog(str(trained.run), str(tmp_path / "colours.onnx"), tasks)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.format.setCurrentIndex(dialog.format.findData("openvino"))
    assert dialog.path.text() == str(tmp_path / "colours")                 # a folder: no suffix
    dialog.exporter.setCurrentIndex(dialog.exporter.findData("legacy"))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    tasks.wait()
    assert (tmp_path / "colours" / "model.xml").is_file() and (tmp_path / "colours" / "model.bin").is_file()
    assert "✓ OpenVINO runtime" in dialog.result.text() and "100 %" in dialog.result.text()
    from engine.outputs.predict import load_classifier
    assert load_classifier(tmp_path / "colours" / "model.xml").classes == ["blue", "green", "red"]


def test_an_ensemble_exports_to_verified_onnx_only(qtbot, trained, tmp_path):
    """An ensemble run (two networks, one mean) is offered ONNX only: no state dict can hold it."""
    from engine.data.scan import scan_dataset
    from engine.search.ensemble import combine_runs
    from engine.training.trainer import Trainer
    report = scan_dataset(trained.data)
    Trainer(report, TrainConfig(image_size=64, epochs=1, batch_size=8, lr=0.01, seed=1, head="mlp"),
            tmp_path / "second", evaluate_test=False).fit()
    combine_runs(report, [trained.run, tmp_path / "second"], tmp_path / "ensemble")
    tasks = Tasks(qtbot)
    dialog = ExportDialog(str(tmp_path / "ensemble"), str(tmp_path / "ensemble.onnx"), tasks, ensemble=True)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.with_weights.isVisible() and not dialog.with_weights.isChecked()
    assert not dialog.format.model().item(dialog.format.findData("safetensors")).isEnabled()
    dialog.exporter.setCurrentIndex(dialog.exporter.findData("legacy"))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    tasks.wait()
    result = dialog.outcome.onnx
    assert result.top1_agreement == 1.0 and dialog.outcome.weights is None and "Verified" in dialog.result.text()
    assert len(json.loads((tmp_path / "ensemble.json").read_text())["ensemble"]) == 2


def test_cancelling_an_export_writes_nothing(qtbot, trained, tmp_path):
    """The worker is held at its first step until Cancel is clicked, so the cancel lands mid-export."""
    clicked = threading.Event()

    def hold_first_step(task: Task) -> None:
        task.worker.progress.connect(lambda *_: clicked.wait(30), Qt.ConnectionType.DirectConnection)

    tasks = Tasks(qtbot, hold_first_step)
    dialog = ExportDialog(str(trained.run), str(tmp_path / "model.onnx"), tasks)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.with_weights.setChecked(True)
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert dialog.cancel_button.isVisible() and dialog.task is not None
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    clicked.set()
    tasks.wait()
    assert "cancelled" in dialog.result.text() and dialog.outcome is None
    assert list(tmp_path.iterdir()) == [], "no .onnx, .json or .safetensors left behind"
    assert dialog.export_button.isEnabled() and not dialog.cancel_button.isVisible()


def test_a_failed_export_is_explained_in_the_dialog(qtbot, tmp_path):
    tasks = Tasks(qtbot)
    dialog = ExportDialog(str(tmp_path), str(tmp_path / "model.onnx"), tasks)       # not a run folder
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.export_failed, timeout=JOB_TIMEOUT_MS) as failed:
        dialog.start_export()
    tasks.wait()
    assert "is not a run folder" in failed.args[0] and failed.args[0] in dialog.result.text()
    assert "Traceback" not in dialog.result.text() and dialog.export_button.isEnabled()
    assert not (tmp_path / "model.onnx").exists() and not dialog.open_folder_button.isVisible()


# -- try it ---------------------------------------------------------------------------------------
def test_try_it_shows_the_right_class_with_probabilities(qtbot, trained, tmp_path):
    tasks, state = Tasks(qtbot), AppState()
    panel = PredictPanel(state, tasks)
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    assert panel.predict([str(trained.data / "red" / "red_003.png")]) is None, "no model yet"
    assert "no model yet" in panel.summary.text().lower()
    state.runs.append(RunRecord(str(trained.run), "2026-01-02T03:04:05", "efficientnet_lite0", "completed"))
    assert panel.model_path == str(trained.run), "the project's latest run"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert not drop(panel.drop_zone, [notes]), "only images and folders are accepted"
    with qtbot.waitSignal(panel.predictions_shown, timeout=JOB_TIMEOUT_MS) as shown:
        assert drop(panel.drop_zone, [trained.data / "red" / "red_003.png", trained.data / "blue", broken])
    tasks.wait()
    report = shown.args[0]
    labels = panel.predicted_labels()
    assert labels[0][:2] == ("red/red_003.png", "red") and labels[0][2] > 0.5
    assert [label for _name, label, _p in labels[1:]] == ["blue"] * 10
    entries = panel.table.item(0, 2).data(Qt.ItemDataRole.UserRole + 1)
    assert [e["label"] for e in entries][0] == "red" and len(entries) == 3
    assert abs(sum(e["score"] for e in entries) - 1.0) < 1e-3
    assert panel.table.item(0, 0).data(Qt.ItemDataRole.DecorationRole) is not None, "thumbnail"
    last = panel.table.rowCount() - 1
    assert report.skipped[0]["path"] == str(broken) and "not classified" in panel.table.item(last, 2).text()
    assert "could not be read" in panel.summary.text()
    panel.grab()                                          # paints the probability bars
    assert not panel.progress.isVisible() and panel.task is None


# -- projects -------------------------------------------------------------------------------------
def window_state(window: MainWindow) -> dict:
    """What a project must bring back, in the state and as the window shows it."""
    state = window.state
    return {"sources": list(state.dataset_sources), "root": state.report.root, "classes": state.report.classes,
            "backbone": state.backbone, "listed": window.model_panel.backbone_list.currentItem().text(),
            "model": state.model.backbone, "frozen": state.model.tree.frozen_parameter_names(),
            "weights": state.weights, "weights_shown": window.model_panel.weights.currentText(),
            "settings": dict(state.settings), "form": window.train_panel.settings.values(),
            "corrections": dict(state.corrections), "runs": [vars(r) for r in state.runs],
            "title": window.windowTitle(), "try_it": window.predict_panel.model_path,
            "export": window.export_action.isEnabled()}


def test_save_close_open_restores_the_same_state(qtbot, windows, trained, tmp_path):
    settings_file = tmp_path / "settings.ini"
    window = windows(settings_file)
    data = write_colour_dataset(tmp_path / "colours", per_class=6)
    load(qtbot, window, [data])
    panel = window.model_panel
    with qtbot.waitSignal(window.model_ready, timeout=60_000):
        panel.backbone_list.setCurrentRow([row["name"] for row in window.state.engine.backbones].index("resnet18"))
    panel.n_blocks.setValue(1)
    panel.last_n_button.click()
    panel.layer_model.setData(panel.layer_model.index_of("layer4.1.bn2"), Qt.CheckState.Unchecked.value,
                              Qt.ItemDataRole.CheckStateRole)
    form, defaults = window.train_panel.settings, TrainConfig()
    changed = changed_settings(form)                     # every setting of the form, from its FIELDS
    assert all(changed[key] != getattr(defaults, key) for key, _ in FIELDS)
    form.set_values(**changed)
    window.record_correction(str(data / "red" / "red_001.png"), "exclude")
    window.state.runs.append(RunRecord(str(trained.run), "2026-01-02T03:04:05", "efficientnet_lite0", "completed",
                                       1.0, None, {"epochs": 2}))
    window.projects.ask_save_path = lambda: str(tmp_path / "work" / "colours")
    saved = window.projects.save()                       # unsaved: asks for a name, adds .tlproj
    assert saved == str(tmp_path / "work" / "colours.tlproj")
    expected = window_state(window)
    assert "layer4.1.bn2.weight" in expected["frozen"] and "layer4.1.conv2.weight" not in expected["frozen"]
    assert expected["form"] == expected["settings"] == changed and expected["try_it"] == str(trained.run)
    assert window.close()

    QSettings(str(settings_file), QSettings.Format.IniFormat).setValue("model/backbone", "efficientnet_lite0")
    window = windows(settings_file)                      # the next session starts with another backbone
    assert window.state.backbone == "efficientnet_lite0" and window.state.report is None
    assert window.train_panel.settings.values() != changed
    recent = window.projects.recent_menu.actions()[0]
    assert recent.data() == saved
    with qtbot.waitSignal(window.projects.opened, timeout=60_000):
        recent.trigger()
    restored = window.train_panel.settings.values()
    for key, label in FIELDS:                            # "Cached views" included
        assert restored[key] == changed[key], f"{label} was not restored"
    assert window_state(window) == expected
    assert window.state.project_path == saved and window.windowTitle().startswith("colours")


def test_opening_a_project_whose_dataset_moved_asks_for_the_new_place(qtbot, windows, tmp_path):
    data = write_colour_dataset(tmp_path / "old" / "colours", per_class=6)
    project = Project(dataset_sources=[str(data)], config={"epochs": 4, "image_size": 64})
    project.relabel(str(data / "red" / "red_001.png"), "green")
    path = project.save(tmp_path / "moved")
    written = Path(path).read_bytes()
    moved = tmp_path / "new" / "colours"
    shutil.move(str(data), str(moved))
    window = windows()
    asked = []
    window.projects.ask_dataset_location = lambda old: asked.append(old) or str(moved)
    with qtbot.waitSignal(window.projects.opened, timeout=60_000):
        assert window.projects.open(path)
    assert asked == [str(data)]
    assert window.state.dataset_sources == [str(moved)] and window.state.report.root == str(moved)
    assert dict(window.state.corrections) == {str(moved / "red" / "red_001.png"): {"action": "relabel", "label": "green"}}
    assert window.train_panel.settings.values()["epochs"] == 4
    assert Path(path).read_bytes() == written, "opening never writes the file"


def test_a_corrupt_or_foreign_project_is_refused_clearly_and_left_untouched(qtbot, windows, tmp_path):
    window = windows()
    before = project_from_state(window.state).to_dict() | {"saved": None}
    contents = {"binary.tlproj": b"\x89PNG\r\n\x1a\n\x00\xff",
                "other.tlproj": json.dumps({"format": "someone-else/2", "layers": []}).encode(),
                "damaged.tlproj": json.dumps({"format": "transferlab-project/1", "runs": [{"bad": 1}]}).encode()}
    for name, content in contents.items():
        path = tmp_path / name
        path.write_bytes(content)
        with qtbot.waitSignal(window.projects.open_failed) as failed:
            assert not window.projects.open(str(path))
        box = window.projects.message_box
        assert box.isVisible() and failed.args[0] in box.text() and name in failed.args[0]
        assert box.icon() == QMessageBox.Icon.Warning and "left as it is" in box.text()
        box.close()
        assert path.read_bytes() == content
    assert project_from_state(window.state).to_dict() | {"saved": None} == before
    assert window.projects.recent_projects() == [] and window.windowTitle() == "TransferLab"


def test_closing_keeps_an_unsaved_project_in_the_autosave(qtbot, windows, trained):
    window = windows()
    load(qtbot, window, [trained.data])
    window.model_panel.head_button.click()
    assert not autosave_path().exists()
    window.close()
    kept = json.loads(autosave_path().read_text())
    assert kept["dataset_sources"] == [str(trained.data)]
    assert kept["frozen_parameters"] and "classifier.weight" not in kept["frozen_parameters"]


def test_training_autosaves_each_epoch_and_feeds_export_and_try_it(qtbot, windows, tmp_path):
    window = windows()
    data = write_colour_dataset(tmp_path / "colours", per_class=10)
    load(qtbot, window, [data])
    assert not window.export_action.isEnabled()
    snapshots = []
    window.projects.autosaved.connect(lambda path: snapshots.append(json.loads(Path(path).read_text())))
    window.train_panel.settings.set_values(epochs=2, image_size=64, batch_size=8, lr=1e-2)
    with qtbot.waitSignal(window.training_finished, timeout=JOB_TIMEOUT_MS):
        run = window.start_training()
    run_dir = str(run.run_dir)
    assert window.state.latest_run.run_dir == run_dir
    assert [s["runs"][-1]["status"] for s in snapshots] == ["running", "running", "completed"]
    assert all(s["dataset_sources"] == [str(data)] for s in snapshots)
    assert json.loads(autosave_path().read_text())["runs"][-1]["run_dir"] == run_dir, "unsaved: autosave file"
    assert window.predict_panel.model_path == run_dir and window.export_action.isEnabled()

    dialog = window.show_export_dialog()
    dialog.path.setText(str(tmp_path / "colours.onnx"))
    dialog.exporter.setCurrentIndex(dialog.exporter.findData("legacy"))
    with qtbot.waitSignal(dialog.export_finished, timeout=JOB_TIMEOUT_MS) as exported:
        dialog.export_button.click()
    assert exported.args[0].onnx.top1_agreement == 1.0
    assert window.settings.value("export/last_folder") == str(tmp_path)

    try_it = window.predict_panel
    window.tabs.setCurrentWidget(try_it)
    try_it.set_model(str(tmp_path / "colours.onnx"))
    assert "ONNX" in try_it.model_label.text()
    with qtbot.waitSignal(try_it.predictions_shown, timeout=JOB_TIMEOUT_MS):
        assert drop(try_it.drop_zone, [data / "green" / "green_004.png"])
    assert try_it.predicted_labels()[0][:2] == ("green/green_004.png", "green")
    assert window.settings.value(RECENT_KEY, [], type=list) == []
