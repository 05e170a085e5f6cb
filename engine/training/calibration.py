"""After a fit: its temperature and its "unknown" score, fitted on what evaluation computes anyway.

The evaluation passes run with a hook on the model's classifier, so they yield the pooled features the
classifier reads beside the logits, from cached features where the fit trained on them (no extra pass)
and from the inputs otherwise. The temperature and the threshold come from the validation split; the
k-NN bank from the training split (engine.models.trust says why these methods).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from engine.models import trust
from engine.training.metrics import predict_logits


@contextmanager
def classifier_inputs(model: nn.Module):
    """A list that collects what `model.get_classifier()` reads on each call while the block runs (stays
    empty for a model without one, such as an ensemble)."""
    captured: list[torch.Tensor] = []
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    handle = None
    if classifier is not None:
        handle = classifier.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float().cpu()))
    try:
        yield captured
    finally:
        if handle is not None:
            handle.remove()


def scored_pass(model: nn.Module, net: nn.Module, loader, control=None, progress=None, amp=None):
    """(logits, labels, features or None) of `net` over `loader`; the features are what `model`'s
    classifier read, averaged over the views when it read each batch more than once (test-time flip)."""
    options = {"amp": amp} if amp is not None else {}
    with classifier_inputs(model) as captured:
        logits, labels = predict_logits(net, loader, control, progress, **options)
    return logits, labels, view_mean(captured, len(labels))


def view_mean(captured: list[torch.Tensor], count: int) -> torch.Tensor | None:
    """[count, D] from the classifier's inputs in call order: each batch read V times in a row (V views)."""
    rows = sum(len(chunk) for chunk in captured)
    if not captured or not count or rows % count:
        return None
    views = rows // count
    if views == 1:
        return torch.cat(captured)
    return torch.cat([torch.stack(captured[start:start + views]).mean(0)
                      for start in range(0, len(captured), views)])


def fit_trust(train: tuple, val: tuple, classes: int, accept: float = trust.DEFAULT_ACCEPT,
              seed: int = 0) -> tuple[dict, nn.Module]:
    """(the checkpoint's "trust" metadata, the scorer) from train = (features or None, labels) and
    val = (logits, labels, features or None)."""
    train_features, train_labels = train
    val_logits, val_labels, val_features = val
    temperature = trust.fit_temperature(val_logits, val_labels)
    calibrated = val_logits.float() / temperature
    scorer = trust.fit_default(train_features, train_labels, classes, val_features, calibrated, seed)
    grid = trust.threshold_grid(scores_of(scorer, calibrated, val_features))
    labels = val_labels.numpy()
    meta = {
        "temperature": temperature,
        "fitted_on": "val",
        "method": getattr(scorer, "method", "msp"),
        "k": trust.KNN_K,
        "accept": accept,
        "thresholds": grid,
        "threshold": trust.threshold_at({"thresholds": grid}, accept) if grid else float("inf"),
        "val_ece_before": trust.expected_calibration_error(val_logits.float().softmax(-1).numpy(), labels),
        "val_ece_after": trust.expected_calibration_error(calibrated.softmax(-1).numpy(), labels),
        "val_nll_before": float(nn.functional.cross_entropy(val_logits.float(), val_labels.long())),
        "val_nll_after": float(nn.functional.cross_entropy(calibrated, val_labels.long())),
    }
    return meta, scorer


def scores_of(scorer: nn.Module, logits: torch.Tensor, features: torch.Tensor | None,
              temperature: float = 1.0) -> np.ndarray:
    """The unknown score of a pass's rows, as the checkpoint will compute it (a model without features of
    its own is scored on its logits)."""
    calibrated = logits.float() / temperature
    with torch.no_grad():
        return scorer(features if features is not None else calibrated, calibrated).double().numpy()


def trust_summary(meta: dict, split_logits: dict, split_scores: dict) -> dict:
    """metrics.json's "calibration" and "unknown": ECE before and after per split, the reliability diagram
    of the evaluated split, and the share of each split accepted at the threshold."""
    temperature, threshold = meta["temperature"], meta["threshold"]
    calibration = {"method": "temperature scaling", "temperature": temperature, "fitted_on": "val",
                   "val_nll_before": meta.get("val_nll_before"), "val_nll_after": meta.get("val_nll_after")}
    shown = "test" if "test" in split_logits else "val"
    for split, (logits, labels) in split_logits.items():
        calibration.update(split_figures(split, logits.float().softmax(-1).numpy(),
                                         (logits.float() / temperature).softmax(-1).numpy(), labels.numpy(),
                                         diagram=split == shown))
    unknown = {"method": meta["method"], "accept": meta["accept"], "threshold": threshold,
               **accepted_shares(split_scores, threshold)}
    return {"calibration": calibration, "unknown": unknown}


def split_figures(split: str, before: np.ndarray, after: np.ndarray, labels: np.ndarray,
                  diagram: bool = True) -> dict:
    """A split's ECE before and after calibration (probabilities `before`, `after`), and with `diagram`
    the reliability diagram of both."""
    figures = {f"{split}_ece_before": trust.expected_calibration_error(before, labels),
               f"{split}_ece_after": trust.expected_calibration_error(after, labels)}
    if diagram:
        figures["reliability"] = {"split": split, "before": trust.reliability(before, labels),
                                  "after": trust.reliability(after, labels)}
    return figures


def accepted_shares(split_scores: dict, threshold: float) -> dict:
    """{"<split>_accepted": share of the split's unknown scores at or below `threshold`}."""
    return {f"{split}_accepted": trust.accepted_share(scores, threshold) for split, scores in split_scores.items()}


def split_calibration(rows: list[dict], temperature: float, split: str = "test") -> dict:
    """A split's ECE before and after and its reliability diagram from its prediction rows' calibrated
    probabilities ({} when the rows do not keep them): softmax(T log p) is the model's own softmax."""
    if not rows or any("probabilities" not in row for row in rows):
        return {}
    after = np.array([row["probabilities"] for row in rows], dtype=np.float64)
    before = np.exp(temperature * np.log(np.clip(after, 1e-12, 1.0)))
    before /= before.sum(1, keepdims=True)
    return split_figures(split, before, after, np.array([row["true"] for row in rows]))


def run_scores(run_dir) -> dict[str, np.ndarray]:
    """The unknown scores predictions.json holds per split (empty arrays for a run from before them)."""
    import json

    from engine.core.runfolder import RunFolder
    files = RunFolder(run_dir)
    try:
        predictions = json.loads(files.predictions.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {split: np.array([row["ood_score"] for row in rows if row.get("ood_score") is not None])
            for split, rows in predictions.items() if isinstance(rows, list)}


def set_run_accept(run_dir, accept: float) -> dict:
    """Keep `accept` (the share of validation inputs to accept) as the run's unknown threshold: in its
    checkpoint (so predict, Try it and exports use it) and in metrics.json; returns metrics.json's
    "unknown". ValueError for a run without the score or a share outside 0.5-1."""
    import json

    from engine.core.files import write_json
    from engine.core.runfolder import RunFolder
    from engine.models.checkpoint import read_checkpoint_meta, rewrite_meta
    files = RunFolder(run_dir)
    meta = read_checkpoint_meta(files.checkpoint)
    stored = meta.get("trust") or {}
    if not stored.get("method"):
        raise ValueError("this run has no unknown score (trained before calibration): train it again")
    threshold = trust.threshold_at(stored, accept)
    rewrite_meta(files.checkpoint, {**meta, "trust": {**stored, "accept": accept, "threshold": threshold}})
    metrics = json.loads(files.metrics.read_text(encoding="utf-8")) if files.metrics.exists() else {}
    unknown = {**metrics.get("unknown", {}), "accept": accept, "threshold": threshold,
               **accepted_shares(run_scores(run_dir), threshold)}
    metrics["unknown"] = unknown
    write_json(files.metrics, metrics)
    return unknown
