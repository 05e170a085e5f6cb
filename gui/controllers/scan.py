"""The Data step's work: scan dropped folders, zips and tables on a worker, and make the report the state's."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import QFileDialog

from engine.core.control import RunControl
from engine.core.paths import demo_dataset
from gui.controllers.base import Controller
from gui.jobs import scan
from gui.workers import Task, TaskGroup, TaskSlot

if TYPE_CHECKING:
    from gui.data_panel import DataPanel
    from gui.state import AppState


class ScanController(Controller):
    """Asks for sources (dialogs, drops, a project's), scans them, and rescans a table of texts with the
    columns the user chose; a new scan replaces one still running."""

    scan_finished = Signal(object)        # DatasetReport
    scan_failed = Signal(str)

    def __init__(self, state: AppState, tasks: TaskGroup, settings: QSettings, panel: DataPanel):
        super().__init__(panel)
        self.state, self.settings, self.panel = state, settings, panel
        self.slot = TaskSlot(tasks)
        panel.load_requested.connect(self.load_dataset)
        panel.open_folder_requested.connect(self.open_folder_dialog)
        panel.open_file_requested.connect(self.open_file_dialog)
        panel.demo_requested.connect(self.open_demo)
        panel.cancel_scan_requested.connect(self.slot.cancel)
        panel.columns_chosen.connect(self.rescan_with_columns)
        state.events.dataset_sources.connect(self._scan_opened_sources)

    # -- asking ----------------------------------------------------------------------------------
    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.panel, "Open a dataset folder", self._last_folder())
        if folder:
            self.load_dataset([folder])

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.panel, "Open a dataset file", self._last_folder(),
                                              "Datasets (*.zip *.csv *.tsv *.jsonl *.ndjson);;"
                                              "Images: .zip or CSV of path,label (*.zip *.csv);;"
                                              "Texts: CSV, TSV or JSONL of text,label (*.csv *.tsv *.jsonl *.ndjson)")
        if path:
            self.load_dataset([path])

    def open_demo(self) -> None:
        self.load_dataset([str(demo_dataset())])

    def _last_folder(self) -> str:
        return str(self.settings.value("data/last_folder", str(Path.home())))

    # -- scanning --------------------------------------------------------------------------------
    def load_dataset(self, paths: list[str], text_columns: dict | None = None) -> Task:
        """Scan folders, zips or CSVs of images, or a table or folder of texts, on a worker; `scan_finished`
        or `scan_failed` follows. `text_columns`: a table of texts' columns as the user chose them."""
        self.settings.setValue("data/last_folder", str(Path(paths[0]).parent))
        self.step_wanted.emit(self.panel)
        self.status.emit(f"Scanning {', '.join(Path(p).name for p in paths)}…", 0)
        control = RunControl()
        self.state.scanned_sources = [str(p) for p in paths]   # the dataset's sources, once the scan succeeds
        self.state.text_columns = text_columns
        self.state.scanning = True
        job = partial(scan, list(self.state.scanned_sources), control, encoder=self.state.backbone,
                      text_columns=text_columns)
        return self.slot.start(job, control, on_result=self._on_scanned, on_failed=self._on_failed,
                               on_cancelled=self._on_cancelled, on_progress=self.panel.set_progress)

    def _scan_opened_sources(self) -> None:
        """Sources set with no report (an opened project) are scanned: those still on disk."""
        if self.state.report is None:
            existing = [s for s in self.state.dataset_sources if Path(s).exists()]
            if existing:
                self.load_dataset(existing, self.state.text_columns)

    def rescan_with_columns(self, columns: dict) -> Task | None:
        """The user chose other text/label columns of the table of texts: scan it again with them."""
        sources = self.state.scanned_sources or list(self.state.dataset_sources)   # even if its scan failed
        if not sources or self.state.active_run is not None:
            return None
        return self.load_dataset(list(sources), columns)

    def _on_scanned(self, result) -> None:
        """The report (the model controller matches the backbone to it), then its sources, then the end of
        scanning (which builds the model for its classes)."""
        if result.report is None:                # a table of texts read with unusable columns: choose others
            self.panel.show_columns(result.columns, self.state.text_columns)
            self._on_failed(result.error, "")
            return
        report = self.state.report = result.report
        self.state.dataset_sources = list(self.state.scanned_sources)
        self.panel.show_thumbnails(result.thumbnails)
        self.panel.show_columns(result.columns, self.state.text_columns)
        self.logged.emit(f"Dataset: {self.state.modality.count(len(report.samples))}, {len(report.classes)} classes, "
                         f"{len(report.problems)} problem(s) from {report.root}")
        self.status.emit("Dataset ready", 5000)
        self.state.scanning = False
        self.scan_finished.emit(report)

    def _on_failed(self, message: str, _details: str) -> None:
        self.state.scanning = False
        self.panel.show_error(message)
        self.logged.emit(f"Dataset rejected: {message}")
        self.scan_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.state.scanning = False
        self.panel.show_cancelled()
