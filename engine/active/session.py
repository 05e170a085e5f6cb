"""The labelling loop: label a batch, a new head in seconds, the next batch chosen by it.

The pretrained backbone reads the labelled set and the pool once (through the feature cache a search and a
head-only fit share); every round after that is arithmetic on those features: a logistic-regression head
(engine.training.logistic.fit_head) on the training split plus the labels given so far, its accuracy on the
validation split (the labels given never enter it), its temperature fitted there, and the next batch chosen
from the rest of the pool (engine.active.acquire.pick: typical samples while labels are few, then the least
certain, spread out). The caller owns the labels (the project's additions) and hands them in each round, so
nothing here is shared with a window's thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.active.acquire import margins, pick, reason_for
from engine.active.pool import Pool, PoolPass, frozen_pass
from engine.core import modality as modalities
from engine.core.control import RunControl
from engine.core.progress import Progress
from engine.data.report import DatasetReport

BATCH = 20


@dataclass
class Round:
    """What one round hands the window: plain values only."""

    labels: int                        # training labels the head learnt from (the set's and the given ones)
    given: int                         # of which given in this loop
    val_accuracy: float | None         # on the validation split; None when the set has none
    val_count: int
    estimate: str                      # what the accuracy was measured on, in words
    batch: list[dict] = field(default_factory=list)   # {path, text, suggested, runner_up, score, reason}
    method: str = ""
    left: int = 0                      # pool samples not labelled or skipped yet


class LabellingSession:
    """Construct with the labelled set's report and a pool, `prepare()` once (the frozen pass), then
    `round(labels, skipped)` after every batch. Call from one worker thread."""

    def __init__(self, report: DatasetReport, pool: Pool, *, backbone: str | None = None, seed: int = 0,
                 batch: int = BATCH):
        self.report, self.pool, self.seed, self.batch = report, pool, seed, batch
        self.modality = modalities.of(report)
        self.backbone = backbone or self.modality.default_backbone
        self.classes = list(report.classes)
        self.history: list[Round] = []
        self._read: PoolPass | None = None     # the frozen pass, once prepared

    def prepare(self, control: RunControl | None = None, progress: Progress | None = None) -> Pool:
        """Read the labelled set and the pool with the backbone (cached after the first time) and flag the
        pool's problems; returns the pool as kept (unreadable samples dropped)."""
        read = frozen_pass(self.report, self.pool, self.backbone, seed=self.seed, control=control, progress=progress)
        self._read, self.pool = read, read.pool
        return self.pool

    def round(self, labels: dict[str, str], skipped: set[str] = frozenset(),
              control: RunControl | None = None) -> Round:
        """A head on the training split plus `labels` (pool path -> class name), its validation accuracy,
        and the next batch from what is neither labelled nor `skipped`."""
        if self._read is None:
            raise RuntimeError("prepare() first")
        from engine.models.trust import fit_temperature
        from engine.training.logistic import fit_head
        features, targets, splits = self._read.features, self._read.labels, self._read.splits
        index = {s.path: i for i, s in enumerate(self.pool.samples)}
        given = [(index[path], self.classes.index(name)) for path, name in labels.items()
                 if path in index and name in self.classes]
        train_x = np.concatenate([features[splits == "train"]] + [self._read.pool_features[[i for i, _ in given]]])
        train_y = np.concatenate([targets[splits == "train"], np.array([c for _, c in given], dtype=int)])
        if len(np.unique(train_y)) < 2:
            raise ValueError("label samples of at least two classes first")
        head = fit_head(torch.from_numpy(train_x).float()[None], train_y, len(self.classes), seed=self.seed,
                        control=control)
        val = splits == "val"
        val_logits = self._logits(head, features[val])
        if val.any():
            accuracy = float((val_logits.argmax(1) == torch.from_numpy(targets[val])).float().mean())
            temperature = fit_temperature(val_logits, torch.from_numpy(targets[val]))
            estimate = f"validation split ({int(val.sum())} {self.modality.nouns})"
        else:
            accuracy, temperature = head.cv_accuracy, 1.0
            estimate = f"{head.folds}-fold cross-validation on the training labels (the set has no validation split)"
        done = {i for i, _ in given} | {index[p] for p in skipped if p in index}
        rest = np.array([i for i in range(len(self.pool.samples)) if i not in done], dtype=int)
        batch, method = self._next_batch(head, temperature, train_x, rest)
        result = Round(len(train_y), len(given), accuracy, int(val.sum()), estimate, batch, method, len(rest))
        self.history.append(result)
        return result

    def _next_batch(self, head, temperature: float, train_x: np.ndarray, rest: np.ndarray) -> tuple[list[dict], str]:
        if not len(rest):
            return [], "the pool is labelled"
        probabilities = (self._logits(head, self._read.pool_features[rest]) / temperature).softmax(1).numpy()
        chosen, typical = pick(self._read.pool_features[rest], probabilities, train_x, len(self.classes),
                               self.batch, self.seed + len(self.history))
        method = ("typical samples of groups no label covers (TypiClust)" if typical
                  else "the least certain, spread out (margin + diversity)")
        margin = margins(probabilities)
        rows = []
        for s in chosen:
            sample = self.pool.samples[int(rest[s.index])]
            rows.append({"path": sample.path, "text": sample.text, "suggested": self.classes[s.suggested],
                         "runner_up": self.classes[s.runner_up], "score": round(float(1 - margin[s.index]), 4),
                         "probability": round(float(probabilities[s.index].max()), 4),
                         "reason": reason_for(s, self.classes, typical)})
        return rows, method

    @staticmethod
    def _logits(head, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).float() @ head.weight.T + head.bias
