"""A thumbnail gallery of evaluated images, with the corrections a user makes from it.

The gallery only displays and asks: it emits `correction_requested` (the window records it in the
project, never touching the user's files), `image_opened` (double-click or "Explain") and
`thumbnails_wanted` (the Results panel decodes them on a worker and hands them back).
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFont, QFontMetrics, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QInputDialog, QLabel, QListView, QMenu,
                               QPushButton, QStyledItemDelegate, QStyleOptionViewItem, QVBoxLayout, QWidget)

from gui.jobs import GALLERY_THUMBNAIL_PX

THUMBNAIL_PX = GALLERY_THUMBNAIL_PX
TILE_WIDTH = THUMBNAIL_PX + 64
CAPTION_LINES = 3                      # true class, predicted class and score, the user's correction
CAPTION_MARGIN = 8                     # what the style keeps of a tile's width around its text
LINE_BREAK = "\u2028"                  # what a view's text layout breaks at ('\n' is not)
Index = QModelIndex | QPersistentModelIndex
PathRole = Qt.ItemDataRole.UserRole + 1
ItemRole = Qt.ItemDataRole.UserRole + 2


@dataclass(frozen=True)
class GalleryItem:
    """One evaluated image: its true and predicted class names and the predicted class's score."""

    path: str
    true: str
    predicted: str
    score: float
    loss: float | None = None            # -log p(true class), for the "most confidently wrong" list

    @property
    def caption(self) -> str:
        return f"{self.true} → {self.predicted} ({self.score:.2f})"


def correction_text(correction: dict | None) -> str:
    if not correction:
        return ""
    if correction["action"] == "move":                  # to another split (engine.audit.deep.keep_groups_together)
        return f"moved to {correction.get('split')}"
    return {"exclude": "excluded", "keep": "kept as it is"}.get(correction["action"], f"moved to {correction['label']}")


def caption_lines(item: GalleryItem, note: str, metrics: QFontMetrics, width: int) -> list[str]:
    """A tile's caption fitted to `width`: each class name is shortened on its own, so the predicted
    class and its score always stay in view (the tooltip has every name in full)."""
    def fit(text: str, room: int) -> str:
        return metrics.elidedText(text, Qt.TextElideMode.ElideRight, max(0, room))

    arrow, score = "→ ", f" ({item.score:.2f})"
    predicted = fit(item.predicted, width - metrics.horizontalAdvance(arrow + score))
    lines = [fit(item.true, width), arrow + predicted + score]
    return lines + [fit(f"[{note}]", width)] if note else lines


class GalleryModel(QAbstractListModel):
    """Items plus two lookups the owner fills in: decoded thumbnails and the project's corrections."""

    def __init__(self, thumbnails: dict[str, QImage], parent=None):
        super().__init__(parent)
        self.items: list[GalleryItem] = []
        self.thumbnails = thumbnails          # shared with the Results panel's cache
        self.corrections: dict[str, dict] = {}
        self._placeholder = _placeholder()

    def set_items(self, items: list[GalleryItem]) -> None:
        self.beginResetModel()
        self.items = list(items)
        self.endResetModel()

    def set_corrections(self, corrections: dict[str, dict]) -> None:
        self.corrections = corrections
        self._refresh()

    def thumbnails_arrived(self) -> None:
        self._refresh([Qt.ItemDataRole.DecorationRole])

    def _refresh(self, roles=None) -> None:
        if self.items:
            self.dataChanged.emit(self.index(0), self.index(len(self.items) - 1), roles or [])

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        correction = self.corrections.get(item.path)
        if role == Qt.ItemDataRole.DisplayRole:
            note = correction_text(correction)
            return item.caption + (f"\n[{note}]" if note else "")
        if role == Qt.ItemDataRole.DecorationRole:
            image = self.thumbnails.get(item.path)
            return self._placeholder if image is None else image
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [item.path, f"True class: {item.true}", f"Predicted: {item.predicted} (score {item.score:.3f})"]
            if item.loss is not None:
                lines.append(f"Loss: {item.loss:.3f}")
            if correction:
                lines.append(f"Your correction: {correction_text(correction)} (applies from the next run)")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.ForegroundRole and correction:
            return QColor(Qt.GlobalColor.darkGray)
        if role == Qt.ItemDataRole.FontRole and correction and correction["action"] == "exclude":
            font = QFont()
            font.setStrikeOut(True)
            return font
        if role == PathRole:
            return item.path
        if role == ItemRole:
            return item
        return None


class CaptionDelegate(QStyledItemDelegate):
    """Draws a tile with its caption as `caption_lines` (the style would cut the one-line caption at
    the arrow, hiding the predicted class and score); every tile has the same size."""

    def __init__(self, tile: QSize, parent=None):
        super().__init__(parent)
        self.tile = tile

    def initStyleOption(self, option: QStyleOptionViewItem, index: Index) -> None:
        super().initStyleOption(option, index)
        item = index.data(ItemRole)
        note = correction_text(index.model().corrections.get(item.path))
        option.text = LINE_BREAK.join(caption_lines(item, note, option.fontMetrics, self.tile.width() - CAPTION_MARGIN))

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        return self.tile


def _placeholder() -> QImage:
    image = QImage(THUMBNAIL_PX, THUMBNAIL_PX, QImage.Format.Format_ARGB32)
    image.fill(QColor(0, 0, 0, 20))
    return image


class Gallery(QWidget):
    """Title, the icon grid, and the correction buttons (also on the context menu)."""

    correction_requested = Signal(str, str, str)   # path, 'exclude' | 'relabel' | 'restore', new label
    image_opened = Signal(object, bool)            # GalleryItem, whether to explain it right away
    thumbnails_wanted = Signal(list)               # paths not in the thumbnail cache yet

    def __init__(self, thumbnails: dict[str, QImage], parent: QWidget | None = None):
        super().__init__(parent)
        self.classes: list[str] = []
        self.model = GalleryModel(thumbnails, self)
        self.title = QLabel("No run yet.")
        self.title.setWordWrap(True)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setWordWrap(True)
        self.view.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        tile = QSize(TILE_WIDTH, THUMBNAIL_PX + CAPTION_LINES * self.view.fontMetrics().lineSpacing() + 12)
        self.view.setItemDelegate(CaptionDelegate(tile, self.view))
        self.view.setGridSize(tile + QSize(4, 4))
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setModel(self.model)
        self.view.doubleClicked.connect(lambda index: self.image_opened.emit(self.model.items[index.row()], False))
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._show_menu)
        self.view.selectionModel().selectionChanged.connect(self._update_buttons)
        self.exclude_action = self._action("Exclude from training", "Delete", self.exclude_selected,
                                           "Leave the selected images out of the next runs "
                                           "(your files stay as they are)")
        self.relabel_action = self._action("Move to class…", "M", self.ask_relabel,
                                           "Give the selected images another class in the next runs")
        self.restore_action = self._action("Restore", None, self.restore_selected, "Undo your correction")
        self.explain_action = self._action("Explain (Grad-CAM)", "E", self.explain_current,
                                           "Show which region of the image drove the prediction")
        self.exclude_button, self.relabel_button, self.restore_button, self.explain_button = (
            _button_for(action) for action in (self.exclude_action, self.relabel_action, self.restore_action,
                                               self.explain_action))
        buttons = QHBoxLayout()
        for button in (self.explain_button, self.exclude_button, self.relabel_button, self.restore_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        self._update_buttons()

    def _action(self, text: str, shortcut: str | None, slot, tip: str) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        if shortcut:
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(slot)
        self.view.addAction(action)
        return action

    # -- contents ----------------------------------------------------------------------------
    def show_items(self, title: str, items: list[GalleryItem], classes: list[str]) -> None:
        self.title.setText(title)
        self.classes = list(classes)
        self.model.set_items(items)
        missing = [item.path for item in items if item.path not in self.model.thumbnails]
        if missing:
            self.thumbnails_wanted.emit(missing)
        self._update_buttons()

    def paths(self) -> list[str]:
        return [item.path for item in self.model.items]

    def selected_items(self) -> list[GalleryItem]:
        rows = sorted(index.row() for index in self.view.selectionModel().selectedIndexes())
        return [self.model.items[row] for row in rows]

    def select_path(self, path: str) -> None:
        row = self.paths().index(path)
        self.view.setCurrentIndex(self.model.index(row))

    def _update_buttons(self, *_args) -> None:
        selected = self.selected_items()
        corrected = [item for item in selected if item.path in self.model.corrections]
        self.exclude_action.setEnabled(bool(selected))
        self.relabel_action.setEnabled(bool(selected))
        self.restore_action.setEnabled(bool(corrected))
        self.explain_action.setEnabled(len(selected) == 1)

    def set_corrections(self, corrections: dict[str, dict]) -> None:
        self.model.set_corrections(corrections)
        self._update_buttons()

    # -- requests ----------------------------------------------------------------------------
    def exclude_selected(self) -> None:
        for item in self.selected_items():
            self.correction_requested.emit(item.path, "exclude", "")

    def restore_selected(self) -> None:
        for item in self.selected_items():
            self.correction_requested.emit(item.path, "restore", "")

    def ask_relabel(self) -> None:
        selected = self.selected_items()
        if not selected:
            return
        suggestions = [name for name in self.classes if name != selected[0].true]
        current = suggestions.index(selected[0].predicted) if selected[0].predicted in suggestions else 0
        label, ok = QInputDialog.getItem(self, "Move to class", "Class for the selected images in the next runs\n"
                                         "(type a new name to create a class):", suggestions, current, True)
        if ok and label.strip():
            self.relabel_selected(label.strip())

    def relabel_selected(self, label: str) -> None:
        for item in self.selected_items():
            self.correction_requested.emit(item.path, "relabel" if label != item.true else "restore", label)

    def explain_current(self) -> None:
        selected = self.selected_items()
        if len(selected) == 1:
            self.image_opened.emit(selected[0], True)

    def _show_menu(self, position) -> None:
        if not self.selected_items():
            return
        menu = QMenu(self)
        for action in (self.explain_action, None, self.exclude_action, self.relabel_action, self.restore_action):
            menu.addSeparator() if action is None else menu.addAction(action)
        menu.popup(self.view.viewport().mapToGlobal(position))


def _button_for(action: QAction) -> QPushButton:
    """A push button that triggers `action` and follows its enabled state."""
    button = QPushButton(action.text())
    button.setToolTip(action.toolTip())
    button.clicked.connect(action.trigger)
    action.changed.connect(lambda: button.setEnabled(action.isEnabled()))
    return button


def scaled_pixmap(image: QImage, longest: int) -> QPixmap:
    """Small images (28 px Fashion-MNIST) grow without blurring; large ones shrink smoothly."""
    if image.isNull():
        return QPixmap()
    factor = longest / max(image.width(), image.height())
    mode = Qt.TransformationMode.FastTransformation if factor >= 2 else Qt.TransformationMode.SmoothTransformation
    return QPixmap.fromImage(image.scaled(round(image.width() * factor), round(image.height() * factor),
                                          Qt.AspectRatioMode.KeepAspectRatio, mode))

