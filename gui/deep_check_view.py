"""The Data step's deep check (engine.audit.deep): what one pass of a pretrained model over the dataset
found, in three lists (maybe mislabelled, near-duplicates, odd samples), each with one-click fixes.

The view only displays and asks: a fix is `correction_requested(key, action, label)` (recorded in the
project's corrections, never applied to a file), pictures are `thumbnails_wanted(paths)` for the rows the
table paints (decoded on a worker and handed back with `add_thumbnails`), a new check is the panel's to
ask. A decided row shows the decision and keeps its place; what the user kept is not asked about again by
the next check. It holds plain dataclasses only (engine.audit.deep's, no torch object).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit,
                               QProgressBar, QPushButton, QTableView, QTabWidget, QVBoxLayout, QWidget)

from engine.core import modality as modalities
from engine.core.progress import stage_title
from gui.gallery import correction_text
from gui.text_views import one_line

if TYPE_CHECKING:
    from engine.audit.deep import DeepReport, LabelIssue, NearDuplicate, OddSample
    from engine.data.report import DatasetReport

THUMBNAIL_PX = 64                     # a row's picture (two side by side for a pair)
Index = QModelIndex | QPersistentModelIndex
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
FIGURE = {"val": "validation", "test": "test"}
ODD_METHOD = ("odd on their own (for images: nearly blank, very dark or bright, blurred, tiny, stretched; for "
              "texts: empty, very short, mostly not words), or far from every other sample by the frozen features "
              "(past Tukey's far-out fence of the distance to the 5th nearest)")


# -- how a sample looks in a row ---------------------------------------------------------------------
class SampleLook(QObject):
    """A sample as a row shows it: its picture (decoded when first painted), its text, or where it is; the
    modality's `sample_view` decides which (never its name)."""

    thumbnails_wanted = Signal(list)          # paths painted without a picture yet
    thumbnails_arrived = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.kind = modalities.LABEL_VIEW
        self.root = ""
        self.texts: dict[str, str] = {}
        self.thumbnails: dict[str, QImage] = {}
        self._wanted: list[str] = []          # painted since the last request
        self._asked: set[str] = set()         # requested and not arrived (a newer request replaces an older one)
        self._placeholder = QImage(THUMBNAIL_PX, THUMBNAIL_PX, QImage.Format.Format_ARGB32)
        self._placeholder.fill(QColor(0, 0, 0, 20))
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(30)
        self._timer.timeout.connect(self._ask)

    def reset(self, kind: str, root: str, texts: dict[str, str]) -> None:
        self.kind, self.root, self.texts = kind, root, texts
        self.thumbnails.clear()
        self._wanted.clear()
        self._asked.clear()

    @property
    def shows_pictures(self) -> bool:
        return self.kind == modalities.THUMBNAIL_VIEW

    def where(self, path: str) -> str:
        """`path` relative to the dataset the user gave (a text's 'file.csv:row 3' as it is)."""
        from engine.audit.deep import relative_path       # loaded by the check whose rows are shown
        return relative_path(path, self.root)

    def words(self, path: str) -> str:
        """What a sample column says: a text's text, nothing beside a picture, else where it is."""
        if self.kind == modalities.TEXT_VIEW:
            return one_line(self.texts.get(path, ""))
        return "" if self.shows_pictures else self.where(path)

    def tooltip(self, path: str) -> str:
        text = self.texts.get(path) if self.kind == modalities.TEXT_VIEW else None
        return f"{self.where(path)}\n\n{text[:1500]}" if text else self.where(path)

    def picture(self, path: str) -> QImage | None:
        if not self.shows_pictures:
            return None
        image = self.thumbnails.get(path)
        if image is None:
            self._want(path)
        return self._placeholder if image is None or image.isNull() else image

    def _want(self, path: str) -> None:
        if path not in self._asked and path not in self._wanted:
            self._wanted.append(path)
            self._timer.start()

    def _ask(self) -> None:
        """One request for what was painted since the last, plus what the last did not bring yet."""
        wanted = [*self._wanted, *(p for p in self._asked if p not in self._wanted)]
        self._wanted.clear()
        self._asked = set(wanted)
        if wanted:
            self.thumbnails_wanted.emit(wanted)

    def add_thumbnails(self, images: dict[str, QImage]) -> None:
        self.thumbnails.update(images)
        self._asked.difference_update(images)
        self.thumbnails_arrived.emit()


# -- the three lists' rows -------------------------------------------------------------------------------
class FindingsModel(QAbstractTableModel):
    """One list of findings: its first columns show samples (`samples(item)`), then plain cells, then the
    user's decision. Subclasses say what a finding shows and what deciding it means."""

    headers: tuple[str, ...] = ()

    def __init__(self, look: SampleLook, parent: QObject | None = None):
        super().__init__(parent)
        self.look = look
        self.items: list = []
        self.corrections: dict[str, dict] = {}
        look.thumbnails_arrived.connect(self._pictures_arrived)

    # what a subclass defines
    def samples(self, item) -> tuple[str, ...]:
        raise NotImplementedError

    def cells(self, item) -> tuple[str, ...]:
        raise NotImplementedError

    def decision(self, item) -> str:
        """The user's decision about `item`, in words ('' while undecided)."""
        return correction_text(self.corrections.get(item.path))

    def warning_column(self, item) -> int | None:
        """A cell to show in red (a leak), as an index into `cells`."""
        return None

    # the table
    def set_items(self, items: list) -> None:
        self.beginResetModel()
        self.items = list(items)
        self.endResetModel()

    def set_corrections(self, corrections: dict[str, dict]) -> None:
        self.corrections = corrections
        if self.items:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.items) - 1, self.columnCount() - 1))

    def _pictures_arrived(self) -> None:
        if self.items and self.look.shows_pictures:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.items) - 1, self.sample_columns - 1),
                                  [Qt.ItemDataRole.DecorationRole])

    @property
    def sample_columns(self) -> int:
        return sum(header.startswith("Sample") for header in self.headers)

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.headers)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item, column = self.items[index.row()], index.column()
        if column < self.sample_columns:
            return self._sample_data(self.samples(item)[column], role)
        decided = self.decision(item)
        if role == Qt.ItemDataRole.DisplayRole:
            return decided if column == len(self.headers) - 1 else self.cells(item)[column - self.sample_columns]
        if role == Qt.ItemDataRole.ToolTipRole and column == len(self.headers) - 1 and decided:
            return "Your decision (applies from the next run; your files are not changed)"
        if role == Qt.ItemDataRole.ForegroundRole:
            if decided:
                return QColor(Qt.GlobalColor.darkGray)
            if self.warning_column(item) == column - self.sample_columns:
                return QColor(190, 30, 30)
        if role == Qt.ItemDataRole.FontRole and column == len(self.headers) - 1 and decided:
            font = QFont()
            font.setItalic(True)
            return font
        return None

    def _sample_data(self, path: str, role: int):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.look.words(path)
        if role == Qt.ItemDataRole.DecorationRole:
            return self.look.picture(path)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.look.tooltip(path)
        return None


class LabelIssuesModel(FindingsModel):
    headers = ("Sample", "Where", "Labelled", "Looks like", "Sure it is wrong", "Split", "Your decision")

    def samples(self, item: LabelIssue) -> tuple[str, ...]:
        return (item.path,)

    def cells(self, item: LabelIssue) -> tuple[str, ...]:
        return self.look.where(item.path), item.given, item.suggested, f"{item.score:.0%}", item.split


class DuplicatesModel(FindingsModel):
    headers = ("Sample A", "Sample B", "A", "B", "Alike", "Why it matters", "Your decision")

    def samples(self, item: NearDuplicate) -> tuple[str, ...]:
        return item.a, item.b

    def cells(self, item: NearDuplicate) -> tuple[str, ...]:
        return (f"{self.look.where(item.a)} ({item.splits[0]})", f"{self.look.where(item.b)} ({item.splits[1]})",
                f"{item.similarity:.2f}", leak_text(item))

    def warning_column(self, item: NearDuplicate) -> int | None:
        return 3 if item.across_splits else None

    def decision(self, item: NearDuplicate) -> str:
        if item.key in self.corrections:
            return "both kept"
        return "; ".join(f"{Path(path).name} {correction_text(self.corrections[path])}"
                         for path in (item.a, item.b) if path in self.corrections)


class OddSamplesModel(FindingsModel):
    headers = ("Sample", "Where", "Why it is odd", "Split", "Your decision")

    def samples(self, item: OddSample) -> tuple[str, ...]:
        return (item.path,)

    def cells(self, item: OddSample) -> tuple[str, ...]:
        return self.look.where(item.path), item.reason, item.split


def leak_text(pair: NearDuplicate) -> str:
    """Why a pair matters: across splits, the figure it inflates; within one, a sample counted twice."""
    if not pair.across_splits:
        return f"the same {pair.splits[0]} sample twice"
    later = max(pair.splits, key=lambda split: SPLIT_ORDER.get(split, 0))
    return f"leak: {FIGURE.get(later, later)} figure inflated"


def excluded_of(pair: NearDuplicate) -> str:
    """Which of a pair "Exclude" leaves out: the one in validation or test when it leaks, else the second."""
    if pair.across_splits:
        return max((pair.a, pair.b), key=lambda path: SPLIT_ORDER.get(pair.splits[path == pair.b], 0))
    return pair.b


# -- one list: its table and its buttons -------------------------------------------------------------------
class FindingsList(QWidget):
    """A note, the table, and the fixes for the selected rows; after a fix the next undecided row is
    selected, so a list is worked through one click per row."""

    correction_requested = Signal(str, str, str)   # key (a path or a pair's key), action, label

    def __init__(self, model: FindingsModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.table = QTableView()
        self.table.setModel(model)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        self.table.selectionModel().currentRowChanged.connect(self._show_whole_text)
        self.whole_text = QPlainTextEdit()       # texts: the current row's, whole (a row shows one line)
        self.whole_text.setReadOnly(True)
        self.whole_text.setMaximumHeight(110)
        self.whole_text.setVisible(False)
        self.buttons = QHBoxLayout()
        self._make_buttons()
        self.undo_button = self._button("Undo", "Forget your decision about the selected rows", self._undo)
        self.buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.whole_text)
        layout.addLayout(self.buttons)
        self._update_buttons()

    def _make_buttons(self) -> None:
        """The list's own fixes, added to `self.buttons` (before Undo)."""

    def _button(self, text: str, tip: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        self.buttons.addWidget(button)
        return button

    # -- contents --------------------------------------------------------------------------------
    def show_items(self, items: list, note: str) -> None:
        self.note.setText(note)
        self.model.set_items(items)
        self._fit_columns()
        if items:
            self.table.selectRow(0)
        self._update_buttons()

    def _fit_columns(self) -> None:
        """Pictures: fixed columns, the decision takes the rest. Texts: the texts take the rest (one line each,
        cut at their end; paths are cut in their middle, where a folder name matters least)."""
        header, look = self.table.horizontalHeader(), self.model.look
        pictures, texts = look.shows_pictures, look.kind == modalities.TEXT_VIEW
        self.table.verticalHeader().setDefaultSectionSize(
            THUMBNAIL_PX + 8 if pictures else self.fontMetrics().height() + 10)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight if texts else Qt.TextElideMode.ElideMiddle)
        header.setStretchLastSection(not texts)
        self.whole_text.setVisible(texts)
        samples, last = self.model.sample_columns, self.model.columnCount() - 1
        for column in range(self.model.columnCount()):
            if column < samples:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if texts
                                            else QHeaderView.ResizeMode.Interactive)
                self.table.setColumnWidth(column, THUMBNAIL_PX + 12 if pictures else 260)
            else:
                header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
                self.table.resizeColumnToContents(column)
                self.table.setColumnWidth(column, 160 if column == last else
                                          min(max(self.table.columnWidth(column), 60), 300))

    def _show_whole_text(self, current: QModelIndex, _previous=None) -> None:
        if self.whole_text.isHidden() or not current.isValid():
            return
        paths = self.model.samples(self.model.items[current.row()])
        texts = [self.model.look.texts.get(path, "") for path in paths]
        self.whole_text.setPlainText(texts[0] if len(texts) == 1 else
                                     "\n\n".join(f"{name}: {text}" for name, text in zip("AB", texts)))

    def selected(self) -> list:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.model.items[row] for row in rows]

    def set_corrections(self, corrections: dict[str, dict]) -> None:
        self.model.set_corrections(corrections)
        self._update_buttons()

    # -- fixes ---------------------------------------------------------------------------------------
    def _update_buttons(self, *_args) -> None:
        selected = self.selected()
        for index in range(self.buttons.count()):
            widget = self.buttons.itemAt(index).widget()
            if widget is not None:
                widget.setEnabled(bool(selected))
        self.undo_button.setEnabled(any(self.model.decision(item) for item in selected))
        self._name_buttons(selected)

    def _name_buttons(self, selected: list) -> None:
        """Button texts that say what a click does to the selected rows."""

    def _decide(self, choose) -> None:
        """`choose(item)` -> (key, action, label) for each selected row, then on to the next undecided row."""
        selected = self.selected()
        if not selected:
            return
        last = self.model.items.index(selected[-1])
        for item in selected:
            self.correction_requested.emit(*choose(item))
        self._select_next_undecided(last)

    def _select_next_undecided(self, after: int) -> None:
        items = self.model.items
        following = [row for row in range(after + 1, len(items)) if not self.model.decision(items[row])]
        self.table.clearSelection()
        if following:
            self.table.selectRow(following[0])
        elif after < len(items):
            self.table.selectRow(after)
        self._update_buttons()

    def _undo(self) -> None:
        for item in self.selected():
            for key in self.decided_keys(item):
                self.correction_requested.emit(key, "restore", "")
        self._update_buttons()

    def decided_keys(self, item) -> list[str]:
        """The corrections a row's decision is made of (what Undo forgets)."""
        return [item.path] if item.path in self.model.corrections else []


class LabelIssuesList(FindingsList):
    def _make_buttons(self) -> None:
        self.relabel_button = self._button("Relabel as suggested", "Train on it under the class the model sees "
                                           "(from the next run; the file stays where it is)",
                                           lambda: self._decide(lambda i: (i.path, "relabel", i.suggested)))
        self.exclude_button = self._button("Exclude", "Leave it out of the next runs (the file is not changed)",
                                           lambda: self._decide(lambda i: (i.path, "exclude", "")))
        self.keep_button = self._button("Keep", "Its label is right: keep it as it is, and do not ask again",
                                        lambda: self._decide(lambda i: (i.path, "keep", "")))

    def _name_buttons(self, selected: list) -> None:
        suggested = {item.suggested for item in selected}
        self.relabel_button.setText(f"Relabel as {suggested.pop()}" if len(suggested) == 1 else "Relabel as suggested")


class DuplicatesList(FindingsList):
    def _make_buttons(self) -> None:
        self.exclude_button = self._button("Exclude one", "Leave one of the pair out of the next runs: the one in "
                                           "validation or test when the pair leaks, else the second",
                                           lambda: self._decide(lambda p: (excluded_of(p), "exclude", "")))
        self.keep_button = self._button("Keep both", "They are different enough: keep both, and do not ask again",
                                        lambda: self._decide(lambda p: (p.key, "keep", "")))
        self.together_button = self._button(
            "Keep near-duplicates in one split", "TransferLab chose this dataset's split: move each group of "
            "near-duplicates into the split where most of it is (train on a tie), so validation and test hold no "
            "twin of a training sample. Undo with Undo on the pairs, or Restore in the Results gallery.",
            self._keep_groups_together)
        self.together_button.setVisible(False)
        self.moves: dict[str, dict] = {}

    def set_moves(self, moves: dict[str, dict]) -> None:
        """The moves that would keep every group in one split ({} when the user gave the split, or none
        straddles it): the button is shown only when there are some."""
        self.moves = moves
        self.together_button.setVisible(bool(moves))
        self.together_button.setText(f"Keep near-duplicates in one split ({len(moves)} to move)" if moves
                                     else "Keep near-duplicates in one split")

    def _keep_groups_together(self) -> None:
        for path, move in self.moves.items():
            self.correction_requested.emit(path, "move", move["split"])
        self.together_button.setEnabled(False)

    def _name_buttons(self, selected: list) -> None:
        name = Path(excluded_of(selected[0])).name if len(selected) == 1 else ""     # none selected: disabled
        self.exclude_button.setText(f"Exclude {name}" if name else "Exclude one of each")

    def decided_keys(self, item: NearDuplicate) -> list[str]:
        return [key for key in (item.key, item.a, item.b) if key in self.model.corrections]

    def _update_buttons(self, *_args) -> None:
        super()._update_buttons()
        if hasattr(self, "together_button"):
            self.together_button.setEnabled(any(path not in self.model.corrections for path in self.moves))


class OddSamplesList(FindingsList):
    def _make_buttons(self) -> None:
        self.exclude_button = self._button("Exclude", "Leave it out of the next runs (the file is not changed)",
                                           lambda: self._decide(lambda i: (i.path, "exclude", "")))
        self.keep_button = self._button("Keep", "It belongs in the dataset: keep it, and do not ask again",
                                        lambda: self._decide(lambda i: (i.path, "keep", "")))


# -- the view ----------------------------------------------------------------------------------------------
class DeepCheckView(QWidget):
    """A status line (what the check does, its progress, its summary or why it stopped) above the three
    lists as tabs."""

    correction_requested = Signal(str, str, str)   # key, 'exclude' | 'relabel' | 'keep' | 'restore', label
    thumbnails_wanted = Signal(list)
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.result: DeepReport | None = None
        self.nouns = "samples"
        self.look = SampleLook(self)
        self.look.thumbnails_wanted.connect(self.thumbnails_wanted)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.label_issues = LabelIssuesList(LabelIssuesModel(self.look, self))
        self.duplicates = DuplicatesList(DuplicatesModel(self.look, self))
        self.odd_samples = OddSamplesList(OddSamplesModel(self.look, self))
        self.tabs = QTabWidget()
        for findings in self.lists:
            findings.correction_requested.connect(self.correction_requested)
            self.tabs.addTab(findings, "")
        running = QHBoxLayout()
        running.addWidget(self.progress, 1)
        running.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.status)
        layout.addLayout(running)
        layout.addWidget(self.tabs, 1)
        layout.addStretch(0)                   # keeps the status line on top while there are no lists
        self.clear()

    @property
    def lists(self) -> tuple[FindingsList, FindingsList, FindingsList]:
        return self.label_issues, self.duplicates, self.odd_samples

    # -- states ------------------------------------------------------------------------------------
    def clear(self, nouns: str = "samples") -> None:
        """Before any check (or after a new scan): what the check does, and no lists."""
        self.result, self.nouns = None, nouns
        self._show_running(False)
        self.status.setText(f"<b>Check deeper</b>: {what_it_does(nouns)}")
        self.status.setToolTip("")
        self.tabs.setVisible(False)

    def show_running(self) -> None:
        self._show_running(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("Loading the pretrained model…")
        self.status.setText("<b>Checking deeper…</b> " + ("The lists below are the last check's until it ends."
                                                           if self.result is not None else what_it_does(self.nouns)))

    def set_progress(self, stage: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage_title(stage)} · {done:,} / {total:,}")

    def show_error(self, message: str) -> None:
        """Why the check stopped, on one line (the details are in the Log)."""
        self._show_running(False)
        self.status.setText(f"<b>The deep check stopped:</b> {one_line(message)}")

    def show_cancelled(self) -> None:
        self._show_running(False)
        self.status.setText("Deep check cancelled." + (" The lists are the last check's." if self.result else ""))

    def _show_running(self, running: bool) -> None:
        self.progress.setVisible(running)
        self.cancel_button.setVisible(running)

    # -- results -----------------------------------------------------------------------------------
    def show_result(self, result: DeepReport, report: DatasetReport, corrections: dict[str, dict]) -> None:
        """The check's three lists; `report` is the dataset it checked (its texts, its root)."""
        modality = modalities.of(report)
        texts = {s.path: s.text or "" for s in report.samples} if modality.sample_view == modalities.TEXT_VIEW else {}
        self.result = result
        self.look.reset(modality.sample_view, report.root, texts)
        self._show_running(False)
        self.status.setText(f"<b>Deep check:</b> {result.summary(modality.nouns)}")
        self.status.setToolTip(method_text(result))
        nouns = modality.nouns
        self.label_issues.show_items(result.label_issues, label_issues_note(result, nouns))
        self.duplicates.show_items(result.near_duplicates, duplicates_note(result, nouns))
        from engine.audit.deep import keep_groups_together      # torch loads with it: never at start-up
        self.duplicates.set_moves(keep_groups_together(report, result))
        self.odd_samples.show_items(result.odd_samples, odd_note(result, nouns))
        titles = (f"Maybe mislabelled ({len(result.label_issues)})", f"Near-duplicates ({len(result.near_duplicates)})",
                  f"Odd {nouns} ({len(result.odd_samples)})")
        tips = (label_method(result), duplicates_method(result), f"Odd {nouns}: {ODD_METHOD}.")
        for index, (title, tip) in enumerate(zip(titles, tips)):
            self.tabs.setTabText(index, title)
            self.tabs.setTabToolTip(index, tip)
        self.tabs.setVisible(True)
        self.set_corrections(corrections)
        self.tabs.setCurrentIndex(next((i for i, found in enumerate(self.counts()) if found), 0))

    def counts(self) -> tuple[int, int, int]:
        return tuple(findings.model.rowCount() for findings in self.lists)

    def set_corrections(self, corrections: dict[str, dict]) -> None:
        for findings in self.lists:
            findings.set_corrections(corrections)

    def add_thumbnails(self, images: dict[str, QImage]) -> None:
        self.look.add_thumbnails(images)


class DeepCheckDialog(QDialog):
    """The view in a window of its own (rows of pictures need room), non-modal: the window stays usable while
    a check runs or the user works through its lists. "Check again" asks for a new check of the dataset."""

    check_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Deep check")
        self.view = DeepCheckView()
        self.check_again_button = QPushButton("Check again")
        self.check_again_button.setToolTip("Run the check again (what you kept is not asked about again)")
        self.check_again_button.clicked.connect(self.check_requested)
        close_button = QPushButton("Close")
        close_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        buttons.addWidget(self.check_again_button)
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        self.resize(1120, 680)


# -- words ---------------------------------------------------------------------------------------------------
def what_it_does(nouns: str) -> str:
    return (f"a pretrained model reads every one of the {nouns} once, then the likely label errors, the "
            f"near-duplicates (and which of them leak between train and test) and the odd {nouns} are listed, each "
            f"with one-click fixes. Your decisions are corrections in the project, applied from the next run; your "
            f"files are never changed.")


def label_issues_note(result: DeepReport, nouns: str) -> str:
    if not result.label_issues:
        return f"No likely label errors: a model that never saw each of the {nouns} agrees with its label."
    return (f"{nouns.capitalize()} whose label a model trained without them disagrees with, surest first. Relabel "
            "them as it suggests, exclude them, or keep them as they are.")


def duplicates_note(result: DeepReport, nouns: str) -> str:
    if not result.near_duplicates:
        return f"No near-duplicates: no two {nouns} are copies of each other."
    across = sum(pair.across_splits for pair in result.near_duplicates)
    leaks = (f"{across} pair{'s' if across != 1 else ''} across splits first: a copy in validation or test of a "
             "training sample inflates that figure. " if across else "")
    return f"{leaks}Exclude one of a pair, or keep both when they are different enough."


def odd_note(result: DeepReport, nouns: str) -> str:
    if not result.odd_samples:
        return f"No odd {nouns}."
    return f"{nouns.capitalize()} that may not belong: exclude them, or keep them."


def label_method(result: DeepReport) -> str:
    method = result.method.get("label_issues", {})
    if "skipped" in method:
        return f"Likely label errors: skipped ({method['skipped']})."
    return (f"Likely label errors: probabilities from {method.get('probabilities', 'out-of-fold models')}; "
            f"{method.get('filter', 'confident learning')}; ranked by {method.get('ranked_by', 'self-confidence')}.")


def duplicates_method(result: DeepReport) -> str:
    method = result.method.get("near_duplicates", {})
    return (f"Near-duplicates: candidates are the {method.get('candidates', 'nearest by the frozen features')}, "
            f"confirmed by {method.get('confirmed_by', 'the samples themselves')} "
            f"(a pair from {method.get('limit', 0):g}).")


def method_text(result: DeepReport) -> str:
    """How the three lists were made (the summary's tooltip)."""
    return "\n".join([f"One frozen pass of {result.backbone} over {result.samples:,} samples, then:",
                      label_method(result), duplicates_method(result), f"Odd samples: {ODD_METHOD}."])
