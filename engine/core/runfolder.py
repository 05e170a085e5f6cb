"""The files of a run folder, named in one place: the trainer writes them; export, predict, the results
view and project files read them."""
from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT = "model.safetensors"        # the kept epoch (last or best): weights + JSON metadata, never pickled
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
HISTORY = "history.json"
CONFIG = "config.json"
DATASET_REPORT = "dataset_report.txt"
STATUS = "status.json"                  # how the fit stands (engine.training.runstate)
STATE_DIR = "state"                     # the last training state, to resume from
RUN_START = "run.json"                  # in STATE_DIR: config, data path and dataset identity at the start
LAST_STATE = "last.json"                # in STATE_DIR: names the tensor file of the last state


class RunFolder:
    """Paths inside one run folder; nothing is read or written here."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoint = self.path / CHECKPOINT
        self.metrics = self.path / METRICS
        self.predictions = self.path / PREDICTIONS
        self.history = self.path / HISTORY
        self.config = self.path / CONFIG
        self.dataset_report = self.path / DATASET_REPORT
        self.status = self.path / STATUS
        self.state_dir = self.path / STATE_DIR
        self.run_start = self.state_dir / RUN_START
        self.last_state = self.state_dir / LAST_STATE

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    @staticmethod
    def names() -> tuple[str, ...]:
        """The files a fit writes at the top of the folder."""
        return (CHECKPOINT, METRICS, PREDICTIONS, HISTORY, CONFIG, DATASET_REPORT, STATUS)
