"""Likely label errors: confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70, 2021) on out-of-fold probabilities of the fitted head.

Every sample is scored by a logistic regression that never saw it (k folds of the frozen features, near-
identical samples kept in one fold, engine.training.folds), with the L2 strength whose out-of-fold
probabilities have the lowest log-loss, averaged with the label votes of its 10 nearest neighbours (never
itself): an ensemble of two different models, as cleanlab advises for better probabilities. Measured with
10 % of the training labels moved (bench/data_issues.py; top-k precision, logistic alone -> ensemble):
Fashion-MNIST 0.862 -> 0.865, its photo sessions 0.847 -> 0.941 (a shot whose twins carry another label),
fortunes 0.759 -> 0.807, ELPV solar cells 0.519 -> 0.546. A sample is a likely error when confident learning counts it off
the diagonal of the confident joint (cleanlab's `find_label_issues(filter_by="confident_learning")`, the
same samples: tests/test_audit.py compares them) and its given label is not the model's own answer; the
issues are ranked by self-confidence, the out-of-fold probability of the given label, lowest first.

cleanlab itself is not a dependency of the app: it imports scikit-learn, SciPy and pandas (about 200 MB),
which the bundle (967 MiB of a 1 GB limit) cannot take for these twenty lines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.core.control import RunControl
from engine.training.folds import near_duplicate_groups, stratified_folds, usable_folds
from engine.training.logistic import PENALTIES, flatten_views, solve

THRESHOLD_FLOOR = 2e-6          # cleanlab's lower bound on a class's confident threshold
FUZZ = 1e-6                     # cleanlab's floating-point allowance


@dataclass
class OutOfFold:
    """Probabilities [N, C] of each sample from a head that never saw it, and how they were made."""

    probabilities: np.ndarray
    penalty: float
    folds: int
    log_loss: float


def out_of_fold_probabilities(features: torch.Tensor, labels: np.ndarray, classes: int, seed: int = 0,
                              control: RunControl | None = None,
                              penalties: tuple[float, ...] = PENALTIES[1:4], progress=None) -> OutOfFold:
    """Out-of-fold probabilities of `features` [N, D] (finite rows) for `labels` [N]: each fold's head solved
    on the other folds at every penalty (warm-started from the stronger one), the penalty with the lowest
    out-of-fold log-loss kept."""
    labels = np.asarray(labels)
    features = features.float()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    scaled = ((features - mean) / std).unsqueeze(0)
    groups = near_duplicate_groups(features, labels)
    count = usable_folds(labels, groups=groups)
    folds = stratified_folds(labels, count, seed, groups)
    best: OutOfFold | None = None
    starts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for step, penalty in enumerate(penalties):
        probabilities = np.zeros((len(labels), classes), dtype=np.float64)
        for fold in range(count):
            if control is not None:
                control.checkpoint()
            if progress is not None:
                progress("folds", step * count + fold, len(penalties) * count)
            train, held = folds != fold, folds == fold
            weight, bias = solve(flatten_views(scaled[:, train]), labels[train], classes, penalty,
                                 start=starts.get(fold))
            starts[fold] = (weight, bias)
            probabilities[held] = torch.softmax(scaled[0, held] @ weight.T + bias, 1).double().numpy()
        loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None)).mean())
        if best is None or loss < best.log_loss:
            best = OutOfFold(probabilities, penalty, count, loss)
    if progress is not None:
        progress("folds", len(penalties) * count, len(penalties) * count)
    return best


VOTERS = 10
VOTE_PRIOR = 0.1        # a pseudo-vote for every class, so no probability is 0


def neighbour_votes(neighbours: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """[N, C] share of each class among each sample's nearest neighbours (`neighbours` [N, >= VOTERS],
    the sample itself never among them), smoothed by VOTE_PRIOR."""
    votes = np.full((len(labels), classes), VOTE_PRIOR)
    for column in neighbours[:, :VOTERS].T:
        np.add.at(votes, (np.arange(len(labels)), labels[column]), 1.0)
    return votes / votes.sum(1, keepdims=True)


def label_probabilities(features: torch.Tensor, neighbours: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                        classes: int, seed: int = 0, control: RunControl | None = None,
                        progress=None) -> tuple[np.ndarray, OutOfFold]:
    """[len(rows), C] probabilities of the samples `rows` that no model trained on them made: the out-of-fold
    logistic regression's averaged with the neighbours' votes (`neighbours`: every sample's nearest)."""
    fitted = out_of_fold_probabilities(features[rows], labels[rows], classes, seed, control, progress=progress)
    return (fitted.probabilities + neighbour_votes(neighbours, labels, classes)[rows]) / 2, fitted


def confident_thresholds(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per class, the mean probability of that class over the samples labelled with it (2 where none is)."""
    thresholds = np.array([probabilities[labels == k, k].mean() if (labels == k).any() else 2.0
                           for k in range(probabilities.shape[1])])
    return np.clip(thresholds, THRESHOLD_FLOOR, None)


def label_issue_mask(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Whether each sample is counted off the diagonal of the confident joint: some class other than its
    given one is above that class's threshold (the most probable such class, when several are) and its
    given label is not the most probable one."""
    labels = np.asarray(labels)
    confident = probabilities >= confident_thresholds(labels, probabilities) - FUZZ
    several = confident.sum(1) > 1
    guess = np.where(several, probabilities.argmax(1), confident.argmax(1))
    off_diagonal = confident.any(1) & (guess != labels)
    nudged = probabilities.copy()
    nudged[np.arange(len(labels)), labels] += FUZZ
    return off_diagonal & (nudged.argmax(1) != labels)


def self_confidence(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The probability of each sample's given label: low for a likely error."""
    return probabilities[np.arange(len(labels)), np.asarray(labels)]
