"""Resumable runs on small real images: a fit stopped (cancelled, failed, or its process killed) and resumed
ends exactly as the same fit run without a stop: history, metrics and checkpoint tensors."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import COLOURS, ROOT, write_colour_dataset
from safetensors.torch import load_file

from engine.core.callbacks import Callback
from engine.core.control import RunControl
from engine.data.scan import scan_dataset
from engine.training.config import TrainConfig
from engine.training.runstate import (ResumeRefused, can_resume, check_resume, load_run_config, read_status,
                                      resume_summary)
from engine.training.trainer import Trainer

HEAD = dict(image_size=64, batch_size=4, epochs=6)                       # cached features, 5 batches/epoch
ACTIVATIONS = dict(image_size=32, batch_size=6, epochs=3, recipe="two-stage", head_epochs=1, freeze="last-n",
                   freeze_blocks=1)                                         # features, then activations
IMAGES = dict(image_size=32, batch_size=6, epochs=2, recipe="two-stage", head_epochs=1, freeze="last-n",
              freeze_blocks=1, cache="off", augmentation="light")           # augmented images, both stages
RECIPES = {"head": HEAD, "activations": ACTIVATIONS, "images": IMAGES}


class StopAt(Callback):
    """Stops a fit the way a user or a crash would: cancel after an epoch, cancel after a batch, or an
    exception raised from a batch (the fit fails)."""

    def __init__(self, control: RunControl, epoch: int | None = None, step: int | None = None,
                 fail: bool = False):
        self.control, self.epoch, self.step, self.fail = control, epoch, step, fail

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            self.control.cancel()

    def on_batch_end(self, step, logs):
        if step == self.step:
            if self.fail:
                raise RuntimeError("simulated crash")
            self.control.cancel()


class FitStart(Callback):
    def __init__(self):
        self.info = None

    def on_fit_start(self, info):
        self.info = info


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in logs.items() if k != "epoch_time_s"} for logs in history]


def run_files(run: Path) -> dict:
    return {"history": without_times(json.loads((run / "history.json").read_text())),
            "metrics": json.loads((run / "metrics.json").read_text()),
            "predictions": json.loads((run / "predictions.json").read_text()),
            "weights": load_file(str(run / "model.safetensors"))}


def assert_same_run(run: Path, reference: dict) -> None:
    """Bit-identical: every logged number, every metric and prediction, every checkpoint tensor."""
    got = run_files(run)
    assert got["history"] == reference["history"]
    assert got["metrics"] == reference["metrics"]
    assert got["predictions"] == reference["predictions"]
    assert got["weights"].keys() == reference["weights"].keys()
    assert all(torch.equal(got["weights"][k], reference["weights"][k]) for k in reference["weights"])


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory):
    """One dataset and the uninterrupted reference runs, shared by the module (their own cache folders)."""
    base = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFERLAB_CACHE_DIR", str(base / "cache"))
        patch.setenv("TRANSFERLAB_DATA_DIR", str(base / "data-dir"))
        yield base


@pytest.fixture(scope="module")
def dataset(module_dirs) -> Path:
    return write_colour_dataset(module_dirs / "colours")


@pytest.fixture(scope="module")
def report(dataset):
    return scan_dataset(dataset, seed=0)


@pytest.fixture(scope="module")
def references(module_dirs, report) -> dict:
    """Each recipe run once without a stop: what every resumed run must reproduce."""
    runs = {}
    for name, recipe in RECIPES.items():
        run = module_dirs / f"reference-{name}"
        assert Trainer(report, TrainConfig(**recipe), run).fit().status == "completed"
        runs[name] = {"run": run, **run_files(run)}
    return runs


@pytest.fixture(scope="module")
def cancelled_head_run(module_dirs, report) -> Path:
    """The head recipe cancelled after its second epoch (a template: tests copy it before changing it)."""
    control = RunControl()
    run = module_dirs / "cancelled-head"
    assert Trainer(report, TrainConfig(**HEAD), run, [StopAt(control, epoch=2)], control).fit().status == "cancelled"
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def resume(report, run: Path, callbacks=(), control=None, **kwargs):
    """Resume as the window would: with the run's own settings."""
    return Trainer(report, load_run_config(run), run, list(callbacks), control, resume=True, **kwargs).fit()


# -- (1) stopped between epochs, resumed -----------------------------------------------------------------
def test_cancelled_head_run_resumes_to_the_uninterrupted_result(report, references, cancelled_head_run, tmp_path):
    run = copy_run(cancelled_head_run, tmp_path)
    assert read_status(run) == "cancelled" and can_resume(run)
    summary = resume_summary(run)
    assert (summary["epochs_done"], summary["epochs"], summary["status"]) == (2, 6, "cancelled")
    assert summary["best_val_accuracy"] == max(h["val_accuracy"] for h in references["head"]["history"][:2])
    start = FitStart()
    result = resume(report, run, [start])
    assert result.status == "completed" and read_status(run) == "completed"
    assert start.info["resumed_from_epoch"] == 2
    assert without_times(start.info["history"]) == references["head"]["history"][:2]
    assert_same_run(run, references["head"])
    assert not can_resume(run) and not (run / "state").exists(), "a finished run keeps no state"


def test_a_crash_mid_epoch_in_the_second_stage_resumes_to_the_uninterrupted_result(report, references, tmp_path):
    """Cached activations: the fit crashes in the second batch of the second stage's first epoch (states
    after every batch), and resumes there with that stage's optimizer."""
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(report, TrainConfig(**ACTIVATIONS), run, [StopAt(RunControl(), step=6, fail=True)],
                state_every_s=0).fit()
    assert (resume_summary(run)["epochs_done"], resume_summary(run)["batches_done"]) == (1, 2)
    assert resume(report, run).status == "completed"
    assert_same_run(run, references["activations"])


def test_augmented_images_resume_at_a_stage_boundary_then_mid_epoch(report, references, tmp_path):
    """Cancelled when the first stage ends (the second starts afresh), then failing in the middle of the
    second stage's epoch: the augmentations drawn after the resume are the ones the uninterrupted fit drew."""
    control = RunControl()
    run = tmp_path / "run"
    assert Trainer(report, TrainConfig(**IMAGES), run, [StopAt(control, epoch=1)], control).fit().status \
        == "cancelled"
    with pytest.raises(RuntimeError, match="simulated crash"):
        resume(report, run, [StopAt(RunControl(), step=5, fail=True)], state_every_s=0)
    assert read_status(run) == "failed" and resume_summary(run)["batches_done"] == 1
    assert resume(report, run).status == "completed"
    assert_same_run(run, references["images"])


# -- (2) stopped inside an epoch ----------------------------------------------------------------------------
def test_a_crash_mid_epoch_resumes_from_the_last_batch_state(report, references, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(report, TrainConfig(**HEAD), run, [StopAt(RunControl(), step=13, fail=True)],
                state_every_s=0).fit()
    summary = resume_summary(run)
    assert summary["status"] == "failed" and (summary["epochs_done"], summary["batches_done"]) == (2, 2)
    start = FitStart()
    assert resume(report, run, [start]).status == "completed"
    assert start.info["resumed_from_epoch"] == 2
    assert_same_run(run, references["head"])


def test_a_cancel_mid_epoch_keeps_its_batches(report, references, tmp_path):
    control = RunControl()
    run = tmp_path / "run"
    Trainer(report, TrainConfig(**HEAD), run, [StopAt(control, step=8)], control).fit()   # no timed state
    assert (resume_summary(run)["epochs_done"], resume_summary(run)["batches_done"]) == (1, 3)
    assert resume(report, run).status == "completed"
    assert_same_run(run, references["head"])


# -- (3) refusals ---------------------------------------------------------------------------------------------
def test_a_changed_dataset_is_refused_in_plain_words(dataset, cancelled_head_run, tmp_path):
    run = copy_run(cancelled_head_run, tmp_path)
    changed = Path(shutil.copytree(dataset, tmp_path / "colours"))
    extra = write_colour_dataset(tmp_path / "extra", per_class=1, seed=9, colours={"red": COLOURS["red"]})
    shutil.copy(extra / "red" / "red_000.png", changed / "red" / "red_new.png")
    report = scan_dataset(changed, seed=0)
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ResumeRefused, match=r"the dataset changed since this run started: .*\d+ -> \d+ "
                                            r"(training|validation|test) images"):
        Trainer(report, load_run_config(run), run, resume=True)
    assert sorted(p.name for p in run.rglob("*")) == before and read_status(run) == "cancelled"


def test_a_completed_run_is_refused(report, references, capsys):
    run = references["head"]["run"]
    with pytest.raises(ResumeRefused, match="already completed"):
        check_resume(run, report, load_run_config(run))
    assert cli(capsys, "train", "--resume", run) == 2
    err = capsys.readouterr().err
    assert "already completed" in err and len(err.strip().splitlines()) == 1


def cli(capsys, *args) -> int:
    """The command line in this process (what main.py runs after its start-up), output captured."""
    from engine.cli.main import main
    capsys.readouterr()
    return main([str(a) for a in args])


def test_other_settings_are_refused(report, cancelled_head_run, tmp_path):
    run = copy_run(cancelled_head_run, tmp_path)
    with pytest.raises(ResumeRefused, match="lr 0.003 -> 0.01"):
        Trainer(report, TrainConfig(**HEAD, lr=0.01), run, resume=True)


# -- (4, 5) killed processes ------------------------------------------------------------------------------------
def start_training(data: Path, run: Path, *options) -> subprocess.Popen:
    env = {**os.environ, "TRANSFERLAB_STATE_EVERY_S": "0"}      # a state after every batch
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), "train", str(data), "--out", str(run),
                             *map(str, options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def kill_after_epoch_line(process: subprocess.Popen, epoch: int, delay_s: float, run: Path) -> None:
    """SIGKILL `process` `delay_s` after it prints epoch `epoch`'s line (it is still running then)."""
    for line in process.stderr:
        if line.startswith(f"epoch {epoch:>3}"):
            break
    else:
        pytest.fail(f"the run ended before epoch {epoch}: {process.wait()}")
    assert read_status(run) == "running"
    try:                  # stderr stays open: the few lines left fit in the pipe, and a closed one would fail it
        process.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        pass
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    process.stdout.close()


def test_killed_runs_resume_from_the_command_line_to_the_uninterrupted_result(references, dataset, tmp_path,
                                                                            capsys):
    rng = random.Random(7)
    for point in range(3):
        run = tmp_path / f"run-{point}"
        process = start_training(dataset, run, "--epochs", 6, "--image-size", 64, "--batch-size", 4)
        kill_after_epoch_line(process, rng.randint(1, 4), rng.uniform(0.0, 0.15), run)
        assert read_status(run) == "interrupted" and can_resume(run), "a killed run reads as interrupted"
        assert_readable(run, finished=False)
        code = cli(capsys, "train", "--resume", run)         # resumed by another process than the killed one
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
        assert read_status(run) == "completed"
        assert_readable(run, finished=True)
        assert_same_run(run, references["head"])


def assert_readable(run: Path, finished: bool) -> None:
    """Every file a kill can leave reads: JSON parses, safetensors load, last.json names a tensor file that
    exists. A kill may leave the temporary file of the write it interrupted; a finished run none."""
    for path in run.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
    last = run / "state" / "last.json"
    if last.exists():
        assert (run / "state" / json.loads(last.read_text())["tensors"]).exists()
    if finished:
        assert not list(run.rglob("*.tmp")) and not (run / "state").exists()
