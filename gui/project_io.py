"""Project files for the window: New, Open, Save, Save As, Recent projects, and autosave.

The project itself is the engine's plain `Project` held by the window (`window.project`, where the
Results step also records label corrections). This controller only moves state between it and the
panels. Opening applies the saved state in the order the window builds it: dataset scan, then the
model for its classes, then the saved freeze state, so nothing later overwrites what was restored.

Every question it asks goes through a replaceable attribute (`ask_open_path`, `ask_save_path`,
`ask_dataset_location`), and every message box is opened non-modally, so tests drive it without
blocking dialogs.
"""
from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from engine.core.files import write_json
from engine.core.paths import APP_NAME, user_data_dir
from engine.core.runfolder import RunFolder
from engine.project import PROJECT_SUFFIX, Project, ProjectError, RunRecord, load_project

if TYPE_CHECKING:
    from gui.main_window import MainWindow

RECENT_KEY = "project/recent"
MAX_RECENT = 8
FILE_FILTER = f"TransferLab projects (*{PROJECT_SUFFIX})"
FORM_KEYS = ("epochs", "batch_size", "image_size", "lr", "schedule", "augmentation", "label_smoothing",
             "early_stopping", "recipe", "head_epochs")      # gui.train_panel.FIELDS, in order


def autosave_path() -> Path:
    """Where an unsaved project is autosaved (a saved one is autosaved to its own file)."""
    return user_data_dir() / f"autosave{PROJECT_SUFFIX}"


def latest_run(project: Project) -> RunRecord | None:
    """The newest finished run of the project whose checkpoint is still on disk."""
    for record in reversed(project.runs):
        if record.status != "running" and RunFolder(record.run_dir).has_checkpoint():
            return record
    return None


def latest_run_dir(project: Project) -> str:
    """`latest_run`'s folder, or '' when there is none."""
    record = latest_run(project)
    return record.run_dir if record else ""


class ProjectController(QObject):
    """Keeps `window.project` in step with the window and on disk."""

    opened = Signal(object)            # Project, once opened and applied (dataset, model, freeze), or new
    open_failed = Signal(str)          # the message shown to the user
    saved = Signal(str)                # path
    autosaved = Signal(str)            # path
    latest_run_changed = Signal(str)   # run folder of the newest usable model ('' when none)

    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.window = window
        self.ask_open_path = self._ask_open_path
        self.ask_save_path = self._ask_save_path
        self.ask_dataset_location = self._ask_dataset_location
        self.message_box: QMessageBox | None = None      # the last message shown (tests read it)
        self._restoring: Project | None = None
        self._waiting_for_engine = False
        self._waiting_for_scan = False
        self._active_run = None                           # gui.jobs.TrainingRun being trained
        self._best_accuracy: float | None = None          # of the active run, so far
        self._make_actions()
        window.training_started.connect(self._on_training_started)
        window.epoch_ended.connect(self._on_epoch_ended)
        window.training_finished.connect(self._on_training_finished)
        window.training_failed.connect(self._on_training_failed)

    # -- menu ----------------------------------------------------------------------------------
    def _make_actions(self) -> None:
        def action(text, slot, shortcut=None):
            act = QAction(text, self.window)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            act.triggered.connect(slot)
            return act
        self.new_action = action("&New project", self.new_project, QKeySequence.StandardKey.New)
        self.open_action = action("Open &project…", self.open_dialog, "Ctrl+Shift+P")
        self.save_action = action("&Save project", self.save, QKeySequence.StandardKey.Save)
        self.save_as_action = action("Save project &as…", self.save_as, QKeySequence.StandardKey.SaveAs)
        self.recent_menu = QMenu("&Recent projects", self.window)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)

    def add_to_menu(self, menu: QMenu) -> None:
        for act in (self.new_action, self.open_action):
            menu.addAction(act)
        menu.addMenu(self.recent_menu)
        for act in (self.save_action, self.save_as_action):
            menu.addAction(act)
        self._fill_recent_menu()

    def recent_projects(self) -> list[str]:
        return [str(p) for p in self.window.settings.value(RECENT_KEY, [], type=list)]

    def _remember(self, path: str) -> None:
        recent = [path] + [p for p in self.recent_projects() if p != path]
        self.window.settings.setValue(RECENT_KEY, recent[:MAX_RECENT])
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        for path in self.recent_projects():
            act = menu.addAction(Path(path).name)
            act.setStatusTip(path)
            act.setToolTip(path)
            act.setData(path)
            act.setEnabled(Path(path).is_file())
            act.triggered.connect(self._open_recent)
        if autosave_path().is_file():
            if not menu.isEmpty():
                menu.addSeparator()
            act = menu.addAction("Last autosave (unsaved project)")
            act.setData(str(autosave_path()))
            act.triggered.connect(self._open_recent)
        if menu.isEmpty():
            menu.addAction("No recent projects").setEnabled(False)
        else:
            menu.addSeparator()
            menu.addAction("Clear the list").triggered.connect(self.clear_recent)

    def _open_recent(self) -> None:
        self.open(self.sender().data())

    def clear_recent(self) -> None:
        self.window.settings.setValue(RECENT_KEY, [])
        self._fill_recent_menu()

    # -- questions and messages (replaceable in tests) -----------------------------------------
    def _start_folder(self) -> str:
        recent = self.recent_projects()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _ask_open_path(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open a project", self._start_folder(),
                                              f"{FILE_FILTER};;All files (*)")
        return path or None

    def _ask_save_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Save the project", self._start_folder(), FILE_FILTER)
        return path or None

    def _ask_dataset_location(self, old: str) -> str | None:
        """Ask where a moved dataset is now: a folder, or the moved .zip/.csv file."""
        title = f"The dataset {Path(old).name!r} is no longer at {old}. Where is it now?"
        start = str(next((p for p in Path(old).parents if p.exists()), Path.home()))
        if Path(old).suffix.lower() in (".zip", ".csv"):
            path, _ = QFileDialog.getOpenFileName(self.window, title, start, "Datasets (*.zip *.csv)")
            return path or None
        return QFileDialog.getExistingDirectory(self.window, title, start) or None

    def _show(self, icon: QMessageBox.Icon, title: str, text: str) -> None:
        self.window.log(f"{title}: {text}")
        self.message_box = QMessageBox(icon, title, text, parent=self.window)
        self.message_box.open()

    # -- new, save ------------------------------------------------------------------------------
    def new_project(self) -> None:
        """A new, unsaved project that starts from what the window shows (no runs, no corrections)."""
        self._stop_restoring()
        self._replace_project(Project(dataset_sources=list(self.window.project.dataset_sources)))
        self._update_title()
        self.latest_run_changed.emit("")
        self.opened.emit(self.window.project)

    def save(self) -> str | None:
        if self.window.project.path is None or Path(self.window.project.path) == autosave_path():
            return self.save_as()
        return self._save_to(self.window.project.path)

    def save_as(self) -> str | None:
        path = self.ask_save_path()
        return self._save_to(path) if path else None

    def _save_to(self, path: str) -> str | None:
        project = self.capture()
        try:
            saved = project.save(path)
        except (OSError, ProjectError) as exc:
            self._show(QMessageBox.Icon.Critical, "The project was not saved", str(exc))
            return None
        self._remember(saved)
        self._update_title()
        self.window.statusBar().showMessage(f"Project saved to {saved}", 5000)
        self.saved.emit(saved)
        return saved

    def capture(self) -> Project:
        """Copy the window's state into `window.project` (dataset sources are set by each scan)."""
        window, project = self.window, self.window.project
        if window.model_panel.backbone:
            project.backbone = window.model_panel.backbone
        if window.model_panel.info is not None and window.model_panel.info.backbone == project.backbone:
            project.frozen_parameters = window.model_panel.frozen_parameter_names()
        if window.train_panel.settings.loaded:
            project.config = self._settings_config()
        return project

    def _settings_config(self) -> dict:
        """The form's hyper-parameters as a TrainConfig dict (a half-typed learning rate keeps the old one)."""
        from engine.training.config import TrainConfig
        try:
            values = self.window.train_panel.settings.values()
        except ValueError:
            return self.window.project.config
        config = TrainConfig(**values, backbone=self.window.model_panel.backbone or self.window.project.backbone,
                             weights=self.window.model_panel.weights_choice, freeze="none").to_dict()
        config.pop("frozen_parameters", None)          # stored once, as project.frozen_parameters
        return config

    # -- autosave --------------------------------------------------------------------------------
    def autosave(self) -> str | None:
        """Write the project where it lives (or to the autosave file when unsaved); cheap JSON."""
        project = self.capture()
        target = Path(project.path) if project.path else autosave_path()
        try:
            write_json(target, project.to_dict())
        except OSError as exc:           # a full disk must not interrupt training: say it in the log
            self.window.log(f"Autosave to {target} failed: {exc}")
            return None
        self.autosaved.emit(str(target))
        return str(target)

    def _on_training_started(self, run) -> None:
        self._active_run, self._best_accuracy = run, None

    def _record_run(self, status: str, metrics: dict | None = None) -> None:
        run, metrics = self._active_run, metrics or {}
        if run is None:
            return
        previous = next((r for r in self.window.project.runs if r.run_dir == str(run.run_dir)), None)
        self.window.project.add_run(RunRecord(
            run_dir=str(run.run_dir),
            created=previous.created if previous else datetime.now().isoformat(timespec="seconds"),
            backbone=run.config.backbone, status=status,
            val_accuracy=metrics.get("val_accuracy", self._best_accuracy),
            test_accuracy=metrics.get("test_accuracy"), config=run.config.to_dict()))

    def _on_epoch_ended(self, _epoch: int, logs: dict) -> None:
        """After each epoch the run is in the project as 'running' with its best accuracy so far,
        so a crash loses at most the epoch under way (the best checkpoint is already in its folder)."""
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self._best_accuracy is None or accuracy > self._best_accuracy):
            self._best_accuracy = accuracy
        self._record_run("running")
        self.autosave()

    def _on_training_finished(self, result) -> None:
        run = self._active_run
        record = next((r for r in self.window.project.runs if run and r.run_dir == str(run.run_dir)), None)
        if record is None or record.status == "running":    # the window may have recorded it already
            self._record_run(result.status, result.metrics)
        self._active_run = None
        self.autosave()
        self.latest_run_changed.emit(latest_run_dir(self.window.project))

    def _on_training_failed(self, _message: str) -> None:
        self._record_run("failed")
        self._active_run = None
        self.autosave()

    # -- open --------------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path = self.ask_open_path()
        if path:
            self.open(path)

    def open(self, path: str) -> bool:
        """Open a project; returns False when it was refused. `opened` follows once it is applied."""
        if self.window.training_task is not None:
            self._show(QMessageBox.Icon.Information, "Training is running",
                       "Stop the training run before opening another project.")
            return False
        try:
            loaded = load_project(path)
        except ProjectError as exc:
            message = str(exc)
            self._show(QMessageBox.Icon.Warning, "This project cannot be opened",
                       f"{message}\n\nThe file was left as it is.")
            self.open_failed.emit(message)
            return False
        self._stop_restoring()
        unplaced = self._locate_sources(loaded)
        if Path(path) == autosave_path():
            loaded.path = None             # recovered work: Save asks where to keep it
        else:
            self._remember(loaded.path)
        for record in loaded.runs:
            if record.status == "running":   # the app stopped while it trained
                record.status = "interrupted"
        self._replace_project(loaded)
        self._update_title()
        self.window.log(f"Opened project {path}")
        if unplaced:
            self._show(QMessageBox.Icon.Warning, "Dataset not found",
                       "The project was opened without its dataset, which is no longer at:\n"
                       + "\n".join(unplaced) + "\n\nOpen the dataset again to go on training.")
        self._restoring = loaded
        if self.window.engine is None:
            self._waiting_for_engine = True
            self.window.engine_ready.connect(self._apply_project)
        else:
            self._apply_project()
        return True

    def _locate_sources(self, project: Project) -> list[str]:
        """Ask for each moved dataset location and relocate the project; returns those still missing."""
        unplaced = []
        for old in project.missing_sources():
            new = self.ask_dataset_location(old)
            if new and Path(new).exists():
                project.relocate(old, new)
                self.window.log(f"Dataset moved: {old} → {new}")
            else:
                unplaced.append(old)
        return unplaced

    def _replace_project(self, new: Project) -> None:
        """Replace the contents of `window.project` in place: panels may hold a reference to it."""
        for item in fields(Project):
            setattr(self.window.project, item.name, getattr(new, item.name))

    def _update_title(self) -> None:
        path = self.window.project.path
        self.window.setWindowTitle(f"{Path(path).stem} – {APP_NAME}" if path else APP_NAME)

    # -- applying an opened project: settings → dataset scan → model build → freeze state ----------
    def _apply_project(self) -> None:
        window, project = self.window, self._restoring
        if self._waiting_for_engine:
            self._waiting_for_engine = False
            window.engine_ready.disconnect(self._apply_project)
        self._apply_settings(project.config)
        self._select_backbone(project.backbone)
        self._apply_weights(project.config.get("weights"))
        sources = [s for s in project.dataset_sources if Path(s).exists()]
        window.model_ready.connect(self._finish_when_ready)
        if sources:
            self._waiting_for_scan = True
            window.scan_finished.connect(self._on_restore_scan_done)
            window.scan_failed.connect(self._on_restore_scan_done)
            window.load_dataset(sources)
        else:
            self._finish_when_ready()

    def _apply_settings(self, config: dict) -> None:
        form = self.window.train_panel.settings
        for key in FORM_KEYS:
            if key in config:
                try:
                    form.set_values(**{key: config[key]})
                except (ValueError, TypeError) as exc:
                    self.window.log(f"Project setting {key} not restored: {exc}")

    def _select_backbone(self, name: str) -> None:
        panel = self.window.model_panel
        names = list(panel.backbones)
        if name not in names:
            self.window.log(f"The project's backbone {name} is not available here; keeping {panel.backbone}")
            return
        panel.backbone_list.setCurrentRow(names.index(name))     # builds its model when it changed

    def _apply_weights(self, weights: str | None) -> None:
        panel = self.window.model_panel
        if weights in ("pretrained", "random"):
            index = panel.weights.findData(weights)
            if panel.weights.model().item(index).isEnabled():
                panel.weights.setCurrentIndex(index)
        elif weights and Path(weights).is_file():
            panel.weights_file = weights
            panel.weights.setCurrentIndex(panel.weights.findData("file"))
            panel.weights_note.setText(weights)

    def _on_restore_scan_done(self, *_args) -> None:
        self._waiting_for_scan = False
        self.window.scan_finished.disconnect(self._on_restore_scan_done)
        self.window.scan_failed.disconnect(self._on_restore_scan_done)
        self._finish_when_ready()

    def _stop_restoring(self) -> None:
        """Forget a restore still under way (another project is opened, or a new one started)."""
        window = self.window
        if self._waiting_for_engine:
            window.engine_ready.disconnect(self._apply_project)
        elif self._restoring is not None:
            window.model_ready.disconnect(self._finish_when_ready)
        if self._waiting_for_scan:
            window.scan_finished.disconnect(self._on_restore_scan_done)
            window.scan_failed.disconnect(self._on_restore_scan_done)
        self._waiting_for_engine = self._waiting_for_scan = False
        self._restoring = None

    def _finish_when_ready(self, *_args) -> None:
        """Apply the freeze state once the model for this backbone and these classes is built."""
        project, window = self._restoring, self.window
        if project is None or self._waiting_for_scan:
            return
        info = window.model_panel.info
        classes = len(window.report.classes) if window.report is not None else info.num_classes if info else None
        if info is None or info.backbone != window.model_panel.backbone or info.num_classes != classes:
            return                                      # a rebuild is under way; model_ready comes again
        self._stop_restoring()
        if project.frozen_parameters is not None and info.backbone == project.backbone:
            info.tree.freeze_parameters(project.frozen_parameters)
        window.statusBar().showMessage(f"Project {Path(project.path).name if project.path else ''} opened", 5000)
        self.latest_run_changed.emit(latest_run_dir(window.project))
        self.opened.emit(window.project)
