"""Step 2, Model: pick a backbone (seeing which weights are offline) and choose what trains.

The layer tree shows a model built for this purpose on a worker; its freeze state is what the
training run receives, as the list of frozen parameter names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
                               QLabel, QListWidget, QListWidgetItem, QPushButton, QSpinBox, QSplitter,
                               QTreeView, QVBoxLayout, QWidget)

from gui.layer_model import LayerTreeModel

if TYPE_CHECKING:
    from gui.jobs import ModelInfo

WEIGHT_CHOICES = (("pretrained", "ImageNet (offline)"), ("random", "Random (train from scratch)"),
                  ("file", "From a file…"))


def format_count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1_000_000 else f"{n:,}"


class ModelPanel(QWidget):
    """Backbone list and details on the left, the layer tree with presets and live counts on the right."""

    backbone_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.backbones: dict[str, dict] = {}
        self.info: ModelInfo | None = None
        self.weights_file = ""
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
        self._layout()
        self.set_model(None)

    def _layout(self) -> None:
        details = QGroupBox("Backbone")
        form = QFormLayout(details)
        form.addRow("Weights:", self.weights)
        form.addRow("", self.weights_note)
        form.addRow("Input size:", self.input_size)
        form.addRow("Parameters:", self.param_count)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("<b>Pretrained backbone</b>"))
        left_layout.addWidget(self.backbone_list, 1)
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
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([340, 940])
        footer = QHBoxLayout()
        footer.addStretch()
        footer.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(footer)

    # -- backbones ---------------------------------------------------------------------------
    def set_backbones(self, rows: list[dict], selected: str) -> None:
        """Fill the list; each row says whether its ImageNet weights are on this machine."""
        self.backbones = {row["name"]: row for row in rows}
        self.backbone_list.blockSignals(True)
        self.backbone_list.clear()
        for row in rows:
            offline = row["weights_available"]
            item = QListWidgetItem(f"{row['title']}\n    {'✓ weights offline' if offline else '✗ no offline weights'}")
            item.setData(Qt.ItemDataRole.UserRole, row["name"])
            item.setToolTip(row["notes"] or row["hint"] or row["name"])
            if not offline:
                item.setForeground(QColor(Qt.GlobalColor.gray))
            self.backbone_list.addItem(item)
        self.backbone_list.blockSignals(False)
        names = list(self.backbones)
        self.backbone_list.setCurrentRow(names.index(selected) if selected in names else 0)

    @property
    def backbone(self) -> str | None:
        item = self.backbone_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _on_backbone_selected(self, item, _previous=None) -> None:
        if item is None:
            return
        row = self.backbones[item.data(Qt.ItemDataRole.UserRole)]
        pretrained = self.weights.model().item(0)
        pretrained.setEnabled(row["weights_available"])
        if row["weights_available"]:
            self.weights.setCurrentIndex(0)
            self.weights_note.setText(f"from {row['weights_source']}")
        else:
            self.weights.setCurrentIndex(1)
            self.weights_note.setText(f"No ImageNet weights on this machine: {row['hint']}")
        self.param_count.setText("…")
        self.backbone_changed.emit(row["name"])

    def _on_weights_activated(self, index: int) -> None:
        if self.weights.itemData(index) != "file":
            return
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)")
        if path:
            self.weights_file = path
            self.weights_note.setText(path)
        else:
            self.weights.setCurrentIndex(0 if self.weights.model().item(0).isEnabled() else 1)

    @property
    def weights_choice(self) -> str:
        """The `weights` value for TrainConfig: 'pretrained', 'random' or a file path."""
        key = self.weights.currentData()
        return self.weights_file if key == "file" else key

    # -- layer tree --------------------------------------------------------------------------
    def set_model(self, info: "ModelInfo | None", frozen: list[str] | None = None) -> None:
        """Show a freshly built model; `frozen` restores a previous freeze state, else head only."""
        self.info = info
        self._enable_presets()
        if info is None:
            self.layer_model.set_tree(None)
            return
        self.n_blocks.setRange(1, info.n_blocks)      # clamps the user's N to this backbone
        self.input_size.setText(f"{info.input_size} × {info.input_size} px")
        if frozen is None:
            info.tree.apply_preset("head")
        else:
            info.tree.freeze_parameters(frozen)
        self.layer_model.set_tree(info.tree)
        self.tree.expand(self.layer_model.index(0, 0))
        for column in range(1, self.layer_model.columnCount()):
            self.tree.resizeColumnToContents(column)

    def apply_preset(self, preset: str) -> None:
        if self.info is not None:
            self.info.tree.apply_preset(preset, self.n_blocks.value())

    # Bound methods, not lambdas: a lambda holding `self` on a child's signal keeps the widget
    # alive in a cycle through C++, which crashes when PySide tears the application down.
    def train_head_only(self) -> None:
        self.apply_preset("head")

    def train_last_blocks(self) -> None:
        self.apply_preset("last-n")

    def train_everything(self) -> None:
        self.apply_preset("none")

    def frozen_parameter_names(self) -> list[str]:
        return self.info.tree.frozen_parameter_names() if self.info else []

    def set_editable(self, editable: bool) -> None:
        """During training the tree stays browsable but its checkboxes and presets are locked."""
        self.layer_model.set_editable(editable)
        self.backbone_list.setEnabled(editable)
        self.weights.setEnabled(editable)
        self._enable_presets()

    def _enable_presets(self) -> None:
        enabled = self.info is not None and self.layer_model.editable
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
        from engine.training.caches import plan_cache      # torch is loaded by now: the model is
        plan = plan_cache(self.info.tree.model)
        if plan.kind == "features":
            return "Fast: the backbone runs once per image, then only the head trains."
        if plan.kind == "activations":
            return "Faster: the frozen blocks run once per image; the rest trains on their output."
        return f"Every epoch runs the whole network ({plan.reason})."
