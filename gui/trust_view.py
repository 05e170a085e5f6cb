"""Results → "Trust": how far the model's confidence can be taken at its word, and what it turns away.

Left, the reliability diagram of the evaluated split (accuracy against stated confidence, before and after
the run's temperature) with the two calibration errors. Right, the unknown score: a slider sets the share
of validation inputs to accept, and the shares of validation and test inputs accepted, and of a dropped
folder of "none of these" examples rejected, follow it live (all from scores already computed; the
folder is scored once on a worker). "Keep this setting" writes the threshold into the run's model file, so
Try it, `predict` and exports use it.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout,
                               QWidget)

from engine.core import modality as modalities
from engine.core.control import RunControl
from gui.figures import interval_text, percent
from gui.workers import TaskSlot

SLIDER_STEPS = 100          # 0.5 + 0.005 * position: the accept shares a run stores thresholds for


def accept_of(position: int) -> float:
    return round(0.5 + 0.5 * position / SLIDER_STEPS, 4)


def position_of(accept: float) -> int:
    return int(round((accept - 0.5) * 2 * SLIDER_STEPS))


def share(scores, threshold: float, accepted: bool = True) -> float | None:
    """The share of `scores` at or below `threshold` (accepted), or above it; None without scores."""
    from engine.core.confidence import accepted_share
    value = accepted_share(scores, threshold)
    return value if value is None or accepted else 1.0 - value


def share_html(scores, threshold: float, accepted: bool = True) -> str:
    """'<b>93.8 %</b> of 64 (85–97)': a share and the range its true value lies in 95 times in 100 (Wilson)."""
    value = share(scores, threshold, accepted)
    if value is None:
        return "<b>–</b>"
    return (f"<b>{percent(value)}</b> of {len(scores)} "
            f"<span style='color: gray'>{interval_text(round(value * len(scores)), len(scores))}</span>")


class TrustView(QWidget):
    """Signals let the window and tests follow the work without sleeping."""

    unfamiliar_scored = Signal(int)          # how many "none of these" inputs were scored
    unfamiliar_failed = Signal(str)
    accept_kept = Signal(float)
    keep_failed = Signal(str)

    def __init__(self, tasks, parent: QWidget | None = None):
        super().__init__(parent)
        self.slot = TaskSlot(tasks)
        self.run = None
        self.scores: dict = {}                   # split -> numpy scores of the run's predictions
        self.unfamiliar = ()                     # scores of the "none of these" inputs
        self.thresholds: list[float] = []
        self._make_widgets()
        self._layout()
        self.show_run(None)

    # -- construction --------------------------------------------------------------------------------
    def _make_widgets(self) -> None:
        self.calibration = QLabel()
        self.calibration.setWordWrap(True)
        self.plot = None                         # made on the first run shown: pyqtgraph loads after the window
        self.plot_box = QVBoxLayout()
        self.method = QLabel()
        self.method.setWordWrap(True)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.valueChanged.connect(self._show_shares)
        self.slider_label = QLabel()
        self.shares = QLabel()
        self.shares.setWordWrap(True)
        self.shares.setTextFormat(Qt.TextFormat.RichText)
        self.unfamiliar_button = QPushButton("Check with examples of none of these…")
        self.unfamiliar_button.clicked.connect(self._ask_unfamiliar)
        self.keep_button = QPushButton("Keep this setting")
        self.keep_button.setToolTip("Write this threshold into the run's model file: Try it, predict and exports "
                                    "use it")
        self.keep_button.clicked.connect(self.keep_accept)
        self.message = QLabel()
        self.message.setWordWrap(True)

    def _layout(self) -> None:
        left = QGroupBox("Confidence")
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self.calibration)
        left_layout.addLayout(self.plot_box, 1)
        right = QGroupBox("Unknown inputs")
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.method)
        right_layout.addWidget(self.slider_label)
        right_layout.addWidget(self.slider)
        right_layout.addWidget(self.shares)
        buttons = QHBoxLayout()
        buttons.addWidget(self.unfamiliar_button)
        buttons.addWidget(self.keep_button)
        buttons.addStretch(1)
        right_layout.addLayout(buttons)
        right_layout.addWidget(self.message)
        right_layout.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addWidget(left, 1)
        layout.addWidget(right, 1)

    # -- showing a run -------------------------------------------------------------------------------
    def show_run(self, view) -> None:
        """`view`: a gui.results_panel.RunView, or None."""
        self.slot.cancel()
        self.run = view
        metrics = view.metrics if view else {}
        calibration, unknown = metrics.get("calibration") or {}, metrics.get("unknown") or {}
        self.scores = {}
        if view and unknown:
            from engine.training.calibration import run_scores
            self.scores = run_scores(view.run_dir)
        self.unfamiliar = ()
        self.message.setText("")
        self.thresholds = []
        if unknown:
            self.thresholds = self._grid(view)
        self._show_calibration(calibration)
        has_score = bool(unknown) and bool(self.thresholds)
        for widget in (self.slider, self.unfamiliar_button, self.keep_button):
            widget.setEnabled(has_score and bool(view and view.checkpoint))
        nouns = view.modality.nouns if view else "inputs"
        self.unfamiliar_button.setText(f"Check with {nouns} of none of these…")
        if not has_score:
            self.method.setText("This run has no unknown score (it was trained before TransferLab measured one, "
                                "or without a validation split): train it again to get one." if view else "")
            self.slider_label.setText("")
            self.shares.setText("")
            return
        from engine.core.confidence import METHOD_WORDS
        method = unknown.get("method", "")
        self.method.setText(
            f"An input is <b>unknown</b> when it is unlike what the model was taught: scored by "
            f"{METHOD_WORDS.get(method, method)}. The threshold accepts a share of the validation {nouns}; "
            f"{nouns} scored above it are shown as 'not like anything it was trained on'.")
        self.slider.blockSignals(True)
        self.slider.setValue(position_of(float(unknown.get("accept", 0.95))))
        self.slider.blockSignals(False)
        self._show_shares()

    def _grid(self, view) -> list[float]:
        from engine.models.checkpoint import read_checkpoint_meta
        try:
            return list((read_checkpoint_meta(view.checkpoint).get("trust") or {}).get("thresholds") or [])
        except Exception:  # noqa: BLE001 - a damaged or missing model file: no slider, no traceback
            return []

    def _make_plot(self):
        import pyqtgraph as pg
        palette = self.palette()
        plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        plot.setMinimumSize(280, 240)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setLabel("bottom", "stated confidence")
        plot.setLabel("left", "share right")
        plot.setXRange(0, 1)
        plot.setYRange(0, 1)
        self.legend = plot.addLegend(offset=(10, 10), labelTextColor=palette.color(QPalette.ColorRole.Text))
        self.plot_box.addWidget(plot)
        return plot

    def _show_calibration(self, calibration: dict) -> None:
        if self.plot is not None:
            self.plot.clear()
            self.legend.clear()
        if not calibration:
            self.calibration.setText("No calibration for this run (trained before TransferLab calibrated runs)."
                                     if self.run else "")
            return
        diagram = calibration.get("reliability") or {}
        split = diagram.get("split", "test")
        before, after = calibration.get(f"{split}_ece_before"), calibration.get(f"{split}_ece_after")
        self.calibration.setText(
            f"Calibrated on the validation split (temperature {calibration.get('temperature', 1):.2f}). "
            f"Expected calibration error on {split}: <b>{percent(before)} → {percent(after)}</b> "
            "(how far stated confidence is from the share right; lower is better).")
        import pyqtgraph as pg
        self.plot = self.plot or self._make_plot()
        self.plot.plot([0, 1], [0, 1], pen=pg.mkPen((150, 150, 150), style=Qt.PenStyle.DashLine))
        for key, colour, name in (("before", (200, 120, 60), "as trained"), ("after", (40, 110, 200), "calibrated")):
            bars = diagram.get(key) or []
            if bars:
                self.plot.plot([bar["confidence"] for bar in bars], [bar["accuracy"] for bar in bars],
                               pen=pg.mkPen(colour, width=2), symbol="o", symbolBrush=colour, name=name)

    # -- the slider -----------------------------------------------------------------------------------
    @property
    def accept(self) -> float:
        return accept_of(self.slider.value())

    @property
    def threshold(self) -> float:
        from engine.models.trust import threshold_at
        return threshold_at({"thresholds": self.thresholds}, self.accept)

    def _show_shares(self) -> None:
        if not self.thresholds or self.run is None:
            return
        threshold, nouns = self.threshold, self.run.modality.nouns
        self.slider_label.setText(f"Accept {100 * self.accept:.1f} % of the validation {nouns}")
        lines = [f"Validation {nouns} accepted: {share_html(self.scores.get('val', ()), threshold)}"]
        if len(self.scores.get("test", [])):
            lines.append(f"Test {nouns} accepted: {share_html(self.scores['test'], threshold)}")
        if len(self.unfamiliar):
            lines.append(f"'None of these' {nouns} rejected: {share_html(self.unfamiliar, threshold, accepted=False)}")
        lines.append("<span style='color: gray'>In brackets: the range the true share lies in 95 times out of "
                     "100.</span>")
        self.shares.setText("<br>".join(lines))

    # -- "none of these" examples ---------------------------------------------------------------------
    def _ask_unfamiliar(self) -> None:
        if self.run is None:
            return
        if self.run.modality.sample_view == modalities.TEXT_VIEW:
            path, _ = QFileDialog.getOpenFileName(self, "Texts of none of these classes", "",
                                                  "Texts (*.txt *.csv *.tsv)")
        else:
            path = QFileDialog.getExistingDirectory(self, "A folder of images of none of these classes")
        if path:
            self.score_unfamiliar(path)

    def score_unfamiliar(self, source: str) -> None:
        """Score the inputs in `source` (a folder of images, a file of texts) on a worker."""
        from engine.outputs.predict import unknown_scores
        if self.run is None or not self.run.checkpoint:
            return
        self.message.setText(f"Scoring {Path(source).name}…")
        control, checkpoint = RunControl(), self.run.checkpoint      # read here: the worker never reads widgets
        self.slot.start(lambda progress: unknown_scores(checkpoint, [source], control), control,
                        on_result=self._on_unfamiliar, on_failed=self._on_unfamiliar_failed)

    def _on_unfamiliar(self, result) -> None:
        scores, skipped = result
        self.unfamiliar = scores
        self.message.setText(f"{len(scores)} scored" + (f", {len(skipped)} skipped (unreadable)" if skipped else "")
                             if len(scores) else f"Nothing to score there ({len(skipped)} skipped).")
        self._show_shares()
        self.unfamiliar_scored.emit(len(scores))

    def _on_unfamiliar_failed(self, message: str, _details: str = "") -> None:
        self.message.setText(f"Could not score those: {message}")
        self.unfamiliar_failed.emit(message)

    # -- keeping the threshold -------------------------------------------------------------------------
    def keep_accept(self) -> None:
        """Write the slider's share into the run (its model file and metrics.json)."""
        from engine.training.calibration import set_run_accept
        if self.run is None:
            return
        try:
            unknown = set_run_accept(self.run.run_dir, self.accept)
        except (OSError, ValueError) as exc:
            self.message.setText(f"Could not keep it: {exc}")
            self.keep_failed.emit(str(exc))
            return
        self.run.metrics["unknown"] = unknown
        self.message.setText(f"Kept: the model now accepts {100 * self.accept:.1f} % of validation "
                             f"{self.run.modality.nouns}.")
        self.accept_kept.emit(self.accept)
