"""Step 3, Train: hyper-parameters with the engine's defaults, Start/Pause/Stop, progress and live curves.

The form is filled from `TrainConfig()` once the engine has loaded, so the GUI never restates a
default; the plots are created after the window first paints (pyqtgraph is imported then).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QMessageBox, QProgressBar, QPushButton, QScrollArea, QSpinBox, QSplitter,
                               QVBoxLayout, QWidget)

from engine.core import modality as modalities
from engine.core.progress import EpochClock, StageClock, format_duration, stage_title
from gui.search_board import ModeChoice, SearchBoard, score_text
from gui.train_fields import CHOICE_FIELDS, FIELDS

if TYPE_CHECKING:
    from gui.state import AppState

IMAGE_SIZES = (64, 96, 128, 160, 192, 224, 256, 288, 320, 384)
LEARNING_RATES = ("1e-2", "3e-3", "1e-3", "3e-4", "1e-4", "3e-5", "1e-5")
CHOICE_LABELS = {
    "cosine": "Cosine decay", "onecycle": "One-cycle", "constant": "Constant",
    "none": "None", "flip": "Flip only (mirror images)", "light": "Light (flips, crops)",
    "strong": "Strong (plus colour, rotation)",
    "single": "Single stage", "two-stage": "Two-stage: head first, then the chosen layers",
    "linear": "Linear", "mlp": "Small MLP (one hidden layer)",
    ("tta", "none"): "Off", ("tta", "flip"): "Average with the mirror image",
    ("checkpoint", "last"): "Last epoch", ("checkpoint", "best"): "Best on validation",
    "adamw": "AdamW", "sgd": "SGD with momentum", "lbfgs": "Fitted head (logistic regression)",
}
"""Combo labels by value; a (setting, value) key names a value whose meaning depends on the setting."""
TOOLTIPS = {
    "epochs": "Passes over the training images. Early stopping may end the run sooner.",
    "batch_size": "Images per step. Larger is faster per image but needs more memory; 16–64 suits a CPU.",
    "image_size": "Images are resized to this square size. Smaller trains much faster; the backbone's own "
                  "size is usually the most accurate. Measured with EfficientNet-Lite0 (224 px) on two "
                  "cores: 192 px was 1.3–1.4× faster at the same accuracy, 160 px 1.8× and 128 px "
                  "2.3–2.5× faster for about 2 points less; photos with fine detail lose more.",
    "max_tokens": "Texts: the tokens of each text the encoder reads; longer texts are cut (the Data step says "
                  "how many). Fewer tokens train faster; the encoder's own length (256 for MiniLM) keeps the most.",
    "lr": "Learning rate of the new classifier. Deeper layers automatically use smaller rates.",
    "optimizer": "How the weights are trained. AdamW (default) or SGD with momentum, over the epochs. Fitted "
                 "head: the linear head solved exactly by logistic regression (L-BFGS), its regularisation "
                 "chosen by cross-validation inside the training images; head only, linear head, no epochs "
                 "or learning rate. The automatic search always tries it.",
    "schedule": "How the learning rate changes over the run (after a one-epoch warm-up).",
    "augmentation": "Random changes to training images so the model sees more variety; helps small datasets. "
                    "Head-only and last-blocks training compute their inputs once per image: augmentation "
                    "reaches them only through extra cached views. Flip only: each image and its mirror "
                    "image, both computed once, so it also works there.",
    "cached_views": "Head-only and last-blocks training: versions of each image computed once and reused every "
                    "epoch. 1 = the image as it is (default); each extra view is augmented and costs one more "
                    "pass of the frozen layers. Measured on Fashion-MNIST photos: 4 views took 4× the "
                    "feature pass and did not beat 1 (test 0.823 vs 0.837).",
    "label_smoothing": "Softens the targets so the model is less over-confident; 0.1 is a good default.",
    "early_stopping": "Stop when validation accuracy has not improved for this many epochs. "
                      "Which epoch is kept as the model is the Keep setting's choice.",
    "checkpoint": "Which epoch becomes the model. Last epoch (default): the validation accuracy shown is then "
                  "an honest estimate, as no choice was made on those images; measured on six real sets, as "
                  "accurate on the test images as the best epoch (+0.4 points on average). Best on validation: "
                  "the epoch with the highest validation accuracy, whose validation score is then optimistic.",
    "head": "The classifier on top of the backbone. Linear: one layer, the usual choice. Small MLP: one hidden "
            "layer in between, which can separate classes a single layer cannot; it may over-fit small datasets.",
    "tta": "Predict each image twice, as it is and mirrored left-right, and average the two: often a little "
           "more accurate, twice the prediction time. Kept in the exported model.",
    "recipe": "Two-stage trains only the classifier first, then the layers checked in the Model step "
              "at a lower learning rate: steadier when fine-tuning deep layers.",
    "head_epochs": "Epochs of the first, classifier-only stage of the two-stage recipe.",
    "device": "Where training runs. Automatic: a CUDA GPU if there is one, else an Apple GPU, else the CPU. "
              "Only the devices this computer has are offered. On a CUDA GPU training uses mixed precision, "
              "and a batch that does not fit in its memory is split in halves rather than failing.",
}

IMAGES_ONLY_TOOLTIP = "Images only: texts are not resized, augmented or mirrored."
TEXTS_ONLY_TOOLTIP = "Texts only: how many tokens of each text the encoder reads."
NOT_USED_TOOLTIPS = {**dict.fromkeys(("image_size", "augmentation", "cached_views", "tta"), IMAGES_ONLY_TOOLTIP),
                     "max_tokens": TEXTS_ONLY_TOOLTIP}
"""Settings only some modalities read (Modality.own_settings), and why they are off for the others' data."""
TOKEN_LENGTHS = (32, 64, 128, 256, 512)


class HyperParameters(QGroupBox):
    """The training form over `state.settings`, one widget per FIELDS entry: a widget writes what the
    user sets into the state and shows what the state holds (an opened project's values included)."""

    refused = Signal(str)        # a value in the state that the form does not offer (the form's is kept)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__("Settings", parent)
        self.state = state
        self.epochs = QSpinBox(minimum=1, maximum=1000)
        self.batch_size = QSpinBox(minimum=1, maximum=1024)
        self.image_size = QComboBox()
        self.max_tokens = QComboBox()
        self.lr = QComboBox(editable=True)
        self.lr.addItems(LEARNING_RATES)
        validator = QDoubleValidator(1e-7, 10.0, 8, self.lr)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.lr.setValidator(validator)
        self.optimizer = QComboBox()
        self.schedule = QComboBox()
        self.augmentation = QComboBox()
        self.cached_views = QSpinBox(minimum=1, maximum=16)
        self.cached_views.setSpecialValueText("1 (as it is)")
        self.head = QComboBox()
        self.tta = QComboBox()
        self.label_smoothing = QDoubleSpinBox(minimum=0.0, maximum=0.5, singleStep=0.05, decimals=2)
        self.early_stopping = QSpinBox(minimum=0, maximum=100, suffix=" epochs")
        self.early_stopping.setSpecialValueText("Off")
        self.checkpoint = QComboBox()
        self.recipe = QComboBox()
        self.head_epochs = QSpinBox(minimum=1, maximum=999)
        self.device = QComboBox()
        self.recipe.currentIndexChanged.connect(self._update_head_epochs)
        self.loaded = False
        form = QFormLayout(self)
        for key, label in FIELDS:
            widget = getattr(self, key)
            widget.setObjectName(key)                # how `_store` knows which setting was edited
            widget.setToolTip(TOOLTIPS[key])
            form.addRow(label + ":", widget)
            _edited_signal(widget).connect(self._store)
        state.events.engine.connect(self._offer_choices)
        state.events.model.connect(self._offer_image_sizes)
        state.events.report.connect(self._show_modality)
        state.settings.events.added.connect(self._show)
        state.settings.events.changed.connect(self._show)
        self.setEnabled(False)

    def _offer_choices(self) -> None:
        """Once the engine has loaded: its choices in the combos, its defaults for every setting not set."""
        engine = self.state.engine
        for key in CHOICE_FIELDS:
            combo = getattr(self, key)
            combo.blockSignals(True)
            combo.clear()
            for value in engine.choices[key]:
                combo.addItem(CHOICE_LABELS.get((key, value), CHOICE_LABELS.get(value, value)), value)
            combo.blockSignals(False)
        self._fill_devices(engine.devices)
        self._fill_image_sizes()
        self.loaded = True
        for key, _ in FIELDS:
            self.state.settings.setdefault(key, engine.defaults[key])
            self._show(key)
        self._update_head_epochs()
        self._show_modality()
        self.setEnabled(True)

    def _show_modality(self) -> None:
        """Settings another modality's training reads are greyed out, with a tooltip saying why."""
        own = self.state.modality.own_settings
        for key, not_used in NOT_USED_TOOLTIPS.items():
            widget = getattr(self, key)
            widget.setEnabled(key in own)
            widget.setToolTip(TOOLTIPS[key] if key in own else not_used)

    def _fill_devices(self, devices: list[tuple[str, str]]) -> None:
        """Only the devices this machine has: a project's 'cuda:0' opened on a laptop is refused, not kept."""
        self.device.blockSignals(True)
        self.device.clear()
        for value, label in devices:
            self.device.addItem(label, value)
        self.device.blockSignals(False)

    def _offer_image_sizes(self) -> None:
        self._fill_image_sizes()
        self._show("image_size")
        self._show("max_tokens")

    def _fill_image_sizes(self) -> None:
        """The built backbone's own size first; which size is selected is the state's to say."""
        model = self.state.model
        modality = modalities.named(model.modality) if model else None
        reads = modality.own_settings if modality else ()
        model_size = model.input_size if "image_size" in reads else None
        self.image_size.blockSignals(True)
        self.image_size.clear()
        self.image_size.addItem(f"Not used for {modality.nouns}" if modality and "image_size" not in reads else
                                f"Backbone default ({model_size} px)" if model_size else "Backbone default", None)
        for size in IMAGE_SIZES:
            self.image_size.addItem(f"{size} px", size)
        self.image_size.blockSignals(False)
        own = model.input_size if "max_tokens" in reads else None
        self.max_tokens.blockSignals(True)
        self.max_tokens.clear()
        self.max_tokens.addItem(f"Encoder default ({own})" if own else "Encoder default", None)
        for length in TOKEN_LENGTHS:
            self.max_tokens.addItem(f"{length} tokens", length)
        self.max_tokens.blockSignals(False)

    def _update_head_epochs(self) -> None:
        self.head_epochs.setEnabled(self.recipe.currentData() == "two-stage")

    def _store(self) -> None:
        """A widget was edited: its value goes into the state. A half-typed learning rate is held back
        and named in `state.invalid_setting`, so training cannot start with the previous one."""
        key = self.sender().objectName()
        try:
            value = self._value(key)
        except ValueError as exc:
            self.state.invalid_setting = str(exc)
            return
        if key == "lr":
            self.state.invalid_setting = ""
        if key not in self.state.settings or self.state.settings[key] != value:
            self.state.settings[key] = value

    def _show(self, key: str) -> None:
        """Show the state's value; one the form does not offer is refused, and the state takes the form's."""
        if not self.loaded or key not in dict(FIELDS):
            return
        value = self.state.settings[key]
        try:
            self.set_values(**{key: value})
        except (ValueError, TypeError) as exc:
            self.refused.emit(f"Setting {key} = {value!r} was not used: {exc}")
            self.state.settings[key] = self._value(key)

    def _value(self, key: str):
        widget = getattr(self, key)
        if key == "lr":
            try:
                return float(widget.currentText())
            except ValueError:
                raise ValueError(f"learning rate {widget.currentText()!r} is not a number") from None
        return widget.currentData() if isinstance(widget, QComboBox) else widget.value()

    def values(self) -> dict:
        """TrainConfig fields as the form shows them; a malformed learning rate raises ValueError."""
        return {key: self._value(key) for key, _ in FIELDS}

    def set_values(self, **values) -> None:
        """Programmatic form filling (tests, scripts): the same widgets a user would change."""
        for key, value in values.items():
            widget = getattr(self, key)
            if key == "lr":
                widget.setCurrentText(f"{value:g}")
            elif isinstance(widget, QComboBox):
                index = widget.findData(value)
                if index < 0:
                    raise ValueError(f"{value!r} is not offered for {key}")
                widget.setCurrentIndex(index)
            else:
                widget.setValue(value)


def _edited_signal(widget: QWidget):
    """The signal a form widget emits when its value changes (typing into the learning rate included)."""
    if isinstance(widget, QComboBox):
        return widget.currentTextChanged if widget.isEditable() else widget.currentIndexChanged
    return widget.valueChanged


def bar_format(seconds_left: float | None) -> str:
    """'42 %  ·  about 0:40 left' inside the bar (the Train step must fit 800 px); no time until there is
    one to trust."""
    return "%p %" if seconds_left is None else f"%p %  ·  about {format_duration(seconds_left)} left"


PATHS = {
    "features": "Fast path: the backbone ran once per image; the head trains on cached features.",
    "activations": "Fast path: the frozen blocks ran once per image; the rest trains on their output.",
    "images": "Full path: every batch runs through the whole network",
    "embeddings": "Fast path: the encoder read each text once; the head trains on the cached sentence vectors.",
    "hidden-states": "Faster path: the frozen layers read each text once; the last layers train on their "
                     "hidden states.",
    "tokens": "Full path: every batch of texts runs through the whole encoder.",
}


def describe_path(info: dict) -> str:
    """One line on what the engine trains on, so users see why some settings train much faster."""
    path = info["path"]
    if path == "images":
        decoded = " (images decoded once)." if info.get("images_decoded_once") else " (images decoded every epoch)."
        return PATHS["images"] + decoded
    text = PATHS.get(path, f"Training on cached {path}.")
    if path in ("embeddings", "hidden-states", "tokens"):     # texts: nothing to augment
        return text
    if not info.get("augmented", True):
        text += " Augmentation does not apply (Cached views: 1)."
    return text


def resume_text(summary: dict) -> str:
    """One sentence about a run that stopped before its end: where, how, and what it had reached."""
    how = {"interrupted": "was interrupted (the app or the computer stopped)", "cancelled": "was stopped",
           "failed": "failed"}.get(summary.get("status"), "stopped")
    where = f" after epoch {summary['epochs_done']} of {summary['epochs']}" if summary.get("epochs") else ""
    best = summary.get("best_val_accuracy")
    reached = f"; its best validation accuracy so far is {best:.1%}" if best is not None else ""
    return f"The last run {how}{where}{reached}. Resume it where it stopped, or keep its checkpoint as it is."


class ResumeOffer(QFrame):
    """A banner on the Train step for a run that can continue: Resume, or keep its checkpoint."""

    resume_requested = Signal(str)       # run folder
    kept = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir = ""
        self.setObjectName("resumeOffer")
        self.setStyleSheet("#resumeOffer { background: #e8f0fe; border: 1px solid #a8c1f0; border-radius: 4px; }")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.resume_button = QPushButton("Resume")
        self.keep_button = QPushButton("Keep checkpoint")
        self.resume_button.clicked.connect(lambda: self.resume_requested.emit(self.run_dir))
        self.keep_button.clicked.connect(self._keep)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.keep_button)
        buttons.addWidget(self.resume_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addLayout(buttons)
        self.hide()

    def offer(self, run_dir: str, summary: dict) -> None:
        self.run_dir = run_dir
        self.text.setText(resume_text(summary))
        self.setToolTip(run_dir)
        self.show()

    def withdraw(self) -> None:
        self.run_dir = ""
        self.hide()

    def _keep(self) -> None:
        run_dir = self.run_dir
        self.withdraw()
        self.kept.emit(run_dir)


class TrainPanel(QWidget):
    """Settings and run controls on the left, live curves on the right."""

    start_requested = Signal()
    pause_requested = Signal(bool)       # True: pause, False: resume
    stop_requested = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.plots = None
        self.fit_clock = EpochClock(1)
        self.stage_clock = StageClock()
        self._error_details = ""
        self.settings = HyperParameters(state)
        self.state = state
        self.mode = ModeChoice(state)                # manual, or the best model in N minutes
        self.board = SearchBoard(state)              # an automatic search's live leaderboard
        self._search_fits = 0                    # fits of the search so far (state.searching)
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.stop_button = QPushButton("Stop")
        self.start_button.clicked.connect(self.start_requested)
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.stop_button.clicked.connect(self.stop_requested)
        self.progress = QProgressBar(maximum=1000)
        self.progress.setFormat("%p %")
        self.stage = QLabel("Not started.")
        self.stage.setWordWrap(True)
        self.speed = QLabel("")
        self.path = QLabel("")
        self.path.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setStyleSheet("QLabel { background: #fde2e1; color: #7a1612; border: 1px solid #e0a3a0;"
                                 " border-radius: 4px; padding: 6px; }")
        self.error_details_button = QPushButton("Details…")
        self.error_details_button.clicked.connect(self._show_error_details)
        self.resume_offer = ResumeOffer()            # a run that stopped before its end can continue
        self.plot_area = QHBoxLayout()               # a search's scatter (automatic mode), then the curves
        self._layout()
        self.set_running(False, can_start=False)
        self.show_error(None)
        state.events.training_mode.connect(self._show_mode)
        self._show_mode()

    def _layout(self) -> None:
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(button)
        status = QGroupBox("Progress")
        status_layout = QVBoxLayout(status)
        for widget in (self.progress, self.stage, self.speed, self.path):
            status_layout.addWidget(widget)
        form = QWidget()
        form_layout = QVBoxLayout(form)
        form_layout.setContentsMargins(0, 0, 0, 0)
        form_layout.addWidget(self.mode)
        form_layout.addWidget(self.settings)
        form_layout.addStretch()
        scroll = QScrollArea()                    # the settings scroll; the run controls stay in view
        scroll.setWidget(form)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(340)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addWidget(self.resume_offer)
        left_layout.addLayout(buttons)
        left_layout.addWidget(status)
        left_layout.addWidget(self.error)
        left_layout.addWidget(self.error_details_button, 0, Qt.AlignmentFlag.AlignRight)
        right = QWidget()
        right.setLayout(self.plot_area)
        self.plot_area.setContentsMargins(0, 0, 0, 0)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)   # the leaderboard above the curves
        self.right_splitter.addWidget(self.board)
        self.right_splitter.addWidget(right)
        self.right_splitter.setStretchFactor(0, 4)
        self.right_splitter.setStretchFactor(1, 5)
        self.right_splitter.setSizes([240, 300])     # about seven leaderboard rows at 800 px
        self.right_splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.right_splitter)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setCollapsible(0, False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)

    def create_plots(self) -> None:
        """Import pyqtgraph and build the curves; called once the window has been painted, before
        the engine loads (so before any run can start)."""
        from gui.plots import TrainingPlots
        self.plots = TrainingPlots()
        self.board.create_plot()
        self.plot_area.addWidget(self.board.scatter, 2)
        self.plot_area.addWidget(self.plots, 5)
        self._show_mode()

    # -- run state ---------------------------------------------------------------------------
    def set_running(self, running: bool, can_start: bool) -> None:
        self.start_button.setEnabled(can_start and not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.settings.setEnabled(self.settings.loaded and not running)
        self.mode.setEnabled(not running)
        if not running:
            self.board.stop_clock()
            self.progress.setFormat("%p %")          # no time left to estimate
            if self.plots is not None:
                self.plots.stop()                   # the last points drawn, no more redraws
            self.pause_button.blockSignals(True)
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")
            self.pause_button.blockSignals(False)

    def show_paused(self, paused: bool) -> None:
        """Follow a pause asked elsewhere (menu, F6) without asking again."""
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)

    def _on_pause_toggled(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_requested.emit(paused)

    def show_error(self, message: str | None, details: str = "", heading: str = "Training failed.") -> None:
        """An inline banner, not a modal box: a failed run must never leave only a console traceback."""
        self._error_details = details
        self.error.setVisible(bool(message))
        self.error.setText(f"<b>{heading}</b> {message}" if message else "")
        self.error_details_button.setVisible(bool(details) and bool(message))

    def _show_error_details(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, "Training failed", self.error.text(), parent=self)
        box.setDetailedText(self._error_details)
        box.open()

    # -- events from the run -----------------------------------------------------------------
    def on_stopping(self) -> None:
        self.stage.setText("Stopping: keeping the best model so far…" if self.state.searching
                           else "Stopping after this batch…")

    def on_run_finished(self, status: str) -> None:
        """The fit's end: a full bar unless it was cancelled; the curves stop redrawing."""
        self.stage.setText(f"Training {status}. See the Results step.")
        if status != "cancelled":
            self.progress.setValue(self.progress.maximum())

    def on_run_started(self, search_budget_s: float | None = None) -> None:
        """Before the engine's first event: it builds the model first, which takes a moment. With a budget,
        the run is an automatic search: its leaderboard starts empty."""
        self._search_fits = 0
        if self.state.searching:
            self.board.start(search_budget_s)
            self._show_mode()
        self.show_error(None)
        self.resume_offer.withdraw()
        self.progress.setValue(0)
        self.stage_clock = StageClock()
        self.stage.setText("Building the model…")
        self.speed.setText("")
        self.path.setText("")
        self.plots.start()

    def on_fit_started(self, info: dict) -> None:
        self.fit_clock = EpochClock(info["epochs"])
        what = f"{info['n_train']:,} images, {len(info['classes'])} classes, {info['epochs']} epochs"
        if self.state.searching:                    # each candidate's fit starts its curves afresh
            self._search_fits += 1
            if self._search_fits > 1:
                self.plots.start()
            self.stage.setText(f"Search, fit {self._search_fits}: training {what}")
        elif info.get("resumed_from_epoch"):
            self.stage.setText(f"Resumed after epoch {info['resumed_from_epoch']}: training {what}")
        else:
            self.stage.setText(f"Training {what}")
        for logs in info.get("history", []):         # a resumed fit's curves continue where they were
            self.plots.add_epoch(logs["epoch"], logs)
        self.path.setText(describe_path(info))
        self.path.setToolTip(info.get("path_note", ""))

    def on_stage_progress(self, stage: str, done: int, total: int) -> None:
        """Work outside the epochs (features, decoding, evaluation) is a stage of its own on the bar."""
        self.progress.setValue(round(self.progress.maximum() * done / max(1, total)))
        self.progress.setFormat(bar_format(self.stage_clock.update(stage, done, total)))
        self.stage.setText(f"{stage_title(stage)} · {done:,} / {total:,}")

    def on_batch_ended(self, _step: int, logs: dict) -> None:
        """During the epochs the bar is the whole fit's progress."""
        self.progress.setValue(round(self.progress.maximum() * self.fit_clock.fraction(logs)))
        self.progress.setFormat(bar_format(self.fit_clock.eta(logs)))
        self.stage.setText(f"Epoch {logs['epoch']} / {self.fit_clock.epochs} ({logs.get('stage', 'train')})"
                           f" · batch {logs['batch']} / {logs['batches']}")
        self.speed.setText(f"{logs['images_per_s']:.1f} {self.state.modality.nouns}/s · loss {logs['loss']:.3f}")
        self.plots.add_batch(logs)

    def on_epoch_ended(self, epoch: int, logs: dict) -> None:
        self.fit_clock.epoch_ended(logs["epoch_time_s"])
        self.plots.add_epoch(epoch, logs)

    def on_fit_failed(self, message: str) -> None:
        """The engine's own reason, as soon as it gives up (the task's traceback follows for Details)."""
        self.stage.setText("Training failed.")
        self.show_error(message)

    # -- an automatic search ----------------------------------------------------------------------
    def _show_mode(self) -> None:
        """Automatic mode shows the leaderboard and the scatter, with the curves in one row below; manual mode
        the stacked curves alone."""
        automatic = self.state.training_mode == "automatic" or self.state.searching
        self.start_button.setText("Start search" if self.state.training_mode == "automatic" else "Start training")
        self.board.setVisible(automatic)
        if self.plots is not None:
            self.board.scatter.setVisible(automatic)
            self.plots.set_side_by_side(automatic)

    def on_candidate(self, entry: dict) -> None:
        """A leaderboard row from the search (a scored, pruned or skipped candidate)."""
        self.board.add(entry)
        self.stage.setText(f"Search: {entry['name']} {entry['status']}"
                           + (f" · {score_text(entry)}" if entry.get("score") is not None else ""))

    def on_search_finished(self, status: str, leaderboard: list[dict], decision: str = "",
                           warnings: list[str] = ()) -> None:
        """The final leaderboard, the winner marked, why it won and what to know; the status line says who won."""
        self.board.finish(leaderboard, status, decision, warnings)
        winner = self.board.winner()
        if winner is not None:
            self.stage.setText(f"Search {status}: {winner['name']} won ({score_text(winner)}). See the Results step.")
        else:
            self.stage.setText("Search stopped before its first model was trained: nothing was kept."
                               if status == "cancelled" else f"Search {status}.")
