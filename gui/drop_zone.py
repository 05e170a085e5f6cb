"""A dashed drop target shared by the Data step (datasets) and Try it (photos)."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget


class DropZone(QFrame):
    """Highlights while something it accepts is dragged over it and emits the accepted local paths.

    `accept` turns the dragged URLs into the paths this zone takes; an empty list refuses the drag, so
    the cursor tells the user before they let go.
    """

    paths_dropped = Signal(list)

    def __init__(self, text: str, accept: Callable[[list[QUrl]], list[str]], min_height: int = 80,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self._accept_paths = accept
        self.setAcceptDrops(True)
        self.setObjectName("dropZone")
        self.setMinimumHeight(min_height)
        label = QLabel(text)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        QVBoxLayout(self).addWidget(label)
        self._set_highlight(False)

    def _set_highlight(self, on: bool) -> None:
        colour = "palette(highlight)" if on else "palette(mid)"
        self.setStyleSheet(f"#dropZone {{ border: 2px dashed {colour}; border-radius: 8px; }}")

    def _accepted(self, event) -> list[str]:
        return self._accept_paths(event.mimeData().urls()) if event.mimeData().hasUrls() else []

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._accepted(event):
            event.acceptProposedAction()
            self._set_highlight(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        self._set_highlight(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_highlight(False)
        paths = self._accepted(event)
        if paths:
            event.acceptProposedAction()
            self.paths_dropped.emit(paths)
        else:
            event.ignore()
