"""File → Export model…: the engine's verified export on a worker thread, and what it proved.

ONNX export always verifies the file against PyTorch on real images before writing it; the dialog
shows that verification (largest logit difference, top-1 agreement) and where the files went.
The plain `.safetensors` weights for PyTorch users come alone or beside the ONNX file.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from engine.core.control import RunControl
from gui.jobs import ExportOutcome, export_model
from gui.workers import TaskSlot

if TYPE_CHECKING:
    from engine.outputs.export import ExportResult
    from gui.workers import Task, TaskGroup

FORMATS = (("onnx", "ONNX (.onnx), verified against PyTorch"),
           ("safetensors", "PyTorch weights only (.safetensors)"),
           ("openvino", "OpenVINO IR folder (model.xml + model.bin), verified by OpenVINO"))
EXPORTERS = (("auto", "Automatic (torch.export, else TorchScript)"), ("dynamo", "torch.export"),
             ("legacy", "TorchScript (deprecated, fast)"))
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "openvino": ""}
GRAPH_FORMATS = ("onnx", "openvino")        # what the precision, exporter and verification apply to
PRECISIONS = (("fp32", "fp32: full precision"),
              ("int8", "int8: about a third of the size, faster on a CPU (checked against fp32)"),
              ("fp16", "fp16: half the size, for GPUs (checked against fp32)"))


def verification_text(result: "ExportResult", noun: str = "images") -> str:
    """The proof an export passed, in a sentence a user can check."""
    exporter = dict(EXPORTERS).get(result.exporter, result.exporter).split(" (")[0]
    return (f"<b>✓ Verified</b> on {result.n_samples} {noun}: largest |logit difference| "
            f"<b>{result.max_abs_diff:.2g}</b>, top-1 agreement <b>{100 * result.top1_agreement:.0f} %</b> "
            f"(PyTorch vs onnxruntime). Exporter: {exporter}, {result.seconds:.1f} s.")


def precision_text(check: dict) -> str:
    """What a smaller precision was measured to do against fp32, or why it was refused."""
    from engine.outputs.precision import PrecisionCheck
    summary = PrecisionCheck.from_dict(check).summary()
    if check.get("refused"):
        return f"<b style='color:#b35900'>⚠ {summary}.</b>"
    per_split = ", ".join(f"{split} {100 * f['fp32_accuracy']:.1f} % → {100 * f['accuracy']:.1f} %"
                          for split, f in check["splits"].items())
    return f"<b>✓ {summary}</b> (accuracy fp32 → {check['asked']}: {per_split})."


def openvino_text(verification: dict) -> str:
    """What the OpenVINO runtime was checked against, in a sentence."""
    if "max_abs_diff" in verification:
        figures = (f"largest |logit difference| <b>{verification['max_abs_diff']:.2g}</b>, top-1 agreement "
                   f"<b>{100 * verification['top1_agreement']:.0f} %</b>")
    else:
        figures = (f"accuracy <b>{100 * verification['accuracy']:.1f} %</b>, "
                   f"{verification['accuracy_drop_points']:.2f} points below fp32")
    return f"<b>✓ OpenVINO runtime</b> against {verification['against']}: {figures}."


class ExportDialog(QDialog):
    """Choose format and file, export on a worker, then show the verification and the folder."""

    export_finished = Signal(object)      # ExportOutcome
    export_failed = Signal(str)

    def __init__(self, source: str, default_path: str, tasks: TaskGroup, parent: QWidget | None = None,
                 text: bool = False, ensemble: bool = False):
        super().__init__(parent)
        self.setWindowTitle("Export model")
        self.source = source
        self.text = text                  # a text classifier: ONNX with its tokenizer, verified on texts
        self.slot = TaskSlot(tasks)
        self.ask_save_path = self._ask_save_path
        self.outcome: ExportOutcome | None = None
        self.format = QComboBox()
        for key, label in FORMATS:
            self.format.addItem(label, key)
        self.format.currentIndexChanged.connect(self._on_format_changed)
        self.path = QLineEdit(default_path)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse)
        self.with_weights = QCheckBox("Also save plain PyTorch weights (.safetensors) beside it")
        self.exporter = QComboBox()
        for key, label in EXPORTERS:
            self.exporter.addItem(label, key)
        self.dynamic_size = QCheckBox("Accept any image size (dynamic height and width, where the model allows)")
        self.precision = QComboBox()
        for key, label in PRECISIONS:
            self.precision.addItem(label, key)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.stage = QLabel()
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.setVisible(False)
        self.open_folder_button.clicked.connect(self.open_folder)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.cancel_button = QPushButton("Cancel export")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.buttons.rejected.connect(self.reject)
        self._offer_openvino_if_installed()
        if text:
            self._offer_text_export()
        if ensemble:
            self._offer_ensemble_export()
        self._layout()
        self.resize(620, self.sizeHint().height())

    def _layout(self) -> None:
        source = QLabel(self.source)
        source.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        source.setWordWrap(True)
        file_row = QHBoxLayout()
        file_row.addWidget(self.path, 1)
        file_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Model:", source)
        form.addRow("Format:", self.format)
        form.addRow("Save as:", file_row)
        form.addRow("", self.with_weights)
        form.addRow("Precision:", self.precision)
        form.addRow("Exporter:", self.exporter)
        form.addRow("", self.dynamic_size)
        result_row = QHBoxLayout()
        result_row.addWidget(self.result, 1)
        result_row.addWidget(self.open_folder_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.stage)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        layout.addLayout(progress_row)
        layout.addLayout(result_row)
        layout.addStretch()
        layout.addWidget(self.buttons)

    def _offer_text_export(self) -> None:
        """A text model exports to ONNX only (tokens in, logits out), its tokenizer written beside it."""
        self.format.setItemText(0, "ONNX (.onnx + .tokenizer.json), verified against PyTorch on texts")
        self.format.model().item(1).setEnabled(False)
        self.exporter.setItemText(0, "Automatic (TorchScript, else torch.export)")
        for widget in (self.with_weights, self.dynamic_size):
            widget.setChecked(False)
            widget.setVisible(False)

    def _offer_openvino_if_installed(self) -> None:
        import importlib.util
        if importlib.util.find_spec("openvino") is None:
            item = self.format.model().item(self.format.findData("openvino"))
            item.setEnabled(False)
            item.setToolTip("Needs the openvino package (pip install openvino), which this app leaves out to stay "
                            "under 1 GB")

    def _offer_ensemble_export(self) -> None:
        """An ensemble (several networks, one mean) fits one ONNX graph but no timm state dict."""
        weights = self.format.model().item(1)
        weights.setEnabled(False)
        weights.setToolTip("This model averages several networks: a single PyTorch state dict cannot hold it")
        self.with_weights.setChecked(False)
        self.with_weights.setVisible(False)

    # -- choices -----------------------------------------------------------------------------
    @property
    def chosen_format(self) -> str:
        return self.format.currentData()

    def _on_format_changed(self) -> None:
        onnx = self.chosen_format in GRAPH_FORMATS
        for widget in (self.with_weights, self.exporter, self.dynamic_size, self.precision):
            widget.setEnabled(onnx and not (self.text and widget in (self.with_weights, self.dynamic_size)))
        text = self.path.text().strip()
        if text:
            self.path.setText(str(Path(text).with_suffix(SUFFIXES[self.chosen_format])))

    def _ask_save_path(self) -> str | None:
        if self.chosen_format == "openvino":
            return QFileDialog.getExistingDirectory(self, "Export the OpenVINO model into the folder") or None
        suffix = SUFFIXES[self.chosen_format]
        path, _ = QFileDialog.getSaveFileName(self, "Export the model to", self.path.text(),
                                              f"{suffix[1:].upper()} files (*{suffix})")
        return path or None

    def browse(self) -> None:
        path = self.ask_save_path()
        if path:
            self.path.setText(path)

    def output_path(self) -> Path:
        """The chosen file, with the format's suffix added when it was left out."""
        path = Path(self.path.text().strip()).expanduser()
        suffix = SUFFIXES[self.chosen_format]
        if not suffix:
            return path.with_suffix("") if path.suffix.lower() in SUFFIXES.values() else path
        return path if path.suffix.lower() == suffix else path.with_name(path.name + suffix)

    # -- export ------------------------------------------------------------------------------
    def start_export(self) -> Task | None:
        if self.task is not None:
            return None
        if not self.path.text().strip():
            self._show_failure("Choose where to save the model.")
            return None
        out = self.output_path()
        self.path.setText(str(out))
        control = RunControl()
        job = partial(export_model, self.source, str(out), self.chosen_format, self.with_weights.isChecked(),
                      self.exporter.currentData(), self.dynamic_size.isChecked(), control,
                      precision=self.precision.currentData())
        self._set_running(True)
        self.result.setText("")
        self.open_folder_button.setVisible(False)
        return self.slot.start(job, control, on_result=self._on_succeeded, on_failed=self._on_failed,
                               on_progress=self._on_progress, on_cancelled=self._on_cancelled,
                               on_done=self._on_task_done)

    @property
    def task(self) -> Task | None:
        """The export running, until its thread has ended (closing waits for it)."""
        return self.slot.task

    def _set_running(self, running: bool) -> None:
        for widget in (self.format, self.path, self.browse_button, self.with_weights, self.exporter,
                       self.dynamic_size, self.precision, self.export_button, self.buttons.button(QDialogButtonBox.StandardButton.Close)):
            widget.setEnabled(not running)
        if not running:
            self._on_format_changed()
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(running)
        self.progress.setRange(0, 0)
        self.stage.setText("Exporting…" if running else "")

    def _on_progress(self, step: str, done: int, total: int) -> None:
        self.stage.setText(f"{step[0].upper()}{step[1:]}…")
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_succeeded(self, outcome: ExportOutcome) -> None:
        self.outcome = outcome
        lines = []
        if outcome.onnx is not None:
            lines.append(verification_text(outcome.onnx, "texts" if self.text else "images"))
            if outcome.onnx.precision_check:
                lines.append(precision_text(outcome.onnx.precision_check))
            if outcome.onnx.openvino:
                lines.append(openvino_text(outcome.onnx.openvino))
            tokenizer = f", tokenizer in {Path(outcome.onnx.path).with_suffix('.tokenizer.json').name}" if self.text else ""
            lines.append(f"Saved to <b>{outcome.onnx.path}</b> (metadata also in {Path(outcome.onnx.sidecar).name}"
                         f"{tokenizer}).")
            lines.extend(f"<i>Note: {note}</i>" for note in outcome.onnx.warnings)
        if outcome.weights is not None:
            lines.append(f"PyTorch weights saved to <b>{outcome.weights}</b>.")
        self.result.setStyleSheet("")
        self.result.setText("<br>".join(lines))
        self.open_folder_button.setVisible(True)
        self.export_finished.emit(outcome)

    def cancel_export(self) -> None:
        """Stops at the next step: an exporter call in progress (seconds) runs to its end first."""
        if self.task is not None:
            self.slot.cancel()
            self.cancel_button.setEnabled(False)
            self.stage.setText("Cancelling after the current step…")

    def _on_cancelled(self) -> None:
        self._show_failure("Export cancelled: nothing was written.")

    def _on_failed(self, message: str, details: str) -> None:
        self._show_failure(f"The model was not exported: {message}", details)
        self.export_failed.emit(message)

    def _show_failure(self, message: str, details: str = "") -> None:
        self.result.setStyleSheet("QLabel { color: #b00020; }")
        self.result.setText(message)
        self.result.setToolTip(details.strip().splitlines()[-1] if details.strip() else "")

    def _on_task_done(self, _task: Task) -> None:
        self._set_running(False)

    def exported_folder(self) -> str | None:
        if self.outcome is None:
            return None
        return str(Path(self.outcome.onnx.path if self.outcome.onnx else self.outcome.weights).parent)

    def open_folder(self) -> None:
        folder = self.exported_folder()
        if folder:
            QDesktopServices.openUrl(QUrl.fromLocalFile(folder))

    # -- closing while an export runs: Cancel export stops it; closing waits for that ------------
    def reject(self) -> None:
        if self.task is None:
            super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.task is not None:
            event.ignore()
        else:
            super().closeEvent(event)
