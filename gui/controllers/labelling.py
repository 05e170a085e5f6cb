"""The labelling loop behind the Data step's "Label…": read the unlabelled pool with the pretrained model once,
then round after round a new head (about a second) picks the next batch; the user's labels are the project's
additions (`state.additions`), recorded as they are given.

The engine's `LabellingSession` holds the pool's features between rounds. The controller keeps it, but only the
jobs of its one `TaskSlot` use it, and a lock keeps them one at a time even while a replaced job winds down.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal

from engine.active.pool import labelled_keys
from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.project import apply_corrections
from gui.controllers.base import Controller
from gui.jobs import LABELLING_PICTURE_PX, labelling_round, read_unlabelled, start_labelling
from gui.thumbnails import thumbnail
from gui.workers import Task, TaskGroup, TaskSlot

if TYPE_CHECKING:
    from gui.data_panel import DataPanel
    from gui.jobs import LabellingBatch, LabellingStart
    from gui.state import AppState

BATCH = 20                       # samples asked about between two heads
KEPT_PICTURES = 50               # pictures of the last decisions kept for Undo (older ones are decoded again)


@dataclass
class Decision:
    row: dict                    # the round's batch entry decided on
    skipped: bool
    previous: dict | None        # the addition the sample had before (None: none)


@dataclass
class LabellingQueue:
    """The batch being worked through and every decision of this window's session, newest last, to undo."""

    rows: list[dict] = field(default_factory=list)
    position: int = 0
    decisions: list[Decision] = field(default_factory=list)

    @property
    def current(self) -> dict | None:
        return self.rows[self.position] if self.position < len(self.rows) else None

    def new_batch(self, rows: list[dict]) -> None:
        self.rows, self.position = list(rows), 0

    def decide(self, skipped: bool, previous: dict | None) -> dict:
        row = self.current
        self.decisions.append(Decision(row, skipped, previous))
        self.position += 1
        return row

    def undo(self) -> Decision | None:
        """The last decision, its sample shown again (put back into this batch when it was an earlier one's)."""
        if not self.decisions:
            return None
        decision = self.decisions.pop()
        if self.position and self.rows[self.position - 1] is decision.row:
            self.position -= 1
        else:
            self.rows.insert(self.position, decision.row)
        return decision


class LabellingController(Controller):
    """Reads the pool for the Data step's line, runs the loop for the labelling window, records its decisions."""

    labelling_ready = Signal(object)      # engine.active.session.Round: a batch to label (or the pool is done)
    labelling_failed = Signal(str)
    pool_read = Signal(object)            # engine.active.pool.Pool, for the Data step's line

    def __init__(self, state: AppState, tasks: TaskGroup, panel: DataPanel):
        super().__init__(panel)
        self.state, self.panel = state, panel
        self.dialog, self.view = panel.labelling_dialog, panel.labelling_dialog.view
        self.slot = TaskSlot(tasks)           # the session's jobs: prepare, then the rounds
        self.pool_slot = TaskSlot(tasks)      # the Data step's line
        self.lock = threading.Lock()
        self.batch_size = BATCH
        self.session = None                   # engine.active.session.LabellingSession, touched by jobs only
        self.pool_paths: set[str] = set()
        self.queue = LabellingQueue()
        self.skipped: set[str] = set()
        self.pictures: dict = {}
        panel.labelling_requested.connect(self.open)
        self.view.label_chosen.connect(self.label)
        self.view.skip_requested.connect(self.skip)
        self.view.undo_requested.connect(self.undo)
        self.view.cancel_requested.connect(self.slot.cancel)
        self.view.restart_requested.connect(self.start)
        self._pool_line = ""                  # the pool's summary, as last read
        for signal in (state.additions.events.added, state.additions.events.changed, state.additions.events.removed):
            signal.connect(self._show_pool_line)
        state.events.report.connect(self._on_dataset)
        state.events.unlabelled_sources.connect(self._on_pool_chosen)

    # -- the pool ------------------------------------------------------------------------------------
    def _on_dataset(self) -> None:
        """Another dataset (or a rescan): another set of classes, so the session starts afresh."""
        self._forget()
        self.dialog.hide()
        self.read_pool()

    def _on_pool_chosen(self) -> None:
        self._forget()
        self.read_pool()
        if self.dialog.isVisible():
            self.start()

    def read_pool(self) -> Task | None:
        """The pool's one line for the Data step (`pool_read` follows), read without a model."""
        sources, report = list(self.state.unlabelled_sources), self.state.report
        self.pool_slot.abandon()
        self._pool_line = ""
        if not sources or report is None:
            self.panel.show_pool_note("")
            return None
        self.panel.show_pool_note("Reading the unlabelled pool…")
        control = RunControl()
        job = partial(read_unlabelled, sources, modalities.of(report), labelled_keys(report), control)
        return self.pool_slot.start(job, control, on_result=self._on_pool_read, on_failed=self._on_pool_failed)

    def _on_pool_read(self, pool) -> None:
        self._pool_line = pool.summary()
        self._show_pool_line()
        self.pool_read.emit(pool)

    def _show_pool_line(self) -> None:
        """The pool's line, and how many of its samples the user labelled (they join the next run's training)."""
        if not self._pool_line:
            return
        given = len(self.state.additions)
        self.panel.show_pool_note(self._pool_line + (f" · {given} labelled by you, for the next run's training split"
                                                     if given else ""))

    def _on_pool_failed(self, message: str, _details: str) -> None:
        self.panel.show_pool_note(f"Unlabelled pool: {message}")

    # -- the session ----------------------------------------------------------------------------------
    def open(self) -> None:
        """The window was opened: a session unless one is there or on its way."""
        if self.session is None and not self.slot.pending:
            self.start()

    def start(self) -> Task | None:
        """Read the pool and the labelled set with the pretrained model, then the first round."""
        report, sources = self.state.report, list(self.state.unlabelled_sources)
        self._forget()
        if report is None or not sources:
            self.view.show_error("scan a dataset and choose its unlabelled pool first")
            return None
        modality = modalities.of(report)
        self.view.set_classes(report.classes, modality.sample_view == modalities.THUMBNAIL_VIEW, sources)
        self.dialog.setWindowTitle(f"Label unlabelled {modality.nouns} – {Path(report.root).name}")
        self.view.show_waiting(f"Reading the unlabelled {modality.nouns} and the labelled set with the pretrained "
                               "model (once: later rounds take about a second)…")
        self.view.show_running(True, "Loading the pretrained model…")
        self.status.emit(f"Preparing to label unlabelled {modality.nouns}…", 0)
        backbone = self.state.backbone if modality.owns_backbone(self.state.backbone) else None
        control = RunControl()
        job = partial(start_labelling, apply_corrections(report, dict(self.state.corrections)), sources, backbone,
                      self._labels(), self.batch_size, self.lock, control)
        return self.slot.start(job, control, on_result=self._on_started, on_failed=self._on_failed,
                               on_cancelled=self._on_cancelled, on_progress=self.view.set_progress)

    def _forget(self) -> None:
        self.slot.abandon()
        self.session, self.pool_paths, self.pictures = None, set(), {}
        self.queue, self.skipped = LabellingQueue(), set()
        self.view.clear(self.state.modality.nouns)
        self.view.enable_undo(False)

    def _labels(self) -> dict[str, str]:
        return {path: item["label"] for path, item in self.state.additions.items()}

    def _on_started(self, result: LabellingStart) -> None:
        self.session, self.pool_paths = result.session, {s.path for s in result.pool.samples}
        self.view.show_pool(result.pool)
        self._pool_line = result.pool.summary()
        self._show_pool_line()
        self.logged.emit(f"Labelling: {result.pool.summary()}")
        self.status_withdrawn.emit("Preparing to label")
        self._on_round(result)

    def _on_round(self, result: LabellingBatch) -> None:
        """A new head's accuracy on the plot and its batch to work through."""
        recent = (d.row["path"] for d in self.queue.decisions[-KEPT_PICTURES:])
        self.pictures = {**{path: self.pictures[path] for path in recent if path in self.pictures}, **result.pictures}
        self.queue.new_batch(result.round.batch)
        self.view.show_running(False)
        self.view.add_round(result.round)
        self._show_current()
        self.labelling_ready.emit(result.round)

    def _on_failed(self, message: str, _details: str) -> None:
        self.view.show_error(message)
        self.logged.emit(f"Labelling stopped: {message}")
        self.status_withdrawn.emit("Preparing to label")
        self.labelling_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.session = None
        self.view.show_cancelled()
        self.status_withdrawn.emit("Preparing to label")

    # -- decisions --------------------------------------------------------------------------------------
    def label(self, name: str) -> None:
        """The sample shown is `name`: a project addition (autosaved), then the next sample."""
        row = self.queue.current
        if row is None:
            return
        self.queue.decide(False, self.state.additions.get(row["path"]))
        self.state.additions[row["path"]] = {"label": name, "text": row.get("text")}
        self._next()

    def skip(self) -> None:
        """Not this one: not asked about again in this window."""
        row = self.queue.current
        if row is None:
            return
        self.queue.decide(True, None)
        self.skipped.add(row["path"])
        self._next()

    def undo(self) -> None:
        """Take back the last decision; a new head already on its way is dropped (it learnt from it)."""
        decision = self.queue.undo()
        if decision is None:
            return
        path = decision.row["path"]
        if decision.skipped:
            self.skipped.discard(path)
        elif decision.previous is None:
            self.state.additions.pop(path, None)
        else:
            self.state.additions[path] = decision.previous
        if self.slot.pending:
            self.slot.abandon()
            self.view.show_running(False)
        self._show_current()

    def _next(self) -> None:
        if self.queue.current is not None:
            self._show_current()
        else:
            self._next_round()

    def _next_round(self) -> Task | None:
        """The batch is decided: a new head on every label so far picks the next one."""
        if self.session is None:
            return None
        self.view.show_waiting("Learning from your labels… the next batch follows in a moment.")
        self.view.show_running(True, "Learning from your labels…", cancellable=False)
        self._show_counts()
        control = RunControl()
        job = partial(labelling_round, self.session, self._labels(), set(self.skipped), self.lock, control)
        return self.slot.start(job, control, on_result=self._on_round, on_failed=self._on_failed)

    def _show_current(self) -> None:
        row = self.queue.current
        if row is not None:
            self.view.show_sample(row, self._picture(row["path"]), self.queue.position + 1, len(self.queue.rows))
        elif not self.slot.pending:
            self.view.show_waiting(f"<b>Nothing left to ask:</b> every unlabelled {self.state.modality.noun} is "
                                   "labelled or skipped. Train again to use your labels.")
        self._show_counts()

    def _picture(self, path: str):
        """The batch's picture, decoded on the worker; one undone from long ago is decoded here (one image)."""
        if path not in self.pictures and self.view.shows_pictures:
            self.pictures[path] = thumbnail(path, LABELLING_PICTURE_PX)
        return self.pictures.get(path)

    def _show_counts(self) -> None:
        given = self.pool_paths & self.state.additions.keys()
        now = sum(not d.skipped for d in self.queue.decisions)
        left = len(self.pool_paths) - len(given) - len(self.skipped & self.pool_paths)
        self.view.show_counts(len(given), now, len(self.skipped), left, self.state.modality.nouns)
        self.view.enable_undo(bool(self.queue.decisions))
