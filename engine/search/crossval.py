"""Cross-validation on cached features: stratified folds, a linear probe, and head recipes trained the
way the Trainer trains them.

Why cross-validation: a 50-image validation split has a noise band of about ±7 points, so it cannot
choose between recipes that differ by 2. Every image of train + val is held out exactly once, and the
score is the mean over k folds; the test split is never touched.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from engine.core.control import RunControl
from engine.training.config import TrainConfig
from engine.training.optim import class_weights, make_optimizer, make_schedule

FOLDS = 5
PROBE_PENALTIES = (1e-4, 1e-3, 1e-2)     # L2 strength of the linear probe (on standardised features)


@contextmanager
def one_thread() -> Iterator[None]:
    """Small matrices run fastest on one thread: a head step on 2 threads took 4-8x longer on the 2-core
    machine when anything else was running (OpenMP threads wait for each other), and never ran faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class FeatureViews:
    """Cached features of the images a search may use: views [V, N, D] (0 plain, 1 mirrored) + labels."""

    views: torch.Tensor
    labels: np.ndarray

    @property
    def mirrored(self) -> bool:
        return self.views.shape[0] > 1


def stratified_folds(labels: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Fold index per sample: each class dealt round-robin over the folds in a seeded random order, so
    every fold has the class proportions of the whole (as scikit-learn's StratifiedKFold)."""
    labels = np.asarray(labels)
    assignment = np.empty(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)        # the next class starts where this one stopped: folds stay equal in size
    return assignment


def usable_folds(labels: np.ndarray, wanted: int = FOLDS) -> int:
    """As many folds as the rarest class allows (each fold must see every class in training), 2 to `wanted`."""
    counts = np.bincount(np.asarray(labels)) if len(labels) else np.zeros(1, dtype=int)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    return max(2, min(wanted, smallest))


# -- the linear probe ----------------------------------------------------------------------------------
def linear_probe_accuracy(features: torch.Tensor, labels: np.ndarray, folds: np.ndarray,
                          control: RunControl | None = None) -> tuple[float, float]:
    """Cross-validated accuracy (mean, std over folds) of L2-regularised multinomial logistic regression
    on standardised features, the strength chosen from PROBE_PENALTIES by the same folds: the standard
    linear evaluation of a frozen representation (as in Kornblith et al., CVPR 2019)."""
    best = None
    with one_thread():
        for penalty in PROBE_PENALTIES:
            mean, spread = _probe_penalty(features, labels, folds, penalty, control)
            if best is None or mean > best[0]:
                best = (mean, spread)
    return best


def _probe_penalty(features, labels, folds, penalty, control) -> tuple[float, float]:
    """(mean, std) over the folds of the probe's held-out accuracy at one L2 strength."""
    scores = []
    for fold in range(int(folds.max()) + 1):
        if control is not None:
            control.checkpoint()
        train, held = folds != fold, folds == fold
        scores.append(_probe_fold(features[train], labels[train], features[held], labels[held], penalty))
    return float(np.mean(scores)), float(np.std(scores))


def _probe_fold(x_train: torch.Tensor, y_train: np.ndarray, x_held: torch.Tensor, y_held: np.ndarray,
                penalty: float) -> float:
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_held = (x_train - mean) / std, (x_held - mean) / std
    classes = int(max(y_train.max(), y_held.max())) + 1
    targets = torch.as_tensor(y_train, dtype=torch.long)
    linear = nn.Linear(x_train.shape[1], classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=200, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(linear(x_train), targets) + penalty / 2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((linear(x_held).argmax(1).numpy() == y_held).mean())


# -- head recipes, as the Trainer trains them ------------------------------------------------------------
CHECKS = 4          # held-out accuracy is looked at after each quarter of the epochs (for pruning)


@dataclass
class FoldScores:
    """Held-out accuracy per fold at the last check; `complete` is False for a recipe stopped early."""

    scores: list[float]
    complete: bool

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))


def head_recipe_accuracy(data: FeatureViews, config: TrainConfig, folds: np.ndarray, make_head: Callable,
                         dropout: float, control: RunControl | None = None,
                         report: Callable[[int, float], bool] | None = None) -> FoldScores:
    """Held-out accuracy of `config`'s head recipe on each fold, every fold's head trained at once.

    The k heads are stacked (torch.func) and step together, each on its own fold's training images: a
    head step on cached features costs about the same for one head or five, so this is k times faster
    than fold after fold. `make_head()` builds a fresh head (features -> logits). `report(check, mean)`
    is called after each quarter of the epochs; returning True stops the recipe there (pruned).
    """
    with one_thread():
        torch.manual_seed(config.seed)
        return FoldHeads(data, folds, config, [make_head() for _ in range(int(folds.max()) + 1)],
                         dropout).fit(control, report)


def training_views(views: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The cached views a recipe trains on: the mirrored one only with augmentation 'flip'."""
    return views if config.augmentation == "flip" and views.shape[0] > 1 else views[:1]


class FoldHeads:
    """One head per fold, trained the way Trainer trains a head on cached features: dropout before the
    head, AdamW with decay on weights only, warm-up + schedule per step, label smoothing, class weights
    or a balanced sampler, gradient clipping per head, batches of `config.batch_size`, one cached view
    per epoch in turn. Each head's Adam update is elementwise, so stacking changes nothing about it."""

    def __init__(self, data: FeatureViews, folds: np.ndarray, config: TrainConfig, heads: list[nn.Module],
                 dropout: float):
        from torch.func import functional_call, stack_module_state, vmap
        self.data, self.folds, self.config, self.dropout = data, folds, config, dropout
        self.params, self.buffers = stack_module_state(heads)
        self.template = heads[0]

        def one(params, buffers, x):
            return functional_call(self.template, (params, buffers), (x,))
        self.forward = vmap(one, randomness="different")
        self.labels = torch.as_tensor(data.labels, dtype=torch.long)
        self.classes = head_classes(heads[0])
        self.train_index = [np.flatnonzero(folds != fold) for fold in range(len(heads))]
        self.weights = class_weights(data.labels.tolist(), self.classes) if config.balance != "none" else None

    def fit(self, control: RunControl | None, report) -> FoldScores:
        config = self.config
        params = list(self.params.values())
        optimizer = make_optimizer([
            {"params": [p for p in params if p.ndim > 2], "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim <= 2], "lr": config.lr, "weight_decay": 0.0}], config)
        length = min(len(index) for index in self.train_index)
        batch = config.batch_size
        steps = -(-length // batch)
        schedule = make_schedule(optimizer, config, steps, config.epochs)
        views = training_views(self.data.views, config)
        checks = sorted({max(1, round(config.epochs * q / CHECKS)) for q in range(1, CHECKS + 1)})
        for epoch in range(1, config.epochs + 1):
            if control is not None:
                control.checkpoint()
            inputs = views[(epoch - 1) % views.shape[0]]
            order = self._epoch_order(length)
            for first in range(0, length, batch):
                chosen = order[:, first:first + batch]
                loss = self._loss(self.forward(self.params, self.buffers, self._dropped(inputs[chosen])),
                                  self.labels[chosen])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._clip(params)
                optimizer.step()
                schedule.step()
            if epoch in checks:
                scores = self.held_out_accuracy()
                if epoch < config.epochs and report is not None and report(checks.index(epoch), float(np.mean(scores))):
                    return FoldScores(scores, False)
        return FoldScores(self.held_out_accuracy(), True)

    def _epoch_order(self, length: int) -> torch.Tensor:
        """[folds, length] sample indices: each fold's own training images, shuffled (or drawn with class
        weights for the 'sampler' balance), cut to the smallest fold's count (they differ by a few)."""
        rows = []
        for index in self.train_index:
            index = torch.as_tensor(index)
            if self.config.balance == "sampler":
                draw = torch.multinomial(self.weights[self.labels[index]], length, replacement=True)
            else:
                draw = torch.randperm(len(index))[:length]
            rows.append(index[draw])
        return torch.stack(rows)

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, self.dropout, training=True) if self.dropout > 0 else x

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum over folds of each fold's mean loss (weighted mean with class weights, as CrossEntropyLoss)."""
        folds, size = targets.shape
        weight = self.weights if self.config.balance == "loss" else None
        losses = nn.functional.cross_entropy(logits.reshape(folds * size, -1), targets.reshape(-1), weight=weight,
                                             label_smoothing=self.config.label_smoothing,
                                             reduction="none").view(folds, size)
        if weight is None:
            return losses.mean(1).sum()
        return (losses.sum(1) / weight[targets].sum(1)).sum()

    def _clip(self, params: list[torch.Tensor]) -> None:
        """clip_grad_norm_ per head: each fold's gradient norm over its own parameters."""
        if self.config.grad_clip <= 0:
            return
        norms = torch.sqrt(sum(p.grad.pow(2).flatten(1).sum(1) for p in params))
        scale = (self.config.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(scale.view(-1, *[1] * (p.ndim - 1)))

    @torch.no_grad()
    def held_out_accuracy(self) -> list[float]:
        """Each head's accuracy on its own held-out fold (the mean over plain and mirrored with tta='flip')."""
        self.template.eval()
        try:
            views = self.data.views if self.config.tta == "flip" and self.data.mirrored else self.data.views[:1]
            folds = len(self.train_index)
            logits = sum(self.forward(self.params, self.buffers, view.expand(folds, *view.shape)) for view in views)
        finally:
            self.template.train()
        predicted = logits.argmax(2).numpy()
        return [float((predicted[fold][self.folds == fold] == self.data.labels[self.folds == fold]).mean())
                for fold in range(folds)]


def head_classes(head: nn.Module) -> int:
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
