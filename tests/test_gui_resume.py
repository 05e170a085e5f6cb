"""The window continues runs that stopped before their end: the Train step offers to resume a stopped run
and, when a project opens, one whose process was killed; resuming continues the curves to the last epoch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.project import Project, RunRecord
from gui_support import TRAIN_TIMEOUT_MS, PauseAfterFirstEpoch, load, start_run
from tests.conftest import write_colour_dataset

ROOT = Path(__file__).resolve().parent.parent


def epochs_plotted(window) -> list[float]:
    return window.train_panel.plots.series["val_accuracy"].arrays()[0].tolist()


def test_a_stopped_run_is_offered_and_resumes_to_its_last_epoch(qtbot, windows, tmp_path):
    window = windows()
    load(qtbot, window, [write_colour_dataset(tmp_path / "colours", per_class=8)])
    pauser = PauseAfterFirstEpoch()
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        with qtbot.waitSignal(pauser.paused, timeout=TRAIN_TIMEOUT_MS):
            run, _task, stopped = start_run(qtbot, window, pauser, epochs=3)
        window.train_panel.stop_button.click()
        stopped.wait()
    assert finished.args[0].status == "cancelled"
    offer = window.train_panel.resume_offer
    qtbot.waitUntil(lambda: offer.isVisibleTo(window))
    assert offer.run_dir == str(run.run_dir) and "after epoch 1 of 3" in offer.text.text()

    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        offer.resume_button.click()
    result = finished.args[0]
    assert result.status == "completed" and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert epochs_plotted(window) == [1, 2, 3], "the curves continue from the stopped epoch"
    assert not offer.isVisibleTo(window)
    assert json.loads((run.run_dir / "status.json").read_text())["status"] == "completed"
    assert [r.status for r in window.state.runs] == ["completed"], "one run, continued, not a second one"


KILL_AFTER_FIRST_EPOCH = """
import os, signal, sys
from engine.core.callbacks import Callback
from engine.data.scan import scan_dataset
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

class KillInSecondEpoch(Callback):
    def on_batch_end(self, step, logs):
        if logs["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)

report = scan_dataset(sys.argv[1], seed=0)
Trainer(report, TrainConfig(epochs=3, image_size=64, batch_size=8), sys.argv[2], [KillInSecondEpoch()]).fit()
"""


def test_opening_a_project_whose_run_was_killed_offers_to_resume_it(qtbot, windows, tmp_path):
    data = write_colour_dataset(tmp_path / "colours", per_class=8)
    run_dir = tmp_path / "runs" / "killed"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, str(data), str(run_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    config = {"epochs": 3, "image_size": 64, "batch_size": 8}
    project = Project(dataset_sources=[str(data)], config=config,
                      runs=[RunRecord(str(run_dir), "2026-11-30T05:00:00", "efficientnet_lite0", "running", None,
                                      None, config)])
    path = project.save(tmp_path / "killed")

    window = windows()
    with qtbot.waitSignal(window.projects.opened, timeout=60_000):
        assert window.projects.open(path)
    offer = window.train_panel.resume_offer
    assert offer.isVisibleTo(window) and window.tabs.currentWidget() is window.train_panel
    assert "was interrupted" in offer.text.text() and "after epoch 1 of 3" in offer.text.text()
    offer.keep_button.click()
    assert not offer.isVisibleTo(window), "keeping the checkpoint withdraws the offer"
    assert (run_dir / "model.safetensors").is_file()

    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS) as finished:
        assert window.resume_training(str(run_dir)) is not None
    assert finished.args[0].status == "completed"
    assert [h["epoch"] for h in json.loads((run_dir / "history.json").read_text())] == [1, 2, 3]


def test_a_run_on_a_changed_dataset_is_refused_in_words(qtbot, windows, tmp_path):
    data = write_colour_dataset(tmp_path / "colours", per_class=8)
    window = windows()
    load(qtbot, window, [data])
    pauser = PauseAfterFirstEpoch()
    with qtbot.waitSignal(window.training_finished, timeout=TRAIN_TIMEOUT_MS):
        with qtbot.waitSignal(pauser.paused, timeout=TRAIN_TIMEOUT_MS):
            run, _task, stopped = start_run(qtbot, window, pauser, epochs=3)
        window.train_panel.stop_button.click()
        stopped.wait()
    qtbot.waitUntil(lambda: window.training_task is None)
    window.record_correction(str(data / "red" / "red_001.png"), "exclude")     # the next run leaves it out
    assert window.resume_training(str(run.run_dir)) is None
    banner = window.train_panel.error
    assert banner.isVisibleTo(window) and "Cannot resume" in banner.text() and "dataset changed" in banner.text()
