"""One image, larger, beside its Grad-CAM overlay for a class the user chooses.

The heat map is computed by `engine.outputs.gradcam` on a worker thread (`gui.jobs.explain`); the model of
a run is loaded once from its checkpoint and kept in a `gui.jobs.ModelCache`, whose lock makes sure two
explanations never run backward passes through the same model at once.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QGridLayout, QHBoxLayout, QLabel,
                               QPushButton, QVBoxLayout, QWidget)

from gui.gallery import GalleryItem, correction_text, scaled_pixmap
from gui.jobs import Explanation
from gui.thumbnails import thumbnail

SHOWN_PX = 320


class ImageDialog(QDialog):
    """Non-modal: the user may keep it open while browsing the gallery (it follows `show_item`)."""

    explain_requested = Signal(str, int)       # path, class index

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Image")
        self.item: GalleryItem | None = None
        self.original = QLabel()
        self.heat = QLabel()
        for label in (self.original, self.heat):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setMinimumSize(SHOWN_PX, SHOWN_PX)
            label.setFrameShape(QLabel.Shape.StyledPanel)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.heat_caption = QLabel()
        self.heat_caption.setWordWrap(True)
        self.class_choice = QComboBox()
        self.class_choice.setToolTip("Which class's evidence to show: the predicted one, the true one, or any other")
        self.explain_button = QPushButton("Explain")
        self.explain_button.clicked.connect(self.request)
        self.class_choice.activated.connect(lambda _index: self.request())
        chooser = QHBoxLayout()
        chooser.addWidget(QLabel("Grad-CAM for class:"))
        chooser.addWidget(self.class_choice, 1)
        chooser.addWidget(self.explain_button)
        grid = QGridLayout()
        grid.addWidget(self.original, 0, 0)
        grid.addWidget(self.heat, 0, 1)
        grid.addWidget(self.caption, 1, 0)
        grid.addWidget(self.heat_caption, 1, 1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addLayout(chooser)
        layout.addWidget(close)

    def show_item(self, item: GalleryItem, classes: list[str], correction: dict | None, can_explain: bool) -> None:
        self.item = item
        self.setWindowTitle(item.path)
        self.original.setPixmap(scaled_pixmap(thumbnail(item.path, SHOWN_PX), SHOWN_PX))
        if self.original.pixmap().isNull():
            self.original.setText("This image can no longer be read.")
        note = correction_text(correction)
        self.caption.setText(f"True class <b>{item.true}</b>, predicted <b>{item.predicted}</b> "
                             f"(score {item.score:.3f}){f' · <i>{note}</i>' if note else ''}<br>{item.path}")
        self.class_choice.clear()
        self.class_choice.addItems(classes)
        if item.predicted in classes:
            self.class_choice.setCurrentIndex(classes.index(item.predicted))
        self.heat.clear()
        self.heat.setText("Click Explain to see which region drove the prediction." if can_explain
                          else "No model file for this run: Grad-CAM is not available.")
        self.heat_caption.clear()
        self.class_choice.setEnabled(can_explain)
        self.explain_button.setEnabled(can_explain)

    def request(self) -> None:
        if self.item is not None and self.class_choice.currentIndex() >= 0:
            self.heat.clear()
            self.heat.setText("Computing…")
            self.explain_button.setEnabled(False)
            self.explain_requested.emit(self.item.path, self.class_choice.currentIndex())

    def show_explanation(self, explanation: Explanation) -> None:
        if self.item is None or explanation.path != self.item.path:
            return                       # the user moved on to another image meanwhile
        self.explain_button.setEnabled(True)
        self.heat.setPixmap(scaled_pixmap(explanation.overlay, SHOWN_PX))
        self.heat_caption.setText(f"On the crop the model saw, regions that raised the score of "
                                  f"<b>{explanation.class_name}</b> "
                                  f"(probability {explanation.probability:.3f}) are red; blue ones did not.")

    def show_error(self, message: str) -> None:
        self.explain_button.setEnabled(True)
        self.heat.clear()
        self.heat.setText(f"Grad-CAM failed: {message}")
        self.heat.setWordWrap(True)
