"""Step 2, Model: pick a backbone (seeing which weights are offline) and choose what trains.

The panel shows the state: the engine's backbones, the chosen one and its weights, and the layer tree
of the model the window built for it; the user's choices go back into the state. The tree's freeze
state is what the training run receives, as the list of frozen parameter names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
                               QLabel, QListWidget, QListWidgetItem, QPushButton, QSpinBox, QSplitter,
                               QTabWidget, QTreeView, QVBoxLayout, QWidget)

from engine.core import modality as modalities
from gui.assess_view import AssessmentView
from gui.layer_model import LayerTreeModel

if TYPE_CHECKING:
    from gui.state import AppState

WEIGHT_CHOICES = (("pretrained", "ImageNet (offline)"), ("random", "Random (train from scratch)"),
                  ("file", "From a file…"))
TEXT_PRETRAINED = "Pretrained (offline)"
NO_TEXT_ASSESSMENT = ("The comparison scores image backbones on images; for texts choose the text encoder on the "
                      "left (head-only training takes seconds, so trying one is the comparison).")


def format_count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else f"{n:,}"


class ModelPanel(QWidget):
    """Backbone list and details on the left; on the right the layer tree with presets and live counts, and
    the backbone assessment (which backbone fits these images) on a second tab."""

    next_requested = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.layer_model = LayerTreeModel(self)
        self.layer_model.counts_changed.connect(self._show_counts)
        self.backbone_list = QListWidget()
        self.backbone_list.currentItemChanged.connect(self._on_backbone_selected)
        self.weights = QComboBox()
        for key, label in WEIGHT_CHOICES:
            self.weights.addItem(label, key)
        self.weights.activated.connect(self._on_weights_activated)
        self.weights_note = QLabel()
        self.weights_note.setWordWrap(True)
        self.input_size = QLabel("–")
        self.param_count = QLabel("–")
        self.tree = QTreeView()
        self.tree.setModel(self.layer_model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.counts = QLabel("Loading the model…")
        self.head_button = QPushButton("Head only")
        self.head_button.setToolTip("Train only the new classifier: fastest, and best for small datasets")
        self.last_n_button = QPushButton("Last N blocks")
        self.last_n_button.setToolTip("Train the classifier and the last N blocks of the backbone")
        self.n_blocks = QSpinBox()
        self.n_blocks.setRange(1, 99)
        self.n_blocks.setValue(2)
        self.n_blocks.setPrefix("N = ")
        self.everything_button = QPushButton("Everything")
        self.everything_button.setToolTip("Fine-tune every layer: slowest, needs more images")
        self.head_button.clicked.connect(self.train_head_only)
        self.last_n_button.clicked.connect(self.train_last_blocks)
        self.everything_button.clicked.connect(self.train_everything)
        self.next_button = QPushButton("Next: train  →")
        self.next_button.clicked.connect(self.next_requested)
        self.assessment = AssessmentView(state)      # its assess/cancel signals are the window's to answer
        self.list_title = QLabel("<b>Pretrained backbone</b>")
        self.text_note = QLabel()
        self.text_note.setWordWrap(True)
        self.text_note.setVisible(False)
        self._listed_modality = None                # whose models the list shows (engine.core.modality)
        self.add_folder_button = QPushButton("Add a model folder…")
        self.add_folder_button.setToolTip("A local Hugging Face BERT-family model folder (config.json, "
                                          "model.safetensors, tokenizer.json) to use as the text encoder")
        self.add_folder_button.clicked.connect(lambda: self.add_encoder_folder())
        self.add_folder_button.setVisible(False)
        self.ask_encoder_folder = lambda: QFileDialog.getExistingDirectory(self, "A Hugging Face model folder") or None
        self._layout()
        state.events.engine.connect(self._show_backbones)
        state.events.report.connect(self._show_backbones_for_data)
        state.events.backbone.connect(self._show_backbone)
        state.events.weights.connect(self._show_weights)
        state.events.model.connect(self._show_model)
        state.events.active_run.connect(self._show_editable)
        self._show_model()

    def _layout(self) -> None:
        details = self.details = QGroupBox("Backbone")
        form = QFormLayout(details)
        form.addRow("Weights:", self.weights)
        form.addRow("", self.weights_note)
        form.addRow("Input size:", self.input_size)
        form.addRow("Parameters:", self.param_count)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.list_title)
        left_layout.addWidget(self.backbone_list, 1)
        left_layout.addWidget(self.add_folder_button)
        left_layout.addWidget(self.text_note)
        left_layout.addWidget(details)
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Train:"))
        for widget in (self.head_button, self.last_n_button, self.n_blocks, self.everything_button):
            presets.addWidget(widget)
        presets.addStretch()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(QLabel("<b>Layers</b> (checked layers train, unchecked stay frozen)"))
        right_layout.addLayout(presets)
        right_layout.addWidget(self.tree, 1)
        right_layout.addWidget(self.counts)
        self.right_tabs = QTabWidget()
        self.right_tabs.addTab(right, "Layers")
        self.right_tabs.addTab(self.assessment, "Compare backbones")
        self.right_tabs.setTabToolTip(1, "Which backbone fits your images best, measured before any training")
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.right_tabs)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([340, 940])
        footer = QHBoxLayout()
        footer.addStretch()
        footer.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(footer)

    # -- backbones ---------------------------------------------------------------------------
    def _show_backbones_for_data(self) -> None:
        """The data's modality lists its own models; the assessment is for modalities that compare theirs."""
        modality = self.state.modality
        compares = modality.assesses_backbones
        self.right_tabs.setTabEnabled(1, compares)
        self.right_tabs.setTabToolTip(1, "Which backbone fits your images best, measured before any training"
                                      if compares else NO_TEXT_ASSESSMENT)
        if not compares and self.right_tabs.currentIndex() == 1:
            self.right_tabs.setCurrentIndex(0)
        self.text_note.setText("" if compares else
                               f"<i>Comparing backbones scores image backbones; it is off for {modality.nouns}.</i>")
        self.text_note.setToolTip(NO_TEXT_ASSESSMENT)
        self.text_note.setVisible(not compares)
        self.add_folder_button.setVisible(modality.takes_model_folders)
        if self.state.engine is not None and modality is not self._listed_modality:
            self._show_backbones()

    def _show_backbones(self) -> None:
        """The engine's models of the data's modality; each row says whether its weights are on this machine."""
        modality = self._listed_modality = self.state.modality
        model_word = modality.model_noun.split()[-1]
        self.list_title.setText(f"<b>{modality.model_noun.capitalize()}</b>")
        self.details.setTitle(model_word.capitalize())
        self.last_n_button.setText(f"Last N {modality.blocks_noun}")
        self.last_n_button.setToolTip(f"Train the classifier and the last N {modality.blocks_noun} of the {model_word}")
        self.weights.setItemText(0, f"{modality.pretrained_on} (offline)")
        self.weights.model().item(2).setEnabled(modality.loads_weight_files)
        self.backbone_list.blockSignals(True)
        self.backbone_list.clear()
        for row in self.state.backbone_rows(modality):
            offline = row["weights_available"]
            item = QListWidgetItem(f"{row['title']}\n    {'✓ weights offline' if offline else '✗ no offline weights'}")
            item.setData(Qt.ItemDataRole.UserRole, row["name"])
            item.setToolTip(row["notes"] or row["hint"] or row["name"])
            if not offline:
                item.setForeground(QColor(Qt.GlobalColor.gray))
            self.backbone_list.addItem(item)
        self.backbone_list.blockSignals(False)
        self._show_backbone()

    def add_encoder_folder(self, folder: str | None = None) -> bool:
        """A user's Hugging Face model folder joins the text encoders and is chosen; a folder that is not one
        is said in the note under the list (which files it lacks)."""
        from engine.modalities.text.catalog import TextEncoderError, encoder_folder
        folder = folder or self.ask_encoder_folder()
        if not folder or self.state.engine is None:
            return False
        try:
            encoder_folder(folder)
        except TextEncoderError as exc:
            self.text_note.setText(f"<span style='color:#b00020'>{exc}</span>")
            return False
        self.state.add_text_encoder(folder)
        self._show_backbones()
        self.state.choose_backbone(folder)
        return True

    def _on_backbone_selected(self, item, _previous=None) -> None:
        if item is not None:
            self.state.choose_backbone(item.data(Qt.ItemDataRole.UserRole))

    def _show_backbone(self) -> None:
        names = [self.backbone_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.backbone_list.count())]
        if self.state.backbone not in names:
            return
        self.backbone_list.blockSignals(True)
        self.backbone_list.setCurrentRow(names.index(self.state.backbone))
        self.backbone_list.blockSignals(False)
        available = self.state.backbone_row(self.state.backbone)["weights_available"]
        self.weights.model().item(0).setEnabled(available)
        self._show_weights()
        if not self.state.model_is_current():
            self.param_count.setText("…")

    def _on_weights_activated(self, index: int) -> None:
        key = self.weights.itemData(index)
        if key != "file":
            self.state.weights = key
            return
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)")
        if path:
            self.state.weights = path
        else:
            self._show_weights()              # cancelled: back to the choice the state holds

    def _show_weights(self) -> None:
        weights = self.state.weights
        row = self.state.backbone_row(self.state.backbone) if self.state.backbone else None
        self.weights.setCurrentIndex(self.weights.findData(weights if weights in ("pretrained", "random") else "file"))
        if weights not in ("pretrained", "random"):
            self.weights_note.setText(weights)
        elif row is not None:
            self.weights_note.setText(f"from {row['weights_source']}" if row["weights_available"]
                                      else f"No ImageNet weights on this machine: {row['hint']}")

    # -- layer tree --------------------------------------------------------------------------
    def _show_model(self) -> None:
        """The model built for the chosen backbone, its tree already in the state's freeze state."""
        info = self.state.model
        self._enable_presets()
        if info is None:
            self.layer_model.set_tree(None)
            return
        self.n_blocks.setRange(1, info.n_blocks)      # clamps the user's N to this backbone
        modality = modalities.named(info.modality)
        self.input_size.setText(modality.input_size_words(info.input_size))
        self.layer_model.set_tree(info.tree)
        self.tree.expand(self.layer_model.index(0, 0))
        if modality.layer_tree_depth > 1:   # down to what "Last N" counts (a text encoder's layers)
            self.tree.expandToDepth(modality.layer_tree_depth)
        for column in range(1, self.layer_model.columnCount()):
            self.tree.resizeColumnToContents(column)

    def apply_preset(self, preset: str) -> None:
        if self.state.model is not None:
            self.state.model.tree.apply_preset(preset, self.n_blocks.value())

    # Bound methods, not lambdas: a lambda holding `self` on a child's signal keeps the widget
    # alive in a cycle through C++, which crashes when PySide tears the application down.
    def train_head_only(self) -> None:
        self.apply_preset("head")

    def train_last_blocks(self) -> None:
        self.apply_preset("last-n")

    def train_everything(self) -> None:
        self.apply_preset("none")

    def _show_editable(self) -> None:
        """During training the tree stays browsable but its checkboxes and presets are locked."""
        editable = self.state.active_run is None
        self.layer_model.set_editable(editable)
        self.backbone_list.setEnabled(editable)
        self.weights.setEnabled(editable)
        self._enable_presets()

    def _enable_presets(self) -> None:
        enabled = self.state.model is not None and self.layer_model.editable
        for widget in (self.head_button, self.last_n_button, self.n_blocks, self.everything_button):
            widget.setEnabled(enabled)

    def _show_counts(self, total: int, trainable: int) -> None:
        if not total:
            self.counts.setText("Loading the model…")
            return
        self.param_count.setText(format_count(total))
        share = 100 * trainable / total
        self.counts.setText(f"<b>Training {trainable:,} of {total:,} parameters ({share:.1f} %)</b><br>"
                            f"{self._speed_hint()}")

    def _speed_hint(self) -> str:
        """What these layers train on: the frozen part computed once is what makes training fast."""
        model = self.state.model
        return modalities.named(model.modality).training_speed_hint(model.tree.model)

