"""The numbers behind calibrated confidence and "unknown", in numpy alone (predicting from an exported
file loads no torch): calibration error, the reliability diagram, AUROC, and the thresholds a run stores
for each share of its validation inputs it accepts (engine.models.trust fits them)."""
from __future__ import annotations

import numpy as np

DEFAULT_ACCEPT = 0.95
ECE_BINS = 15
METHOD_WORDS = {"max:msp+knn": "how unsure it is or how far from the nearest training samples, whichever says more",
                "msp": "how unsure it is (maximum softmax)", "knn": "how far from the nearest training samples"}
ACCEPT_GRID = np.round(np.linspace(0.5, 1.0, 101), 4)   # the accept shares a run stores the threshold of


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if not len(labels):
        return float("nan")
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(labels))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """The reliability diagram's bars: per confidence bin, its range, mean confidence, accuracy and count."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    rows = []
    if not len(labels):
        return rows
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "confidence": float(confidence[members].mean()),
                         "accuracy": float(correct[members].mean()), "count": int(members.sum())})
    return rows


def threshold_at(trust: dict, accept: float) -> float:
    """The threshold that accepts `accept` of the validation inputs, from a run's stored grid."""
    if not 0.5 <= accept <= 1.0:
        raise ValueError(f"the share of known inputs to accept must be between 0.5 and 1, not {accept:g}")
    grid = trust.get("thresholds")
    if not grid:
        return float(trust["threshold"])
    return float(np.interp(accept, ACCEPT_GRID, np.asarray(grid, dtype=np.float64)))


def threshold_grid(known_scores: np.ndarray) -> list[float]:
    """The threshold for each share of ACCEPT_GRID: halfway between the smallest score that accepts at least
    that share of `known_scores` (at or below it), so a small split never accepts less than it says, and the
    next larger score (above the largest: half the last gap again). No validation input then sits on its
    threshold, where the last bit of a float (the ONNX file's against PyTorch's, a score stored and read
    back) would decide whether it is accepted."""
    scores = np.asarray(known_scores, dtype=np.float64)
    if not len(scores):
        return []
    distinct = np.unique(scores)
    gap = float(distinct[-1] - distinct[-2]) if len(distinct) > 1 else max(abs(float(distinct[-1])), 1.0) * 1e-3
    beyond = np.append(distinct, distinct[-1] + gap)
    grid = []
    for share in ACCEPT_GRID:
        position = int(np.searchsorted(distinct, np.quantile(scores, share, method="higher")))
        grid.append(float((beyond[position] + beyond[position + 1]) / 2))
    return grid


def accepted_share(scores, threshold: float) -> float | None:
    """The share of `scores` at or below `threshold` (accepted as known); None without scores."""
    scores = np.asarray(scores, dtype=np.float64)
    return float((scores <= threshold).mean()) if len(scores) else None


def auroc(known_scores: np.ndarray, new_scores: np.ndarray) -> float:
    """P(score of a new input > score of a known one), ties counting half (the Mann-Whitney AUC)."""
    known, new = np.asarray(known_scores, np.float64), np.asarray(new_scores, np.float64)
    if not len(known) or not len(new):
        return float("nan")
    both = np.concatenate([known, new])
    values, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2          # ties share their mean rank
    new_ranks = mean_rank[inverse[len(known):]].sum()
    return float((new_ranks - len(new) * (len(new) + 1) / 2) / (len(known) * len(new)))
