"""The engine's LayerTree as a Qt item model (napari style: a thin adapter over plain state).

CheckStateRole *is* the node's `trainable` flag, which the engine reads from `requires_grad`, so a
checkbox can never disagree with what the optimizer trains. Parents are tri-state by derivation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt, Signal

if TYPE_CHECKING:
    from engine.models.layers import LayerNode, LayerTree

COLUMNS = ("Layer", "Type", "Parameters", "Trainable")
_CHECK_STATE = {True: Qt.CheckState.Checked, False: Qt.CheckState.Unchecked,
                None: Qt.CheckState.PartiallyChecked}
_NUMBER_ALIGNMENT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter

AnyIndex = QModelIndex | QPersistentModelIndex


class LayerTreeModel(QAbstractItemModel):
    """One top-level row (the whole model); children are the modules that own parameters."""

    counts_changed = Signal(int, int)    # total, trainable parameters of the whole model

    def __init__(self, parent=None):
        super().__init__(parent)
        self._tree: LayerTree | None = None
        self._rows: dict[int, int] = {}  # id(node) -> row under its parent
        self._editable = True

    # -- state -------------------------------------------------------------------------------
    @property
    def tree(self) -> "LayerTree | None":
        return self._tree

    def set_tree(self, tree: "LayerTree | None") -> None:
        self.beginResetModel()
        if self._tree is not None:
            self._tree.listeners.remove(self._on_tree_changed)
        self._tree = tree
        self._rows = {}
        if tree is not None:
            tree.listeners.append(self._on_tree_changed)
            self._rows = {id(child): row for node in tree.root.walk() for row, child in enumerate(node.children)}
            self._rows[id(tree.root)] = 0
        self.endResetModel()
        self._emit_counts()

    @property
    def editable(self) -> bool:
        return self._editable

    def set_editable(self, editable: bool) -> None:
        """Lock the checkboxes while a run trains (the tree still scrolls and expands)."""
        self._editable = editable
        self._emit_changed(0, len(COLUMNS) - 1)

    def node(self, index: AnyIndex) -> "LayerNode":
        return index.internalPointer()

    def index_of(self, name: str, column: int = 0) -> QModelIndex:
        node = self._tree.node(name)
        return self.createIndex(self._rows[id(node)], column, node)

    # -- QAbstractItemModel ------------------------------------------------------------------
    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:
        if self._tree is None or not self.hasIndex(row, column, parent):
            return QModelIndex()
        node = self.node(parent).children[row] if parent.isValid() else self._tree.root
        return self.createIndex(row, column, node)

    def parent(self, index: AnyIndex = QModelIndex()) -> QModelIndex:
        if not index.isValid():
            return QModelIndex()
        up = self.node(index).parent
        if up is None:
            return QModelIndex()
        return self.createIndex(self._rows[id(up)], 0, up)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        if self._tree is None or parent.column() > 0:
            return 0
        return len(self.node(parent).children) if parent.isValid() else 1

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node, column = self.node(index), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (node.short_name, node.type_name, f"{node.num_params:,}", f"{node.num_trainable:,}")[column]
        if role == Qt.ItemDataRole.CheckStateRole and column == 0:
            return _CHECK_STATE[node.trainable]
        if role == Qt.ItemDataRole.ToolTipRole:
            return node.name or "the whole model"
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 2:
            return _NUMBER_ALIGNMENT
        return None

    def setData(self, index: AnyIndex, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != 0 or not self._editable:
            return False
        state = Qt.CheckState(value) if isinstance(value, int) else value
        self._tree.set_trainable(self.node(index).name, state == Qt.CheckState.Checked)
        return True

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0 and self._editable:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    # -- change propagation ------------------------------------------------------------------
    def _on_tree_changed(self, _names: list[str]) -> None:
        """A freeze change can flip any ancestor's tri-state, so refresh check and count columns."""
        self._emit_changed(0, len(COLUMNS) - 1)
        self._emit_counts()

    def _emit_changed(self, first_column: int, last_column: int) -> None:
        if self._tree is None:
            return
        root = self._tree.root
        self.dataChanged.emit(self.createIndex(0, first_column, root), self.createIndex(0, last_column, root))
        for node in root.walk():
            if node.children:
                first, last = node.children[0], node.children[-1]
                self.dataChanged.emit(self.createIndex(0, first_column, first),
                                      self.createIndex(len(node.children) - 1, last_column, last))

    def _emit_counts(self) -> None:
        total, trainable = self._tree.counts() if self._tree is not None else (0, 0)
        self.counts_changed.emit(total, trainable)
