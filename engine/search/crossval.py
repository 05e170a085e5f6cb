"""Cross-validation of head recipes on cached features, trained the way the Trainer trains them: the
recipe search's screening of head recipes (engine.search.auto).

Every training image is held out exactly once, in folds that keep near-identical images together
(engine.training.folds), so a recipe is not rewarded for recognising a twin of a training photo. The
validation and test splits are not read: validation judges the finalists, the test split the winner.
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
    """Cached features of the images a search may use: views [V, N, D] (0 plain, 1 mirrored) + labels;
    `held_out` marks the rows of validation images (None: all training images)."""

    views: torch.Tensor
    labels: np.ndarray
    held_out: np.ndarray | None = None

    @property
    def mirrored(self) -> bool:
        return self.views.shape[0] > 1

    def part(self, held_out: bool) -> "FeatureViews":
        """The validation rows (`held_out`) or the training rows alone."""
        if self.held_out is None:
            return self if not held_out else FeatureViews(self.views[:, :0], self.labels[:0])
        rows = self.held_out == held_out
        return FeatureViews(self.views[:, torch.from_numpy(rows)], self.labels[rows])


# -- head recipes, as the Trainer trains them ------------------------------------------------------------
CHECKS = 4          # held-out accuracy is looked at after each quarter of the epochs (for pruning)


@dataclass
class FoldScores:
    """Held-out accuracy per fold at the last check; `complete` is False for a recipe stopped early.
    `correct` and `count`: held-out samples right and in all, over every fold."""

    scores: list[float]
    complete: bool
    correct: int = 0
    count: int = 0

    @property
    def mean(self) -> float:
        """Accuracy over every held-out sample (each fold weighted by its size)."""
        return self.correct / self.count if self.count else float(np.mean(self.scores))

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
                scores = self.held_out_scores(complete=epoch == config.epochs)
                if epoch < config.epochs and report is not None and report(checks.index(epoch), scores.mean):
                    return scores
        return self.held_out_scores(complete=True)

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

    def held_out_scores(self, complete: bool) -> FoldScores:
        right = self.held_out_correct()
        return FoldScores([float(r.mean()) for r in right], complete, int(sum(r.sum() for r in right)),
                          sum(len(r) for r in right))

    @torch.no_grad()
    def held_out_correct(self) -> list[np.ndarray]:
        """Per fold, whether each of its held-out samples is predicted right (with tta='flip' from the mean
        over the plain and mirrored views)."""
        self.template.eval()
        try:
            views = self.data.views if self.config.tta == "flip" and self.data.mirrored else self.data.views[:1]
            folds = len(self.train_index)
            logits = sum(self.forward(self.params, self.buffers, view.expand(folds, *view.shape)) for view in views)
        finally:
            self.template.train()
        predicted = logits.argmax(2).numpy()
        return [predicted[fold][self.folds == fold] == self.data.labels[self.folds == fold] for fold in range(folds)]


def head_classes(head: nn.Module) -> int:
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
