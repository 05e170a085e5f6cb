"""The Model step's backbone assessment: how well each backbone's frozen features fit this dataset."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal

from engine.core.control import RunControl
from gui.controllers.base import Controller
from gui.jobs import assess
from gui.workers import Task, TaskGroup, TaskSlot

if TYPE_CHECKING:
    from gui.assess_view import AssessmentView
    from gui.state import AppState


class AssessController(Controller):
    """Scores the backbones on the dataset as corrected; `state.assessing` holds training back meanwhile,
    and another dataset drops an assessment of the previous one."""

    assessment_finished = Signal(object)  # the assessment rows (dicts), best first
    assessment_failed = Signal(str)

    def __init__(self, state: AppState, tasks: TaskGroup, view: AssessmentView):
        super().__init__(view)
        self.state, self.view = state, view
        self.slot = TaskSlot(tasks)
        view.assess_requested.connect(self.assess_backbones)
        view.cancel_requested.connect(self.slot.cancel)
        state.events.report.connect(self._abandon)

    def assess_backbones(self) -> Task | None:
        """Score every backbone with offline weights on this dataset (as corrected), at the Train step's image
        size; `assessment_finished` or `assessment_failed` follows (None: no dataset, or busy)."""
        state = self.state
        if (state.report is None or state.engine is None or state.active_run is not None or state.assessing
                or not state.modality.assesses_backbones):
            return None
        report = state.training_report()
        control = RunControl()
        job = partial(assess, report, state.search_backbones, state.settings.get("image_size"), control)
        self.view.set_running(True)
        state.assessing = True
        self.logged.emit("Assessing the backbones on this dataset…")
        return self.slot.start(job, control, on_result=self._on_assessed, on_failed=self._on_failed,
                               on_cancelled=self._on_cancelled, on_progress=self.view.set_progress)

    def _abandon(self) -> None:
        """Another dataset: an assessment of the previous one must not land."""
        if self.slot.pending:
            self.slot.abandon()              # it reports nothing more
            self._ended()

    def _on_assessed(self, result) -> None:
        self._ended()
        self.state.assessment_summary = result.summary
        self.state.assessments = result.rows
        self.logged.emit(f"Backbone assessment: {result.summary}")
        self.assessment_finished.emit(result.rows)

    def _on_failed(self, message: str, _details: str) -> None:
        self._ended()
        self.view.show_error(message)
        self.logged.emit(f"Backbone assessment failed: {message}")
        self.assessment_failed.emit(message)

    def _on_cancelled(self) -> None:
        self._ended()
        self.view.show_cancelled()

    def _ended(self) -> None:
        """Training may start again (the task group joins the thread, which is only returning)."""
        self.view.set_running(False)
        self.state.assessing = False
