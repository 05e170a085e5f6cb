"""The Data step's deep check: run engine.audit.deep on the scanned dataset on a worker, decode the pictures
its lists paint, and record the user's decisions as the project's corrections."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal

from engine.core.control import RunControl
from gui.controllers.base import Controller
from gui.deep_check_view import THUMBNAIL_PX
from gui.jobs import deep_check, load_thumbnails
from gui.workers import Task, TaskGroup, TaskSlot

if TYPE_CHECKING:
    from gui.data_panel import DataPanel
    from gui.state import AppState

DECIDED = {"exclude": "excluded from training", "relabel": "moved to class {label}",
           "keep": "kept as it is (the deep check will not ask again)", "restore": "restored",
           "move": "moved to the {label} split, beside its near-duplicates"}


class DeepCheckController(Controller):
    """Starts a check when the Data step asks (a new one replaces one still running), forgets it when the
    dataset changes, and turns the lists' fixes into corrections."""

    deep_check_finished = Signal(object)      # engine.audit.deep.DeepReport
    deep_check_failed = Signal(str)

    def __init__(self, state: AppState, tasks: TaskGroup, panel: DataPanel):
        super().__init__(panel)
        self.state, self.panel, self.view = state, panel, panel.deep_check
        self.slot = TaskSlot(tasks)
        self.thumbnail_slot = TaskSlot(tasks)     # the pictures the lists paint: a newer request replaces one
        panel.deep_check_requested.connect(self.start)
        self.view.cancel_requested.connect(self.slot.cancel)
        self.view.correction_requested.connect(self.record_correction)
        self.view.thumbnails_wanted.connect(self._load_thumbnails)
        state.events.report.connect(self._forget)

    def start(self) -> Task | None:
        """The deep check of the scanned dataset; `deep_check_finished` or `deep_check_failed` follows."""
        report = self.state.report
        if report is None:
            return None
        kept = frozenset(key for key, item in self.state.corrections.items() if item["action"] == "keep")
        control = RunControl()
        self.panel.show_deep_check_running()
        self.status.emit(f"Checking {self.state.modality.count(len(report.samples))} deeper…", 0)
        return self.slot.start(partial(deep_check, report, kept, control), control, on_result=self._on_checked,
                               on_failed=self._on_failed, on_cancelled=self._on_cancelled,
                               on_progress=self.view.set_progress)

    def _on_checked(self, result) -> None:
        self.panel.show_deep_check(result)
        self.logged.emit(f"Deep check: {result.summary(self.state.modality.nouns)}")
        self.status_withdrawn.emit("Checking ")
        self.deep_check_finished.emit(result)

    def _on_failed(self, message: str, _details: str) -> None:
        self.panel.show_deep_check_stopped(message)
        self.logged.emit(f"Deep check failed: {message}")
        self.status_withdrawn.emit("Checking ")
        self.deep_check_failed.emit(message)

    def _on_cancelled(self) -> None:
        self.panel.show_deep_check_stopped()
        self.status_withdrawn.emit("Checking ")

    def _forget(self) -> None:
        """Another dataset (or a rescan): the last check's answer, running or shown, no longer applies."""
        self.slot.abandon()
        self.thumbnail_slot.abandon()

    def _load_thumbnails(self, paths: list[str]) -> None:
        control = RunControl()
        self.thumbnail_slot.start(partial(load_thumbnails, paths, control, size=THUMBNAIL_PX), control,
                                  on_result=self.view.add_thumbnails)

    def record_correction(self, key: str, action: str, label: str = "") -> None:
        """A fix from the lists: a sample's (its path) or a pair's (its key) correction, autosaved."""
        self.state.correct(key, action, label)
        names = " and ".join(Path(path).name for path in key.split("\n"))
        self.logged.emit(f"{names} {DECIDED[action].format(label=label)} (applies from the next run)")
