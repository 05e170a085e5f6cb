"""Metrics from logits: accuracy, per-class precision/recall/F1, confusion matrix, and the images the
model got most confidently wrong (the first place a user should look)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.core.control import RunControl
from engine.core.device import AMP_OFF, AmpPolicy, to_device
from engine.core.progress import Progress


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: DataLoader, control: RunControl | None = None,
                   progress: Progress | None = None, amp: AmpPolicy = AMP_OFF) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` in eval mode over a loader of (input, label) on the model's device (under `amp`'s
    autocast); returns (logits, labels) on the CPU."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    logits, labels, total, done = [], [], len(loader.dataset), 0
    try:
        for inputs, targets in loader:
            if control is not None:
                control.checkpoint()
            with amp.autocast(device):
                outputs = model(to_device(inputs, device))
            logits.append(outputs.float() if device.type == "cpu" else outputs.float().cpu())
            labels.append(torch.as_tensor(targets))
            done += len(targets)
            if progress:
                progress("evaluate", done, total)
    finally:
        model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s weights are (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


KEPT_PROBABILITIES = 2_000_000
"""Most class probabilities (images x classes) a split's predictions keep: about 20 MB of JSON."""


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           paths: list[str], top_wrong: int = 24) -> dict:
    """Everything the results view and metrics.json need, as plain lists and floats."""
    n = len(classes)
    probs = torch.softmax(logits.float(), dim=1).numpy() if len(logits) else np.zeros((0, n))
    true = labels.numpy().astype(int)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    # every class's probability per image, within a size a JSON file carries well: an ensemble of runs is
    # chosen from these without scoring the images again
    keep = probs.size <= KEPT_PROBABILITIES
    return {
        "accuracy": float((pred == true).mean()) if len(true) else None,
        "count": int(len(true)),
        "per_class": _per_class(confusion, classes),
        "confusion_matrix": confusion.tolist(),
        "most_confident_wrong": _most_confident_wrong(probs, true, pred, classes, paths, top_wrong),
        "predictions": [{"path": p, "true": int(t), "predicted": int(k), "score": round(float(probs[i, k]), 5),
                         **({"probabilities": [round(float(v), 6) for v in probs[i]]} if keep else {})}
                        for i, (p, t, k) in enumerate(zip(paths, true, pred))],
    }


def _per_class(confusion: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    for k, name in enumerate(classes):
        tp = int(confusion[k, k])
        support = int(confusion[k].sum())
        predicted = int(confusion[:, k].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": round(precision, 4), "recall": round(recall, 4),
                     "f1": round(f1, 4), "support": support})
    return rows


def _most_confident_wrong(probs, true, pred, classes, paths, limit) -> list[dict]:
    wrong = np.flatnonzero(pred != true)
    loss = -np.log(np.clip(probs[wrong, true[wrong]], 1e-12, 1.0)) if len(wrong) else np.zeros(0)
    order = wrong[np.argsort(-loss)][:limit]
    return [{"path": paths[i], "true": classes[true[i]], "predicted": classes[pred[i]],
             "score": round(float(probs[i, pred[i]]), 5),
             "loss": round(float(-np.log(max(probs[i, true[i]], 1e-12))), 5)} for i in order]
