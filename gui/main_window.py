"""The main window: Data → Model → Train → Results, with every engine job on a worker thread.

It owns the application state (`gui.state.AppState`) and the one task group every background job
runs on; panels render the state and write the user's intent into it. The window reacts to the state
by starting engine work: it scans sources, builds the chosen backbone for the dataset's classes, and
trains. Torch and pyqtgraph load after the first paint, so the window appears about as fast as an
empty one.
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
from engine.models.text_catalog import is_text_backbone
from engine.project import apply_corrections
from gui.data_panel import DataPanel
from gui.export_dialog import ExportDialog
from gui.gc_guard import GuiThreadGarbageCollector
from gui.jobs import SearchRun, TrainingEvents, TrainingRun, assess, build_model, load_engine, scan
from gui.model_panel import ModelPanel
from gui.predict_panel import PredictPanel
from gui.project_io import ProjectController
from gui.results_panel import ResultsPanel
from gui.search_board import score_text
from gui.state import AppState
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
    training_finished = Signal(object)    # engine FitResult (SearchResult for an automatic search)
    training_failed = Signal(str)
    assessment_finished = Signal(object)  # the assessment rows (dicts), best first
    assessment_failed = Signal(str)

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self._gc = GuiThreadGarbageCollector(self)   # worker threads must never free Qt objects
        self.settings = settings or QSettings(str(user_data_dir() / "settings.ini"), QSettings.Format.IniFormat)
        self.state = AppState()
        self.tasks = TaskGroup(self)
        self.training_task: Task | None = None
        self._scan_task: Task | None = None
        self._scan_sources: list[str] = []
        self._model_task: Task | None = None
        self._assess_task: Task | None = None
        self.search_backbones: list[str] | None = None   # None: every backbone with offline weights (tests narrow it)
        self._run_config: dict = {}           # the active run's record: its config and parameter counts
        self._closing = False                 # set once the window is closing: no more offers
        self._best_accuracy: float | None = None
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
        """The panels' intent signals: what the user asks the window to do."""
        data, train = self.data_panel, self.train_panel
        data.load_requested.connect(self.load_dataset)
        data.open_folder_requested.connect(self.open_folder_dialog)
        data.open_file_requested.connect(self.open_file_dialog)
        data.demo_requested.connect(self.open_demo)
        data.cancel_scan_requested.connect(self.cancel_scan)
        data.columns_chosen.connect(self.rescan_with_columns)
        data.next_requested.connect(self.next_step)
        self.model_panel.next_requested.connect(self.next_step)
        self.model_panel.assessment.assess_requested.connect(self.assess_backbones)
        self.model_panel.assessment.cancel_requested.connect(self.cancel_assessment)
        train.start_requested.connect(self.start_training)
        train.pause_requested.connect(self.set_paused)
        train.stop_requested.connect(self.stop_training)
        train.resume_offer.resume_requested.connect(self.resume_training)
        train.settings.refused.connect(self.log)
        self.results_panel.correction_requested.connect(self.record_correction)
        self.results_panel.retrain_requested.connect(self.start_training)
        self.projects.logged.connect(self.log)
        self.projects.saved.connect(self._on_project_saved)
        self.projects.opened.connect(self._on_project_opened)

    def _connect_state(self) -> None:
        """What the window does when the state changes: the engine work that makes it true."""
        state = self.state
        state.events.dataset_sources.connect(self._scan_opened_sources)
        state.events.backbone.connect(self._on_backbone_changed)
        state.events.report.connect(self._abandon_assessment)
        for signal in (state.events.report, state.events.scanning):
            signal.connect(self._request_model)
        for signal in (state.events.engine, state.events.report, state.events.backbone, state.events.model,
                       state.events.active_run):
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
        task = self.tasks.start(load_engine)
        task.succeeded.connect(self._on_engine_loaded)
        task.failed.connect(self._on_engine_failed)

    def _on_engine_failed(self, message: str, details: str) -> None:
        self._report_error("The training engine failed to load", message, details)

    def _on_engine_loaded(self, engine) -> None:
        """The panels fill their lists and settings from the engine; the last backbone used comes back
        (unless a project opened meanwhile chose one)."""
        self.engine_status.setText("Engine ready")
        self.state.engine = engine
        if self.state.backbone is None:
            saved = str(self.settings.value("model/backbone", engine.default_backbone))
            self.state.choose_backbone(saved if self.state.backbone_row(saved) else engine.default_backbone)
        self._match_backbone_to_data()
        self.engine_ready.emit()

    def _match_backbone_to_data(self) -> None:
        """Texts train a text encoder and images an image backbone: a dataset of the other kind brings back
        the last one of its kind used (else the default)."""
        state, engine = self.state, self.state.engine
        if engine is None or state.report is None or state.is_text == is_text_backbone(state.backbone):
            return
        if state.is_text:
            saved = str(self.settings.value("model/text_encoder", engine.default_text_encoder))
            state.choose_backbone(saved if state.backbone_row(saved) else engine.default_text_encoder)
        else:
            saved = str(self.settings.value("model/backbone", engine.default_backbone))
            state.choose_backbone(saved if state.backbone_row(saved) else engine.default_backbone)

    def shutdown(self) -> None:
        """Cancel every job and wait for its thread: nothing may outlive the window."""
        self.tasks.shutdown()

    # -- data --------------------------------------------------------------------------------
    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder", self._last_folder())
        if folder:
            self.load_dataset([folder])

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset file", self._last_folder(),
                                              "Datasets (*.zip *.csv *.tsv *.jsonl *.ndjson);;"
                                              "Images: .zip or CSV of path,label (*.zip *.csv);;"
                                              "Texts: CSV, TSV or JSONL of text,label (*.csv *.tsv *.jsonl *.ndjson)")
        if path:
            self.load_dataset([path])

    def open_demo(self) -> None:
        self.load_dataset([str(demo_dataset())])

    def _last_folder(self) -> str:
        return str(self.settings.value("data/last_folder", str(Path.home())))

    def load_dataset(self, paths: list[str], text_columns: dict | None = None) -> Task:
        """Scan folders, zips or CSVs of images, or a table or folder of texts, on a worker; `scan_finished`
        or `scan_failed` follows. `text_columns`: a table of texts' columns as the user chose them."""
        if self._scan_task is not None:
            self._scan_task.abandon()
        self.settings.setValue("data/last_folder", str(Path(paths[0]).parent))
        self.tabs.setCurrentWidget(self.data_panel)
        self.statusBar().showMessage(f"Scanning {', '.join(Path(p).name for p in paths)}…")
        control = RunControl()
        self._scan_sources = [str(p) for p in paths]      # the dataset's sources, once the scan succeeds
        self.state.text_columns = text_columns
        self.state.scanning = True
        encoder = self.state.backbone if is_text_backbone(self.state.backbone) else None
        task = self._scan_task = self.tasks.start(partial(scan, list(self._scan_sources), control,
                                                          encoder=encoder, text_columns=text_columns), control)
        task.progress.connect(self.data_panel.set_progress)
        task.succeeded.connect(self._on_scan_succeeded)
        task.failed.connect(self._on_scan_failed)
        task.cancelled.connect(self._on_scan_cancelled)
        return task

    def _scan_opened_sources(self) -> None:
        """Sources set with no report (an opened project) are scanned: those still on disk."""
        if self.state.report is None:
            existing = [s for s in self.state.dataset_sources if Path(s).exists()]
            if existing:
                self.load_dataset(existing, self.state.text_columns)

    def rescan_with_columns(self, columns: dict) -> Task | None:
        """The user chose other text/label columns of the table of texts: scan it again with them."""
        sources = self._scan_sources or list(self.state.dataset_sources)   # the table just scanned, even if it failed
        if not sources or self.state.active_run is not None:
            return None
        return self.load_dataset(list(sources), columns)

    def cancel_scan(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()

    def _on_scan_succeeded(self, result) -> None:
        """The report, then its sources, then the end of scanning (which builds the model for its classes)."""
        if result.report is None:                # a table of texts read with unusable columns: choose others
            self.data_panel.show_columns(result.columns, self.state.text_columns)
            self._on_scan_failed(result.error, "")
            return
        self._scan_task = None
        report = self.state.report = result.report
        self._match_backbone_to_data()
        self.state.dataset_sources = self._scan_sources
        self.data_panel.show_thumbnails(result.thumbnails)
        self.data_panel.show_columns(result.columns, self.state.text_columns)
        noun = "texts" if report.modality == "text" else "images"
        self.log(f"Dataset: {len(report.samples):,} {noun}, {len(report.classes)} classes, "
                 f"{len(report.problems)} problem(s) from {report.root}")
        self.statusBar().showMessage("Dataset ready", 5000)
        self.state.scanning = False
        self.scan_finished.emit(report)

    def _on_scan_failed(self, message: str, _details: str) -> None:
        self._scan_task = None
        self.state.scanning = False
        self.data_panel.show_error(message)
        self.log(f"Dataset rejected: {message}")
        self.scan_failed.emit(message)

    def _on_scan_cancelled(self) -> None:
        self._scan_task = None
        self.state.scanning = False
        self.data_panel.show_cancelled()

    # -- model -------------------------------------------------------------------------------
    def _on_backbone_changed(self, backbone: str) -> None:
        self.settings.setValue("model/text_encoder" if is_text_backbone(backbone) else "model/backbone", backbone)
        self._request_model()

    def _request_model(self) -> None:
        """Build the chosen backbone, its head sized for the dataset, on a worker for the layer tree.
        While a scan runs the classes are not known yet: the scan's end asks again."""
        state = self.state
        if state.engine is None or state.backbone is None or state.scanning or state.model_is_current():
            return
        num_classes = len(state.report.classes) if state.report else IMAGENET_CLASSES
        if self._model_task is not None:
            self._model_task.abandon()   # the user picked another backbone meanwhile
        task = self._model_task = self.tasks.start(partial(build_model, state.backbone, num_classes))
        task.succeeded.connect(self._on_model_built)
        task.failed.connect(self._on_model_failed)

    def _on_model_failed(self, message: str, details: str) -> None:
        self._model_task = None
        self._report_error("The model cannot be built", message, details)

    def _on_model_built(self, info) -> None:
        self._model_task = None
        self.state.use_model(info)
        self.model_ready.emit(info)

    # -- backbone assessment -------------------------------------------------------------------
    def assess_backbones(self) -> Task | None:
        """Score every backbone with offline weights on this dataset (as corrected), at the Train step's image
        size; `assessment_finished` or `assessment_failed` follows (None: no dataset, or busy)."""
        state = self.state
        if (state.report is None or state.engine is None or state.active_run is not None or self._assess_task
                or state.is_text):           # the assessment scores image backbones
            return None
        report = apply_corrections(state.report, dict(state.corrections))
        control = RunControl()
        job = partial(assess, report, self.search_backbones, state.settings.get("image_size"), control)
        task = self._assess_task = self.tasks.start(job, control)
        panel = self.model_panel.assessment
        panel.set_running(True)
        task.progress.connect(panel.set_progress)
        task.succeeded.connect(self._on_assessed)
        task.failed.connect(self._on_assessment_failed)
        task.cancelled.connect(self._on_assessment_cancelled)
        self.log("Assessing the backbones on this dataset…")
        self._update_actions()
        return task

    def cancel_assessment(self) -> None:
        if self._assess_task is not None:
            self._assess_task.cancel()

    def _abandon_assessment(self) -> None:
        """Another dataset: an assessment of the previous one must not land."""
        if self._assess_task is not None:
            self._assess_task.abandon()          # it reports nothing more
            self._assessment_ended()

    def _on_assessed(self, result) -> None:
        self._assessment_ended()
        self.state.assessment_summary = result.summary
        self.state.assessments = result.rows
        self.log(f"Backbone assessment: {result.summary}")
        self.assessment_finished.emit(result.rows)

    def _on_assessment_failed(self, message: str, _details: str) -> None:
        self._assessment_ended()
        self.model_panel.assessment.show_error(message)
        self.log(f"Backbone assessment failed: {message}")
        self.assessment_failed.emit(message)

    def _on_assessment_cancelled(self) -> None:
        self._assessment_ended()
        self.model_panel.assessment.show_cancelled()

    def _assessment_ended(self) -> None:
        """Training may start again (the task group joins the thread, which is only returning)."""
        self._assess_task = None
        self.model_panel.assessment.set_running(False)
        self._update_actions()

    # -- training ----------------------------------------------------------------------------
    def training_config(self):
        """The run as set up (settings, weights, the tree's exact freeze state), validated."""
        if self.state.invalid_setting:
            raise ValueError(self.state.invalid_setting)
        config = self.state.training_config()
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
        report = apply_corrections(self.state.report, dict(self.state.corrections))   # never touches the files
        budget_s = self.state.search_minutes * 60 if self.state.training_mode == "automatic" else None
        if budget_s is None:
            run = TrainingRun(report, config, run_dir, TrainingEvents())
        else:                                    # the form's settings are the search's starting point
            run = SearchRun(report, config, run_dir, TrainingEvents(), budget_s, self.search_backbones)
        self._launch(run, budget_s)
        self.log(f"Training {config.backbone} for {config.epochs} epochs into {run_dir}" if budget_s is None else
                 f"Searching for the best model in {self.state.search_minutes:g} minutes into {run_dir}")
        self.training_started.emit(run)
        self.training_task.start()
        return run

    def resume_training(self, run_dir: str) -> TrainingRun | None:
        """Continue a run that stopped before its end, with its own settings, on the dataset as loaded now
        (with the same corrections); a refusal (the dataset changed, nothing to resume) is explained."""
        from engine.training.runstate import ResumeRefused, check_resume, load_run_config, resume_summary
        if not self._can_start():
            return None
        report = apply_corrections(self.state.report, dict(self.state.corrections))
        try:
            config = load_run_config(run_dir)
            check_resume(run_dir, report)
        except ResumeRefused as exc:
            self.train_panel.show_error(str(exc), heading="Cannot resume:")
            return None
        best = resume_summary(run_dir).get("best_val_accuracy")
        run = TrainingRun(report, config, Path(run_dir), TrainingEvents(), resume=True)
        self._launch(run, None)
        self._best_accuracy = best
        self.log(f"Resuming the run in {run_dir}")
        self.training_started.emit(run)
        self.training_task.start()
        return run

    def _launch(self, run: TrainingRun, budget_s: float | None) -> None:
        """Wire a run to the window and prepare its task (started by the caller once announced)."""
        self._connect_run(run.events)
        task = self.training_task = self.tasks.prepare(run, run.control)
        run.events.setParent(task)               # goes with the task once its thread has ended
        task.succeeded.connect(self._on_training_succeeded)
        task.failed.connect(self._on_training_failed)
        if budget_s is not None:
            task.cancelled.connect(self._on_search_stopped_empty)
        task.done.connect(self._on_training_thread_done)
        self._run_config, self._best_accuracy = run.config.to_dict(), None
        if budget_s is not None:
            self._run_config["search_minutes"] = self.state.search_minutes
        self.state.active_run = run
        self.train_panel.on_run_started(budget_s)
        self.tabs.setCurrentWidget(self.train_panel)

    def offer_resume(self, run_dir: str) -> bool:
        """Show the Train step's offer to continue `run_dir` when it can (interrupted, stopped or failed
        with a training state kept); True when offered."""
        from engine.training.runstate import can_resume, resume_summary
        if self.training_task is not None or not can_resume(run_dir):
            return False
        self.train_panel.resume_offer.offer(run_dir, resume_summary(run_dir))
        return True

    def _connect_run(self, events: TrainingEvents) -> None:
        panel = self.train_panel
        events.fit_started.connect(panel.on_fit_started)
        events.fit_started.connect(self._on_fit_started)
        events.stage_progress.connect(panel.on_stage_progress)
        events.batch_ended.connect(panel.on_batch_ended)
        events.epoch_ended.connect(panel.on_epoch_ended)
        events.fit_failed.connect(panel.on_fit_failed)
        events.epoch_ended.connect(self._log_epoch)
        events.epoch_ended.connect(self.epoch_ended)
        events.epoch_ended.connect(self._on_epoch_ended)
        events.candidate.connect(self.train_panel.on_candidate)
        events.candidate.connect(self._log_candidate)

    def _log_epoch(self, epoch: int, logs: dict) -> None:
        self.log(f"epoch {epoch}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.3f}, "
                 f"val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}"
                 f"{' (best so far)' if logs['best'] else ''}")

    def _log_candidate(self, entry: dict) -> None:
        self.log(f"Search: {entry['name']} ({entry['backbone']}) {entry['status']}"
                 + (f", {score_text(entry)}" if entry.get("score") is not None else "")
                 + (f" – {entry['note']}" if entry.get("note") else ""))

    def _on_fit_started(self, info: dict) -> None:
        """Compare runs shows how much of the model a run trained; the status bar, where it trains."""
        self._run_config.update(params_total=info["params_total"], params_trainable=info["params_trainable"])
        if info.get("device_label"):
            self.statusBar().showMessage(f"Training on {info['device_label']}")

    def _on_epoch_ended(self, _epoch: int, logs: dict) -> None:
        """The run is recorded as 'running' with its best accuracy so far after each epoch."""
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self._best_accuracy is None or accuracy > self._best_accuracy):
            self._best_accuracy = accuracy
        self._record_active_run("running", {"val_accuracy": self._best_accuracy})

    def _record_active_run(self, status: str, metrics: dict) -> None:
        run = self.state.active_run
        if run is not None:               # an epoch's news may arrive after a shutdown ended the run
            self.state.record_run(str(run.run_dir), status, self._run_config, metrics.get("val_accuracy"),
                                  metrics.get("test_accuracy"))

    def set_paused(self, paused: bool) -> None:
        if self.training_task is None:
            return
        if paused:
            self.training_task.control.pause()
        else:
            self.training_task.control.resume()
        self.pause_action.setChecked(paused)
        self.train_panel.show_paused(paused)
        self.statusBar().showMessage("Training paused" if paused else "Training resumed", 3000)

    def toggle_pause(self) -> None:
        self.set_paused(self.pause_action.isChecked())

    def stop_training(self) -> None:
        """Ask the run to stop after the current batch; the checkpoint so far stays on disk."""
        if self.training_task is not None:
            self.training_task.cancel()
            self.train_panel.on_stopping()

    def _on_training_succeeded(self, result) -> None:
        searched = isinstance(self.state.active_run, SearchRun)
        if searched:                             # the run is the winner's: its config, and the search's minutes
            config = result.config
            if "ensemble" in config:             # an ensemble is recorded as its first member and their count
                config = {**config["ensemble"][0], "ensemble_members": len(config["ensemble"])}
            self._run_config = {**config, "search_minutes": self._run_config.get("search_minutes"),
                                "search_winner": result.winner}
        self._record_active_run(result.status, result.metrics)
        self.results_panel.show_result(result)
        accuracy = result.metrics.get("val_accuracy")
        self.log(f"Training {result.status}" + (f": validation accuracy {accuracy:.3f}" if accuracy is not None else ""))
        self._clear_device_message()
        self.train_panel.on_run_finished(result.status)
        if searched:
            self._announce_winner(result)
        self.training_finished.emit(result)

    def _clear_device_message(self) -> None:
        """'Training on …' holds while a run trains only."""
        if self.statusBar().currentMessage().startswith("Training on "):
            self.statusBar().clearMessage()

    def _announce_winner(self, result) -> None:
        """The status line and the Train step say which candidate won, with its score."""
        self.train_panel.on_search_finished(result.status, result.leaderboard, result.decision, result.warnings)
        winner = next((row for row in result.leaderboard if row.get("chosen")), None)
        test = result.metrics.get("test_accuracy")
        message = (f"Automatic search {result.status}: {result.winner} won"
                   + (f" ({score_text(winner)})" if winner and winner.get("score") is not None else "")
                   + (f", {100 * test:.1f} % on the test images" if test is not None else ""))
        self.log(message)
        self.statusBar().showMessage(message, 30_000)

    def _on_search_stopped_empty(self) -> None:
        """A search stopped before its first model was trained: nothing to keep."""
        self._record_active_run("cancelled", {})
        self.train_panel.on_run_finished("cancelled")
        self.train_panel.on_search_finished("cancelled", [])
        self.log("Search stopped before its first model was trained")

    def _on_training_failed(self, message: str, details: str) -> None:
        self._record_active_run("failed", {"val_accuracy": self._best_accuracy})
        self._clear_device_message()
        self.train_panel.show_error(message, details)
        self.log(f"Training failed: {message}")
        self.training_failed.emit(message)

    def _on_training_thread_done(self, task: Task) -> None:
        run = self.state.active_run
        self.training_task = None
        self.state.active_run = None            # the panels show that nothing trains any more
        if run is not None and not isinstance(run, SearchRun) and not self._closing:
            self.offer_resume(str(run.run_dir))

    def record_correction(self, path: str, action: str, label: str = "") -> None:
        """Exclude, relabel or restore one image; the next run applies it (the project autosaves it)."""
        self.state.correct(path, action, label)
        described = {"exclude": "excluded from training", "relabel": f"moved to class {label}",
                     "restore": "restored"}[action]
        self.log(f"{Path(path).name} {described} (applies from the next run)")

    # -- project, export ------------------------------------------------------------------------
    def _show_title(self, path: str | None) -> None:
        self.setWindowTitle(f"{Path(path).stem} – {APP_NAME}" if path else APP_NAME)

    def _on_project_saved(self, path: str) -> None:
        self.statusBar().showMessage(f"Project saved to {path}", 5000)

    def _on_project_opened(self, path: str) -> None:
        self.statusBar().showMessage(f"Project {Path(path).name} opened", 5000)
        if self.state.runs and self.offer_resume(self.state.runs[-1].run_dir):
            self.tabs.setCurrentWidget(self.train_panel)

    def _on_latest_run_changed(self, record) -> None:
        self.export_action.setEnabled(record is not None)

    def show_export_dialog(self) -> ExportDialog | None:
        """Export the newest finished run (non-modal: the window stays usable meanwhile)."""
        run = self.state.latest_run
        if run is None:
            return None
        folder = Path(str(self.settings.value("export/last_folder", str(Path.home()))))
        name = Path(run.backbone).name if is_text_backbone(run.backbone) else run.backbone
        dialog = ExportDialog(run.run_dir, str(folder / f"{name}-{Path(run.run_dir).name}.onnx"),
                              self.tasks, self, text=is_text_backbone(run.backbone),
                              ensemble=bool((run.config or {}).get("ensemble_members")))
        dialog.export_finished.connect(self._remember_export_folder)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _remember_export_folder(self, outcome) -> None:
        written = outcome.onnx.path if outcome.onnx is not None else outcome.weights
        self.settings.setValue("export/last_folder", str(Path(written).parent))

    # -- state of actions and panels ---------------------------------------------------------
    def _can_start(self) -> bool:
        state = self.state
        return (state.active_run is None and state.report is not None and state.engine is not None
                and state.model_is_current() and self._assess_task is None)

    def _update_actions(self) -> None:
        training = self.state.active_run is not None
        self.start_action.setEnabled(self._can_start())
        self.pause_action.setEnabled(training)
        self.stop_action.setEnabled(training)
        if not training:
            self.pause_action.setChecked(False)
        self.train_panel.set_running(training, self._can_start())
        self.results_panel.set_can_retrain(self._can_start())
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
        self._closing = True
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
