"""Ensembles as runs: several trained runs combined into one run folder whose checkpoint averages their
probabilities (engine.models.ensemble), scored on the validation split like any run.

`config.json` of an ensemble run is `{"ensemble": [member config, ...]}`: `main.py train DATA --config
RUN/config.json` trains each member with its own recipe and seed and combines them again
(`train_ensemble`), so an `--auto` winner that is an ensemble is reproduced like any other.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.core.callbacks import Callback
from engine.core.control import Cancelled, RunControl
from engine.core.files import write_json
from engine.core.progress import Progress
from engine.core.runfolder import RunFolder
from engine.data.report import DatasetReport
from engine.models.checkpoint import load_checkpoint, save_ensemble_checkpoint
from engine.training.config import TrainConfig
from engine.training.evaluation import add_sample_fields, evaluate_split, evaluate_test_split
from engine.training.metrics import classification_metrics
from engine.training.trainer import Trainer, summarize_metrics

MEMBERS_DIR = "members"


def member_configs(data: dict) -> list[TrainConfig]:
    """The members' TrainConfigs of an ensemble config (each validated); ValueError when it is not one."""
    members = data.get("ensemble") if isinstance(data, dict) else None
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
        raise ValueError("an ensemble config lists at least two member configs under \"ensemble\"")
    configs = [TrainConfig.from_dict(member) for member in members]
    for config in configs:
        config.validate()
    return configs


def combine_runs(report: DatasetReport, member_runs: list[str | Path], run_dir: str | Path,
                 control: RunControl | None = None, progress: Progress | None = None,
                 val_probabilities: list | None = None) -> dict:
    """Write RUN as the ensemble of `member_runs` (finished runs on `report`, same classes and
    preprocessing): its checkpoint, config.json, and metrics/predictions on the validation split (the test
    split is left to `evaluate_test_split`, once the ensemble is chosen). Returns the metrics.
    `val_probabilities`: the members' [N, C] probabilities on the validation split (`split_probabilities`),
    when the caller has them: the ensemble's are their mean, exactly what its checkpoint computes."""
    files = RunFolder(run_dir)
    files.path.mkdir(parents=True, exist_ok=True)
    members = [load_checkpoint(RunFolder(run).checkpoint) for run in member_runs]
    configs = [json.loads(RunFolder(run).config.read_text(encoding="utf-8")) for run in member_runs]
    if any(checkpoint.meta.get("ensemble") for _, checkpoint in members):
        raise ValueError("an ensemble member cannot itself be an ensemble")
    save_ensemble_checkpoint(files.checkpoint, [(model, checkpoint.meta) for model, checkpoint in members],
                             {"config": {"ensemble": configs}})
    model, checkpoint = load_checkpoint(files.checkpoint)
    samples = report.split("val")
    if val_probabilities is None:
        val = evaluate_split(model, checkpoint, samples, control, progress)
    else:
        mean = torch.as_tensor(np.mean(val_probabilities, axis=0)).clamp_min(1e-12).log()
        val = classification_metrics(mean, torch.tensor([s.label for s in samples]), checkpoint.classes,
                                     [s.path for s in samples])
    predictions = {"val": val.pop("predictions")}
    add_sample_fields(checkpoint, samples, predictions["val"], val["most_confident_wrong"])
    metrics = summarize_metrics(report.classes, {"val": val}, checkpoint.meta["backbone"],
                                checkpoint.meta.get("weights_origin"), {"ensemble": configs},
                                ensemble=checkpoint.meta["ensemble"], modality=checkpoint.modality)
    write_json(files.predictions, predictions)
    write_json(files.metrics, metrics)
    write_json(files.config, {"ensemble": configs})
    return metrics


def train_ensemble(report: DatasetReport, configs: list[TrainConfig], run_dir: str | Path,
                   callbacks: list[Callback] | None = None, control: RunControl | None = None,
                   progress: Progress | None = None) -> dict:
    """Train each member config into RUN/members/N, combine them into RUN and evaluate its test split:
    what `--config` does with an ensemble winner's config.json. Returns the metrics."""
    control = control or RunControl()
    runs = []
    for index, config in enumerate(configs):
        folder = Path(run_dir) / MEMBERS_DIR / str(index)
        result = Trainer(report, config, folder, list(callbacks or []), control, evaluate_test=False).fit()
        if result.status != "completed":
            raise Cancelled() if result.status == "cancelled" else RuntimeError(
                f"ensemble member {index} {result.status}")
        runs.append(folder)
    combine_runs(report, runs, run_dir, control, progress)
    return evaluate_test_split(run_dir, report, control, progress)
