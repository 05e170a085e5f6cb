"""Helpers for driving the real window in GUI tests: drop files, load a dataset, change every setting,
start a run, free a window in the GUI thread. The fixtures built on them (`window`,
`no_dangling_qthreads`) are in conftest."""
from __future__ import annotations

import gc
from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject, QPointF, Qt, QUrl, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QComboBox, QDoubleSpinBox, QSpinBox

from gui.main_window import MainWindow
from gui.train_panel import FIELDS, HyperParameters

SMALL = dict(epochs=2, image_size=64, batch_size=8)
TRAIN_TIMEOUT_MS = 120_000


def delete_now(widget) -> None:
    """Destroy a window in the GUI thread now; left to the garbage collector, it could be freed from a
    worker thread of the next test and crash the process."""
    widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


def drop(widget, paths: list[Path]) -> bool:
    """Drag real file URLs onto a widget; returns whether it accepted the drag."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    QApplication.sendEvent(widget, QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                                              Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    return True


def load(qtbot, win: MainWindow, paths: list[Path]):
    """Drop a dataset and wait for its report and the layer tree rebuilt for its classes."""
    with qtbot.waitSignals([win.scan_finished, win.model_ready], timeout=60_000):
        assert drop(win.data_panel.drop_zone, paths)
    return win.state.report


def changed_settings(form: HyperParameters) -> dict:
    """For every setting the form shows (its FIELDS), a value it offers other than the one it shows:
    a setting added to the form is covered with no change here."""
    shown, changed = form.values(), {}
    for key, _label in FIELDS:
        widget = getattr(form, key)
        if isinstance(widget, QComboBox):
            offered = [float(widget.itemText(i)) if widget.isEditable() else widget.itemData(i)
                       for i in range(widget.count())]
            changed[key] = next(value for value in offered if value != shown[key])
        elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            step = widget.singleStep() if shown[key] + widget.singleStep() <= widget.maximum() else -widget.singleStep()
            changed[key] = round(shown[key] + step, widget.decimals()) if isinstance(widget, QDoubleSpinBox) \
                else shown[key] + step
        else:
            raise TypeError(f"changed_settings does not know how to change a {type(widget).__name__} ({key})")
    return changed


class PauseAfterFirstEpoch(QObject):
    """Pauses a run on its worker thread as epoch 1 ends, then tells the test: the run is then at a
    known place however fast the machine is."""

    paused = Signal()

    def attach(self, run) -> None:
        self.run = run
        run.events.epoch_ended.connect(self._pause, Qt.ConnectionType.DirectConnection)

    def _pause(self, epoch: int, _logs: dict) -> None:
        if epoch == 1:
            self.run.control.pause()
            self.paused.emit()


def start_run(qtbot, win: MainWindow, pauser: PauseAfterFirstEpoch | None = None, **settings):
    """Fill the form and click Start. Returns the run, its task, and a blocker armed (before the
    thread starts) on `[worker.finished, thread.finished]`, so the GUI never blocks in wait()."""
    win.train_panel.settings.set_values(**{**SMALL, **settings})
    armed = {}

    def arm(run):
        task = win.training_task
        armed.update(run=run, task=task, stopped=qtbot.waitSignals(
            [task.worker.finished, task.thread.finished], timeout=TRAIN_TIMEOUT_MS))
        if pauser is not None:
            pauser.attach(run)

    win.training_started.connect(arm)
    win.train_panel.start_button.click()
    win.training_started.disconnect(arm)
    return armed["run"], armed["task"], armed["stopped"]


def requires_grad(model) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}
