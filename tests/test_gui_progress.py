"""Progress the user can trust: the Train step's bar and time left through every stage, the one throttle
at the engine→Qt boundary, and engine errors reaching the window. Waits are armed before the trigger;
no test sleeps or leaves a QThread running."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from conftest import write_colour_dataset
from engine.core.progress import StageClock
from gui.jobs import TrainingEvents
from gui.state import AppState
from gui.train_panel import TrainPanel
from gui.workers import Task
from gui_support import TRAIN_TIMEOUT_MS, delete_now, load, start_run


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def panel(qtbot):
    widget = TrainPanel(AppState())
    qtbot.addWidget(widget)
    widget.create_plots()
    widget.show()
    widget.on_run_started()
    return widget


def batch_logs(epoch: int, batch: int, batches: int) -> dict:
    return {"epoch": epoch, "batch": batch, "batches": batches, "loss": 0.5, "accuracy": 0.8, "lr": 1e-3,
            "images_per_s": 120.0, "eta_s": 3.0, "stage": "single"}


def epoch_logs(epoch: int) -> dict:
    return {"epoch": epoch, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "lr": 1e-3,
            "epoch_time_s": 10.0, "best": 1, "stage": "single"}


def test_every_stage_moves_the_bar_with_its_own_time_left(panel):
    clock = FakeClock()
    panel.stage_clock = StageClock(clock=clock)
    for seconds, done in ((0, 32), (6, 224), (13, 448)):          # 32 images a second
        clock.now = seconds
        panel.on_stage_progress("features", done, 675)
    assert panel.progress.value() == round(1000 * 448 / 675)
    assert panel.progress.text() == "66 %  ·  about 0:07 left"
    assert panel.stage.text() == "Computing backbone features · 448 / 675"

    panel.on_fit_started({"epochs": 2, "n_train": 675, "classes": ["a", "b"], "path": "features"})
    panel.on_batch_ended(10, batch_logs(1, 10, 20))
    assert panel.progress.text().startswith("25 %  ·  about "), "during the epochs the bar is the fit's progress"
    assert panel.stage.text() == "Epoch 1 / 2 (single) · batch 10 / 20"
    panel.on_epoch_ended(1, epoch_logs(1))
    panel.on_batch_ended(30, batch_logs(2, 10, 20))
    assert panel.progress.text() == "75 %  ·  about 0:03 left", "the batch's eta_s, no epochs after this one"
    panel.on_batch_ended(40, batch_logs(2, 20, 20))
    panel.on_epoch_ended(2, epoch_logs(2))
    assert panel.progress.text().startswith("100 %")

    clock.now = 20
    panel.on_stage_progress("evaluate", 40, 400)
    assert panel.progress.text() == "10 %", "evaluation is a stage of its own, not a full bar; no time left " \
                                            "before there is a rate"
    assert panel.stage.text() == "Evaluating · 40 / 400"
    clock.now = 22
    panel.on_stage_progress("evaluate", 120, 400)
    assert panel.progress.text() == "30 %  ·  about 0:07 left" and panel.stage.text() == "Evaluating · 120 / 400"
    panel.on_stage_progress("features", 5, 50)
    assert panel.progress.text() == "10 %" and panel.stage.text() == "Computing backbone features · 5 / 50", \
        "a new stage restarts its own bar and clock"


def test_a_burst_of_progress_reaches_qt_as_a_few_signals_ending_with_the_last(qtbot):
    total = 10_000

    def burst(progress):
        for done in range(1, total + 1):
            sum(range(100))                  # a little work per step, as a real loop has
            progress("features", done, total)

    task = Task(burst)
    received = []
    task.progress.connect(lambda *args: received.append(args))
    with qtbot.waitSignal(task.done, timeout=30_000):
        task.start()
    delete_now(task)
    assert 2 <= len(received) <= 36
    assert received[0] == ("features", 1, total) and received[-1] == ("features", total, total)


def test_training_events_throttle_progress_and_batches_but_never_epochs(qtbot):
    events = TrainingEvents()
    seen = {"progress": [], "batches": [], "epochs": []}
    events.stage_progress.connect(lambda *args: seen["progress"].append(args))
    events.batch_ended.connect(lambda step, logs: seen["batches"].append((logs["epoch"], logs["batch"])))
    events.epoch_ended.connect(lambda epoch, _logs: seen["epochs"].append(epoch))

    def fit(_progress):
        for done in range(1, 5001):
            events.on_progress("features", done, 5000)
        for epoch in (1, 2, 3):
            for step in range(1, 2001):
                events.on_batch_end(step, batch_logs(epoch, step, 2000))
            events.on_epoch_end(epoch, epoch_logs(epoch))

    task = Task(fit)
    with qtbot.waitSignal(task.done, timeout=30_000):
        task.start()
    delete_now(task)
    assert seen["progress"][-1] == ("features", 5000, 5000) and len(seen["progress"]) <= 36
    assert seen["epochs"] == [1, 2, 3]
    assert [b for b in seen["batches"] if b[1] in (1, 2000)] == [(1, 1), (1, 2000), (2, 1), (2, 2000),
                                                                 (3, 1), (3, 2000)], "each epoch's first and last"
    assert len(seen["batches"]) <= 48


def test_an_engine_error_reaches_the_train_step(qtbot, window, tmp_path):
    load(qtbot, window, [write_colour_dataset(tmp_path / "colours", per_class=4)])
    layer_model = window.model_panel.layer_model
    layer_model.setData(layer_model.index(0, 0), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    armed = {}
    window.training_started.connect(
        lambda run: armed.update(failed=qtbot.waitSignal(run.events.fit_failed, timeout=TRAIN_TIMEOUT_MS)))
    _, _, stopped = start_run(qtbot, window)
    armed["failed"].wait()
    message = armed["failed"].args[0]
    assert "every layer is frozen" in message
    panel = window.train_panel
    assert panel.stage.text() == "Training failed." and message in panel.error.text()
    assert panel.error.isVisibleTo(window)
    stopped.wait()
