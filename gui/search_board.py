"""The Train step's automatic mode: the mode choice (manual, or the best model in N minutes) and the live
leaderboard of a recipe search (engine.search.auto), with its score-against-time scatter.

Both render the application state or the plain leaderboard rows the engine's `on_candidate` hook sends
(gui.jobs.TrainingEvents.candidate); the scatter is created once pyqtgraph is loaded (`create_plot`).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout, QHeaderView,
                               QLabel, QProgressBar, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from engine.core.progress import format_duration
from gui.jobs import short_title

if TYPE_CHECKING:
    from gui.state import AppState

MIN_MINUTES, MAX_MINUTES = 0.5, 600.0
AUTOMATIC_NOTE = ("The search tries backbones, heads, learning rates, epochs and flips, scores each on images "
                  "it did not train on, and keeps the best model. The settings below are its starting point; "
                  "the layers checked in the Model step are not used.")
AUTOMATIC_SHORT_NOTE = "The search picks backbone, head, learning rate, epochs and flips; these settings are its start."
COLUMNS = ("Candidate", "Backbone", "Recipe", "Score", "Time", "Status")
COLUMN_TIPS = {
    "Candidate": "Head trials are scored on the backbone's cached features without saving a model; the default "
                 "recipe, the best head recipe and the last blocks are trained as full runs. The ensemble averages "
                 "the probabilities of trained runs when they are more accurate together on validation.",
    "Recipe": "What the candidate changed: the classifier head, learning rate, epochs, flips and which layers "
              "trained. Hover over a row for the whole recipe.",
    "Score": "Accuracy on images the candidate did not train on. k-fold CV: trained k times, each time scored on a "
             "different k-th of the training and validation images, so the score is steadier than one split. "
             "Validation split: the validation images of a full run.",
    "Time": "How long the candidate took.",
    "Status": "done; pruned: stopped early because it was behind the others; skipped: it would not fit in the "
              "time left (or was not worth it); winner: the model the search kept.",
}
BEST_BACKGROUND = QColor(214, 240, 214)
SKIPPED_FOREGROUND = QColor(Qt.GlobalColor.gray)


def percent_text(score: float | None, spread: float | None = None) -> str:
    """'83 % ±2' (the ± only when there is a spread)."""
    if score is None:
        return "–"
    return f"{round(100 * score)} %" + (f" ±{round(100 * spread)}" if spread else "")


def recipe_text(recipe: dict) -> str:
    """The short recipe of a leaderboard row: 'MLP head · lr 3e-3 · 12 ep · flips'."""
    if not recipe:
        return ""
    if recipe.get("members"):
        return "mean of " + " + ".join(recipe["members"])
    parts = [f"{'MLP' if recipe.get('head') == 'mlp' else 'linear'} head"]
    if recipe.get("lr") is not None:
        parts.append(f"lr {recipe['lr']:.0e}".replace("e-0", "e-"))
    if recipe.get("epochs") is not None:
        parts.append(f"{recipe['epochs']} ep")
    if recipe.get("augmentation") == "flip":
        parts.append("flips")
    if recipe.get("tta") == "flip":
        parts.append("flip TTA")
    if recipe.get("balance") not in (None, "none"):
        parts.append("balanced")
    if recipe.get("freeze") == "last-n":
        parts.append(f"last {recipe.get('freeze_blocks')} blocks")
    return " · ".join(parts)


def recipe_tooltip(entry: dict) -> str:
    lines = [f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}"
             for key, value in entry.get("recipe", {}).items()]
    if entry.get("note"):
        lines.append(entry["note"])
    if entry.get("val_accuracy") is not None:
        lines.append(f"validation accuracy of its run: {percent_text(entry['val_accuracy'])}")
    return "\n".join(lines)


def score_text(entry: dict) -> str:
    text = percent_text(entry.get("score"), entry.get("score_std"))
    return f"{text} · {entry['scored_by']}" if entry.get("score") is not None and entry.get("scored_by") else text


class ModeChoice(QGroupBox):
    """Manual (one fit of the settings) or automatic (a recipe search within the minutes given), over
    `state.training_mode` and `state.search_minutes`: one row, and a note in automatic mode."""

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__("Mode", parent)
        self.state = state
        self.choice = QComboBox()
        self.choice.addItem("Manual: train with these settings", "manual")
        self.choice.addItem("Automatic: best model in", "automatic")
        self.choice.setToolTip("Manual: one run with the settings below and the layers checked in the Model "
                               "step. Automatic: " + AUTOMATIC_NOTE)
        self.minutes = QDoubleSpinBox(minimum=MIN_MINUTES, maximum=MAX_MINUTES, decimals=1, singleStep=1.0,
                                      suffix=" min")
        self.minutes.setToolTip("How long the automatic search may take (the final evaluation on the test "
                                "images comes on top). Stop keeps the best model found so far.")
        self.note = QLabel(AUTOMATIC_SHORT_NOTE)
        self.note.setWordWrap(True)
        self.note.setToolTip(AUTOMATIC_NOTE)
        row = QHBoxLayout()
        row.addWidget(self.choice, 1)
        row.addWidget(self.minutes)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.note)
        self.choice.currentIndexChanged.connect(self._store_mode)
        self.minutes.valueChanged.connect(self._store_minutes)
        state.events.training_mode.connect(self._show)
        state.events.search_minutes.connect(self._show)
        self._show()

    def _store_mode(self) -> None:
        self.state.training_mode = self.choice.currentData()

    def _store_minutes(self, minutes: float) -> None:
        self.state.search_minutes = minutes

    def _show(self) -> None:
        automatic = self.state.training_mode == "automatic"
        for widget in (self.choice, self.minutes):
            widget.blockSignals(True)
        self.choice.setCurrentIndex(self.choice.findData(self.state.training_mode))
        self.minutes.setValue(self.state.search_minutes)
        for widget in (self.choice, self.minutes):
            widget.blockSignals(False)
        self.minutes.setEnabled(automatic)
        self.note.setVisible(automatic)

    def set_mode(self, mode: str, minutes: float | None = None) -> None:
        """What a user does: choose a mode (and set the minutes)."""
        self.choice.setCurrentIndex(self.choice.findData(mode))
        if minutes is not None:
            self.minutes.setValue(minutes)


class SearchBoard(QWidget):
    """A recipe search as it runs: the time used and a table of candidates (the best highlighted); its
    `scatter` (scores against time) is a widget of its own."""

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.scatter = None
        self.rows: list[dict] = []             # leaderboard entries, in arrival order, with "at_s"
        self.budget_s = 0.0
        self._started: float | None = None
        self.title = QLabel("<b>Automatic search</b>: not started.")
        self.time_bar = QProgressBar(maximum=1000)
        self.time_bar.setFormat("Search time")
        self.time_bar.setMinimumWidth(160)             # room for "10:00 of 15:00" beside a long title
        self.time_bar.setMaximumWidth(320)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, name in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(column).setToolTip(COLUMN_TIPS.get(name, ""))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Recipe"), QHeaderView.ResizeMode.Stretch)
        self.clock = QTimer(self)
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._show_time)
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.time_bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def create_plot(self) -> None:
        """The scatter, once the window has painted (gui.plots imports pyqtgraph); the Train step places it
        beside the training curves."""
        from gui.plots import SearchScatter
        self.scatter = SearchScatter()
        self._redraw()

    # -- a search -------------------------------------------------------------------------------
    def start(self, budget_s: float) -> None:
        self.rows, self.budget_s, self._started = [], budget_s, time.monotonic()
        self.table.setRowCount(0)
        self.title.setText(f"<b>Automatic search</b>: the best model in {format_duration(budget_s)} "
                           "(min:s). Candidates appear here as they are scored.")
        self._show_time()
        self.clock.start()
        self._redraw()

    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    def _show_time(self) -> None:
        elapsed = self.elapsed()
        self.time_bar.setValue(round(self.time_bar.maximum() * min(1.0, elapsed / max(self.budget_s, 1e-9))))
        self.time_bar.setFormat(f"{format_duration(elapsed)} of {format_duration(self.budget_s)}"
                                + ("  ·  finishing" if elapsed > self.budget_s else ""))

    def add(self, entry: dict) -> None:
        """A leaderboard row from the engine; a candidate seen before is updated in place."""
        known = next((row for row in self.rows if row["name"] == entry["name"]), None)
        if known is None:
            self.rows.append({**entry, "at_s": self.elapsed()})
        else:
            known.update(entry)
        self._redraw()

    def finish(self, leaderboard: list[dict], status: str) -> None:
        """The search's final leaderboard (scores completed, the winner marked `chosen`)."""
        self.clock.stop()
        self._show_time()
        for entry in leaderboard:
            self.add(entry)
        winner = self.winner()
        self.title.setText(f"<b>Automatic search {status}</b>" + (
            f": {winner['name']} won ({score_text(winner)})." if winner else "."))
        if winner is not None:
            self.table.scrollToItem(self.table.item(self.rows.index(winner), 0))
        self.time_bar.setFormat(f"{format_duration(self.elapsed())} in all")

    def stop_clock(self) -> None:
        self.clock.stop()

    def winner(self) -> dict | None:
        return next((row for row in self.rows if row.get("chosen")), None)

    def best(self) -> dict | None:
        """The chosen one once the search has ended; until then the best score so far."""
        scored = [row for row in self.rows if row.get("score") is not None and row.get("status") == "done"]
        return self.winner() or (max(scored, key=lambda row: row["score"]) if scored else None)

    # -- drawing ----------------------------------------------------------------------------------
    def _backbone_title(self, name: str) -> str:
        row = self.state.backbone_row(name)
        return short_title(row["title"]) if row else name

    def _redraw(self) -> None:
        best = self.best()
        self.table.setRowCount(len(self.rows))
        for index, entry in enumerate(self.rows):
            skipped = entry.get("status") == "skipped"
            status = "winner" if entry.get("chosen") else entry.get("status", "")
            cells = [entry["name"], self._backbone_title(entry.get("backbone", "")),
                     entry.get("note", "") if skipped or not entry.get("recipe") else recipe_text(entry["recipe"]),
                     score_text(entry), format_duration(entry.get("seconds") or 0), status]
            tip = recipe_tooltip(entry)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if entry is best:
                    item.setBackground(QBrush(BEST_BACKGROUND))
                    item.setForeground(QBrush(QColor(Qt.GlobalColor.black)))
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                elif skipped:
                    item.setForeground(QBrush(SKIPPED_FOREGROUND))
                self.table.setItem(index, column, item)
        if self.rows:
            self.table.scrollToItem(self.table.item(len(self.rows) - 1, 0))
        if self.scatter is not None:
            self.scatter.show_candidates(self.rows, best)

    def best_row(self) -> int | None:
        """The highlighted row (tests, screenshots)."""
        best = self.best()
        return next((i for i, row in enumerate(self.rows) if row is best), None)
