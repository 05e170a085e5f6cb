"""Step 4, Results: the headline accuracies and per-class scores of the finished run.

The confusion matrix and the browser of confidently wrong images come with a later issue; this
panel already shows where the model file is.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

STATUS_TEXT = {"completed": "Training finished.", "stopped-early": "Training stopped early (no more improvement).",
               "cancelled": "Training was stopped; the best checkpoint so far is kept."}


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


class ResultsPanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir: str | None = None
        self.status = QLabel("No finished run yet.")
        self.status.setWordWrap(True)
        self.headline = QLabel()
        self.headline.setStyleSheet("QLabel { font-size: 16pt; }")
        self.checkpoint = QLabel()
        self.checkpoint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.checkpoint.setWordWrap(True)
        self.open_folder = QPushButton("Open run folder")
        self.open_folder.clicked.connect(self._open_run_folder)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Images"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.note = QLabel("Per-class scores are on the test split when the dataset has one, else on validation.")
        row = QHBoxLayout()
        row.addWidget(self.checkpoint, 1)
        row.addWidget(self.open_folder)
        layout = QVBoxLayout(self)
        for widget in (self.status, self.headline):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        self.show_result(None)

    def show_result(self, result) -> None:
        """`result`: the engine's FitResult, or None before any run."""
        self.run_dir = result.run_dir if result else None
        self.open_folder.setEnabled(self.run_dir is not None)
        self.table.setRowCount(0)
        if result is None:
            self.headline.setText("")
            self.checkpoint.setText("")
            return
        metrics = result.metrics
        self.status.setText(STATUS_TEXT.get(result.status, result.status))
        self.headline.setText(f"Validation accuracy <b>{percent(metrics.get('val_accuracy'))}</b>"
                              f" &nbsp;·&nbsp; Test accuracy <b>{percent(metrics.get('test_accuracy'))}</b>"
                              if metrics else "")
        self.checkpoint.setText(f"Model: {result.checkpoint}" if result.checkpoint else "No checkpoint was saved.")
        rows = metrics.get("per_class", [])
        self.table.setRowCount(len(rows))
        for r, entry in enumerate(rows):
            cells = [entry["class"], percent(entry["precision"]), percent(entry["recall"]),
                     percent(entry["f1"]), str(entry["support"])]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))

    def _open_run_folder(self) -> None:
        if self.run_dir and Path(self.run_dir).exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.run_dir))
