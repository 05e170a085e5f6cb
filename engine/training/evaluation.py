"""The test split, evaluated once for a finished run: what a recipe search does after it has chosen, so
the test images never take part in the choice."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.files import write_json
from engine.core.progress import Progress
from engine.core.runfolder import RunFolder
from engine.data.report import DatasetReport
from engine.models.checkpoint import load_checkpoint
from engine.models.trust import checkpoint_scorer
from engine.training.calibration import accepted_shares, scores_of, split_calibration
from engine.training.metrics import classification_metrics

EVAL_BATCH = 32


def evaluate_test_split(run_dir: str | Path, report: DatasetReport, control: RunControl | None = None,
                        progress: Progress | None = None) -> dict:
    """Evaluate the run's checkpoint (with its test-time augmentation) on `report`'s test split and add the
    results to metrics.json and predictions.json; returns the metrics. Without a test split they stay as
    they are (evaluated on val)."""
    files = RunFolder(run_dir)
    metrics = json.loads(files.metrics.read_text(encoding="utf-8")) if files.metrics.exists() else {}
    samples = report.split("test")
    if not samples:
        return metrics
    model, checkpoint = load_checkpoint(files.checkpoint)
    test = evaluate_split(model, checkpoint, samples, control, progress)
    predictions = json.loads(files.predictions.read_text(encoding="utf-8")) if files.predictions.exists() else {}
    predictions["test"] = test.pop("predictions")
    scores = [row["ood_score"] for row in predictions["test"] if "ood_score" in row]
    if scores and metrics.get("unknown"):
        metrics["unknown"].update(accepted_shares({"test": scores}, metrics["unknown"]["threshold"]))
    if metrics.get("calibration"):
        metrics["calibration"].update(split_calibration(predictions["test"], metrics["calibration"]["temperature"]))
    add_sample_fields(checkpoint, samples, predictions["test"], test["most_confident_wrong"])
    metrics.setdefault("splits", {})["test"] = test
    metrics.update(test_accuracy=test["accuracy"], evaluated_on="test", per_class=test["per_class"],
                   confusion_matrix=test["confusion_matrix"], most_confident_wrong=test["most_confident_wrong"])
    write_json(files.predictions, predictions)
    write_json(files.metrics, metrics)
    return metrics


def add_sample_fields(checkpoint, samples, *row_lists: list[dict]) -> None:
    """Each row gets what its modality shows beside the path (a text's text), as the fit writes them: the
    results view shows them, the export verifies on them. Image rows stay as they are."""
    modality = modalities.of(checkpoint)
    shown = {s.path: modality.sample_fields(s) for s in samples}
    for rows in row_lists:
        for row in rows:
            row.update(shown.get(row["path"], {}))


def evaluate_split(model, checkpoint, samples, control: RunControl | None = None,
                   progress: Progress | None = None) -> dict:
    """classification_metrics of a loaded checkpoint on `samples`, predicted as the run predicts (its
    test-time flip, or a text checkpoint's tokenizer); "predictions" holds one row per sample."""
    logits, labels, features = _split_logits(model, checkpoint, samples, control, progress)
    metrics = classification_metrics(logits, labels, checkpoint.classes, [s.path for s in samples])
    scorer = checkpoint_scorer(checkpoint.meta, checkpoint.trust_state)
    if scorer is not None:
        for row, score in zip(metrics["predictions"], scores_of(scorer, logits, features)):
            row["ood_score"] = round(float(score), 6)
    return metrics



def split_probabilities(run_dir: str | Path, samples, control: RunControl | None = None,
                        progress: Progress | None = None):
    """([N, C] calibrated softmax probabilities as numpy, [N] labels) of a run's checkpoint on `samples`, predicted as
    the run predicts: what an ensemble's members are chosen by."""
    model, checkpoint = load_checkpoint(RunFolder(run_dir).checkpoint)
    logits, labels, _ = _split_logits(model, checkpoint, samples, control, progress)
    return logits.float().softmax(-1).numpy(), labels.numpy()


def stored_probabilities(run_dir: str | Path, samples, split: str):
    """`split_probabilities` as the run's fit stored them in predictions.json (None when it did not keep
    every sample's: an older run, or too many images x classes)."""
    import numpy as np
    files = RunFolder(run_dir)
    if not files.predictions.exists():
        return None
    rows = {row["path"]: row for row in json.loads(files.predictions.read_text(encoding="utf-8")).get(split, [])}
    if not all(s.path in rows and "probabilities" in rows[s.path] for s in samples):
        return None
    return (np.array([rows[s.path]["probabilities"] for s in samples], dtype=np.float32),
            np.array([s.label for s in samples]))


def stored_correctness(run_dir: str | Path, samples, split: str):
    """Whether the run's fit predicted each of `samples` right ([N] bool, in their order), from
    predictions.json; a sample it could not read counts as wrong. None without predictions for `split`."""
    import numpy as np
    files = RunFolder(run_dir)
    if not files.predictions.exists():
        return None
    rows = json.loads(files.predictions.read_text(encoding="utf-8")).get(split)
    if rows is None:
        return None
    right = {row["path"]: row["true"] == row["predicted"] for row in rows}
    return np.array([right.get(s.path, False) for s in samples], dtype=bool)


def _split_logits(model, checkpoint, samples, control, progress):
    """(calibrated logits, labels, the classifier's input features or None) of `samples`."""
    from engine.training.calibration import scored_pass
    net, loader = _test_inputs(model, checkpoint, samples)
    logits, labels, features = scored_pass(model, net, loader, control, progress)
    return logits / float((checkpoint.meta.get("trust") or {}).get("temperature", 1.0)), labels, features


def _test_inputs(model, checkpoint, samples) -> tuple[torch.nn.Module, DataLoader]:
    """The network and loader that score `samples` as the run evaluated: images through the evaluation
    transform and the model's predictor, texts through the checkpoint's own tokenizer."""
    return modalities.of(checkpoint).eval_inputs(model, checkpoint, samples, EVAL_BATCH)
