"""The confusion matrix as a table: rows are true classes, columns predicted ones.

A table (rather than an image plot) gives keyboard navigation, screen-reader text and exact cell
geometry for tests for free; `BackgroundRole` paints the heat map. Clicking a cell emits
`cell_chosen(true_index, predicted_index)`, which the Results panel turns into a gallery.
"""
from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QHBoxLayout, QHeaderView, QLabel, QStyle,
                               QStyleOptionHeader, QTableView, QVBoxLayout, QWidget)

Index = QModelIndex | QPersistentModelIndex
CORRECT, WRONG, EMPTY = QColor(33, 102, 172), QColor(203, 24, 29), QColor(255, 255, 255)
CELL_WIDTH, CELL_HEIGHT = 38, 22
MAX_FITTED_PX = 480           # larger matrices scroll


def blend(colour: QColor, amount: float) -> QColor:
    """White at 0, `colour` at 1."""
    amount = max(0.0, min(1.0, amount))
    return QColor(*(round(255 + (c - 255) * amount) for c in (colour.red(), colour.green(), colour.blue())))


class ConfusionModel(QAbstractTableModel):
    """Counts, or each row as a share of its true class (the recall row) when `normalised`.

    The diagonal is shaded blue and the errors red, each by its share of the row, so a small class's
    mistakes stand out as much as a large one's.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.classes: list[str] = []
        self.counts: list[list[int]] = []
        self.normalised = False
        self.noun = "image"

    def set_matrix(self, classes: list[str], counts: list[list[int]]) -> None:
        self.beginResetModel()
        self.classes, self.counts = list(classes), [list(map(int, row)) for row in counts]
        self.endResetModel()

    def set_normalised(self, normalised: bool) -> None:
        self.normalised = normalised
        if self.classes:
            last = self.index(len(self.classes) - 1, len(self.classes) - 1)
            self.dataChanged.emit(self.index(0, 0), last, [Qt.ItemDataRole.DisplayRole])

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.classes)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.classes)

    def share(self, row: int, column: int) -> float:
        total = sum(self.counts[row])
        return self.counts[row][column] / total if total else 0.0

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        count = self.counts[row][column]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{100 * self.share(row, column):.0f} %" if self.normalised else str(count)
        if role == Qt.ItemDataRole.BackgroundRole:
            return blend(CORRECT if row == column else WRONG, self.share(row, column)) if count else EMPTY
        if role == Qt.ItemDataRole.ForegroundRole:
            return QColor(Qt.GlobalColor.white if self.share(row, column) > 0.5 else Qt.GlobalColor.black)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return Qt.AlignmentFlag.AlignCenter
        if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            true, predicted = self.classes[row], self.classes[column]
            what = "correct" if row == column else f"predicted as {predicted}"
            return (f"{count} {true} {self.noun}{'s' if count != 1 else ''} {what} "
                    f"({100 * self.share(row, column):.0f} % of {true}). Click to see them.")
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole) and 0 <= section < len(self.classes):
            name = self.classes[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"{'True' if orientation == Qt.Orientation.Vertical else 'Predicted'} class: {name}"
            return name
        return None


class RotatedHeader(QHeaderView):
    """Column titles written bottom-to-top, so ten class names fit above ten narrow columns."""

    def __init__(self, parent=None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.setDefaultSectionSize(CELL_WIDTH)

    def sizeHint(self) -> QSize:
        model, metrics = self.model(), self.fontMetrics()
        names = [str(model.headerData(i, self.orientation())) for i in range(model.columnCount())] if model else []
        return QSize(super().sizeHint().width(), 12 + max((metrics.horizontalAdvance(n) for n in names), default=20))

    def paintSection(self, painter: QPainter, rect: QRect, section: int) -> None:
        option = QStyleOptionHeader()
        self.initStyleOption(option)
        self.initStyleOptionForIndex(option, section)
        option.rect, option.text = rect, ""
        self.style().drawControl(QStyle.ControlElement.CE_Header, option, painter, self)   # themed frame only
        painter.save()
        painter.translate(rect.left(), rect.bottom())
        painter.rotate(-90)
        painter.setPen(self.palette().buttonText().color())
        painter.drawText(QRect(6, 0, rect.height() - 6, rect.width()),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                         str(self.model().headerData(section, self.orientation())))
        painter.restore()


class ConfusionView(QWidget):
    """Title, normalise toggle and the clickable matrix."""

    cell_chosen = Signal(int, int)        # true class index, predicted class index

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = ConfusionModel(self)
        self.title = QLabel("Confusion matrix: rows are the true class, columns the prediction.")
        self.title.setWordWrap(True)
        self.normalise = QCheckBox("Row %")
        self.normalise.setToolTip("Show each row as a percentage of its true class (the recall row)")
        self.normalise.toggled.connect(self.model.set_normalised)
        self.table = QTableView()
        self.table.setHorizontalHeader(RotatedHeader(self.table))
        self.table.setModel(self.model)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(CELL_HEIGHT)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setCornerButtonEnabled(False)
        self.table.clicked.connect(lambda index: self.cell_chosen.emit(index.row(), index.column()))
        self.table.activated.connect(lambda index: self.cell_chosen.emit(index.row(), index.column()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.normalise, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def set_matrix(self, classes: list[str], counts: list[list[int]], split: str = "", noun: str = "images") -> None:
        self.model.noun = noun.rstrip("s")
        self.model.set_matrix(classes, counts)
        self._fit_table()
        on = f" on the {'test' if split == 'test' else 'validation'} {noun}" if split else ""
        self.title.setText(f"Confusion matrix{on}: rows are the true class, columns the prediction. "
                           f"Click a cell to see its {noun}.")
        self.title.setToolTip(self.title.text())

    def _fit_table(self) -> None:
        """Ask for room to show the whole matrix, up to MAX_FITTED_PX each way."""
        table, n = self.table, self.model.rowCount()
        frame = 2 * table.frameWidth()
        width = table.verticalHeader().sizeHint().width() + n * CELL_WIDTH + frame
        height = table.horizontalHeader().sizeHint().height() + n * CELL_HEIGHT + frame
        table.setMinimumSize(min(width, MAX_FITTED_PX), min(height, MAX_FITTED_PX))
