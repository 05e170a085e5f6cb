"""The fitted head: multinomial logistic regression on frozen features, solved to convergence.

The linear-probe literature (Kornblith et al., CVPR 2019; CLIP and SimCLR's evaluations) fits the
classifier on frozen features exactly, with L-BFGS, and chooses the L2 strength on held-out data, rather
than training it for a few epochs of SGD: a strong, cheap head with one hyper-parameter, chosen here by
cross-validation on the training split whose folds keep near-identical samples together
(engine.training.folds), with the one-standard-error rule (Hastie, Tibshirani & Friedman, "The Elements
of Statistical Learning", 7.10): the strongest penalty whose accuracy is within one standard error of the
best, as flat curves are common and the stronger penalty held better on new data in our measurements.
Features are standardised for the solve; the weights are mapped back, so the head is a plain
`nn.Linear` on the raw features and exports like any other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.core.control import RunControl
from engine.training.folds import near_duplicate_groups, stratified_folds, usable_folds

PENALTIES = (10.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4)     # L2 strength on standardised features, strongest first
MAX_ITERATIONS = 300


@dataclass
class FittedHead:
    """A solved head on raw features (logits = features @ weight.T + bias) and how it was chosen."""

    weight: torch.Tensor
    bias: torch.Tensor
    penalty: float
    cv_accuracy: float
    cv_by_penalty: dict[float, float]
    folds: int
    groups: int

    def describe(self) -> str:
        return (f"logistic regression solved by L-BFGS, L2 {self.penalty:g} chosen by {self.folds}-fold "
                f"cross-validation on the training split ({self.cv_accuracy:.1%}; {self.groups} groups of "
                f"near-identical samples kept together)")


def fit_head(views: torch.Tensor, labels: np.ndarray, classes: int, class_weight: torch.Tensor | None = None,
             tta: bool = False, seed: int = 0, control: RunControl | None = None) -> FittedHead:
    """Solve the head on `views` [V, N, D] (V=2: plain and mirrored, both trained on) with `labels` [N],
    the L2 strength chosen by grouped cross-validation (each view of an image in its image's fold; held-out
    images scored on the plain view, or the mean of both with `tta`)."""
    labels = np.asarray(labels)
    finite = torch.isfinite(views).all(-1).all(0).numpy()          # unreadable images hold NaN: left out
    views, labels = views[:, finite].float(), labels[finite]
    mean, std = views[0].mean(0), views[0].std(0).clamp_min(1e-6)
    scaled = (views - mean) / std
    groups = near_duplicate_groups(views[0], labels)
    count = usable_folds(labels, groups=groups)
    folds = stratified_folds(labels, count, seed, groups)
    by_penalty = cross_validated(scaled, labels, folds, classes, class_weight, tta, control)
    penalty = one_standard_error_choice(by_penalty, len(labels))
    weight, bias = solve(flatten_views(scaled), np.tile(labels, len(scaled)), classes, penalty, class_weight)
    raw_weight = weight / std
    return FittedHead(raw_weight, bias - raw_weight @ mean, penalty, by_penalty[penalty], by_penalty,
                      count, int(groups.max()) + 1 if len(groups) else 0)


def cross_validated(scaled: torch.Tensor, labels: np.ndarray, folds: np.ndarray, classes: int,
                    class_weight: torch.Tensor | None, tta: bool, control: RunControl | None) -> dict[float, float]:
    """Held-out accuracy over all folds for each penalty, strongest first, each fold warm-started from its
    solution at the previous (stronger) penalty."""
    scores, starts = {}, {}
    for penalty in PENALTIES:
        correct = 0
        for fold in range(int(folds.max()) + 1):
            if control is not None:
                control.checkpoint()
            train, held = folds != fold, folds == fold
            weight, bias = solve(flatten_views(scaled[:, train]), np.tile(labels[train], len(scaled)), classes,
                                 penalty, class_weight, starts.get(fold))
            starts[fold] = (weight, bias)
            inputs = scaled[:, held] if tta else scaled[:1, held]
            logits = sum(x @ weight.T + bias for x in inputs)
            correct += int((logits.argmax(1).numpy() == labels[held]).sum())
        scores[penalty] = correct / len(labels)
    return scores


def one_standard_error_choice(by_penalty: dict[float, float], count: int) -> float:
    """The strongest penalty whose accuracy is within one standard error (binomial, over `count` held-out
    samples) of the best penalty's."""
    best = max(by_penalty.values())
    margin = math.sqrt(best * (1 - best) / max(count, 1))
    return max(p for p, accuracy in by_penalty.items() if accuracy >= best - margin)


def flatten_views(views: torch.Tensor) -> torch.Tensor:
    return views.reshape(-1, views.shape[-1])


def solve(x: torch.Tensor, y: np.ndarray, classes: int, penalty: float, class_weight: torch.Tensor | None = None,
          start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [C, D], bias [C]) minimising the mean cross-entropy (class-weighted as nn.CrossEntropyLoss
    weighs it) + penalty/2 * |weight|^2, by L-BFGS with a strong-Wolfe line search."""
    linear = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        if start is None:
            linear.weight.zero_()
            linear.bias.zero_()
        else:
            linear.weight.copy_(start[0])
            linear.bias.copy_(start[1])
    targets = torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=MAX_ITERATIONS, history_size=10,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(x), targets, weight=class_weight) + \
            penalty / 2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear.weight.detach().clone(), linear.bias.detach().clone()
