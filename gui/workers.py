"""Background jobs on QThreads, wired the superqt way, so the GUI thread never runs engine work.

A job is a plain function `job(progress) -> result` that runs on the worker thread; it may call
`progress(stage, done, total)` as often as it likes: the worker lets those calls through a `Throttle`
before they become queued Qt signals (as `jobs.TrainingEvents` does with the engine's hooks), so a
per-image loop never floods the event loop. Cancel and pause are `RunControl` flags the job checks
between steps: a queued slot would never run while the worker is busy.
"""
from __future__ import annotations

import logging
import traceback
from functools import partial
from typing import Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from engine.core.control import Cancelled, RunControl
from engine.core.errors import readable_error
from engine.core.progress import Throttle

log = logging.getLogger(__name__)

Job = Callable[[Callable[[str, int, int], None]], object]


class Worker(QObject):
    """Runs one job on the thread it was moved to and reports how it ended, exactly once."""

    progress = Signal(str, int, int)
    succeeded = Signal(object)
    failed = Signal(str, str)          # one readable line, full traceback for "Details"
    cancelled = Signal()
    finished = Signal()

    def __init__(self, job: Job):
        super().__init__()
        self._job = job
        self._throttle = Throttle()

    def report_progress(self, stage: str, done: int, total: int) -> None:
        """The job's `progress`: a call becomes a signal only when the throttle lets it through."""
        if self._throttle.ready(stage, done, total):
            self.progress.emit(stage, done, total)

    @Slot()
    def run(self) -> None:
        try:
            result = self._job(self.report_progress)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # every failure must reach the window, not only the console
            log.exception("background job failed")
            self.failed.emit(readable_error(exc), traceback.format_exc())
        else:
            self.succeeded.emit(result)
        finally:
            self.finished.emit()


class Task(QObject):
    """A job, its worker, its thread and the RunControl steering it.

    The worker's signals are re-emitted by this object, which lives in the GUI thread, so every
    slot runs there. `worker.finished` reaches `thread.quit` directly rather than
    queued to the GUI thread, so the GUI thread may block in `shutdown()` without deadlocking.
    """

    progress = Signal(str, int, int)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    done = Signal(object)              # self, once the thread has really stopped

    def __init__(self, job: Job, control: RunControl | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.control = control or RunControl()
        self.worker = Worker(job)
        self.thread = QThread()
        self.worker.moveToThread(self.thread)
        self.worker.progress.connect(self._forward_progress)
        self.worker.succeeded.connect(self._forward_succeeded)
        self.worker.failed.connect(self._forward_failed)
        self.worker.cancelled.connect(self._forward_cancelled)
        self.thread.started.connect(self.worker.run)
        self.worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        # No `worker.deleteLater`: destroying a Python-subclassed QObject in the worker thread needs the
        # GIL while Qt holds its connection lock, which deadlocks against a GUI thread that is connecting
        # a signal. The worker is released in the GUI thread once its thread has ended (below).
        self.thread.finished.connect(self._on_thread_finished)
        self._running = False
        self._abandoned = False

    def start(self) -> None:
        self._running = True
        self.thread.start()

    def cancel(self) -> None:
        self.control.cancel()

    def abandon(self) -> None:
        """Cancel and stop reporting: a newer task has replaced this one (`done` still comes)."""
        self._abandoned = True
        self.control.cancel()

    # Slots of this GUI-thread object, so the worker's signals arrive queued in the GUI thread.
    def _forward_progress(self, stage: str, done: int, total: int) -> None:
        if not self._abandoned:
            self.progress.emit(stage, done, total)

    def _forward_succeeded(self, result) -> None:
        if not self._abandoned:
            self.succeeded.emit(result)

    def _forward_failed(self, message: str, details: str) -> None:
        if not self._abandoned:
            self.failed.emit(message, details)

    def _forward_cancelled(self) -> None:
        if not self._abandoned:
            self.cancelled.emit()

    def shutdown(self) -> None:
        """Cancel and block until the thread has stopped: call before the window goes away.

        Results still queued for the GUI thread are dropped, so none can start new work afterwards."""
        self._abandoned = True
        self.control.cancel()
        self._on_thread_finished()

    def _on_thread_finished(self) -> None:
        if self._running:
            # Wait for the thread to end completely; only then may the GUI thread destroy its worker.
            self.thread.wait()
            self._running = False
            self.worker = None
            self.thread.deleteLater()
            self.done.emit(self)


class TaskGroup:
    """Every task of a window: the window owns a group and hands it to its controllers, panels and dialogs,
    whose `TaskSlot`s start their tasks in it. Tasks have the owner as parent, are forgotten when done, and
    are all cancelled and joined by `shutdown()` before the owner goes away."""

    def __init__(self, owner: QObject):
        self.owner = owner
        self.running: set[Task] = set()

    def prepare(self, job: Job, control: RunControl | None = None) -> Task:
        """A task under this group's shutdown, not started yet (its `TaskSlot` connects to it, announces it,
        then starts it). Connecting before the start is safe: its signals are queued to the owner's thread."""
        task = Task(job, control, self.owner)
        task.done.connect(self._on_done)
        self.running.add(task)
        return task

    def _on_done(self, task: Task) -> None:
        self.running.discard(task)
        task.deleteLater()

    def shutdown(self) -> None:
        for task in list(self.running):
            task.shutdown()


class TaskSlot:
    """One kind of background work (a scan, a model build, a prediction…): starting a new job cancels the
    previous one, whose late result, failure or progress is then dropped, so only the newest answer lands.
    The one way gui/ starts engine work (Orange's ConcurrentWidgetMixin, napari's thread_worker, in small).

    `task` is the current task until its thread has ended (pause, cancel and "busy" read it); `pending` is
    True from the start until its outcome (result, failure or cancellation) has arrived."""

    def __init__(self, group: TaskGroup):
        self.group = group
        self.task: Task | None = None
        self.pending = False

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, job: Job, control: RunControl | None = None, *, on_result=None, on_failed=None,
              on_progress=None, on_cancelled=None, on_done=None, before_start=None) -> Task:
        """Run `job` on a worker, replacing this slot's previous task. Callbacks: `on_result(result)`,
        `on_failed(message, details)`, `on_progress(stage, done, total)`, `on_cancelled()`, `on_done(task)` once
        its thread has stopped; `before_start(task)` runs before the thread does, so a listener misses nothing."""
        self.abandon()
        task = self.task = self.group.prepare(job, control)
        self.pending = True
        outcomes = ((task.succeeded, on_result), (task.failed, on_failed), (task.cancelled, on_cancelled))
        for signal, callback in outcomes:
            signal.connect(partial(self._on_outcome, task, callback))
        if on_progress is not None:
            task.progress.connect(on_progress)
        task.done.connect(partial(self._on_done, on_done))
        if before_start is not None:
            before_start(task)
        task.start()
        return task

    def cancel(self) -> None:
        """Ask the current job to stop at its next checkpoint; its cancellation is still reported."""
        if self.task is not None:
            self.task.cancel()

    def abandon(self) -> None:
        """Cancel the current job and drop whatever it still reports: its answer no longer matters."""
        if self.task is not None:
            self.task.abandon()
        self.task, self.pending = None, False

    def _on_outcome(self, task: Task, callback, *args) -> None:
        if task is not self.task:
            return                            # a replaced task's outcome, already on its way
        self.pending = False
        if callback is not None:
            callback(*args)

    def _on_done(self, callback, task: Task) -> None:
        if task is not self.task:
            return
        self.task, self.pending = None, False
        if callback is not None:
            callback(task)
