"""The files of a run folder, named in one place: the trainer writes them; export, predict, the results
view and project files read them."""
from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT = "model.safetensors"        # the best checkpoint: weights + JSON metadata, never pickled
METRICS = "metrics.json"
PREDICTIONS = "predictions.json"
HISTORY = "history.json"
CONFIG = "config.json"
DATASET_REPORT = "dataset_report.txt"


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

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()
