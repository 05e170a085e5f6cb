"""The main window: Data → Model → Train → Results, with every engine job on a worker thread.

It owns the background tasks and the state that links the steps (dataset report, layer tree,
current run); the panels only display and ask. Torch and pyqtgraph load after the first paint, so
the window appears about as fast as an empty one.
"""
from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox,
                               QPlainTextEdit, QStyle, QTabWidget)

from engine import __version__
from engine.core.control import RunControl
from engine.core.paths import APP_NAME, demo_dataset, user_data_dir
from engine.project import Project, RunRecord, apply_corrections
from gui.data_panel import DataPanel
from gui.export_dialog import ExportDialog
from gui.gc_guard import GuiThreadGarbageCollector
from gui.jobs import TrainingEvents, TrainingRun, build_model, load_engine, scan
from gui.model_panel import ModelPanel
from gui.predict_panel import PredictPanel
from gui.project_io import ProjectController, latest_run
from gui.results_panel import ResultsPanel
from gui.train_panel import TrainPanel
from gui.workers import Task, TaskGroup

logger = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000          # head size shown before a dataset is loaded
LOAD_ANYWAY_MS = 2000             # load torch and the plots even if no paint comes (minimised start)


class MainWindow(QMainWindow):
    """Signals let tests and scripts wait for each step without sleeping."""

    engine_ready = Signal()
    scan_finished = Signal(object)        # DatasetReport
    scan_failed = Signal(str)
    model_ready = Signal(object)          # gui.jobs.ModelInfo
    training_started = Signal(object)     # gui.jobs.TrainingRun, just before its thread starts
    epoch_ended = Signal(int, object)     # epoch, logs (relayed from the run)
    training_finished = Signal(object)    # engine FitResult
    training_failed = Signal(str)

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self._gc = GuiThreadGarbageCollector(self)   # worker threads must never free Qt objects
        self.settings = settings or QSettings(str(user_data_dir() / "settings.ini"), QSettings.Format.IniFormat)
        self.report = None
        self.project = Project()          # label corrections and the runs, for Compare runs
        self.engine = None
        self.run: TrainingRun | None = None
        self.training_task: Task | None = None
        self.tasks = TaskGroup(self)
        self._scan_task: Task | None = None
        self._model_task: Task | None = None
        self._loading_started = False
        self.setWindowTitle(APP_NAME)
        self.data_panel = DataPanel()
        self.model_panel = ModelPanel()
        self.train_panel = TrainPanel()
        self.results_panel = ResultsPanel()
        self.predict_panel = PredictPanel(self._start_task)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for number, (panel, title) in enumerate(((self.data_panel, "Data"), (self.model_panel, "Model"),
                                                 (self.train_panel, "Train"), (self.results_panel, "Results"),
                                                 (self.predict_panel, "Try it"))):
            self.tabs.addTab(panel, f"{number + 1}  {title}")
        self.setCentralWidget(self.tabs)
        self._make_log_dock()
        self.projects = ProjectController(self)        # File → New/Open/Save/Recent, autosave
        self._make_actions()
        self._connect_panels()
        self.engine_status = QLabel("Loading the training engine…")
        self.statusBar().addPermanentWidget(self.engine_status)
        self._restore_settings()
        self._update_actions()
        self.installEventFilter(self)
        QTimer.singleShot(LOAD_ANYWAY_MS, self._load_heavy_parts)

    # -- construction ------------------------------------------------------------------------
    def _make_log_dock(self) -> None:
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)

    def _action(self, text: str, slot, shortcut=None, icon=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        return action

    def _make_actions(self) -> None:
        pixmap = QStyle.StandardPixmap
        self.open_folder_action = self._action("&Open folder…", self.open_folder_dialog, QKeySequence.StandardKey.Open,
                                               pixmap.SP_DirOpenIcon, "Open a folder of class sub-folders")
        self.open_file_action = self._action("Open .&zip or CSV…", self.open_file_dialog, "Ctrl+Shift+O",
                                             pixmap.SP_FileIcon)
        self.demo_action = self._action("Open &demo dataset", self.open_demo, None, None)
        self.start_action = self._action("&Start training", self.start_training, "F5", pixmap.SP_MediaPlay)
        self.pause_action = self._action("&Pause", self.toggle_pause, "F6", pixmap.SP_MediaPause)
        self.pause_action.setCheckable(True)
        self.stop_action = self._action("S&top training", self.stop_training, "Shift+F5", pixmap.SP_MediaStop)
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.about_action = self._action("&About TransferLab", self.show_about)
        self.export_action = self._action("&Export model…", self.show_export_dialog, "Ctrl+E", None,
                                          "Export the latest run as a verified ONNX file")
        self.export_action.setEnabled(False)
        menu = self.menuBar().addMenu("&File")
        self.projects.add_to_menu(menu)
        menu.addSeparator()
        for action in (self.open_folder_action, self.open_file_action, self.demo_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.export_action)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        menu = self.menuBar().addMenu("&Training")
        for action in (self.start_action, self.pause_action, self.stop_action):
            menu.addAction(action)
        menu = self.menuBar().addMenu("&View")
        menu.addAction(self.log_dock.toggleViewAction())
        self.menuBar().addMenu("&Help").addAction(self.about_action)
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (self.open_folder_action, self.start_action, self.pause_action, self.stop_action):
            toolbar.addAction(action)

    def _connect_panels(self) -> None:
        data, model, train = self.data_panel, self.model_panel, self.train_panel
        data.drop_zone.paths_dropped.connect(self.load_dataset)
        data.open_folder_button.clicked.connect(self.open_folder_dialog)
        data.open_file_button.clicked.connect(self.open_file_dialog)
        data.demo_button.clicked.connect(self.open_demo)
        data.cancel_scan_requested.connect(self.cancel_scan)
        data.next_button.clicked.connect(self.next_step)
        model.backbone_changed.connect(self._on_backbone_changed)
        model.next_button.clicked.connect(self.next_step)
        train.start_requested.connect(self.start_training)
        train.pause_requested.connect(self.set_paused)
        train.stop_requested.connect(self.stop_training)
        self.results_panel.correction_requested.connect(self.record_correction)
        self.results_panel.retrain_requested.connect(self.start_training)
        self.projects.latest_run_changed.connect(self._on_latest_run_changed)
        self.projects.opened.connect(self._on_project_opened)

    def next_step(self) -> None:
        self.tabs.setCurrentIndex(self.tabs.currentIndex() + 1)

    # -- start-up: show first, then load the heavy parts ------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self and event.type() == QEvent.Type.Paint:
            self.removeEventFilter(self)
            QTimer.singleShot(0, self._load_heavy_parts)      # after this first frame is on screen
        return super().eventFilter(watched, event)

    def _load_heavy_parts(self) -> None:
        if self._loading_started:
            return
        self._loading_started = True
        self.train_panel.create_plots()
        task = self._start_task(load_engine)
        task.succeeded.connect(self._on_engine_loaded)
        task.failed.connect(self._on_engine_failed)

    def _on_engine_failed(self, message: str, details: str) -> None:
        self._report_error("The training engine failed to load", message, details)

    def _on_engine_loaded(self, engine) -> None:
        self.engine = engine
        self.engine_status.setText("Engine ready")
        self.train_panel.settings.set_defaults(engine.defaults, engine.choices)
        backbone = self.settings.value("model/backbone", engine.default_backbone)
        self.model_panel.set_backbones(engine.backbones, backbone)
        self._update_actions()
        self.engine_ready.emit()

    # -- tasks -------------------------------------------------------------------------------
    def _start_task(self, job, control=None) -> Task:
        return self.tasks.start(job, control)

    def shutdown(self) -> None:
        """Cancel every job and wait for its thread: nothing may outlive the window."""
        self.tasks.shutdown()
        self.results_panel.shutdown()

    # -- data --------------------------------------------------------------------------------
    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder", self._last_folder())
        if folder:
            self.load_dataset([folder])

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset file", self._last_folder(),
                                              "Datasets (*.zip *.csv)")
        if path:
            self.load_dataset([path])

    def open_demo(self) -> None:
        self.load_dataset([str(demo_dataset())])

    def _last_folder(self) -> str:
        return str(self.settings.value("data/last_folder", str(Path.home())))

    def load_dataset(self, paths: list[str]) -> Task:
        """Scan folders, zips or CSVs on a worker; `scan_finished` or `scan_failed` follows."""
        if self._scan_task is not None:
            self._scan_task.abandon()
        self.settings.setValue("data/last_folder", str(Path(paths[0]).parent))
        self.tabs.setCurrentWidget(self.data_panel)
        self.data_panel.set_scanning(True)
        self.statusBar().showMessage(f"Scanning {', '.join(Path(p).name for p in paths)}…")
        control = RunControl()
        self._scan_sources = [str(p) for p in paths]      # the project's dataset, once the scan succeeds
        task = self._scan_task = self._start_task(partial(scan, list(paths), control), control)
        task.progress.connect(self.data_panel.set_progress)
        task.succeeded.connect(self._on_scan_succeeded)
        task.failed.connect(self._on_scan_failed)
        task.cancelled.connect(self._on_scan_cancelled)
        return task

    def cancel_scan(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()

    def _on_scan_succeeded(self, result) -> None:
        self._scan_task = None
        self.data_panel.set_scanning(False)
        self.data_panel.show_report(result)
        classes_changed = self.report is None or self.report.classes != result.report.classes
        self.report = result.report
        self.project.dataset_sources = self._scan_sources
        self.log(f"Dataset: {len(self.report.samples):,} images, {len(self.report.classes)} classes, "
                 f"{len(self.report.problems)} problem(s) from {self.report.root}")
        self.statusBar().showMessage("Dataset ready", 5000)
        if classes_changed:
            self._request_model()
        self._update_actions()
        self.scan_finished.emit(self.report)

    def _on_scan_failed(self, message: str, _details: str) -> None:
        self._scan_task = None
        self.data_panel.set_scanning(False)
        self.data_panel.show_error(message)
        self.log(f"Dataset rejected: {message}")
        self.scan_failed.emit(message)

    def _on_scan_cancelled(self) -> None:
        self._scan_task = None
        self.data_panel.set_scanning(False)
        self.data_panel.summary.setText("Scan cancelled.")

    # -- model -------------------------------------------------------------------------------
    def _on_backbone_changed(self, backbone: str) -> None:
        self.settings.setValue("model/backbone", backbone)
        self._request_model()

    def _request_model(self) -> None:
        """Build the chosen backbone (head sized for the dataset) on a worker for the layer tree."""
        backbone = self.model_panel.backbone
        if backbone is None:
            return
        num_classes = len(self.report.classes) if self.report else IMAGENET_CLASSES
        if self._model_task is not None:
            self._model_task.abandon()   # the user picked another backbone meanwhile
        task = self._model_task = self._start_task(partial(build_model, backbone, num_classes))
        task.succeeded.connect(self._on_model_built)
        task.failed.connect(self._on_model_failed)
        self._update_actions()

    def _on_model_failed(self, message: str, details: str) -> None:
        self._model_task = None
        self._report_error("The model cannot be built", message, details)

    def _on_model_built(self, info) -> None:
        self._model_task = None
        previous = self.model_panel.info
        same_backbone = previous is not None and previous.backbone == info.backbone
        self.model_panel.set_model(info, previous.tree.frozen_parameter_names() if same_backbone else None)
        self.train_panel.settings.set_image_sizes(info.input_size)
        self._update_actions()
        self.model_ready.emit(info)

    # -- training ----------------------------------------------------------------------------
    def training_config(self):
        """TrainConfig from the form, the model step and the layer tree's exact freeze state."""
        from engine.training.config import TrainConfig
        config = TrainConfig(**self.train_panel.settings.values(), backbone=self.model_panel.backbone,
                             weights=self.model_panel.weights_choice, freeze="none",
                             frozen_parameters=self.model_panel.frozen_parameter_names())
        config.validate()
        return config

    def start_training(self) -> TrainingRun | None:
        """Start a run on a worker; returns it (None when not ready or the settings are invalid).

        `training_started` is emitted before the thread starts, so a listener misses no event.
        """
        if not self._can_start():
            return None
        try:
            config = self.training_config()
        except ValueError as exc:
            self.train_panel.show_error(str(exc), heading="Cannot start training:")
            return None
        run_dir = user_data_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        report = apply_corrections(self.report, self.project.corrections)     # never touches the files
        self.run = TrainingRun(report, config, run_dir, TrainingEvents())
        self._connect_run(self.run.events)
        task = self.training_task = self.tasks.track(Task(self.run, self.run.control, self))
        self.run.events.setParent(task)          # goes with the task once its thread has ended
        task.succeeded.connect(self._on_training_succeeded)
        task.failed.connect(self._on_training_failed)
        task.done.connect(self._on_training_thread_done)
        self.train_panel.on_run_started()
        self.tabs.setCurrentWidget(self.train_panel)
        self.log(f"Training {config.backbone} for {config.epochs} epochs into {run_dir}")
        self._update_actions()
        self.training_started.emit(self.run)
        task.start()
        return self.run

    def _connect_run(self, events: TrainingEvents) -> None:
        panel = self.train_panel
        events.fit_started.connect(panel.on_fit_started)
        events.stage_progress.connect(panel.on_stage_progress)
        events.batch_ended.connect(panel.on_batch_ended)
        events.epoch_ended.connect(panel.on_epoch_ended)
        events.epoch_ended.connect(self._log_epoch)
        events.epoch_ended.connect(self.epoch_ended)

    def _log_epoch(self, epoch: int, logs: dict) -> None:
        self.log(f"epoch {epoch}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.3f}, "
                 f"val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}"
                 f"{' (best so far)' if logs['best'] else ''}")

    def set_paused(self, paused: bool) -> None:
        if self.training_task is None:
            return
        if paused:
            self.training_task.control.pause()
        else:
            self.training_task.control.resume()
        self.pause_action.setChecked(paused)
        if self.train_panel.pause_button.isChecked() != paused:
            self.train_panel.pause_button.setChecked(paused)
        self.statusBar().showMessage("Training paused" if paused else "Training resumed", 3000)

    def toggle_pause(self) -> None:
        self.set_paused(self.pause_action.isChecked())

    def stop_training(self) -> None:
        """Ask the run to stop after the current batch; the best checkpoint so far stays on disk."""
        if self.training_task is not None:
            self.training_task.cancel()
            self.train_panel.stage.setText("Stopping after this batch…")

    def _on_training_succeeded(self, result) -> None:
        self._record_run(result)
        self.results_panel.show_result(result)
        accuracy = result.metrics.get("val_accuracy")
        self.log(f"Training {result.status}" + (f": validation accuracy {accuracy:.3f}" if accuracy is not None else ""))
        self.train_panel.stage.setText(f"Training {result.status}. See the Results step.")
        if result.status != "cancelled":
            self.train_panel.progress.setValue(self.train_panel.progress.maximum())
        self.training_finished.emit(result)

    def _record_run(self, result) -> None:
        """Add the finished (or stopped) run to the project, for Compare runs."""
        config = self.run.config.to_dict()
        if self.run.trainer is not None:            # its thread has ended: safe to read here
            config["params_total"], config["params_trainable"] = self.run.trainer.tree.counts()
        previous = next((r for r in self.project.runs if r.run_dir == result.run_dir), None)
        self.project.add_run(RunRecord(result.run_dir, previous.created if previous else
                                       datetime.now().isoformat(timespec="seconds"),
                                       self.run.config.backbone, result.status, result.metrics.get("val_accuracy"),
                                       result.metrics.get("test_accuracy"), config))
        self.results_panel.compare.set_runs(self.project.runs)

    def record_correction(self, path: str, action: str, label: str = "") -> None:
        """Exclude, relabel or restore one image in the project; the next run applies it."""
        if action == "exclude":
            self.project.exclude(path)
        elif action == "relabel":
            self.project.relabel(path, label)
        else:
            self.project.restore(path)
        self.results_panel.set_corrections(self.project.corrections)
        described = {"exclude": "excluded from training", "relabel": f"moved to class {label}",
                     "restore": "restored"}[action]
        self.log(f"{Path(path).name} {described} (applies from the next run)")
        self.projects.autosave()                 # the correction is in the project file right away

    # -- project, export, try it ---------------------------------------------------------------
    def _on_project_opened(self, project) -> None:
        self.results_panel.compare.set_runs(project.runs)
        self.results_panel.set_corrections(project.corrections)

    def _on_latest_run_changed(self, run_dir: str) -> None:
        self.predict_panel.set_latest_run(run_dir)
        self.export_action.setEnabled(bool(run_dir))

    def show_export_dialog(self) -> ExportDialog | None:
        """Export the newest finished run (non-modal: the window stays usable meanwhile)."""
        run = latest_run(self.project)
        if run is None:
            return None
        folder = Path(str(self.settings.value("export/last_folder", str(Path.home()))))
        dialog = ExportDialog(run.run_dir, str(folder / f"{run.backbone}-{Path(run.run_dir).name}.onnx"),
                              self._start_task, self)
        dialog.export_finished.connect(self._remember_export_folder)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _remember_export_folder(self, outcome) -> None:
        written = outcome.onnx.path if outcome.onnx is not None else outcome.weights
        self.settings.setValue("export/last_folder", str(Path(written).parent))

    def _on_training_failed(self, message: str, details: str) -> None:
        self.train_panel.show_error(message, details)
        self.log(f"Training failed: {message}")
        self.training_failed.emit(message)

    def _on_training_thread_done(self, _task: Task) -> None:
        self.training_task = None
        self.train_panel.plots.stop()
        self._update_actions()

    # -- state of actions and panels ---------------------------------------------------------
    def _can_start(self) -> bool:
        return (self.training_task is None and self.report is not None and self.engine is not None
                and self.model_panel.info is not None and self._model_task is None)

    def _update_actions(self) -> None:
        training = self.training_task is not None
        self.start_action.setEnabled(self._can_start())
        self.pause_action.setEnabled(training)
        self.stop_action.setEnabled(training)
        if not training:
            self.pause_action.setChecked(False)
        self.train_panel.set_running(training, self._can_start())
        self.results_panel.retrain_button.setEnabled(self._can_start())
        self.model_panel.set_editable(not training)
        self.data_panel.set_inputs_enabled(not training)
        for action in (self.open_folder_action, self.open_file_action, self.demo_action):
            action.setEnabled(not training)

    # -- messages ----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """The Log dock, and the log file the user can send us."""
        logger.info(message)
        self.log_view.appendPlainText(f"{datetime.now():%H:%M:%S}  {message}")

    def _report_error(self, title: str, message: str, details: str = "") -> None:
        self.log(f"{title}: {message}")
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, parent=self)
        if details:
            box.setDetailedText(details)
        box.open()

    def show_about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME} {__version__}</h3><p>Fine-tune a pretrained image model on "
                          "your own labelled photos, on an ordinary computer, without writing code.</p>"
                          "<p>Backbones from timm; demo images from Fashion-MNIST (MIT licence).</p>")

    # -- settings and closing ----------------------------------------------------------------
    def _restore_settings(self) -> None:
        screen = QApplication.primaryScreen().availableGeometry()
        self.resize(min(1280, int(0.9 * screen.width())), min(820, int(0.9 * screen.height())))
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        else:
            self.resizeDocks([self.log_dock], [120], Qt.Orientation.Vertical)
        for name, splitter in self._splitters().items():
            saved = self.settings.value(f"window/splitter_{name}")
            if saved is not None:
                splitter.restoreState(saved)

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        for name, splitter in self._splitters().items():
            self.settings.setValue(f"window/splitter_{name}", splitter.saveState())
        self.settings.sync()

    def _splitters(self) -> dict:
        return {"data": self.data_panel.splitter, "model": self.model_panel.splitter,
                "train": self.train_panel.splitter}

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.training_task is not None and not self._confirm_stop():
            event.ignore()
            return
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            self.shutdown()
        finally:
            QApplication.restoreOverrideCursor()
        if self.project.dataset_sources or self.project.runs:
            self.projects.autosave()     # nothing lost: an unsaved project reopens from File → Recent
        self._save_settings()
        event.accept()

    def _confirm_stop(self) -> bool:
        answer = QMessageBox.question(
            self, "Stop training?", "A model is training. Stop it and quit?\n\n"
            "The best checkpoint saved so far is kept in the run folder.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
