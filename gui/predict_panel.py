"""Step 5, Try it: drop photos (or a folder) and see what the model says, with probabilities; for a text
model, type or paste a text and press Predict.

The model is the project's latest usable run (from the application state), an exported `.onnx` file or
any checkpoint/run folder; prediction runs the engine's `predict_images` on a worker of the window's
task group (the classifier is loaded there too and kept for the next drop), so the window stays
responsive on a large folder and the user can cancel.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRect, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox, QStyle,
                               QStyledItemDelegate,
                               QStyleOptionViewItem, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.data.images import IMAGE_EXTENSIONS, has_image_extension
from gui.drop_zone import DropZone
from gui.jobs import PREDICT_THUMBNAIL_PX, PredictOutcome, predict_job
from gui.workers import TaskSlot

if TYPE_CHECKING:
    from engine.outputs.predict import PredictionReport
    from gui.state import AppState
    from gui.workers import Task, TaskGroup

THUMBNAIL_PX = PREDICT_THUMBNAIL_PX
TOPK_ROLE = Qt.ItemDataRole.UserRole + 1
VERDICT_ROLE = Qt.ItemDataRole.UserRole + 2      # a line above the classes: "not like anything it was trained on"
EXPORTED_SUFFIXES = (".onnx", ".xml")     # an ONNX file, or an OpenVINO IR's model.xml


def is_exported(path: str) -> bool:
    return str(path).lower().endswith(EXPORTED_SUFFIXES)


SOURCES = (("latest", "Latest training run"), ("onnx", "An exported ONNX or OpenVINO file…"),
           ("checkpoint", "A checkpoint or run folder…"))
COLUMNS = ("Image", "File", "Top classes")
TEXT_COLUMNS = ("", "Text", "Top classes")


def model_modality(path: str):
    """What a checkpoint, run folder or .onnx file classifies (reads its metadata only)."""
    from engine.outputs.predict import model_modality as read_modality
    return read_modality(path)


def short_name(path: str) -> str:
    """Folder and file name: in a dropped folder of class folders the folder says what the photo is."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# -- widgets ----------------------------------------------------------------------------------------
def usable_image_paths(urls: list[QUrl]) -> list[str]:
    """Dropped image files and folders (folders are walked by the engine); anything else is left out."""
    paths = [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]
    return [str(p) for p in paths if p.is_dir() or (p.is_file() and has_image_extension(p))]


def unknown_verdict(prediction) -> str:
    """What Try it says above the classes of an input the model should not answer for ("" when it may)."""
    from engine.outputs.predict import UNKNOWN
    if prediction.label != UNKNOWN:
        return ""
    if prediction.unlike_training:
        return f"Not like anything it was trained on — closest: {prediction.nearest}"
    return f"Unsure (below the minimum probability) — closest: {prediction.nearest}"


class TopKDelegate(QStyledItemDelegate):
    """One line per class: name, a probability bar, the percentage; the top class stands out."""

    LABEL_SHARE = 0.35
    PERCENT_WIDTH = 56

    def _line_height(self, option: QStyleOptionViewItem) -> int:
        return option.fontMetrics.height() + 6

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:
        lines = len(index.data(TOPK_ROLE) or []) + (1 if index.data(VERDICT_ROLE) else 0)
        return QSize(320, max(THUMBNAIL_PX + 8, lines * self._line_height(option) + 8))

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        entries = index.data(TOPK_ROLE)
        if not entries:
            super().paint(painter, option, index)
            return
        style = option.widget.style() if option.widget else None
        if style is not None and option.state & QStyle.StateFlag.State_Selected:
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, option.widget)
        palette, line = option.palette, self._line_height(option)
        rect = option.rect.adjusted(6, 4, -6, -4)
        label_width = int(rect.width() * self.LABEL_SHARE)
        bar_width = max(10, rect.width() - label_width - self.PERCENT_WIDTH - 12)
        painter.save()
        verdict = index.data(VERDICT_ROLE)
        if verdict:
            font = painter.font()
            font.setBold(True)
            painter.setFont(font)
            painter.setPen(QColor("#b00020"))
            painter.drawText(QRect(rect.left(), rect.top(), rect.width(), line), Qt.AlignmentFlag.AlignVCenter,
                             option.fontMetrics.elidedText(verdict, Qt.TextElideMode.ElideRight, rect.width()))
            rect = rect.adjusted(0, line, 0, 0)
        for i, entry in enumerate(entries):
            top = rect.top() + i * line
            font = painter.font()
            font.setBold(i == 0)
            painter.setFont(font)
            painter.setPen(palette.color(palette.ColorRole.Text))
            painter.drawText(QRect(rect.left(), top, label_width, line), Qt.AlignmentFlag.AlignVCenter,
                             option.fontMetrics.elidedText(entry["label"], Qt.TextElideMode.ElideRight, label_width))
            bar = QRect(rect.left() + label_width + 6, top + 3, bar_width, line - 6)
            painter.fillRect(bar, palette.color(palette.ColorRole.AlternateBase))
            colour = palette.color(palette.ColorRole.Highlight) if i == 0 else QColor(150, 160, 175)
            painter.fillRect(QRect(bar.left(), bar.top(), round(bar_width * entry["score"]), bar.height()), colour)
            painter.drawText(QRect(bar.right() + 6, top, self.PERCENT_WIDTH, line),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{100 * entry['score']:.1f} %")
        painter.restore()


class PredictPanel(QWidget):
    """Model source on top, drop zone and buttons, then one table row per image."""

    predictions_shown = Signal(object)     # engine PredictionReport
    prediction_failed = Signal(str)

    def __init__(self, state: AppState, tasks: TaskGroup, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.ask_model_path = self._ask_model_path
        self.ask_images = self._ask_images
        self.ask_folder = self._ask_folder
        self._texts: dict[str, str] = {}            # origin -> text of the texts last predicted
        self.slot = TaskSlot(tasks)                 # one prediction at a time: a new one replaces the last
        self._cached: PredictOutcome | None = None
        self._last_inputs: list[str] = []
        self.source = QComboBox()
        for key, label in SOURCES:
            self.source.addItem(label, key)
        self.source.activated.connect(self._on_source_activated)
        self.model_label = QLabel()
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.top_k = QSpinBox(minimum=1, maximum=10, value=5, prefix="top ")
        self.drop_zone = DropZone("Drop photos or a folder here", usable_image_paths)
        self.drop_zone.paths_dropped.connect(self.predict)
        self.open_images_button = QPushButton("Open photos…")
        self.open_images_button.clicked.connect(self.open_images)
        self.open_folder_button = QPushButton("Open folder…")
        self.open_folder_button.clicked.connect(self.open_folder)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.text_box = QPlainTextEdit()
        self.text_box.setPlaceholderText("Type or paste a text here, then press Predict (Ctrl+Enter).")
        self.text_box.setMaximumHeight(140)
        self.predict_button = QPushButton("Predict")
        self.predict_button.setDefault(True)
        self.predict_button.setShortcut("Ctrl+Return")
        self.predict_button.clicked.connect(self.predict_typed_text)
        self.open_texts_button = QPushButton("Open texts…")
        self.open_texts_button.setToolTip("Classify every line of a .txt file, or the text column of a .csv/.tsv")
        self.open_texts_button.clicked.connect(self.open_text_file)
        self.text_input = QWidget()                 # shown instead of the drop zone for a text model
        self.table = self._make_table()
        self._layout()
        self._set_running(False)
        state.events.latest_run.connect(self._show_model)
        self._show_model()

    def _make_table(self) -> QTableWidget:
        table = QTableWidget(0, len(COLUMNS))
        table.setHorizontalHeaderLabels(COLUMNS)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        table.setColumnWidth(0, THUMBNAIL_PX + 16)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        table.setColumnWidth(1, 260)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        table.setItemDelegateForColumn(2, TopKDelegate(table))
        return table

    def _layout(self) -> None:
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("<b>Model:</b>"))
        model_row.addWidget(self.source)
        model_row.addWidget(self.model_label, 1)
        model_row.addWidget(self.top_k)
        buttons = QHBoxLayout()
        for widget in (self.open_images_button, self.open_folder_button):
            buttons.addWidget(widget)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch()
        text_row = QHBoxLayout(self.text_input)
        text_row.setContentsMargins(0, 0, 0, 0)
        text_row.addWidget(self.text_box, 1)
        text_buttons = QVBoxLayout()
        text_buttons.addStretch(1)
        text_buttons.addWidget(self.open_texts_button)
        text_buttons.addWidget(self.predict_button)
        text_row.addLayout(text_buttons)
        self.image_buttons = QWidget()
        self.image_buttons.setLayout(buttons)
        buttons.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.addLayout(model_row)
        layout.addWidget(self.drop_zone)
        layout.addWidget(self.text_input)
        layout.addWidget(self.image_buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)

    # -- which model ----------------------------------------------------------------------------
    @property
    def model_path(self) -> str | None:
        if self.source.currentData() != "latest":
            return self.state.predict_model
        return self.state.latest_run.run_dir if self.state.latest_run else None

    def set_model(self, path: str) -> None:
        """Use an `.onnx` file, a checkpoint or a run folder (what the source menu asks for)."""
        self.state.predict_model_modality = model_modality(path)
        self.state.predict_model = str(path)
        self.source.setCurrentIndex(self.source.findData("onnx" if is_exported(path) else "checkpoint"))
        self._show_model()

    def _on_source_activated(self, index: int) -> None:
        kind = self.source.itemData(index)
        if kind != "latest":
            path = self.ask_model_path(kind)
            if path:
                self.set_model(path)
                return
            chosen = self.state.predict_model
            if chosen is None or (kind == "onnx") != is_exported(chosen):
                self.source.setCurrentIndex(0)
        self._show_model()

    def _ask_model_path(self, kind: str) -> str | None:
        if kind == "onnx":
            path, _ = QFileDialog.getOpenFileName(self, "Choose an exported model", "",
                                                  "Exported models (*.onnx model.xml);;ONNX (*.onnx);;OpenVINO IR (*.xml)")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint (or cancel to pick a run folder)", "",
                                                  "TransferLab checkpoints (*.safetensors)")
            path = path or QFileDialog.getExistingDirectory(self, "Choose a run folder")
        return path or None

    @property
    def model_modality(self):
        """What the chosen model classifies (None: no model yet)."""
        if self.source.currentData() != "latest":
            return self.state.predict_model_modality if self.state.predict_model is not None else None
        return modalities.for_backbone(self.state.latest_run.backbone) if self.state.latest_run else None

    @property
    def text_model(self) -> bool:
        """The chosen model's samples are texts: the panel takes typed texts instead of photos."""
        modality = self.model_modality
        return modality is not None and modality.sample_view == modalities.TEXT_VIEW

    def _show_model(self) -> None:
        text = self.text_model
        self.drop_zone.setVisible(not text)
        self.text_input.setVisible(text)
        for button in (self.open_images_button, self.open_folder_button):
            button.setVisible(not text)
        self.table.setHorizontalHeaderLabels(TEXT_COLUMNS if text else COLUMNS)
        self.table.setColumnHidden(0, text)
        path = self.model_path
        if path:
            kind = ("ONNX, onnxruntime" if path.lower().endswith(".onnx") else
                    "OpenVINO" if path.lower().endswith(".xml") else "PyTorch")
            self.model_label.setText(f"{Path(path).name}  ({kind})")
            self.model_label.setToolTip(path)
        else:
            self.model_label.setText("no model yet: train one, or choose an exported .onnx file"
                                     if self.source.currentData() == "latest" else "choose a file")
            self.model_label.setToolTip("")

    # -- which images ------------------------------------------------------------------------------
    def _ask_images(self) -> list[str]:
        patterns = " ".join(f"*{suffix}" for suffix in sorted(IMAGE_EXTENSIONS))
        paths, _ = QFileDialog.getOpenFileNames(self, "Photos to classify", "", f"Images ({patterns})")
        return paths

    def _ask_folder(self) -> str | None:
        return QFileDialog.getExistingDirectory(self, "A folder of photos to classify") or None

    def open_images(self) -> None:
        paths = self.ask_images()
        if paths:
            self.predict(paths)

    def open_folder(self) -> None:
        folder = self.ask_folder()
        if folder:
            self.predict([folder])

    # -- prediction ----------------------------------------------------------------------------------
    def predict_typed_text(self) -> Task | None:
        """Classify the text in the box (the whole box is one text) with the chosen text model."""
        text = self.text_box.toPlainText().strip()
        if not text:
            self._show_failure("Type or paste a text first.")
            return None
        return self.predict_texts([text])

    def ask_text_file(self) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, "Texts to classify", "",
                                              "Texts (*.txt *.csv *.tsv);;All files (*)")
        return path or None

    def open_text_file(self) -> Task | None:
        """Every non-empty line of a .txt file, or the text column of a .csv/.tsv, one table row each."""
        from engine.modalities.text.predict import read_text_inputs   # the text box's own file reader
        path = self.ask_text_file()
        if not path:
            return None
        try:
            table = Path(path).suffix.lower() in (".csv", ".tsv")
            items = read_text_inputs(csv_file=path) if table else read_text_inputs(text_file=path)
        except ValueError as exc:                     # unreadable file, or no text column: said in one line
            self._show_failure(str(exc))
            return None
        if not items:
            self._show_failure(f"{Path(path).name} holds no texts.")
            return None
        return self.predict_texts([text for _, text in items], [origin for origin, _ in items])

    def predict_texts(self, texts: list[str], origins: list[str] | None = None) -> Task | None:
        """Classify texts with the chosen text model on a worker; one table row per text."""
        path = self._usable_model_path()
        if path is None:
            return None
        if not self.text_model:
            self._show_failure(f"{Path(path).name} classifies images: drop photos, or choose a text model above.")
            return None
        items = list(zip(origins or [f"text {i + 1}" for i in range(len(texts))], texts))
        self._texts = dict(items)
        control = RunControl()
        return self._start(partial(predict_job, path, self._cached, items, self.top_k.value(), control), control,
                           f"Classifying {'the text' if len(items) == 1 else f'{len(items)} texts'} with "
                           f"{Path(path).name}…")

    def _usable_model_path(self) -> str | None:
        path = self.model_path
        if not path:
            self._show_failure("There is no model yet: train one first, or choose an exported .onnx file "
                               "or a checkpoint above.")
        return path or None

    @property
    def task(self) -> Task | None:
        """The prediction running, until its thread has ended."""
        return self.slot.task

    def _start(self, job, control: RunControl, message: str) -> Task:
        """A new prediction replaces one still running: the user asked again, the old answer no longer matters."""
        task = self.slot.start(job, control, on_result=self._on_succeeded, on_failed=self._on_failed,
                               on_progress=self._on_progress, on_cancelled=self._on_cancelled,
                               on_done=self._on_task_done)
        self._set_running(True)
        self.summary.setStyleSheet("")
        self.summary.setText(message)
        return task

    def predict(self, inputs: list[str]) -> Task | None:
        """Classify image files and folders with the chosen model on a worker."""
        path = self._usable_model_path()
        if path is None:
            return None
        if self.text_model:
            self._show_failure(f"{Path(path).name} classifies texts: type one in the box above.")
            return None
        self._last_inputs = [str(p) for p in inputs]
        control = RunControl()
        return self._start(partial(predict_job, path, self._cached, [], self.top_k.value(), control,
                                   arguments=self._last_inputs), control, f"Classifying {self._describe(self._last_inputs)} with {Path(path).name}…")

    def cancel(self) -> None:
        self.slot.cancel()

    @staticmethod
    def _describe(inputs: list[str]) -> str:
        return Path(inputs[0]).name if len(inputs) == 1 else f"{len(inputs)} items"

    def _set_running(self, running: bool) -> None:
        self.predict_button.setEnabled(not running)
        self.progress.setVisible(running)
        self.progress.setRange(0, 0)
        self.cancel_button.setVisible(running)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage} %v / %m" if total else stage)

    def _on_succeeded(self, outcome: PredictOutcome) -> None:
        self._cached = outcome
        self.show_report(outcome.report, outcome.thumbnails)
        self.predictions_shown.emit(outcome.report)

    def _on_failed(self, message: str, _details: str) -> None:
        self._show_failure(message)
        self.prediction_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.summary.setText("Cancelled.")

    def _on_task_done(self, _task: Task) -> None:
        self._set_running(False)

    def _show_failure(self, message: str) -> None:
        self.summary.setStyleSheet("QLabel { color: #b00020; }")
        self.summary.setText(message)

    def show_report(self, report: "PredictionReport", thumbnails: dict[str, QImage]) -> None:
        """One row per image, most likely class first; unreadable files follow with the reason."""
        table = self.table
        texts = self._texts if self.text_model else {}
        table.setRowCount(len(report.predictions) + len(report.skipped))
        for row, prediction in enumerate(report.predictions):
            image = QTableWidgetItem()
            if prediction.path in thumbnails:
                image.setData(Qt.ItemDataRole.DecorationRole, QPixmap.fromImage(thumbnails[prediction.path]))
            table.setItem(row, 0, image)
            if prediction.path in texts:
                text = texts[prediction.path]
                name = QTableWidgetItem(" ".join(text.split())[:300])
                name.setToolTip(text[:2000])
            else:
                name = QTableWidgetItem(short_name(prediction.path))
                name.setToolTip(prediction.path)
            table.setItem(row, 1, name)
            best = QTableWidgetItem(f"{prediction.label} {100 * prediction.score:.1f} %")
            best.setData(TOPK_ROLE, prediction.top_k)
            verdict = unknown_verdict(prediction)
            best.setData(VERDICT_ROLE, verdict)
            best.setToolTip("\n".join([verdict] * bool(verdict) +
                                      [f"{e['label']}: {100 * e['score']:.2f} %" for e in prediction.top_k]))
            table.setItem(row, 2, best)
        for offset, skipped in enumerate(report.skipped):
            row = len(report.predictions) + offset
            table.setItem(row, 0, QTableWidgetItem())
            name = QTableWidgetItem(short_name(skipped["path"]))
            name.setToolTip(skipped["path"])
            table.setItem(row, 1, name)
            reason = QTableWidgetItem(f"not classified: {skipped['reason']}")
            reason.setForeground(QColor("#b00020"))
            table.setItem(row, 2, reason)
        table.resizeRowsToContents()
        n, skipped = len(report.predictions), len(report.skipped)
        noun = "text" if texts else "image"
        text = f"{n} {noun}{'s' if n != 1 else ''} classified by {Path(self._cached.model_key[0]).name if self._cached else 'the model'}"
        self.summary.setStyleSheet("")
        self.summary.setText(text + (f"; {skipped} could not be read (listed last)." if skipped else "."))

    def predicted_labels(self) -> list[tuple[str, str, float]]:
        """(file name, label, probability) per classified row, for scripts and tests."""
        rows = []
        for row in range(self.table.rowCount()):
            entries = self.table.item(row, 2).data(TOPK_ROLE)
            if entries:
                rows.append((self.table.item(row, 1).text(), entries[0]["label"], entries[0]["score"]))
        return rows
