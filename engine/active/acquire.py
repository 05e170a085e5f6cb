"""What to label next: diverse mini-batch active learning (Zhdanov 2019, "Diverse mini-batch Active
Learning", arXiv:1901.05954). The PREFILTER·K least certain samples of the pool, by the margin between the
two most probable classes, are clustered into K groups on their features by k-means weighted by how
uncertain each is; the sample nearest each centre is chosen. Uncertainty alone picks twenty shots of the
same confusing object; the clusters spread the batch over what the model is unsure about.

Measured against random choice with the same labels on real sets: bench/active_learning.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFILTER = 10             # candidates per sample asked for (Zhdanov's beta)
KMEANS_ITERATIONS = 25
LOW_BUDGET_PER_CLASS = 15
"""Below this many labels per class the most typical samples of uncovered groups are asked for (TypiClust),
from it on the least certain (engine.active.suggest says why, bench/active_learning.py measured it)."""


@dataclass
class Suggestion:
    index: int                 # into the pool
    suggested: int             # the model's class for it
    runner_up: int             # its second most probable class
    margin: float              # top-1 minus top-2 probability: small = unsure
    cluster: int               # which of the batch's groups it stands for

    @property
    def score(self) -> float:
        """How much labelling it should teach: 1 - margin."""
        return 1.0 - self.margin


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row."""
    top = np.sort(probabilities, axis=1)[:, ::-1]
    return top[:, 0] - (top[:, 1] if probabilities.shape[1] > 1 else 0.0)


def choose_batch(features: np.ndarray, probabilities: np.ndarray, count: int, seed: int = 0,
                 prefilter: int = PREFILTER) -> list[Suggestion]:
    """`count` pool rows to label next, most uncertain first (module docstring). `features` [N, D] (any
    embedding where near means alike), `probabilities` [N, C] (calibrated)."""
    count = min(count, len(probabilities))
    if count <= 0:
        return []
    margin = margins(probabilities)
    candidates = np.argsort(margin, kind="stable")[:min(len(margin), prefilter * count)]
    unit = _unit(np.asarray(features, dtype=np.float64)[candidates])
    weights = 1.0 - margin[candidates] + 1e-6
    labels = weighted_kmeans(unit, weights, count, seed)
    chosen = []
    for cluster in range(count):
        members = np.flatnonzero(labels == cluster)
        if not len(members):
            continue
        centre = np.average(unit[members], axis=0, weights=weights[members])
        nearest = members[np.argmin(((unit[members] - centre) ** 2).sum(1))]
        chosen.append((int(candidates[nearest]), cluster))
    taken = {index for index, _ in chosen}
    for index in candidates:                      # an empty cluster: the next most uncertain candidate
        if len(chosen) >= count:
            break
        if int(index) not in taken:
            chosen.append((int(index), -1))
            taken.add(int(index))
    return sorted((suggestion_at(probabilities, margin, index, cluster) for index, cluster in chosen),
                  key=lambda s: s.margin)


def pick(pool_features: np.ndarray, probabilities: np.ndarray, labelled_features: np.ndarray, classes: int,
         count: int, seed: int = 0) -> tuple[list[Suggestion], bool]:
    """(what to label next, whether typicality chose it): below LOW_BUDGET_PER_CLASS labels per class the
    labelled and pool samples are clustered together and the most typical sample of each large group no
    label covers is asked for (TypiClust); from there on, margin + diversity (`choose_batch`)."""
    if len(labelled_features) < LOW_BUDGET_PER_CLASS * classes:
        marked = np.r_[np.ones(len(labelled_features), dtype=bool), np.zeros(len(pool_features), dtype=bool)]
        together = np.concatenate([labelled_features, pool_features])
        picked = [i - len(labelled_features) for i in typical_batch(together, marked, count, seed)]
        margin = margins(probabilities)
        return [suggestion_at(probabilities, margin, i) for i in picked], True
    return choose_batch(pool_features, probabilities, count, seed=seed), False


def reason_for(suggestion: Suggestion, classes: list[str], typical: bool) -> str:
    """Why a sample is asked for, in words."""
    if typical:
        return "typical of a group of unlabelled samples that no label covers yet"
    return (f"unsure between {classes[suggestion.suggested]} and {classes[suggestion.runner_up]} "
            f"(margin {suggestion.margin:.2f})")


def suggestion_at(probabilities: np.ndarray, margin: np.ndarray, index: int, cluster: int = -1) -> Suggestion:
    """Pool row `index` as a Suggestion: its two most probable classes and its margin."""
    order = np.argsort(-probabilities[index])
    return Suggestion(int(index), int(order[0]), int(order[min(1, len(order) - 1)]), float(margin[index]), cluster)


def weighted_kmeans(x: np.ndarray, weights: np.ndarray, k: int, seed: int = 0,
                    iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Cluster of each row: k-means++ seeding drawn in proportion to weight × squared distance, then
    Lloyd's iterations with weighted centres."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = [x[rng.choice(len(x), p=weights / weights.sum())]]
    distance = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        chance = weights * distance
        pick = rng.choice(len(x), p=chance / chance.sum()) if chance.sum() > 0 else int(rng.integers(len(x)))
        centres.append(x[pick])
        distance = np.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    centres = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    squared = (x ** 2).sum(1)
    for _ in range(iterations):
        labels = (squared[:, None] - 2 * x @ centres.T + (centres ** 2).sum(1)[None]).argmin(1)
        moved = centres.copy()
        for cluster in range(k):
            members = labels == cluster
            if members.any():
                moved[cluster] = np.average(x[members], axis=0, weights=weights[members])
        if np.allclose(moved, centres):
            break
        centres = moved
    return labels


def typical_batch(features: np.ndarray, labelled: np.ndarray, count: int, seed: int = 0,
                  neighbours: int = 20) -> list[int]:
    """TypiClust (Hacohen et al. 2022, "Active Learning on a Budget"): the pool (`labelled` marks the rows
    already labelled) in len(labelled)+count k-means clusters; from the largest clusters with no label yet,
    the most typical sample of each (the densest: smallest mean distance to its nearest neighbours)."""
    unit = _unit(np.asarray(features, dtype=np.float64))
    k = min(len(unit), int(labelled.sum()) + count)
    clusters = weighted_kmeans(unit, np.ones(len(unit)), k, seed)
    covered = set(clusters[labelled].tolist())
    sizes = np.bincount(clusters, minlength=k)
    chosen = []
    for cluster in np.argsort(-sizes, kind="stable"):
        if len(chosen) >= count:
            break
        members = np.flatnonzero((clusters == cluster) & ~labelled)
        if cluster in covered or not len(members):
            continue
        inside = unit[members]
        distance = np.sqrt(np.maximum(2 - 2 * inside @ inside.T, 0))
        nearest = np.sort(distance, 1)[:, 1:neighbours + 1]
        typicality = 1 / (nearest.mean(1) + 1e-12) if nearest.size else np.ones(len(members))
        chosen.append(int(members[np.argmax(typicality)]))
    return chosen


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
