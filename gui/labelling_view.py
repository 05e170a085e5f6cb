"""The labelling window: one unlabelled sample at a time, large, with the model's suggestion preselected in
the list of classes; keys decide (1–9 and 0 choose a class, Enter labels, Backspace skips, Ctrl+Z undoes).

The view only shows and asks: a decision is a signal (`label_chosen`, `skip_requested`, `undo_requested`),
which sample comes next and what is recorded is the controller's (gui.controllers.labelling). The class list is
the window's one widget that takes the keyboard focus, so every key reaches it however the window was
opened or clicked. It holds plain values only (engine.active.session.Round's dicts, QImages decoded on a worker).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QImage, QKeyEvent, QKeySequence, QPalette, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QProgressBar, QPushButton, QSizePolicy, QStackedWidget, QVBoxLayout,
                               QWidget)

from engine.core.progress import stage_title
from gui.text_views import one_line

if TYPE_CHECKING:
    from engine.active.pool import Pool
    from engine.active.session import Round

KEYS = "1234567890"              # the class each key chooses, in the list's order (0: the tenth)
KEY_HINT = ("Keys: 1–9 and 0 choose a class (↑ ↓ move) · Enter labels · Backspace skips · Ctrl+Z undoes")
PROBLEM_WORDS = {"error": "skipped", "warning": "flagged", "info": "left out"}
LISTED_PROBLEMS = 200            # rows of the pool's problem list (the rest are counted)


class ClassList(QListWidget):
    """The classes, one per row with its key; the keys that decide become signals, the rest move the row."""

    accept_requested = Signal()
    skip_requested = Signal()
    undo_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Undo):
            self.undo_requested.emit()
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.accept_requested.emit()
        elif event.key() == Qt.Key.Key_Backspace:
            self.skip_requested.emit()
        elif event.text() and event.text() in KEYS and not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            row = KEYS.index(event.text())
            if row < self.count():
                self.setCurrentRow(row)
        else:
            super().keyPressEvent(event)


class Picture(QLabel):
    """An image scaled to fit whatever room the window gives it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image = QImage()
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(220, 220)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)

    def set_image(self, image: QImage | None) -> None:
        self.image = image if image is not None else QImage()
        self.setText("" if not self.image.isNull() else "(this picture cannot be shown)")
        self._fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self.image.isNull():
            self.setPixmap(QPixmap())
            return
        self.setPixmap(QPixmap.fromImage(self.image).scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                                            Qt.TransformationMode.SmoothTransformation))


class LabellingView(QWidget):
    """A status line and progress above the sample (left) and the classes with the decision's buttons (right);
    below, the accuracy plot, one point per round, and the pool's problems."""

    label_chosen = Signal(str)           # the class name for the sample shown
    skip_requested = Signal()
    undo_requested = Signal()
    cancel_requested = Signal()
    restart_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.row: dict | None = None     # the sample shown, as the round gave it
        self.shows_pictures = True
        self.sources: list[str] = []
        self.flagged: dict[str, str] = {}
        self.plot = self.curve = None
        self.points: tuple[list[int], list[float]] = ([], [])
        self._make_widgets()
        self._layout()
        self.clear()

    # -- construction --------------------------------------------------------------------------------
    def _make_widgets(self) -> None:
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = self._button("Cancel", "Stop reading the samples", self.cancel_requested)
        self.restart_button = self._button("Start again", "Read the pool again and ask from the start",
                                           self.restart_requested)
        self.picture = Picture()
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFocusPolicy(Qt.FocusPolicy.NoFocus)         # the keys are the class list's
        font = self.text.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        self.text.setFont(font)
        self.sample = QStackedWidget()
        self.sample.addWidget(self.picture)
        self.sample.addWidget(self.text)
        self.where = self._small_label()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.position = QLabel()
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.classes = ClassList()
        self.classes.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        font = self.classes.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.classes.setFont(font)
        self.classes.setSpacing(2)
        self.classes.currentRowChanged.connect(self._name_accept_button)
        self.classes.accept_requested.connect(self.accept_current)
        self.classes.skip_requested.connect(self.skip)
        self.classes.undo_requested.connect(self.undo_requested)
        self.classes.itemDoubleClicked.connect(self.accept_current)
        self.accept_button = self._button("Label", "Label the sample with the selected class (Enter)",
                                          self.accept_current)
        self.skip_button = self._button("Skip", "Not now: this sample is not asked about again this session "
                                        "(Backspace)", self.skip)
        self.undo_button = self._button("Undo", "Take back the last decision, label or skip (Ctrl+Z)",
                                        self.undo_requested)
        self.keys = self._small_label(KEY_HINT)
        self.keys.setWordWrap(True)
        self.counts = QLabel()
        self.counts.setWordWrap(True)
        self.accuracy = QLabel()
        self.accuracy.setWordWrap(True)
        self.plot_box = QVBoxLayout()
        self.pool_line = QLabel()
        self.pool_line.setWordWrap(True)
        self.problems_button = self._button("Show problems", "List the pool's samples that were skipped, flagged "
                                            "or left out", self._toggle_problems)
        self.problems_button.setCheckable(True)
        self.problems = QListWidget()
        self.problems.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.problems.setMaximumHeight(110)
        self.problems.setVisible(False)

    def _button(self, text: str, tip: str, slot) -> QPushButton:
        """Clicked with the mouse only: the keyboard's focus stays on the class list."""
        button = QPushButton(text)
        button.setToolTip(tip)
        button.setAutoDefault(False)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        button.clicked.connect(slot)
        return button

    def _small_label(self, text: str = "") -> QLabel:
        label = QLabel(text)
        label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        return label

    def _layout(self) -> None:
        running = QHBoxLayout()
        running.addWidget(self.progress, 1)
        running.addWidget(self.cancel_button)
        running.addWidget(self.restart_button)
        left = QVBoxLayout()
        left.addWidget(self.sample, 1)
        left.addWidget(self.where)
        buttons = QHBoxLayout()
        for button in (self.accept_button, self.skip_button, self.undo_button):
            buttons.addWidget(button)
        right = QVBoxLayout()
        right.addWidget(self.position)
        right.addWidget(self.reason)
        right.addWidget(self.classes, 1)
        right.addLayout(buttons)
        right.addWidget(self.keys)
        right.addWidget(self.counts)
        sample_row = QHBoxLayout()
        sample_row.addLayout(left, 3)
        sample_row.addLayout(right, 2)
        pool = QHBoxLayout()
        pool.addWidget(self.pool_line, 1)
        pool.addWidget(self.problems_button, 0, Qt.AlignmentFlag.AlignTop)
        notes = QVBoxLayout()
        notes.addWidget(self.accuracy)
        notes.addLayout(pool)
        notes.addWidget(self.problems)
        notes.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addLayout(self.plot_box, 3)
        bottom.addLayout(notes, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.status)
        layout.addLayout(running)
        layout.addLayout(sample_row, 1)
        layout.addLayout(bottom)

    # -- states --------------------------------------------------------------------------------------
    def clear(self, nouns: str = "samples") -> None:
        """Before a session: nothing to show yet (a new dataset or pool)."""
        self.points = ([], [])
        if self.curve is not None:
            self.curve.setData([], [])
        self.accuracy.setText("")
        self.show_pool(None)
        self.classes.clear()
        self.show_waiting(f"Label unlabelled {nouns}: the model suggests a class, you decide.")
        self.show_running(False)

    def set_classes(self, classes: list[str], shows_pictures: bool, sources: list[str]) -> None:
        """The dataset's classes, each with its key, and how its samples are shown."""
        self.shows_pictures, self.sources = shows_pictures, list(sources)
        self.sample.setCurrentWidget(self.picture if shows_pictures else self.text)
        self.classes.clear()
        for row, name in enumerate(classes):
            item = QListWidgetItem(f"{KEYS[row] if row < len(KEYS) else ' '}    {name}")
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.classes.addItem(item)
        self.classes.setFocus()

    def show_running(self, running: bool, words: str = "", cancellable: bool = True) -> None:
        """A busy bar (and Cancel) while the samples are read or a head is fitted."""
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running and cancellable)
        if running:
            self.restart_button.setVisible(False)
            self.progress.setRange(0, 0)
            self.progress.setFormat(words)

    def set_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage_title(stage)} · {done:,} / {total:,}" if total else stage_title(stage))

    def show_waiting(self, words: str) -> None:
        """No sample to decide on (reading, learning, all done): `words` say why."""
        self.row = None
        self.status.setText(words)
        self.picture.set_image(None)
        self.picture.setText("")
        self.text.setPlainText("")
        self.where.setText("")
        self.position.setText("")
        self.reason.setText("")
        self._mark_suggestion(None)
        self._enable_decisions()

    def show_error(self, message: str) -> None:
        """Why the labelling stopped, on one line (the details are in the Log)."""
        self.show_waiting(f"<b>Labelling stopped:</b> {one_line(message)}")
        self.show_running(False)
        self.restart_button.setVisible(True)

    def show_cancelled(self) -> None:
        self.show_waiting("Cancelled. Start again when you are ready.")
        self.show_running(False)
        self.restart_button.setVisible(True)

    # -- one sample ----------------------------------------------------------------------------------
    def show_sample(self, row: dict, picture: QImage | None, position: int, total: int) -> None:
        """`row` (a round's batch entry) large, its suggested class selected; `position` of `total` in the batch."""
        self.row = row
        self.status.setText(f"<b>Which class is it?</b> The model suggests <b>{row['suggested']}</b> "
                            f"({row['probability']:.0%} sure; else {row['runner_up']}).")
        if self.shows_pictures:
            self.picture.set_image(picture)
        else:
            self.text.setPlainText(row.get("text") or row["path"])
        self.where.setText(self._where(row["path"]))
        self.where.setToolTip(row["path"])
        self.position.setText(f"<b>{position} of {total}</b> in this batch")
        flagged = self.flagged.get(row["path"])
        self.reason.setText(f"Asked because: {row['reason']}"
                            + (f"<br><span style='color: #b45309'>Flagged: {flagged}</span>" if flagged else ""))
        self._mark_suggestion(row["suggested"])
        self._enable_decisions()
        self.classes.setFocus()

    def _where(self, path: str) -> str:
        """Where the sample is, relative to the pool's folder the user chose."""
        for source in self.sources:
            if Path(source).is_dir() and Path(path).is_relative_to(source):
                return str(Path(path).relative_to(source))
        return path if not Path(path).is_absolute() else Path(path).name

    def _mark_suggestion(self, suggested: str | None) -> None:
        """The suggested class in bold, with a word, and selected."""
        for row in range(self.classes.count()):
            item = self.classes.item(row)
            name = item.data(Qt.ItemDataRole.UserRole)
            font = QFont(self.classes.font())
            font.setBold(name == suggested)
            item.setFont(font)
            key = KEYS[row] if row < len(KEYS) else " "
            item.setText(f"{key}    {name}" + ("     ← suggested" if name == suggested else ""))
            if name == suggested:
                self.classes.setCurrentRow(row)

    def current_class(self) -> str | None:
        item = self.classes.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def accept_current(self) -> None:
        name = self.current_class()
        if self.row is not None and name is not None:
            self.label_chosen.emit(name)

    def skip(self) -> None:
        if self.row is not None:
            self.skip_requested.emit()

    def _name_accept_button(self) -> None:
        name = self.current_class()
        self.accept_button.setText(f"Label as {name}  ⏎" if name and self.row is not None else "Label  ⏎")

    def _enable_decisions(self) -> None:
        for button in (self.accept_button, self.skip_button):
            button.setEnabled(self.row is not None)
        self._name_accept_button()

    def show_counts(self, given: int, given_now: int, skipped: int, left: int, nouns: str) -> None:
        self.counts.setText(f"Labelled from the pool: <b>{given}</b> ({given_now} in this window) · skipped: "
                            f"{skipped} · still unlabelled: {left:,} {nouns}")

    def enable_undo(self, enabled: bool) -> None:
        self.undo_button.setEnabled(enabled)

    # -- rounds and the pool ---------------------------------------------------------------------------
    def add_round(self, result: Round) -> None:
        """A point on the plot: the accuracy of the head fitted on `result.labels` labels."""
        if result.val_accuracy is None:
            return
        xs, ys = self.points
        xs.append(result.labels)
        ys.append(100 * result.val_accuracy)
        if self.plot is None:
            self._make_plot()
        self.curve.setData(xs, ys)
        before = f"; {ys[-2]:.0f} % with {xs[-2]} before" if len(ys) > 1 else ""
        self.accuracy.setText(f"Accuracy now <b>{ys[-1]:.0f} %</b> with {xs[-1]} labels{before}. "
                              f"Measured on the {result.estimate}; the labels you give only ever train.")
        self.accuracy.setToolTip(f"Next samples chosen by: {result.method}")

    def _make_plot(self) -> None:
        """The plot, once there is a point (pyqtgraph loads with it); one curve, given new data each round."""
        import pyqtgraph as pg
        palette = self.palette()
        self.plot = pg.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        self.plot.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.plot.setMinimumHeight(170)
        self.plot.setMaximumHeight(230)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setTitle("Accuracy as you label", color=palette.color(QPalette.ColorRole.Text))
        self.plot.setLabel("left", "accuracy (%)")
        self.plot.setLabel("bottom", "labels used (the set's training split and yours)")
        self.plot.setYRange(0, 100)
        colour = (40, 110, 200)
        self.curve = self.plot.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=8,
                                    symbolBrush=colour, symbolPen=None)
        self.plot_box.addWidget(self.plot)

    def show_pool(self, pool: Pool | None) -> None:
        """The pool's one line, and its problems in a list the button opens."""
        problems = pool.problems if pool is not None else []
        self.flagged = {p.path: p.reason for p in problems if p.severity == "warning"}
        self.pool_line.setText(f"Pool: {pool.summary()}" if pool is not None else "")
        self.problems.clear()
        for problem in problems[:LISTED_PROBLEMS]:
            item = QListWidgetItem(f"{PROBLEM_WORDS.get(problem.severity, problem.severity)}: {problem.reason} · "
                                   f"{self._where(problem.path)}")
            item.setToolTip(problem.path)
            self.problems.addItem(item)
        if len(problems) > LISTED_PROBLEMS:
            self.problems.addItem(f"… and {len(problems) - LISTED_PROBLEMS:,} more")
        self.problems_button.setText(f"Problems ({len(problems)})")
        self.problems_button.setVisible(bool(problems))
        self.problems_button.setChecked(False)
        self.problems.setVisible(False)

    def _toggle_problems(self) -> None:
        self.problems.setVisible(self.problems_button.isChecked())


class LabellingDialog(QDialog):
    """The view in a window of its own, non-modal: the main window stays usable while the user labels."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Label unlabelled samples")
        self.view = LabellingView()
        close_button = QPushButton("Close")
        close_button.setAutoDefault(False)
        close_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        close_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        self.resize(1000, 760)
