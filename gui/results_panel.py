"""Step 4, Results: where the model fails, why, and what to do about it.

The headline scores, a clickable confusion matrix, sortable per-class scores and a gallery that
shows either one matrix cell or the most confidently wrong images. From the gallery the user
corrects labels (recorded in the application state by the window, applied from the next run), opens
an image larger with its Grad-CAM, and retrains; "Compare runs" lists the state's runs. Everything
shown comes from the run folder (`metrics.json`, `predictions.json`), so an old run shows like a new
one. Slow work (thumbnails, Grad-CAM) runs through task slots of the window's task group, which joins it
on closing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QImage, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSplitter,
                               QStackedWidget, QTableView, QTabWidget, QVBoxLayout, QWidget)

from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.runfolder import RunFolder
from gui.compare_runs import CompareRuns
from gui.confusion_view import ConfusionView
from gui.explain import ImageDialog
from gui.figures import interval_text, percent
from gui.gallery import Gallery, GalleryItem
from gui.jobs import ModelCache, explain, load_thumbnails
from gui.text_views import TextTable
from gui.trust_view import TrustView
from gui.workers import TaskSlot

if TYPE_CHECKING:
    from gui.state import AppState
    from gui.workers import TaskGroup

STATUS_TEXT = {"completed": "Training finished.", "stopped-early": "Training stopped early (no more improvement).",
               "cancelled": "Training was stopped; the checkpoint so far is kept."}
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
MAX_CACHED_THUMBNAILS = 3000
TEXT_COLUMNS = ["Where", "True", "Predicted", "Score", "Text"]


def accuracy_html(metrics: dict, split: str) -> str:
    """'<b>64.0 %</b> (50–76)': a split's accuracy and its 95 % interval (Wilson), from its confusion matrix."""
    value = metrics.get(f"{split}_accuracy")
    matrix = (metrics.get("splits") or {}).get(split, {}).get("confusion_matrix") or []
    count = sum(map(sum, matrix))
    if value is None or not count:
        return f"<b>{percent(value)}</b>"
    interval = interval_text(round(value * count), count)
    return f"<b>{percent(value)}</b> <span style='font-size: 11pt; color: gray'>{interval}</span>"


@dataclass
class RunView:
    """What the Results views show of one run folder."""

    run_dir: str
    checkpoint: str | None
    metrics: dict
    predictions: dict[str, list[dict]] = field(default_factory=dict)    # split -> path/true/predicted/score

    @property
    def classes(self) -> list[str]:
        return list(self.metrics.get("classes", []))

    @property
    def split(self) -> str:
        """The split the confusion matrix and per-class scores were computed on."""
        return self.metrics.get("evaluated_on") or ("test" if "test" in self.predictions else "val")

    def cell_items(self, true: int, predicted: int) -> list[GalleryItem]:
        """The images of one confusion-matrix cell, most confident first."""
        rows = [p for p in self.predictions.get(self.split, []) if p["true"] == true and p["predicted"] == predicted]
        rows.sort(key=lambda p: -p["score"])
        return [GalleryItem(p["path"], self.classes[true], self.classes[predicted], p["score"]) for p in rows]

    @property
    def modality(self):
        """What the run classified, as its metrics.json says; for a run from before they said it, the
        modality whose own fields its prediction rows carry (a text's text), else its backbone's."""
        if self.metrics.get("modality"):
            return modalities.named(self.metrics["modality"])
        rows = [*self.metrics.get("most_confident_wrong", []), *(r for rows in self.predictions.values() for r in rows[:1])]
        if rows:
            carried = set().union(*rows)
            return next((m for m in modalities.every() if set(m.prediction_fields("")) & carried),
                        modalities.named(None))
        return modalities.for_backbone(self.metrics.get("backbone") or self.metrics.get("config", {}).get("backbone"))

    @property
    def shows_texts(self) -> bool:
        """Its samples are read as texts (a table of texts) rather than looked at in a gallery."""
        return self.modality.sample_view == modalities.TEXT_VIEW

    def cell_texts(self, true: int, predicted: int) -> list[tuple]:
        """The texts of one confusion-matrix cell, most confident first: (where, true, predicted, score, text)."""
        rows = [p for p in self.predictions.get(self.split, []) if p["true"] == true and p["predicted"] == predicted]
        rows.sort(key=lambda p: -p["score"])
        return [(p["path"], self.classes[true], self.classes[predicted], float(p["score"]), p.get("text", ""))
                for p in rows]

    def most_confident_wrong_texts(self) -> list[tuple]:
        return [(w["path"], w["true"], w["predicted"], float(w["score"]), w.get("text", ""))
                for w in self.metrics.get("most_confident_wrong", [])]

    def most_confident_wrong(self) -> list[GalleryItem]:
        return [GalleryItem(w["path"], w["true"], w["predicted"], w["score"], w.get("loss"))
                for w in self.metrics.get("most_confident_wrong", [])]


def read_run(run_dir: str, metrics: dict | None = None) -> RunView:
    """A run folder's results; missing or damaged files give empty parts, never an exception."""
    folder = Path(run_dir)

    def load(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    files = RunFolder(folder)
    return RunView(str(folder), str(files.checkpoint) if files.has_checkpoint() else None,
                   metrics if metrics is not None else load(files.metrics), load(files.predictions))


class ResultsPanel(QWidget):
    """Signals let the window record corrections and let tests wait without sleeping."""

    correction_requested = Signal(str, str, str)     # path, 'exclude' | 'relabel' | 'restore', label
    retrain_requested = Signal()
    thumbnails_loaded = Signal()
    explanation_ready = Signal(object)               # gui.jobs.Explanation
    explanation_failed = Signal(str)

    def __init__(self, state: AppState, tasks: TaskGroup, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.run: RunView | None = None
        self.thumbnails: dict[str, QImage] = {}
        self.model_cache = ModelCache()
        self.image_dialog: ImageDialog | None = None
        self.tasks = tasks
        self.thumbnail_slot = TaskSlot(tasks)       # the gallery's thumbnails: a new page replaces the last
        self.explain_slot = TaskSlot(tasks)         # Grad-CAM of the image shown
        self._make_widgets()
        self._layout()
        self.show_result(None)
        for signal in (state.corrections.events.added, state.corrections.events.changed,
                       state.corrections.events.removed):
            signal.connect(self._show_corrections)
        for signal in (state.runs.events.inserted, state.runs.events.changed, state.runs.events.removed):
            signal.connect(self._show_runs)
        self._show_corrections()
        self._show_runs()

    # -- construction ------------------------------------------------------------------------
    def _make_widgets(self) -> None:
        self.status = QLabel("No finished run yet.")
        self.status.setWordWrap(True)
        self.headline = QLabel()
        self.headline.setStyleSheet("QLabel { font-size: 16pt; }")
        self.headline.setToolTip("In brackets: the range the model's true accuracy on images like these lies in "
                                 "95 times out of 100 (fewer images, wider range).")
        self.checkpoint = QLabel()
        self.checkpoint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.checkpoint.setWordWrap(True)
        self.open_folder = QPushButton("Open run folder")
        self.open_folder.clicked.connect(self._open_run_folder)
        self.confusion = ConfusionView()
        self.confusion.cell_chosen.connect(self.show_cell)
        self.class_model = QStandardItemModel(0, 5, self)
        self.class_model.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Images"])
        self.class_model.setSortRole(SORT_ROLE)
        self.class_table = QTableView()
        self.class_table.setModel(self.class_model)
        self.class_table.setSortingEnabled(True)
        self.class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.class_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.class_table.verticalHeader().setVisible(False)
        self.class_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.class_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.gallery = Gallery(self.thumbnails)
        self.gallery.correction_requested.connect(self.correction_requested)
        self.gallery.image_opened.connect(self.open_image)
        self.gallery.thumbnails_wanted.connect(self._load_thumbnails)
        self.text_list = TextTable()                 # a text run's texts, where an image run has its gallery
        self.text_list.correction_requested.connect(self.correction_requested)
        self.examples = QStackedWidget()
        self.examples.addWidget(self.gallery)
        self.examples.addWidget(self.text_list)
        self.wrong_button = QPushButton("Most confidently wrong")
        self.wrong_button.setToolTip("The images the model got wrong with the highest loss, worst first")
        self.wrong_button.clicked.connect(self.show_most_confident_wrong)
        self.corrections_note = QLabel()
        self.retrain_button = QPushButton("Retrain with corrections")
        self.retrain_button.setToolTip("Start a new run with the same settings, leaving out excluded images "
                                       "and using the classes you chose")
        self.retrain_button.clicked.connect(self.retrain_requested)
        self.compare = CompareRuns()
        self.compare.run_chosen.connect(self.show_run_folder)
        self.trust = TrustView(self.tasks)

    def _layout(self) -> None:
        row = QHBoxLayout()
        row.addWidget(self.checkpoint, 1)
        row.addWidget(self.open_folder)
        scores = QSplitter(Qt.Orientation.Vertical)
        scores.addWidget(self.confusion)
        scores.addWidget(self.class_table)
        scores.setSizes([420, 220])
        gallery_box = QWidget()
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        gallery_row = QHBoxLayout()
        gallery_row.addWidget(self.wrong_button)
        gallery_row.addStretch(1)
        gallery_row.addWidget(self.corrections_note)
        gallery_row.addWidget(self.retrain_button)
        gallery_layout.addLayout(gallery_row)
        gallery_layout.addWidget(self.examples, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(scores)
        self.splitter.addWidget(gallery_box)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([480, 620])          # room for a ten-class matrix; the gallery takes the rest
        self.views = QTabWidget()
        self.views.addTab(self.splitter, "Errors")
        self.views.addTab(self.trust, "Trust")
        self.views.addTab(self.compare, "Compare runs")
        layout = QVBoxLayout(self)
        for widget in (self.status, self.headline):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.views, 1)

    # -- showing a run -----------------------------------------------------------------------
    def set_can_retrain(self, can: bool) -> None:
        self.retrain_button.setEnabled(can)

    def show_result(self, result) -> None:
        """`result`: the engine's FitResult just finished, or None before any run."""
        if result is None:
            self.run = None
            self.status.setText("No finished run yet.")
            self._show_run_view(None)
            return
        self.status.setText(STATUS_TEXT.get(result.status, result.status))
        self._show_run_view(read_run(result.run_dir, result.metrics))

    def show_run_folder(self, run_dir: str) -> None:
        """An earlier run of the project (from "Compare runs")."""
        view = read_run(run_dir)
        self.status.setText(f"Run {Path(run_dir).name}" + ("" if view.metrics else
                            ": no scores were saved (the run was stopped or its folder is gone)."))
        self._show_run_view(view)
        self.views.setCurrentIndex(0)

    def _show_run_view(self, view: RunView | None) -> None:
        self.run = view
        metrics = view.metrics if view else {}
        self.open_folder.setEnabled(view is not None and Path(view.run_dir).exists())
        self.headline.setText(f"Validation accuracy {accuracy_html(metrics, 'val')}"
                              f" &nbsp;·&nbsp; Test accuracy {accuracy_html(metrics, 'test')}" if metrics else "")
        self.checkpoint.setText("" if view is None else f"Model: {view.checkpoint}" if view.checkpoint
                                else "No checkpoint was saved.")
        text = view is not None and view.shows_texts
        self.examples.setCurrentWidget(self.text_list if text else self.gallery)
        self.class_model.setHorizontalHeaderItem(4, QStandardItem("Texts" if text else "Images"))
        self.text_list.correction_classes = list(view.classes) if text else None
        noun = "texts" if text else "images"
        self.retrain_button.setToolTip(f"Start a new run with the same settings, leaving out excluded {noun} "
                                       "and using the classes you chose (right-click a text to correct it)"
                                       if text else f"Start a new run with the same settings, leaving out "
                                       f"excluded {noun} and using the classes you chose")
        self.wrong_button.setToolTip(f"The {'texts' if text else 'images'} the model got wrong with the highest "
                                     "loss, worst first")
        self.confusion.set_matrix(view.classes if view else [], metrics.get("confusion_matrix", []),
                                  view.split if view else "", noun="texts" if text else "images")
        self._fill_class_table(metrics.get("per_class", []))
        self.trust.show_run(view)
        self.show_most_confident_wrong()
        self._update_corrections_note()

    def _fill_class_table(self, rows: list[dict]) -> None:
        self.class_model.setRowCount(0)
        for entry in rows:
            cells = [(entry["class"], entry["class"].lower())]
            cells += [(percent(entry[key]), entry[key]) for key in ("precision", "recall", "f1")]
            cells.append((str(entry["support"]), entry["support"]))
            items = []
            for text, sort_value in cells:
                item = QStandardItem(text)
                item.setData(sort_value, SORT_ROLE)
                items.append(item)
            self.class_model.appendRow(items)

    # -- galleries ---------------------------------------------------------------------------
    def show_cell(self, true: int, predicted: int) -> None:
        if self.run is None:
            return
        classes = self.run.classes
        split = "test" if self.run.split == "test" else "validation"
        what = (f"{classes[true]} correctly recognised" if true == predicted
                else f"true class {classes[true]}, predicted as {classes[predicted]}")
        if self.run.shows_texts:
            rows = self.run.cell_texts(true, predicted)
            self.text_list.show_rows(f"<b>{what}</b>: {len(rows)} {split} text{'s' if len(rows) != 1 else ''}",
                                     TEXT_COLUMNS, rows)
            return
        items = self.run.cell_items(true, predicted)
        self.gallery.show_items(f"<b>{what}</b>: {len(items)} {split} image{'s' if len(items) != 1 else ''}",
                                items, classes)

    def show_most_confident_wrong(self) -> None:
        self.confusion.table.clearSelection()
        if self.run is None:
            self.gallery.show_items("No run yet.", [], [])
            return
        if self.run.shows_texts:
            rows = self.run.most_confident_wrong_texts()
            self.text_list.show_rows(
                f"<b>Most confidently wrong</b>: the {len(rows)} worst mistakes, highest loss first. Select one to "
                "read it whole." if rows else "<b>No mistakes</b> on the evaluated texts. Click a matrix cell to "
                "read its texts.", TEXT_COLUMNS, rows, self.run.classes, filter_column=1)
            return
        items = self.run.most_confident_wrong()
        title = (f"<b>Most confidently wrong</b>: the {len(items)} worst mistakes, highest loss first. "
                 "Double-click one to look closer." if items else
                 "<b>No mistakes</b> on the evaluated images. Click a matrix cell to browse its images.")
        self.gallery.show_items(title, items, self.run.classes)

    def _load_thumbnails(self, paths: list[str]) -> None:
        if len(self.thumbnails) > MAX_CACHED_THUMBNAILS:
            self.thumbnails.clear()
        control = RunControl()
        self.thumbnail_slot.start(partial(load_thumbnails, paths, control), control, on_result=self._on_thumbnails)

    def _on_thumbnails(self, images: dict[str, QImage]) -> None:
        self.thumbnails.update(images)
        self.gallery.model.thumbnails_arrived()
        self.thumbnails_loaded.emit()

    # -- corrections and runs --------------------------------------------------------------------
    def _show_corrections(self) -> None:
        """The state's corrections on the gallery tiles, and how many the next run applies."""
        self.gallery.set_corrections(dict(self.state.corrections))
        self._update_corrections_note()

    def _update_corrections_note(self) -> None:
        count = sum(item["action"] != "keep" for item in self.state.corrections.values())   # keep changes no run
        self.corrections_note.setText(f"{count} correction{'s' if count != 1 else ''} for the next run"
                                      if count else "")

    def _show_runs(self) -> None:
        self.compare.set_runs(list(self.state.runs))

    # -- one image, larger, and why ------------------------------------------------------------
    def open_image(self, item: GalleryItem, explain_now: bool = False) -> None:
        if self.run is None:
            return
        if self.image_dialog is None:
            self.image_dialog = ImageDialog(self)
            self.image_dialog.explain_requested.connect(self.explain)
        dialog = self.image_dialog
        dialog.show_item(item, self.run.classes, self.state.corrections.get(item.path), self.run.checkpoint is not None)
        dialog.show()
        dialog.raise_()
        if explain_now and self.run.checkpoint is not None:
            dialog.request()

    def explain(self, path: str, class_index: int) -> None:
        """Grad-CAM of one image for one class, on a worker; `explanation_ready` or `_failed` follows."""
        if self.run is None or self.run.checkpoint is None:
            self.explanation_failed.emit("this run has no model file")
            return
        self.explain_slot.start(partial(explain, self.model_cache, self.run.checkpoint, path, class_index),
                                on_result=self._on_explained, on_failed=self._on_explain_failed)

    def _on_explained(self, explanation) -> None:
        if self.image_dialog is not None:
            self.image_dialog.show_explanation(explanation)
        self.explanation_ready.emit(explanation)

    def _on_explain_failed(self, message: str, _details: str) -> None:
        if self.image_dialog is not None:
            self.image_dialog.show_error(message)
        self.explanation_failed.emit(message)

    def _open_run_folder(self) -> None:
        if self.run and Path(self.run.run_dir).exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.run.run_dir))
