"""Compare runs: the project's runs with their settings and final scores, curves overlaid.

Each run's validation-accuracy curve is read from its `history.json` (small; read on the GUI
thread) and drawn again only when its record changes (a run in progress, after each epoch). The plot
is created for the first run listed, so pyqtgraph is never imported before the window is on screen.
"""
from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.core.runfolder import RunFolder
from gui.figures import percent

COLUMNS = ("Run", "Backbone", "Training", "Epochs", "Learning rate", "Image size", "Validation", "Test", "Status")
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def run_name(record) -> str:
    return Path(record.run_dir).name


def training_text(config: dict) -> str:
    """What trained: the share of weights when the run recorded it, else the freeze preset; an ensemble's
    record (its first member's recipe) says how many models it averages."""
    if config.get("ensemble_members"):
        return f"mean of {config['ensemble_members']} models, " + training_text(
            {k: v for k, v in config.items() if k not in ("ensemble_members", "params_total")})
    total, trainable = config.get("params_total"), config.get("params_trainable")
    if total and trainable is not None:
        return f"{trainable / 1e6:.2f} M of {total / 1e6:.2f} M weights ({100 * trainable / total:.0f} %)"
    return {"head": "classifier only", "last-n": f"last {config.get('freeze_blocks', '?')} blocks",
            "none": "everything"}.get(config.get("freeze"), str(config.get("freeze", "–")))


def read_history(run_dir: str) -> list[dict]:
    try:
        history = json.loads(RunFolder(run_dir).history.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []                      # a run folder deleted since, or a run stopped before its first epoch
    return history if isinstance(history, list) else []


class SortableItem(QTableWidgetItem):
    """Sorts by the number behind the text (85.0 % after 9.5 %), not alphabetically."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is None or theirs is None:
            return (mine is None, self.text()) < (theirs is None, other.text())
        return mine < theirs


def cell(text: str, sort_value=None) -> QTableWidgetItem:
    item = SortableItem(text)
    item.setData(SORT_ROLE, sort_value)
    return item


class CompareRuns(QWidget):
    """Table of runs (check a row to plot it) and the overlaid validation-accuracy curves."""

    run_chosen = Signal(str)           # run folder to show in the Results views

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.records: list = []
        self.plot = None
        self._curves: dict[str, tuple[object, object]] = {}      # run folder -> (its record, its curve)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _index: self.show_selected())
        self.show_button = QPushButton("Show in Results")
        self.show_button.setToolTip("Show the confusion matrix and galleries of the selected run")
        self.show_button.clicked.connect(self.show_selected)
        self.hint = QLabel("Every run of this project is listed here. Check runs to overlay their "
                           "validation accuracy.")
        self.hint.setWordWrap(True)
        self.plot_area = QVBoxLayout()
        self.plot_area.setContentsMargins(0, 0, 0, 0)
        plot_holder = QWidget()
        plot_holder.setLayout(self.plot_area)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.hint, 1)
        row.addWidget(self.show_button)
        top_layout.addLayout(row)
        top_layout.addWidget(self.table, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(plot_holder)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)
        self._update_buttons()

    def _create_plot(self) -> None:
        import pyqtgraph as pg
        from PySide6.QtGui import QPalette
        palette = self.palette()
        pg.setConfigOptions(antialias=True, background=palette.color(QPalette.ColorRole.Base),
                            foreground=palette.color(QPalette.ColorRole.Text))
        self.plot = pg.PlotWidget(title="Validation accuracy")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend(offset=(-10, -10))
        self.plot_area.addWidget(self.plot)
        self.splitter.setSizes([1, 1])           # the table was laid out alone: share the height with the plot

    def set_runs(self, records: list) -> None:
        """Show `records` (engine.project.RunRecord), newest last; a run new to the table starts checked."""
        if records and self.plot is None:
            self._create_plot()
        unchecked = {record.run_dir for record in self.records} - set(self.checked_runs())
        self.records = list(records)
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.records))
        for row, record in enumerate(self.records):
            config = record.config or {}
            name = cell(run_name(record), record.created)
            name.setFlags(name.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            name.setCheckState(Qt.CheckState.Unchecked if record.run_dir in unchecked else Qt.CheckState.Checked)
            name.setData(Qt.ItemDataRole.UserRole, record.run_dir)
            name.setToolTip(record.run_dir)
            lr = config.get("lr")
            cells = [name, cell(record.backbone), cell(training_text(config), config.get("params_trainable")),
                     cell(str(config.get("epochs", "–")), config.get("epochs")),
                     cell(f"{lr:g}" if lr else "–", lr),
                     cell(str(config.get("image_size") or "default"), config.get("image_size") or 0),
                     cell(percent(record.val_accuracy), record.val_accuracy),
                     cell(percent(record.test_accuracy), record.test_accuracy), cell(record.status)]
            for column, item in enumerate(cells):
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.table.blockSignals(False)
        self._redraw()
        self._update_buttons()

    def checked_runs(self) -> list[str]:
        return [self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) for row in range(self.table.rowCount())
                if self.table.item(row, 0).checkState() == Qt.CheckState.Checked]

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            self._redraw()

    def _redraw(self) -> None:
        """A curve per run, drawn when its record is new or changed and coloured by its place in the
        project; unchecked ones hide."""
        if self.plot is None:
            return
        import pyqtgraph as pg
        current = {record.run_dir: record for record in self.records}
        for run_dir in [r for r, (record, _) in self._curves.items() if current.get(r) != record]:
            self.plot.removeItem(self._curves.pop(run_dir)[1])      # changed, or another project was opened
        checked = set(self.checked_runs())
        for number, record in enumerate(self.records):
            if record.run_dir not in self._curves:
                history = [h for h in read_history(record.run_dir) if "val_accuracy" in h]
                colour = COLOURS[number % len(COLOURS)]
                self._curves[record.run_dir] = (record, self.plot.plot(
                    [h["epoch"] for h in history], [h["val_accuracy"] for h in history], name=run_name(record),
                    pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=5, symbolBrush=colour, symbolPen=None))
            self._curves[record.run_dir][1].setVisible(record.run_dir in checked)

    def curve_points(self, run_dir: str) -> int:
        """Points drawn for a run (0 when unchecked): for tests."""
        curve = self._curves.get(run_dir, (None, None))[1]
        if curve is None or not curve.isVisible():
            return 0
        x, _ = curve.getData()
        return 0 if x is None else len(x)

    def _update_buttons(self) -> None:
        self.show_button.setEnabled(bool(self.table.selectedItems()))

    def show_selected(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        if rows:
            self.run_chosen.emit(self.table.item(rows.pop(), 0).data(Qt.ItemDataRole.UserRole))
