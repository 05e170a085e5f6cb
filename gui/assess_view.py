"""The Model step's backbone assessment: which pretrained backbone already knows these images, before
any training (engine.search.assess).

It renders `state.assessments` (plain rows, best first) and `state.assessment_summary`; "Assess
backbones" is an intent signal the window answers by running the assessment on its task group, and
selecting a row chooses that backbone in the state, as the backbone list does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from gui.jobs import short_title

if TYPE_CHECKING:
    from gui.state import AppState

COLUMNS = ("Backbone", "Linear probe (95 % interval)", "CV inside train", "LogME", "Fit", "ms / image", "Params")
COLUMN_TIPS = {
    "Backbone": "Backbones whose ImageNet weights are on this machine. Select a row to use that backbone.",
    "Linear probe (95 % interval)": "Accuracy of a linear classifier (logistic regression) fitted on the "
                                    "backbone's frozen features of your training images and scored on your "
                                    "validation images, as the automatic search judges its candidates: about "
                                    "what head-only training reaches on new images. In brackets: the range the "
                                    "true accuracy lies in 95 times out of 100. The test images are never used.",
    "CV inside train": "The same probe cross-validated inside the training images, near-identical images kept "
                       "in one fold. Marked ⚠ when the validation images score clearly lower: they come from "
                       "other conditions (session, camera, batch) and this figure would mislead.",
    "LogME": "How well the frozen features explain the labels (You et al., 2021); higher is better. Compare "
             "within this dataset only: the number means nothing on its own.",
    "Fit": "strong: the frozen features already separate your classes (train the head only); fair: in part "
           "(train the last blocks too); weak: barely (train deeper layers, add images).",
    "ms / image": "Time for one image through the whole network on this computer (one at a time): what "
                  "predictions will cost.",
    "Params": "Size of the network with a head for your classes, in millions of weights.",
}
FIT_COLOURS = {"strong": QColor(30, 120, 40), "fair": QColor(170, 110, 0), "weak": QColor(180, 40, 30)}
BEST_BACKGROUND = QColor(214, 240, 214)
INTRO = ("Scores each backbone on your images before any training: one pass of its frozen layers over the "
         "training and validation images (reused by training later), then a linear probe fitted on the training "
         "images and scored on the validation images.")


def probe_text(row: dict) -> str:
    """'83 % (78–87)': the honest estimate and its 95 % interval."""
    interval = row.get("probe_interval")
    return f"{round(100 * row['probe_accuracy'])} %" + (
        f" ({round(100 * interval[0])}–{round(100 * interval[1])})" if interval else "")


def cv_text(row: dict) -> str:
    """'97 %', with ⚠ when the validation images score clearly lower."""
    if row.get("cv_accuracy") is None:
        return "–"
    return f"{round(100 * row['cv_accuracy'])} %" + (" ⚠" if row.get("shifted") else "")


def ms_text(ms: float) -> str:
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


class AssessmentView(QWidget):
    """Assess button, progress, the summary in words and a table of backbones, best first."""

    assess_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.running = False
        self.intro = QLabel(INTRO)
        self.intro.setWordWrap(True)
        self.assess_button = QPushButton("Assess backbones")
        self.assess_button.setToolTip("Compare every backbone with offline weights on this dataset (a minute or "
                                      "a few, depending on its size). Uses the image size of the Train step.")
        self.assess_button.clicked.connect(self.assess_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress = QProgressBar()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, name in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(column).setToolTip(COLUMN_TIPS[name])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.hint = QLabel("Select a row to use that backbone.")
        self._layout()
        state.events.assessments.connect(self._show_rows)
        state.events.assessment_summary.connect(self._show_rows)
        state.events.backbone.connect(self._select_backbone)
        state.events.report.connect(self._show_rows)
        for signal in (state.events.active_run, state.events.engine):
            signal.connect(self._enable)
        self._show_rows()

    def _layout(self) -> None:
        buttons = QHBoxLayout()
        buttons.addWidget(self.assess_button)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch()                          # the button keeps its size while nothing runs
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.hint)

    # -- running -------------------------------------------------------------------------------
    def _enable(self) -> None:
        idle = self.state.active_run is None
        self.assess_button.setEnabled(idle and not self.running and self.state.report is not None
                                      and self.state.engine is not None)
        self.table.setEnabled(idle)
        self.progress.setVisible(self.running)
        self.cancel_button.setVisible(self.running)

    def set_running(self, running: bool) -> None:
        self.running = running
        if running:
            self.progress.setRange(0, 0)             # busy until the first image is counted
            self.progress.setFormat("Starting…")
            self.summary.setText("Assessing…")
            self._enable()
        else:
            self._show_rows()

    def set_progress(self, stage: str, done: int, total: int) -> None:
        """`stage` names the backbone being assessed ('EfficientNet-Lite0 (1 of 3)'); no total yet: busy."""
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(f"{done:,} / {total:,} images")
        self.summary.setText(f"Assessing {stage}…")

    def show_error(self, message: str) -> None:
        self.summary.setText(f"<b>The assessment failed:</b> {message}")

    def show_cancelled(self) -> None:
        self.summary.setText("Assessment cancelled.")

    # -- the table -------------------------------------------------------------------------------
    def _show_rows(self) -> None:
        rows = self.state.assessments
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            cells = [short_title(row["title"]), probe_text(row), cv_text(row), f"{row['logme']:.3f}", row["fit"],
                     ms_text(row["ms_per_image"]), f"{row['params_millions']:.1f} M"]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, row["backbone"])
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if index == 0:
                    item.setBackground(QBrush(BEST_BACKGROUND))
                    item.setForeground(QBrush(QColor(Qt.GlobalColor.black)))
                if COLUMNS[column] == "Fit":
                    item.setForeground(QBrush(FIT_COLOURS.get(text, QColor(Qt.GlobalColor.black))))
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                item.setToolTip(f"{row['title']}: probe {row.get('probe_protocol', 'cross-validated')}; "
                                f"{row['folds']}-fold cross-validation inside train; {row['input_size']} px, "
                                f"{row['feature_dim']} features; always answering the largest class scores "
                                f"{round(100 * row['majority'])} %. Assessed in {row['seconds']:.0f} s.")
                self.table.setItem(index, column, item)
        self.table.blockSignals(False)
        if not self.running:
            self.summary.setText(self.state.assessment_summary if rows else "Not assessed yet."
                                 if self.state.report is not None else
                                 "Open a dataset first (step 1), then assess which backbone fits it best.")
        sizes = sorted({row["input_size"] for row in rows})
        self.hint.setText("Select a row to use that backbone. Measured at "
                          + (f"{sizes[0]} px." if len(sizes) == 1 else "each backbone's own image size.")
                          if rows else "")
        self.hint.setVisible(bool(rows))
        self._select_backbone()
        self._enable()

    def _on_row_selected(self) -> None:
        items = self.table.selectedItems()
        if items:
            name = items[0].data(Qt.ItemDataRole.UserRole)
            if name != self.state.backbone:
                self.state.choose_backbone(name)

    def _select_backbone(self) -> None:
        """The state's backbone is the selected row (none when it was not assessed)."""
        names = [row["backbone"] for row in self.state.assessments]
        self.table.blockSignals(True)
        if self.state.backbone in names:
            self.table.selectRow(names.index(self.state.backbone))
        else:
            self.table.clearSelection()
        self.table.blockSignals(False)

    def backbones_shown(self) -> list[str]:
        """The backbones of the table, top to bottom (tests)."""
        return [self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) for row in range(self.table.rowCount())]
