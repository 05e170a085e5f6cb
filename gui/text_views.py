"""A table of texts for the Data and Results steps: one row per text, its last column the text itself on one
line (elided; the whole text in the tooltip and in the box below the table), filterable by class.

Texts have no thumbnails: where the image steps show a gallery, the text steps show this. The rows are
plain tuples, so the table holds whatever a step has (a dataset's samples, a run's predictions) and a
hundred thousand rows cost only their strings: the view asks for the rows it paints.
"""
from __future__ import annotations

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

Index = QModelIndex | QPersistentModelIndex
ALL = "All classes"
MAX_LINE = 300            # characters of a text shown on its row (the rest is elided by the view anyway)
SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_LINE else flat[:MAX_LINE] + "…"


class TextRowsModel(QAbstractTableModel):
    """Rows of display values; the last column holds the text. Numbers sort as numbers."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.headers: list[str] = []
        self.rows: list[tuple] = []

    def set_rows(self, headers: list[str], rows: list[tuple]) -> None:
        self.beginResetModel()
        self.headers, self.rows = list(headers), list(rows)
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.headers)

    def text(self, row: int) -> str:
        return str(self.rows[row][-1]) if 0 <= row < len(self.rows) else ""

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.rows[index.row()][index.column()]
        last = index.column() == len(self.headers) - 1
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, float):
                return f"{100 * value:.1f} %"
            return one_line(value) if last else str(value)
        if role == SORT_ROLE:
            return value if isinstance(value, (int, float)) else str(value).lower()
        if role == Qt.ItemDataRole.ToolTipRole and last:
            return str(value)[:2000]
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal \
                and 0 <= section < len(self.headers):
            return self.headers[section]
        return None


class TextTable(QWidget):
    """A title, a class filter, the table, and the selected text in full below it."""

    text_chosen = Signal(str)            # the full text of the selected row
    correction_requested = Signal(str, str, str)   # where (the row's first column), 'exclude' | 'relabel' | 'restore', label

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = TextRowsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterRole(Qt.ItemDataRole.DisplayRole)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseSensitive)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.shown = QLabel()                    # "20 of 60 shown" while the class filter hides some
        self.class_filter = QComboBox()
        self.class_filter.setToolTip("Show the texts of one class only")
        self.class_filter.currentIndexChanged.connect(self._filter)
        self._filter_column = -1
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().currentRowChanged.connect(self._show_current)
        self.correction_classes: list[str] | None = None   # set: the rows can be excluded or moved (Results)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_menu)
        self.exclude_action = QAction("Exclude from training", self)
        self.exclude_action.setToolTip("Leave this text out of the next run (the file is not changed)")
        self.exclude_action.triggered.connect(lambda: self._correct("exclude"))
        self.relabel_action = QAction("Move to class…", self)
        self.relabel_action.setToolTip("Train on this text under another class from the next run on")
        self.relabel_action.triggered.connect(self.ask_relabel)
        self.restore_action = QAction("Undo correction", self)
        self.restore_action.triggered.connect(lambda: self._correct("restore"))
        self.full_text = QPlainTextEdit()
        self.full_text.setReadOnly(True)
        self.full_text.setPlaceholderText("Select a row to read its whole text here.")
        self.full_text.setMaximumHeight(90)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.shown)
        top.addWidget(self.class_filter)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.full_text)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    def show_rows(self, title: str, headers: list[str], rows: list[tuple], classes: list[str] = (),
                  filter_column: int = -1) -> None:
        """`filter_column`: the column the class filter matches (-1: no filter)."""
        self.title.setText(title)
        self.model.set_rows(headers, rows)
        self._filter_column = filter_column
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem(ALL, None)
        for name in classes:
            self.class_filter.addItem(name, name)
        self.class_filter.setCurrentIndex(0)
        self.class_filter.blockSignals(False)
        self.class_filter.setVisible(filter_column >= 0 and len(classes) > 1)
        self._filter()
        self.proxy.sort(-1)                      # the rows' own order until the user sorts
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        header = self.table.horizontalHeader()
        for column in range(max(0, len(headers) - 1)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.table.resizeColumnToContents(column)
            self.table.setColumnWidth(column, min(self.table.columnWidth(column), 220))
        self.full_text.clear()

    def set_class(self, name: str | None) -> None:
        self.class_filter.setCurrentIndex(max(0, self.class_filter.findData(name)))

    def _filter(self) -> None:
        name = self.class_filter.currentData()
        if name is None or self._filter_column < 0:
            self.proxy.setFilterFixedString("")
            self.proxy.setFilterKeyColumn(0)
        else:
            self.proxy.setFilterKeyColumn(self._filter_column)
            self.proxy.setFilterRegularExpression(f"^{_escape(name)}$")
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.shown.setText(f"{shown:,} of {total:,} shown" if shown != total else "")

    def row_count(self) -> int:
        """Rows shown (after the class filter)."""
        return self.proxy.rowCount()

    def texts(self) -> list[str]:
        """The full texts of the rows shown, in their order (for scripts and tests)."""
        return [self.model.text(self.proxy.mapToSource(self.proxy.index(r, 0)).row()) for r in range(self.row_count())]

    # -- corrections (Results) ---------------------------------------------------------------
    def current_row(self) -> tuple | None:
        index = self.table.currentIndex()
        return self.model.rows[self.proxy.mapToSource(index).row()] if index.isValid() else None

    def _correct(self, action: str, label: str = "") -> None:
        row = self.current_row()
        if row is not None:
            self.correction_requested.emit(str(row[0]), action, label)

    def ask_relabel(self) -> None:
        row = self.current_row()
        if row is None or not self.correction_classes:
            return
        true = str(row[1])
        choices = [name for name in self.correction_classes if name != true]
        label, ok = QInputDialog.getItem(self, "Move to class", f"Train on this text as (now '{true}'; type a new "
                                         "name to create a class):", choices, 0, True)
        if ok and label.strip():
            self.relabel_current(label.strip())

    def relabel_current(self, label: str) -> None:
        row = self.current_row()
        if row is not None:
            self._correct("relabel" if label != str(row[1]) else "restore", label)

    def _show_menu(self, position) -> None:
        if self.correction_classes is None or self.current_row() is None:
            return
        menu = QMenu(self)
        for action in (self.exclude_action, self.relabel_action, self.restore_action):
            menu.addAction(action)
        menu.popup(self.table.viewport().mapToGlobal(position))

    def _show_current(self, current: QModelIndex, _previous=None) -> None:
        if current.isValid():
            text = self.model.text(self.proxy.mapToSource(current).row())
            self.full_text.setPlainText(text)
            self.text_chosen.emit(text)


def _escape(name: str) -> str:
    from PySide6.QtCore import QRegularExpression
    return QRegularExpression.escape(name)
