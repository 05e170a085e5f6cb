"""The Train step's work: one fit of the settings, a resumed fit, or an automatic recipe search, on a
worker; its events reach the Train panel, its end the Results panel, and every step of it the run records."""
from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal

from engine.core.paths import user_data_dir
from engine.project import run_record_config
from gui.controllers.base import Controller
from gui.jobs import SearchRun, TrainingEvents, TrainingRun
from gui.search_board import score_text
from gui.workers import Task, TaskGroup, TaskSlot

if TYPE_CHECKING:
    from gui.results_panel import ResultsPanel
    from gui.state import AppState
    from gui.train_panel import TrainPanel

DEVICE_MESSAGE = "Training on "        # the status bar's 'where it trains', which holds while a run trains


class TrainController(Controller):
    """Starts, pauses, stops and resumes runs; records each in the state as it goes (running, then how it
    ended). `training_started` is emitted before the run's thread starts, so a listener misses no event."""

    training_started = Signal(object)     # gui.jobs.TrainingRun, just before its thread starts
    epoch_ended = Signal(int, object)     # epoch, logs (relayed from the run)
    training_finished = Signal(object)    # engine FitResult (SearchResult for an automatic search)
    training_failed = Signal(str)
    paused_changed = Signal(bool)

    def __init__(self, state: AppState, tasks: TaskGroup, panel: TrainPanel, results: ResultsPanel):
        super().__init__(panel)
        self.state, self.panel, self.results = state, panel, results
        self.slot = TaskSlot(tasks)
        self.closing = False                  # the window is closing: no more offers to resume
        self._config: dict = {}               # the active run's TrainConfig dict (a search's: its winner's)
        self._fit_info: dict | None = None    # its fit's start (parameter counts), for its record
        self._winner: str | None = None
        self._search_minutes: float | None = None
        self._best_accuracy: float | None = None
        panel.start_requested.connect(self.start_training)
        panel.pause_requested.connect(self.set_paused)
        panel.stop_requested.connect(self.stop_training)
        panel.resume_offer.resume_requested.connect(self.resume_training)
        panel.settings.refused.connect(self.logged)
        results.retrain_requested.connect(self.start_training)
        results.correction_requested.connect(self.record_correction)

    # -- starting ----------------------------------------------------------------------------------
    def training_config(self):
        """The run as set up (settings, weights, the tree's exact freeze state), validated."""
        if self.state.invalid_setting:
            raise ValueError(self.state.invalid_setting)
        config = self.state.training_config()
        config.validate()
        return config

    def start_training(self) -> TrainingRun | None:
        """Start a run on a worker; returns it (None when not ready or the settings are invalid)."""
        if not self.state.can_train():
            return None
        try:
            config = self.training_config()
        except ValueError as exc:
            self.panel.show_error(str(exc), heading="Cannot start training:")
            return None
        run_dir = user_data_dir() / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        report = self.state.training_report()          # corrections and pool labels; never touches the files
        budget_s = self.state.search_minutes * 60 if self.state.training_mode == "automatic" else None
        if budget_s is None:
            run = TrainingRun(report, config, run_dir, TrainingEvents())
        else:                                    # the form's settings are the search's starting point
            run = SearchRun(report, config, run_dir, TrainingEvents(), budget_s, self.state.search_backbones,
                            self.state.unlabelled_sources)
        self._launch(run, budget_s, None,
                     f"Training {config.backbone} for {config.epochs} epochs into {run_dir}" if budget_s is None else
                     f"Searching for the best model in {self.state.search_minutes:g} minutes into {run_dir}")
        return run

    def resume_training(self, run_dir: str) -> TrainingRun | None:
        """Continue a run that stopped before its end, with its own settings, on the dataset as loaded now
        (with the same corrections); a refusal (the dataset changed, nothing to resume) is explained."""
        from engine.training.runstate import ResumeRefused, check_resume, load_run_config, resume_summary
        if not self.state.can_train():
            return None
        report = self.state.training_report()
        try:
            config = load_run_config(run_dir)
            check_resume(run_dir, report)
        except ResumeRefused as exc:
            self.panel.show_error(str(exc), heading="Cannot resume:")
            return None
        best = resume_summary(run_dir).get("best_val_accuracy")
        run = TrainingRun(report, config, Path(run_dir), TrainingEvents(), resume=True)
        self._launch(run, None, best, f"Resuming the run in {run_dir}")
        return run

    def _launch(self, run: TrainingRun, budget_s: float | None, best: float | None, message: str) -> None:
        """Wire a run to the panels and the records, announce it, then start its thread."""
        self._config, self._fit_info, self._winner, self._best_accuracy = run.config.to_dict(), None, None, best
        self._search_minutes = self.state.search_minutes if budget_s is not None else None
        self._connect_run(run.events)
        self.slot.start(run, run.control, on_result=self._on_succeeded, on_failed=self._on_failed,
                        on_cancelled=self._on_search_stopped_empty if budget_s is not None else None,
                        on_done=self._on_thread_done, before_start=partial(self._announce, run, budget_s, message))

    def _announce(self, run: TrainingRun, budget_s: float | None, message: str, task: Task) -> None:
        run.events.setParent(task)               # goes with the task once its thread has ended
        self.state.active_run = run
        self.panel.on_run_started(budget_s)
        self.step_wanted.emit(self.panel)
        self.logged.emit(message)
        self.training_started.emit(run)

    def offer_resume(self, run_dir: str) -> bool:
        """Show the Train step's offer to continue `run_dir` when it can (interrupted, stopped or failed
        with a training state kept); True when offered."""
        from engine.training.runstate import can_resume, resume_summary
        if self.slot.running or not can_resume(run_dir):
            return False
        self.panel.resume_offer.offer(run_dir, resume_summary(run_dir))
        return True

    def _connect_run(self, events: TrainingEvents) -> None:
        panel = self.panel
        events.fit_started.connect(panel.on_fit_started)
        events.fit_started.connect(self.on_fit_started)
        events.stage_progress.connect(panel.on_stage_progress)
        events.batch_ended.connect(panel.on_batch_ended)
        events.epoch_ended.connect(panel.on_epoch_ended)
        events.fit_failed.connect(panel.on_fit_failed)
        events.epoch_ended.connect(self._log_epoch)
        events.epoch_ended.connect(self.epoch_ended)
        events.epoch_ended.connect(self._on_epoch_ended)
        events.candidate.connect(panel.on_candidate)
        events.candidate.connect(self._log_candidate)

    # -- while it runs -------------------------------------------------------------------------------
    def _log_epoch(self, epoch: int, logs: dict) -> None:
        self.logged.emit(f"epoch {epoch}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.3f}, "
                         f"val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}"
                         f"{' (best so far)' if logs['best'] else ''}")

    def _log_candidate(self, entry: dict) -> None:
        self.logged.emit(f"Search: {entry['name']} ({entry['backbone']}) {entry['status']}"
                         + (f", {score_text(entry)}" if entry.get("score") is not None else "")
                         + (f" – {entry['note']}" if entry.get("note") else ""))

    def on_fit_started(self, info: dict) -> None:
        """Compare runs shows how much of the model a run trained; the status bar, where it trains."""
        self._fit_info = info
        if info.get("device_label"):
            self.status.emit(f"{DEVICE_MESSAGE}{info['device_label']}", 0)

    def withdraw_device_message(self) -> None:
        """'Training on …' holds while a run trains only."""
        self.status_withdrawn.emit(DEVICE_MESSAGE)

    def _on_epoch_ended(self, _epoch: int, logs: dict) -> None:
        """The run is recorded as 'running' with its best accuracy so far after each epoch."""
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self._best_accuracy is None or accuracy > self._best_accuracy):
            self._best_accuracy = accuracy
        self._record_active_run("running", {"val_accuracy": self._best_accuracy})

    def _record_active_run(self, status: str, metrics: dict) -> None:
        run = self.state.active_run
        if run is not None:               # an epoch's news may arrive after a shutdown ended the run
            config = run_record_config(self._config, self._search_minutes, self._winner, self._fit_info)
            self.state.record_run(str(run.run_dir), status, config, metrics.get("val_accuracy"),
                                  metrics.get("test_accuracy"))

    def set_paused(self, paused: bool) -> None:
        if not self.slot.running:
            return
        if paused:
            self.slot.task.control.pause()
        else:
            self.slot.task.control.resume()
        self.paused_changed.emit(paused)
        self.panel.show_paused(paused)
        self.status.emit("Training paused" if paused else "Training resumed", 3000)

    def stop_training(self) -> None:
        """Ask the run to stop after the current batch; the checkpoint so far stays on disk."""
        if self.slot.running:
            self.slot.cancel()
            self.panel.on_stopping()

    # -- how it ended -------------------------------------------------------------------------------
    def _on_succeeded(self, result) -> None:
        searched = isinstance(self.state.active_run, SearchRun)
        if searched:                             # the run is the winner's: its config, and the search's minutes
            self._config, self._winner, self._fit_info = result.config, result.winner, None
        self._record_active_run(result.status, result.metrics)
        self.results.show_result(result)
        accuracy = result.metrics.get("val_accuracy")
        self.logged.emit(f"Training {result.status}"
                         + (f": validation accuracy {accuracy:.3f}" if accuracy is not None else ""))
        self.withdraw_device_message()
        self.panel.on_run_finished(result.status)
        if searched:
            self._announce_winner(result)
        self.training_finished.emit(result)

    def _announce_winner(self, result) -> None:
        """The status line and the Train step say which candidate won, with its score."""
        self.panel.on_search_finished(result.status, result.leaderboard, result.decision, result.warnings)
        winner = next((row for row in result.leaderboard if row.get("chosen")), None)
        test = result.metrics.get("test_accuracy")
        message = (f"Automatic search {result.status}: {result.winner} won"
                   + (f" ({score_text(winner)})" if winner and winner.get("score") is not None else "")
                   + (f", {100 * test:.1f} % on the test images" if test is not None else ""))
        self.logged.emit(message)
        self.status.emit(message, 30_000)

    def _on_search_stopped_empty(self) -> None:
        """A search stopped before its first model was trained: nothing to keep."""
        self._record_active_run("cancelled", {})
        self.panel.on_run_finished("cancelled")
        self.panel.on_search_finished("cancelled", [])
        self.logged.emit("Search stopped before its first model was trained")

    def _on_failed(self, message: str, details: str) -> None:
        self._record_active_run("failed", {"val_accuracy": self._best_accuracy})
        self.withdraw_device_message()
        self.panel.show_error(message, details)
        self.logged.emit(f"Training failed: {message}")
        self.training_failed.emit(message)

    def _on_thread_done(self, _task: Task) -> None:
        run = self.state.active_run
        self.state.active_run = None            # the panels show that nothing trains any more
        if run is not None and not isinstance(run, SearchRun) and not self.closing:
            self.offer_resume(str(run.run_dir))

    # -- corrections ---------------------------------------------------------------------------------
    def record_correction(self, path: str, action: str, label: str = "") -> None:
        """Exclude, relabel or restore one image; the next run applies it (the project autosaves it)."""
        self.state.correct(path, action, label)
        described = {"exclude": "excluded from training", "relabel": f"moved to class {label}",
                     "keep": "kept as it is", "restore": "restored", "move": f"moved to the {label} split"}[action]
        self.logged.emit(f"{Path(path).name} {described} (applies from the next run)")
