"""Step 1, Data: a drop zone for folders, zips and CSVs of images, or tables and folders of texts, then the
engine's dataset report.

The panel shows the state's dataset report and asks for datasets with intent signals; scanning runs
on a worker started by the main window, which feeds the progress bar and hands the class thumbnails here.
A text dataset shows its texts in a table instead of thumbnails, and for a table of texts (CSV, TSV,
JSONL) which columns hold the text and the label, to choose again when the guess was wrong. Below the scan's
problems, "Check deeper…" opens the deep check's lists (gui.deep_check_view) in a window of their own: rows of
pictures need more room than this step has left. "Unlabelled pool…" and "Label…" open the labelling window
(gui.labelling_view), where the samples beside the dataset are labelled one key at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QSizePolicy, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.core import modality as modalities
from engine.core.progress import stage_title
from gui.deep_check_view import DeepCheckDialog
from gui.drop_zone import DropZone
from gui.labelling_view import LabellingDialog
from gui.text_views import TextTable

if TYPE_CHECKING:
    from PySide6.QtGui import QImage

    from engine.audit.deep import DeepReport
    from engine.core.modality import Modality
    from gui.state import AppState

DATASET_SUFFIXES = (".zip", ".csv", ".tsv", ".jsonl", ".ndjson")
SPLITS = ("train", "val", "test")
GUESSED = "(detected)"


def _droppable(path: Path) -> bool:
    if path.is_dir() or (path.is_file() and path.suffix.lower() in DATASET_SUFFIXES):
        return True
    if path.is_file() and path.suffix.lower() == ".txt":      # a tab-separated table of texts, not a note
        return modalities.for_source(path) is not modalities.named(None)
    return False


def droppable_paths(urls: list[QUrl]) -> list[str]:
    """Local folders, .zip, .csv, .tsv and .jsonl files (and .txt tables of texts) among dropped URLs;
    empty when anything else is dropped."""
    paths = [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]
    ok = [p for p in paths if _droppable(p)]
    return [str(p) for p in ok] if ok and len(ok) == len(urls) else []


class DataPanel(QWidget):
    """Drop zone, open buttons, scan progress, class table with thumbnails and the problems list."""

    load_requested = Signal(list)          # folders, zips or CSVs to scan
    columns_chosen = Signal(dict)          # {"text_column", "label_column"} of a table of texts, to rescan with
    open_folder_requested = Signal()
    open_file_requested = Signal()
    demo_requested = Signal()
    cancel_scan_requested = Signal()
    deep_check_requested = Signal()
    labelling_requested = Signal()
    next_requested = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.drop_zone = DropZone("Drop a folder of class sub-folders here\n"
                                  "(or several folders, a .zip, or a CSV of path,label)\n"
                                  "Texts: a CSV, TSV or JSONL of text,label, or class folders of .txt files",
                                  droppable_paths, 110)
        self.drop_zone.paths_dropped.connect(self.load_requested)
        self.open_folder_button = QPushButton("Open folder…")
        self.open_file_button = QPushButton("Open .zip, CSV or texts…")
        self.demo_button = QPushButton("Open demo dataset")
        self.demo_button.setToolTip("300 Fashion-MNIST product photos in 10 classes, bundled with TransferLab")
        self.open_folder_button.clicked.connect(self.open_folder_requested)
        self.open_file_button.clicked.connect(self.open_file_requested)
        self.demo_button.clicked.connect(self.demo_requested)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_scan_requested)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.class_table = self._make_class_table()
        self.texts = TextTable()                 # a text dataset's texts, where images show thumbnails
        self.texts.setVisible(False)
        self.text_column = QComboBox()
        self.label_column = QComboBox()
        self.text_column.setToolTip("The column holding the texts")
        self.label_column.setToolTip("The column holding each text's class")
        self.text_column.activated.connect(self._on_columns_chosen)
        self.label_column.activated.connect(self._on_columns_chosen)
        self.columns_row = QWidget()
        self.problems = self._make_problems_table()
        self.problems.itemDoubleClicked.connect(self._open_selected_problem)
        self.report_button = QPushButton("Full report…")
        self.report_button.clicked.connect(self.show_full_report)
        self.open_problem_button = QPushButton("Open file")
        self.open_problem_button.clicked.connect(self._open_selected_problem)
        self.show_folder_button = QPushButton("Show in folder")
        self.show_folder_button.clicked.connect(self._show_selected_problem_folder)
        self.deep_check_dialog = DeepCheckDialog(self)
        self.deep_check_dialog.check_requested.connect(self.deep_check_requested)
        self.deep_check = self.deep_check_dialog.view
        self.deep_check_button = QPushButton("Check deeper…")
        self.deep_check_button.setToolTip("Run a pretrained model over every sample once and list likely label "
                                          "errors, near-duplicates (leaks between train and test) and odd samples, "
                                          "each with one-click fixes")
        self.deep_check_button.clicked.connect(self.open_deep_check)
        self.deep_check_note = QLabel()          # what the last deep check found, in a few words
        self.deep_check_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._deep_check_running = False
        self._make_labelling()
        self.next_button = QPushButton("Next: choose a model  →")
        self.next_button.clicked.connect(self.next_requested)
        self._layout()
        state.events.report.connect(self._show_report)
        state.events.scanning.connect(self._show_scanning)
        state.events.active_run.connect(self._enable_inputs)
        for signal in (state.events.report, state.events.scanning, state.events.unlabelled_sources):
            signal.connect(self._enable_labelling)
        for signal in (state.corrections.events.added, state.corrections.events.changed,
                       state.corrections.events.removed):
            signal.connect(self._show_corrections)
        self._show_scanning()
        self._show_report()

    def _make_class_table(self) -> QTableWidget:
        table = QTableWidget(0, 6)
        table.setHorizontalHeaderLabels(["Class", "Train", "Val", "Test", "Total", "Examples"])
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(50)
        table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        return table

    def _make_problems_table(self) -> QTableWidget:
        table = QTableWidget(0, 3)
        table.setHorizontalHeaderLabels(["Severity", "Problem", "File"])
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        table.setToolTip("Double-click a row to open the file")
        return table

    def _layout(self) -> None:
        columns = QHBoxLayout(self.columns_row)
        columns.setContentsMargins(0, 0, 0, 0)
        columns.addWidget(QLabel("Text column:"))
        columns.addWidget(self.text_column)
        columns.addSpacing(12)
        columns.addWidget(QLabel("Label column:"))
        columns.addWidget(self.label_column)
        columns.addStretch()
        self.columns_row.setVisible(False)
        buttons = QHBoxLayout()
        for button in (self.open_folder_button, self.open_file_button, self.demo_button):
            buttons.addWidget(button)
        buttons.addStretch()
        buttons.addWidget(self.progress, 2)
        buttons.addWidget(self.cancel_button)
        problems = QWidget()
        problems_layout = QVBoxLayout(problems)
        problems_layout.setContentsMargins(0, 0, 0, 0)
        self.problems_title = QLabel("Problems")
        problems_layout.addWidget(self.problems_title)
        problems_layout.addWidget(self.problems)
        problem_buttons = QHBoxLayout()
        for button in (self.open_problem_button, self.show_folder_button, self.report_button, self.deep_check_button):
            problem_buttons.addWidget(button)
        problem_buttons.addWidget(self.deep_check_note, 1)
        problems_layout.addLayout(problem_buttons)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.upper = QSplitter(Qt.Orientation.Horizontal)   # the classes, and a text dataset's texts beside them
        self.upper.addWidget(self.class_table)
        self.upper.addWidget(self.texts)
        self.upper.setStretchFactor(1, 1)
        self.upper.setChildrenCollapsible(False)
        self.splitter.addWidget(self.upper)
        self.splitter.addWidget(problems)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        footer = QHBoxLayout()
        footer.addWidget(self.pool_button)
        footer.addWidget(self.label_button)
        footer.addWidget(self.pool_note, 1)
        footer.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.drop_zone)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.columns_row)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(footer)

    # -- scan state --------------------------------------------------------------------------
    def _show_scanning(self) -> None:
        scanning = self.state.scanning
        self.progress.setVisible(scanning)
        self.cancel_button.setVisible(scanning)
        self._enable_deep_check()
        if scanning:
            self.progress.setRange(0, 0)
            self.summary.setText("Scanning…")

    def set_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage_title(stage)} · {done:,} / {total:,}")

    def _enable_inputs(self) -> None:
        """No new dataset while a run trains on this one."""
        for widget in (self.drop_zone, self.open_folder_button, self.open_file_button, self.demo_button,
                       self.text_column, self.label_column):
            widget.setEnabled(self.state.active_run is None)
        self._enable_deep_check()

    def show_error(self, message: str) -> None:
        self.summary.setText(f"<b>Cannot use this dataset:</b> {message}")

    def show_cancelled(self) -> None:
        self.summary.setText("Scan cancelled.")

    # -- report ------------------------------------------------------------------------------
    def _show_report(self) -> None:
        report = self.state.report
        self.next_button.setEnabled(report is not None)
        self.report_button.setEnabled(report is not None)
        self._forget_deep_check()
        text = self.state.modality.sample_view == modalities.TEXT_VIEW
        self.texts.setVisible(text)
        self.class_table.setColumnHidden(5, text)
        self.class_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10 if text else 50)
        if report is None:
            self.summary.setText("No dataset yet.")
            self.class_table.setRowCount(0)
            self.problems.setRowCount(0)
            self.texts.show_rows("", [], [])
            self._update_problem_buttons()
            return
        counts = report.counts()
        total = len(report.samples)
        self.summary.setText(
            f"<b>{modalities.of(report).count(total)} in {len(report.classes)} classes</b> from {report.root}<br>"
            f"{'Splits taken from the dataset where given' if report.split_given else 'Split chosen by seed'}"
            f" · train {len(report.split('train')):,} · val {len(report.split('val')):,}"
            f" · test {len(report.split('test')):,} · {len(report.problems)} problem(s)")
        self.class_table.setRowCount(len(report.classes))
        for row, name in enumerate(report.classes):
            per_split = [counts[split][name] for split in SPLITS]
            cells = [name, *map(str, per_split), str(sum(per_split))]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.class_table.setItem(row, column, item)
            self.class_table.setItem(row, 5, QTableWidgetItem())
        self.class_table.resizeColumnsToContents()
        if text:
            self._show_texts(report)
        self._show_problems(report.problems)
        if text:
            QTimer.singleShot(0, self._give_texts_room)

    def _give_texts_room(self) -> None:
        """The class table as wide as its columns, the texts beside it; the problems only as tall as needed."""
        report = self.state.report
        if report is None or self.state.modality.sample_view != modalities.TEXT_VIEW:
            return
        table = self.class_table
        width = table.verticalHeader().width() + 2 * table.frameWidth() + 24 + \
            sum(table.columnWidth(c) for c in range(5))
        total = max(sum(self.upper.sizes()), width + 300)
        self.upper.setSizes([width, total - width])
        problems_px = 160 if report.problems else self.problems_title.sizeHint().height() + \
            self.report_button.sizeHint().height() + 12
        height = max(sum(self.splitter.sizes()), problems_px + 200)
        self.splitter.setSizes([height - problems_px, problems_px])

    def _show_texts(self, report) -> None:
        """Every text with where it is (row or file), its class and split; filterable by class."""
        rows = [(s.path, report.classes[s.label], s.split, s.text or "") for s in report.samples]
        self.texts.show_rows(f"<b>Texts</b> ({len(rows):,}): select one to read it whole", ["Where", "Class", "Split", "Text"],
                             rows, report.classes, filter_column=1)

    def show_columns(self, columns: dict, chosen: dict | None = None) -> None:
        """A table of texts' columns in the two choosers (hidden for images and folders of .txt files)."""
        names = list(columns.get("columns", [])) if columns else []
        self.columns_row.setVisible(bool(names))
        chosen = chosen or {}
        for combo, key in ((self.text_column, "text"), (self.label_column, "label")):
            combo.clear()
            for name in names:
                combo.addItem(name, name)
            current = chosen.get(f"{key}_column") or columns.get(key) if names else None
            combo.setCurrentIndex(max(0, combo.findData(current)))

    def _on_columns_chosen(self) -> None:
        text, label = self.text_column.currentData(), self.label_column.currentData()
        if text == label:
            self.show_error("the text and the label must be two different columns")
            return
        self.columns_chosen.emit({"text_column": text, "label_column": label})

    def show_thumbnails(self, strips: dict[str, QImage]) -> None:
        """A strip of example images beside each class the table shows (drawn by the scan's worker)."""
        for row in range(self.class_table.rowCount()):
            name = self.class_table.item(row, 0).text()
            if name in strips:
                self.class_table.item(row, 5).setData(Qt.ItemDataRole.DecorationRole, QPixmap.fromImage(strips[name]))

    def _show_problems(self, problems) -> None:
        report = self.state.report           # texts with no problems: the title alone, room for the texts
        listed = bool(problems) or report is None or self.state.modality.sample_view != modalities.TEXT_VIEW
        self.problems.setVisible(listed)
        for button in (self.open_problem_button, self.show_folder_button):
            button.setVisible(listed)
        self.problems.setRowCount(len(problems))
        for row, problem in enumerate(problems):
            for column, text in enumerate((problem.severity, problem.reason, problem.path)):
                self.problems.setItem(row, column, QTableWidgetItem(text))
        self.problems.resizeColumnsToContents()
        self.problems_title.setText(f"Problems ({len(problems)})" if problems else "Problems: none found")
        self._update_problem_buttons()

    def _update_problem_buttons(self) -> None:
        for button in (self.open_problem_button, self.show_folder_button):
            button.setEnabled(self.problems.rowCount() > 0)

    def _open_selected_problem(self) -> None:
        self.open_problem_file(self.problems.currentRow())

    def _show_selected_problem_folder(self) -> None:
        self.open_problem_file(self.problems.currentRow(), folder=True)

    def open_problem_file(self, row: int, folder: bool = False) -> None:
        """Open a problem file (or its folder) with the system's viewer."""
        report = self.state.report
        if report is None or not 0 <= row < len(report.problems):
            return
        path = self.state.modality.problem_file(report.root, report.problems[row].path)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent if folder or path.is_dir() else path)))

    def show_full_report(self) -> None:
        if self.state.report is None:
            return
        dialog = QDialog(self)
        dialog.setWindowTitle("Dataset report")
        text = QPlainTextEdit(self.state.report.format_text())
        text.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(text)
        layout.addWidget(buttons)
        dialog.resize(720, 520)
        dialog.open()

    # -- the deep check ------------------------------------------------------------------------
    def open_deep_check(self) -> None:
        """The deep check's window: this dataset's last check, or a new one when there is none yet."""
        if self.deep_check.result is None and not self._deep_check_running:
            self.deep_check_requested.emit()
        self.deep_check_dialog.show()
        self.deep_check_dialog.raise_()
        self.deep_check_dialog.activateWindow()

    def _enable_deep_check(self) -> None:
        """A dataset to check, no scan replacing it, no run training on it; one check at a time."""
        ready = self.state.report is not None and not self.state.scanning and self.state.active_run is None
        self.deep_check_button.setEnabled(ready)
        self.deep_check_dialog.check_again_button.setEnabled(ready and not self._deep_check_running)

    def _forget_deep_check(self) -> None:
        """Another dataset: the lists described the last one (the window abandons a check still running)."""
        self._deep_check_running = False
        self.deep_check.clear(self.state.modality.nouns)
        self.deep_check_dialog.hide()
        self._note_deep_check("")
        self._enable_deep_check()

    def show_deep_check_running(self) -> None:
        self._deep_check_running = True
        self._enable_deep_check()
        self.deep_check_dialog.setWindowTitle(f"Deep check – {Path(self.state.report.root).name}")
        self.deep_check.show_running()
        self._note_deep_check("Checking deeper…")

    def show_deep_check(self, result: DeepReport) -> None:
        self._deep_check_running = False
        self._enable_deep_check()
        self.deep_check.show_result(result, self.state.report, dict(self.state.corrections))
        issues, pairs, odd = self.deep_check.counts()
        modality = self.state.modality
        odd_words = f"{odd} odd {modality.noun if odd == 1 else modality.nouns}"
        self._note_deep_check(f"Deep check: {issues} maybe mislabelled, {pairs} near-duplicate "
                              f"pair{'' if pairs == 1 else 's'}, {odd_words}")

    def show_deep_check_stopped(self, message: str = "") -> None:
        """Failed (`message`, one line) or cancelled (no message)."""
        self._deep_check_running = False
        self._enable_deep_check()
        if message:
            self.deep_check.show_error(message)
            self._note_deep_check(f"Deep check stopped: {message}")
        else:
            self.deep_check.show_cancelled()
            self._note_deep_check("Deep check cancelled")

    def _note_deep_check(self, text: str) -> None:
        """One line beside the button (cut where the row ends; whole in its tooltip)."""
        line = " ".join(text.split())
        self.deep_check_note.setText(line)
        self.deep_check_note.setToolTip(line)

    # -- the unlabelled pool ----------------------------------------------------------------------
    def _make_labelling(self) -> None:
        self.labelling_dialog = LabellingDialog(self)
        self.pool_button = QPushButton("Unlabelled pool…")
        self.pool_button.setToolTip("Choose the samples you have no labels for yet (a folder of images; a .txt "
                                    "file of texts, one a line, or a .csv): the model suggests, you label them")
        self.pool_button.clicked.connect(self.choose_unlabelled_pool)
        self.label_button = QPushButton("Label…")
        self.label_button.setToolTip("Label the unlabelled pool one key at a time, the samples the model learns "
                                     "most from first; your labels join the training split of the next run")
        self.label_button.clicked.connect(self.open_labelling)
        self.pool_note = QLabel()               # the pool's summary, in a few words
        self.pool_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.ask_unlabelled_pool = self._ask_unlabelled_pool      # replaceable in tests: no dialog
        self._enable_labelling()

    def _ask_unlabelled_pool(self, modality: Modality) -> list[str]:
        if modality.sample_view == modalities.TEXT_VIEW:
            path, _ = QFileDialog.getOpenFileName(self, f"Unlabelled {modality.nouns}", "",
                                                  "Texts, one a line, or a table (*.txt *.csv *.tsv)")
        else:
            path = QFileDialog.getExistingDirectory(self, f"A folder of unlabelled {modality.nouns}")
        return [path] if path else []

    def choose_unlabelled_pool(self) -> None:
        sources = self.ask_unlabelled_pool(self.state.modality)
        if sources:
            self.state.unlabelled_sources = list(sources)

    def open_labelling(self) -> None:
        self.labelling_requested.emit()
        self.labelling_dialog.show()
        self.labelling_dialog.raise_()
        self.labelling_dialog.activateWindow()

    def _enable_labelling(self) -> None:
        """A pool needs a dataset (its modality, its classes); labelling needs both, and no scan under way."""
        scanned = self.state.report is not None and not self.state.scanning
        self.pool_button.setEnabled(scanned)
        self.label_button.setEnabled(scanned and bool(self.state.unlabelled_sources))

    def show_pool_note(self, text: str) -> None:
        line = " ".join(text.split())
        self.pool_note.setText(line)
        self.pool_note.setToolTip("\n".join(self.state.unlabelled_sources) if line else "")

    def _show_corrections(self) -> None:
        self.deep_check.set_corrections(dict(self.state.corrections))
