"""The Train step's automatic mode: the mode choice (manual, or the best model in N minutes) and the live
leaderboard of a recipe search (engine.search.auto), with its score-against-time scatter.

Both render the application state or the plain leaderboard rows the engine's `on_candidate` hook sends
(gui.jobs.TrainingEvents.candidate); the scatter is created once pyqtgraph is loaded (`create_plot`).
"""
from __future__ import annotations

import time
from html import escape
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
AUTOMATIC_NOTE = ("The search tries backbones, heads, learning rates, epochs, flips and the last blocks, judges "
                  "every finalist on the same validation images, and replaces the default recipe only with a "
                  "model that is better there by more than chance. The settings below are its starting point; "
                  "the layers checked in the Model step are not used.")
AUTOMATIC_SHORT_NOTE = "The search picks backbone, head, learning rate, epochs and flips; these settings are its start."
COLUMNS = ("Candidate", "Backbone", "Recipe", "Score (95 % interval)", "Against the default", "Time", "Status")
COLUMN_TIPS = {
    "Candidate": "Finalists (at the top) are trained on the training images alone and judged on the same "
                 "validation images: the default recipe, the best screened head recipe, the fitted head, the "
                 "last blocks and the mean of several finalists. Head trials (grey, below) are screening only: "
                 "scored by cross-validation inside the training images, they decide which recipe becomes a "
                 "finalist and are never compared with the finalists.",
    "Recipe": "What the candidate changed: the classifier head, learning rate, epochs, flips and which layers "
              "trained. Hover over a row for the whole recipe.",
    "Score (95 % interval)": "Finalists: accuracy on the validation images, which neither trained nor picked "
                             "them, with the range the true accuracy lies in 95 times out of 100. Screening: "
                             "cross-validation inside the training images, near-identical images kept in one "
                             "fold; it can be far above what new images score when they come from other "
                             "sessions.",
    "Against the default": "The finalist's accuracy minus the default recipe's on the same validation images, "
                           "with its 95 % interval, and how often chance alone would give such a lead (p). A "
                           "finalist replaces the default only when p is small enough after allowing for every "
                           "finalist tried (Holm's correction); marked 'better'.",
    "Time": "How long the candidate took.",
    "Status": "done; pruned: stopped early because it was behind the others; skipped: it would not fit in the "
              "time left (or was not worth it); winner: the model the search kept.",
}
BEST_BACKGROUND = QColor(214, 240, 214)
SKIPPED_FOREGROUND = QColor(Qt.GlobalColor.gray)


def percent_text(score: float | None, interval: list[float] | None = None) -> str:
    """'83 % (74–90)': the score and its 95 % interval (when there is one)."""
    if score is None:
        return "–"
    text = f"{100 * score:.1f} %"
    return text + (f" ({100 * interval[0]:.0f}–{100 * interval[1]:.0f})" if interval else "")


def comparison_text(entry: dict) -> str:
    """'+4.4 points (−2.1 to +10.9), p = 0.12' against the default recipe; 'incumbent' for the default."""
    if entry.get("name") == "default recipe" and entry.get("stage") == "final":
        return "the incumbent"
    comparison = entry.get("comparison")
    if not comparison:
        return ""
    low, high = comparison["difference_interval"]
    return (f"{100 * comparison['difference']:+.1f} points ({100 * low:+.0f} to {100 * high:+.0f}), "
            f"p = {comparison['p_value']:.2g}" + (" · better" if comparison.get("significant") else ""))


def recipe_text(recipe: dict) -> str:
    """The short recipe of a leaderboard row: 'MLP head · lr 3e-3 · 12 ep · flips'."""
    if not recipe:
        return ""
    if recipe.get("members"):
        return "mean of " + " + ".join(recipe["members"])
    if recipe.get("optimizer") == "lbfgs":
        parts = ["linear head solved exactly (L-BFGS, L2 by CV)"]
    else:
        parts = [f"{'MLP' if recipe.get('head') == 'mlp' else 'linear'} head"]
    if recipe.get("lr") is not None and recipe.get("optimizer") != "lbfgs":
        parts.append(f"lr {recipe['lr']:.0e}".replace("e-0", "e-"))
    if recipe.get("epochs") is not None and recipe.get("optimizer") != "lbfgs":
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
    if entry.get("scored_by"):
        lines.append(f"scored by: {entry['scored_by']}")
    if entry.get("screening") is not None:
        lines.append(f"screening (cross-validation inside the training images): {percent_text(entry['screening'])}")
    return "\n".join(lines)


def score_text(entry: dict) -> str:
    """The score, its interval and a short word for how it was measured."""
    text = percent_text(entry.get("score"), entry.get("interval"))
    if entry.get("score") is None:
        return text
    return f"{text} · {'CV inside train' if entry.get('stage') == 'screening' else 'validation'}"


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
        self.minutes.setToolTip("How long the automatic search may take, its final evaluation on the test "
                                "images included. Stop keeps the best model found so far.")
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
        self.title.setWordWrap(True)
        self.advice = QLabel()                 # the decision and the warnings, once the search ends
        self.advice.setWordWrap(True)
        self.advice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.advice.setVisible(False)
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
        layout.addWidget(self.advice)
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
        self.advice.setVisible(False)
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

    def finish(self, leaderboard: list[dict], status: str, decision: str = "", warnings: list[str] = ()) -> None:
        """The search's final leaderboard (scores completed, the winner marked `chosen`), why it won, and what
        the user should know about the validation images (too few to tell recipes apart, or unlike the
        training images)."""
        self.clock.stop()
        self._show_time()
        for entry in leaderboard:
            self.add(entry)
        winner = self.winner()
        self.title.setText(f"<b>Automatic search {status}</b>" + (
            f": {winner['name']} won ({score_text(winner)})." if winner else "."))
        lines = [f"<b>Why</b>: {escape(decision[:1].upper() + decision[1:])}."] if decision else []
        lines += [f"<span style='color:#a05a00'><b>Note</b>: {escape(w[:1].upper() + w[1:])}.</span>"
                  for w in warnings]
        self.advice.setText("<br>".join(lines))
        self.advice.setVisible(bool(lines))
        if winner is not None:
            self.table.scrollToItem(self.table.item(self._ordered().index(winner), 0))
        self.time_bar.setFormat(f"{format_duration(self.elapsed())} in all")

    def stop_clock(self) -> None:
        self.clock.stop()

    def winner(self) -> dict | None:
        return next((row for row in self.rows if row.get("chosen")), None)

    def best(self) -> dict | None:
        """The chosen one once the search has ended; until then the finalist with the best validation score
        (screening scores are not compared with finalists')."""
        scored = [row for row in self.rows if row.get("score") is not None and row.get("status") == "done"
                  and row.get("stage", "final") == "final"]
        return self.winner() or (max(scored, key=lambda row: row["score"]) if scored else None)

    def _ordered(self) -> list[dict]:
        """Finalists first (in the order they came), then the ensemble's members, then screening and
        assessment rows."""
        rank = {"final": 0, "member": 1}
        return sorted(self.rows, key=lambda row: rank.get(row.get("stage", "final"), 2))

    # -- drawing ----------------------------------------------------------------------------------
    def _backbone_title(self, name: str) -> str:
        row = self.state.backbone_row(name)
        return short_title(row["title"]) if row else name

    def _redraw(self) -> None:
        best = self.best()
        rows = self._ordered()
        self.table.setRowCount(len(rows))
        for index, entry in enumerate(rows):
            skipped = entry.get("status") == "skipped"
            grey = skipped or entry.get("stage", "final") != "final"
            status = "winner" if entry.get("chosen") else entry.get("status", "")
            cells = [entry["name"], self._backbone_title(entry.get("backbone", "")),
                     entry.get("note", "") if skipped or not entry.get("recipe") else recipe_text(entry["recipe"]),
                     score_text(entry), comparison_text(entry), format_duration(entry.get("seconds") or 0), status]
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
                elif grey:
                    item.setForeground(QBrush(SKIPPED_FOREGROUND))
                self.table.setItem(index, column, item)
        if self.scatter is not None:
            self.scatter.show_candidates(self.rows, best)

    def best_row(self) -> int | None:
        """The highlighted table row (tests, screenshots)."""
        best = self.best()
        return next((i for i, row in enumerate(self._ordered()) if row is best), None)
