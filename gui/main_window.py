"""The main window: Data → Model → Train → Results → Try it, laid out and wired; no engine work of its own.

It owns the application state (`gui.state.AppState`) and the one task group every background job runs
on. The work of each step is a controller's (`gui.controllers`): scanning, building the model, assessing
backbones, training; the window shows what they report (status bar, Log, message boxes) and keeps the
actions' enabled state in step with the state. Torch and pyqtgraph load after the first paint, so the
window appears about as fast as an empty one.
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QLabel, QMainWindow, QMessageBox, QPlainTextEdit, QStyle,
                               QTabWidget)

from engine import __version__
from engine.core import modality as modalities
from engine.core.paths import APP_NAME, user_data_dir
from gui.controllers import (AssessController, Controller, DeepCheckController, LabellingController,
                             ModelController, ScanController, TrainController)
from gui.data_panel import DataPanel
from gui.export_dialog import ExportDialog
from gui.gc_guard import GuiThreadGarbageCollector
from gui.model_panel import ModelPanel
from gui.predict_panel import PredictPanel
from gui.project_io import ProjectController
from gui.results_panel import ResultsPanel
from gui.state import AppState
from gui.train_panel import TrainPanel
from gui.workers import Task, TaskGroup

logger = logging.getLogger(__name__)

LOAD_ANYWAY_MS = 2000             # load torch and the plots even if no paint comes (minimised start)


class MainWindow(QMainWindow):
    """The controllers' signals are the window's (`scan_finished`, `model_ready`, `training_started`…), so
    tests and scripts wait for each step without sleeping."""

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self._gc = GuiThreadGarbageCollector(self)   # worker threads must never free Qt objects
        self.settings = settings or QSettings(str(user_data_dir() / "settings.ini"), QSettings.Format.IniFormat)
        self.state = AppState()
        self.tasks = TaskGroup(self)
        self._loading_started = False
        self.setWindowTitle(APP_NAME)
        self.data_panel = DataPanel(self.state)
        self.model_panel = ModelPanel(self.state)
        self.train_panel = TrainPanel(self.state)
        self.results_panel = ResultsPanel(self.state, self.tasks)
        self.predict_panel = PredictPanel(self.state, self.tasks)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for number, (panel, title) in enumerate(((self.data_panel, "Data"), (self.model_panel, "Model"),
                                                 (self.train_panel, "Train"), (self.results_panel, "Results"),
                                                 (self.predict_panel, "Try it"))):
            self.tabs.addTab(panel, f"{number + 1}  {title}")
        self.setCentralWidget(self.tabs)
        self._make_log_dock()
        self.projects = ProjectController(self.state, self.settings, self)   # File → New/Open/Save/Recent
        self._make_controllers()
        self._make_actions()
        self._connect_panels()
        self._connect_state()
        self.engine_status = QLabel("Loading the training engine…")
        self.statusBar().addPermanentWidget(self.engine_status)
        self._restore_settings()
        self._update_actions()
        self.installEventFilter(self)
        QTimer.singleShot(LOAD_ANYWAY_MS, self._load_heavy_parts)

    # -- construction ------------------------------------------------------------------------
    def _make_controllers(self) -> None:
        """One controller per workflow; their signals become the window's, their messages its own."""
        state, tasks = self.state, self.tasks
        self.scans = ScanController(state, tasks, self.settings, self.data_panel)
        self.deep_checks = DeepCheckController(state, tasks, self.data_panel)
        self.labelling = LabellingController(state, tasks, self.data_panel)
        self.models = ModelController(state, tasks, self.settings, self)
        self.assessment = AssessController(state, tasks, self.model_panel.assessment)
        self.training = TrainController(state, tasks, self.train_panel, self.results_panel)
        self.scan_finished, self.scan_failed = self.scans.scan_finished, self.scans.scan_failed
        self.deep_check_finished = self.deep_checks.deep_check_finished
        self.deep_check_failed = self.deep_checks.deep_check_failed
        self.engine_ready, self.model_ready = self.models.engine_ready, self.models.model_ready
        self.assessment_finished = self.assessment.assessment_finished
        self.assessment_failed = self.assessment.assessment_failed
        training = self.training
        self.training_started, self.training_finished = training.training_started, training.training_finished
        self.training_failed, self.epoch_ended = training.training_failed, training.epoch_ended
        self.training_config, self.start_training = training.training_config, training.start_training
        self.resume_training, self.set_paused = training.resume_training, training.set_paused
        self.record_correction = training.record_correction
        self.labelling_ready, self.labelling_failed = self.labelling.labelling_ready, self.labelling.labelling_failed
        for controller in (self.scans, self.deep_checks, self.labelling, self.models, self.assessment, self.training):
            self._show_messages_of(controller)

    def _show_messages_of(self, controller: Controller) -> None:
        controller.logged.connect(self.log)
        controller.status.connect(self.statusBar().showMessage)
        controller.status_withdrawn.connect(self._withdraw_status)
        controller.error.connect(self._report_error)
        controller.step_wanted.connect(self.tabs.setCurrentWidget)

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
        self.open_folder_action = self._action("&Open folder…", self.scans.open_folder_dialog,
                                               QKeySequence.StandardKey.Open, pixmap.SP_DirOpenIcon,
                                               "Open a folder of class sub-folders")
        self.open_file_action = self._action("Open .&zip or CSV…", self.scans.open_file_dialog, "Ctrl+Shift+O",
                                             pixmap.SP_FileIcon)
        self.demo_action = self._action("Open &demo dataset", self.scans.open_demo, None, None)
        self.start_action = self._action("&Start training", self.training.start_training, "F5", pixmap.SP_MediaPlay)
        self.pause_action = self._action("&Pause", self.toggle_pause, "F6", pixmap.SP_MediaPause)
        self.pause_action.setCheckable(True)
        self.stop_action = self._action("S&top training", self.training.stop_training, "Shift+F5", pixmap.SP_MediaStop)
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
        """The panels' intent signals the controllers do not take themselves."""
        self.data_panel.next_requested.connect(self.next_step)
        self.model_panel.next_requested.connect(self.next_step)
        self.training.paused_changed.connect(self.pause_action.setChecked)
        self.engine_ready.connect(lambda: self.engine_status.setText("Engine ready"))
        self.projects.logged.connect(self.log)
        self.projects.saved.connect(self._on_project_saved)
        self.projects.opened.connect(self._on_project_opened)

    def _connect_state(self) -> None:
        """What the window shows of the state: which actions may run, the title, whether to export."""
        state = self.state
        for signal in (state.events.engine, state.events.report, state.events.backbone, state.events.model,
                       state.events.active_run, state.events.assessing):
            signal.connect(self._update_actions)
        state.events.latest_run.connect(self._on_latest_run_changed)
        state.events.project_path.connect(self._show_title)

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
        self.models.load_engine()

    def shutdown(self) -> None:
        """Cancel every job and wait for its thread: nothing may outlive the window."""
        self.tasks.shutdown()

    # -- what tests and scripts call ---------------------------------------------------------------
    @property
    def training_task(self) -> Task | None:
        """The run's task until its thread has ended."""
        return self.training.slot.task

    @property
    def search_backbones(self) -> list[str] | None:
        return self.state.search_backbones

    @search_backbones.setter
    def search_backbones(self, names: list[str] | None) -> None:
        self.state.search_backbones = names

    def toggle_pause(self) -> None:
        self.training.set_paused(self.pause_action.isChecked())

    # -- project, export ------------------------------------------------------------------------
    def _show_title(self, path: str | None) -> None:
        self.setWindowTitle(f"{Path(path).stem} – {APP_NAME}" if path else APP_NAME)

    def _on_project_saved(self, path: str) -> None:
        self.statusBar().showMessage(f"Project saved to {path}", 5000)

    def _on_project_opened(self, path: str) -> None:
        self.statusBar().showMessage(f"Project {Path(path).name} opened", 5000)
        if self.state.runs and self.training.offer_resume(self.state.runs[-1].run_dir):
            self.tabs.setCurrentWidget(self.train_panel)

    def _on_latest_run_changed(self, record) -> None:
        self.export_action.setEnabled(record is not None)

    def show_export_dialog(self) -> ExportDialog | None:
        """Export the newest finished run (non-modal: the window stays usable meanwhile)."""
        run = self.state.latest_run
        if run is None:
            return None
        folder = Path(str(self.settings.value("export/last_folder", str(Path.home()))))
        modality = modalities.for_backbone(run.backbone)
        name = modality.backbone_title(run.backbone)
        dialog = ExportDialog(run.run_dir, str(folder / f"{name}-{Path(run.run_dir).name}.onnx"),
                              self.tasks, self, text=modality.sample_view == modalities.TEXT_VIEW,
                              ensemble=bool((run.config or {}).get("ensemble_members")))
        dialog.export_finished.connect(self._remember_export_folder)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _remember_export_folder(self, outcome) -> None:
        written = outcome.onnx.path if outcome.onnx is not None else outcome.weights
        self.settings.setValue("export/last_folder", str(Path(written).parent))

    # -- state of actions and panels ---------------------------------------------------------
    def _update_actions(self) -> None:
        training = self.state.active_run is not None
        self.start_action.setEnabled(self.state.can_train())
        self.pause_action.setEnabled(training)
        self.stop_action.setEnabled(training)
        if not training:
            self.pause_action.setChecked(False)
        self.train_panel.set_running(training, self.state.can_train())
        self.results_panel.set_can_retrain(self.state.can_train())
        for action in (self.open_folder_action, self.open_file_action, self.demo_action):
            action.setEnabled(not training)

    # -- messages ----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """The Log dock, and the log file the user can send us."""
        logger.info(message)
        self.log_view.appendPlainText(f"{datetime.now():%H:%M:%S}  {message}")

    def _withdraw_status(self, start: str) -> None:
        """A status-bar message that no longer holds goes (another one that replaced it stays)."""
        if self.statusBar().currentMessage().startswith(start):
            self.statusBar().clearMessage()

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
        self.training.closing = True
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            self.shutdown()
        finally:
            QApplication.restoreOverrideCursor()
        if self.state.dataset_sources or self.state.runs:
            self.projects.autosave()     # nothing lost: an unsaved project reopens from File → Recent
        self._save_settings()
        event.accept()

    def _confirm_stop(self) -> bool:
        answer = QMessageBox.question(
            self, "Stop training?", "A model is training. Stop it and keep it for later?\n\n"
            "The checkpoint and the training state are kept in the run folder: reopen this project "
            "and the Train step offers to resume where it stopped.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes
