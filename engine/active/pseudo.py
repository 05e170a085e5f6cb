"""Pseudo-labels: train also on the unlabelled samples the model is sure of (Lee 2013, "Pseudo-Label: the
simple and efficient semi-supervised learning method"; the confidence threshold of FixMatch, Sohn et al.
2020), with the threshold chosen on the validation split, and only when that is better than chance explains.

On the pretrained backbone's features: a logistic-regression head on the training split (its L2 strength by
grouped cross-validation, engine.training.logistic), its temperature fitted on validation, so a threshold is a
calibrated probability. For each threshold the head is solved again (its L2 strength chosen again) on the
training split plus the pool's samples at or above it, each class weighing the same (`balanced_weights`), and
scored on validation. Each candidate is compared with no pseudo-labels on the
same validation samples (exact McNemar, Holm-corrected over the thresholds: engine.core.significance), so a
threshold that wins by a sample or two does not turn pseudo-labels on. Pseudo-labelled samples only ever
join the training split: validation and test keep the user's own labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine.core.control import RunControl
from engine.core.significance import decide

THRESHOLDS = (0.99, 0.95, 0.9, 0.8)
OFF = "no pseudo-labels"
PSEUDO_LABELS = "pseudo_labels.json"
"""In a run folder: what `pseudo_label_record` says of the pseudo-labels the run trained on (or why none)."""


@dataclass
class PseudoChoice:
    threshold: float | None                  # None: off (nothing beat the labels alone on validation)
    labels: list[tuple[int, int]]            # (pool row, class) of the pseudo-labelled samples
    off_accuracy: float | None               # validation accuracy without pseudo-labels
    candidates: list[dict] = field(default_factory=list)   # {threshold, count, val_accuracy, p_value}
    reason: str = ""
    val_count: int = 0
    temperature: float = 1.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = len(self.labels)
        return data


def choose_pseudo_labels(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                         pool: np.ndarray, classes: int, *, seed: int = 0, thresholds=THRESHOLDS,
                         control: RunControl | None = None) -> PseudoChoice:
    """The threshold (module docstring) from features: `train` and `val` as (features [N, D], labels [N]),
    `pool` [M, D] the unlabelled samples' features."""
    from engine.models.trust import fit_temperature
    from engine.training.logistic import fit_head
    train_x, train_y = _finite(*train)
    val_x, val_y = _finite(*val)
    pool = np.asarray(pool, dtype=np.float32)
    rows = np.flatnonzero(np.isfinite(pool).all(1)) if len(pool) else np.zeros(0, dtype=int)
    pool = pool[rows]                      # unreadable samples (NaN rows) never get a label
    if not len(val_y) or not len(pool):
        why = "the set has no validation split to choose a threshold on" if not len(val_y) else "the pool is empty"
        return PseudoChoice(None, [], None, reason=why)
    head = fit_head(torch.from_numpy(train_x)[None], train_y, classes, seed=seed, control=control)
    val_logits = _logits(head.weight, head.bias, val_x)
    off = val_logits.argmax(1).numpy() == val_y
    temperature = fit_temperature(val_logits, torch.from_numpy(val_y))
    probabilities = (_logits(head.weight, head.bias, pool) / temperature).softmax(1)
    confidence, guess = probabilities.max(1)
    candidates, correct = [], {}
    for threshold in thresholds:
        if control is not None:
            control.checkpoint()
        chosen = np.flatnonzero(confidence.numpy() >= threshold)
        if not len(chosen):
            continue
        y = np.concatenate([train_y, guess.numpy()[chosen]])
        refit = fit_head(torch.from_numpy(np.concatenate([train_x, pool[chosen]]))[None], y, classes,
                         class_weight=balanced_weights(y, classes), seed=seed, control=control)
        name = _name(threshold)
        correct[name] = _logits(refit.weight, refit.bias, val_x).argmax(1).numpy() == val_y
        candidates.append({"threshold": threshold, "count": int(len(chosen)), "val_accuracy": float(correct[name].mean())})
    decision = decide(OFF, off, correct)
    p_values = {c.name: c.p_value for c in decision.comparisons}
    for candidate in candidates:
        candidate["p_value"] = round(p_values[_name(candidate["threshold"])], 4)
    if decision.winner is None:
        return PseudoChoice(None, [], float(off.mean()), candidates, decision.reason or
                            "no threshold beat the labels alone on validation by more than chance",
                            len(val_y), temperature)
    threshold = next(c["threshold"] for c in candidates if _name(c["threshold"]) == decision.winner)
    chosen = np.flatnonzero(confidence.numpy() >= threshold)
    return PseudoChoice(threshold, [(int(rows[i]), int(guess[i])) for i in chosen], float(off.mean()), candidates,
                        decision.reason, len(val_y), temperature)


def balanced_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """Per-class loss weights that make every class weigh the same in total. The pool's confident samples
    crowd into the easy classes; unweighted, the head's bias learns that crowd and the hard classes lose
    (measured on fortunes: validation 64 % -> 51 % with 98 %-correct pseudo-labels; balanced: 72 %)."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return torch.tensor(len(labels) / (classes * np.maximum(counts, 1)), dtype=torch.float32)


def _name(threshold: float) -> str:
    return f"pseudo-labels at probability {threshold:g} or more"


def _finite(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    keep = np.isfinite(x).all(1) if len(x) else np.zeros(0, dtype=bool)
    return x[keep], y[keep]


def _logits(weight: torch.Tensor, bias: torch.Tensor, x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float32)) @ weight.T + bias


def with_pseudo_labels(report, sources: list[str], backbone: str, *, seed: int = 0, text_column: str | None = None,
                       control: RunControl | None = None, progress=None):
    """(the report with the pool's pseudo-labelled samples added to its training split, the PseudoChoice, the
    Pool read) for `train DATA --unlabelled POOL`: features of `backbone` as pretrained (cached, as a
    head-only fit and the deep check read them), the threshold chosen as the module docstring says. When no
    threshold wins, the report comes back as it was."""
    from dataclasses import replace

    from engine.active.pool import frozen_pass, labelled_keys, read_pool
    from engine.core import modality as modalities
    from engine.data.report import Sample
    pool = read_pool(sources, modalities.of(report), labelled=labelled_keys(report), text_column=text_column)
    read = frozen_pass(report, pool, backbone, seed=seed, control=control, progress=progress)
    pool, train = read.pool, read.splits == "train"
    choice = choose_pseudo_labels((read.features[train], read.labels[train]), (read.features[~train], read.labels[~train]),
                                  read.pool_features, len(report.classes), seed=seed, control=control)
    if choice.threshold is None:
        return report, choice, pool
    added = [Sample(pool.samples[i].path, label, "train", pool.samples[i].text) for i, label in choice.labels]
    return replace(report, samples=[*report.samples, *added],
                   content_hash=f"{report.content_hash}+pseudo-{pool.content_hash}-{choice.threshold:g}"), choice, pool


def pseudo_label_record(report, choice: PseudoChoice, pool) -> dict:
    """What PSEUDO_LABELS keeps: the choice (threshold, each candidate's count, validation accuracy and
    p-value, why), the pool's summary and problems, and each pseudo-labelled sample with its label."""
    return {**choice.to_dict(), "pool": pool.to_dict(),
            "samples": [{"path": pool.samples[i].path, "label": report.classes[label]} for i, label in choice.labels]}
