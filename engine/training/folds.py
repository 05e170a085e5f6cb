"""Cross-validation folds that keep near-identical samples together.

Real photo sets are not independent samples: a session shoots each item several times, a dataset holds
resized or re-encoded copies. Folds drawn at random then hold out a photo whose twin trained, and
cross-validation inside the training images says 99 % for a model that scores 80 % on a new session
(measured: bench/RESULTS.md, "Honest selection"). So samples closer together than their neighbourhood
explains form a group, and a fold holds out whole groups (scikit-learn's StratifiedGroupKFold idea).
"""
from __future__ import annotations

import numpy as np
import torch

FOLDS = 5
NEIGHBOUR = 10          # a sample's neighbourhood: the distance to its 10th nearest neighbour
NEAR_SHARE = 0.3        # near-identical: closer than 0.3 x the median distance to the 10th neighbour
BLOCK = 2048            # rows of the similarity matrix computed at once (memory: BLOCK x N floats)


def near_duplicate_groups(features: torch.Tensor, labels: np.ndarray | None = None, share: float = NEAR_SHARE,
                          neighbour: int = NEIGHBOUR, folds: int = FOLDS) -> np.ndarray:
    """Group index per sample (0..G-1): samples linked by a chain of near-identical pairs share one.

    Two samples are near-identical when their cosine distance (features centred on their mean, so the
    distance is about what differs between samples) is below `share` x the median distance from a sample
    to its `neighbour`-th nearest neighbour. Relative to the 10th neighbour rather than the 1st (cleanlab's
    near-duplicate rule), so a set where every photo has a few twins still has a typical distance to
    compare with: measured on Fashion-MNIST photos shot four times each, every shot joined its item's group,
    while in a plain sample of the same photos 8 of 420 joined any group (bench/RESULTS.md).
    Each sample links to its `neighbour` nearest at most, closest pairs first, and a group stops growing at
    the share of its class one fold holds out (1/`folds`; of all samples without `labels`): a class of
    near-identical photos (a factory's good parts) is many groups, not one no fold could hold out."""
    count = len(features)
    if count <= neighbour + 1:
        return np.arange(count)
    features = features.float()
    finite = torch.isfinite(features).all(1)              # unreadable images hold NaN: they join no group
    centred = torch.where(finite[:, None], features - features[finite].mean(0), 0.0)
    unit = torch.nn.functional.normalize(centred, dim=1)
    nearest = [_similarities(unit, start).topk(neighbour, dim=1) for start in range(0, count, BLOCK)]
    similarity = torch.cat([n.values for n in nearest]).numpy()
    index = torch.cat([n.indices for n in nearest]).numpy()
    threshold = 1.0 - share * float(np.median(1.0 - similarity[:, -1]))
    rows, columns = np.nonzero(similarity >= threshold)
    order = np.argsort(-similarity[rows, columns], kind="stable")
    caps = _group_caps(labels, count, folds)
    parent, size = np.arange(count), np.ones(count, dtype=np.int64)
    for a, b in zip(rows[order], index[rows, columns][order]):
        ra, rb = _root(parent, int(a)), _root(parent, int(b))
        if ra != rb and size[ra] + size[rb] <= min(caps[ra], caps[rb]):
            parent[max(ra, rb)] = min(ra, rb)
            size[min(ra, rb)] += size[max(ra, rb)]
    roots = np.array([_root(parent, i) for i in range(count)])
    return np.unique(roots, return_inverse=True)[1]


def _group_caps(labels: np.ndarray | None, count: int, folds: int) -> np.ndarray:
    """Per sample, the largest group it may be in: its class's share of one fold (at least 2)."""
    if labels is None:
        return np.full(count, max(2, count // folds))
    labels = np.asarray(labels)
    return np.maximum(2, np.bincount(labels)[labels] // folds)


def _similarities(unit: torch.Tensor, start: int) -> torch.Tensor:
    """Cosine similarities of rows start..start+BLOCK with every row, a row's own set to -2."""
    block = unit[start:start + BLOCK] @ unit.T
    block[torch.arange(len(block)), torch.arange(start, start + len(block))] = -2.0
    return block


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def stratified_folds(labels: np.ndarray, folds: int = FOLDS, seed: int = 0,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """Fold index per sample. Groups (default: each sample its own) go whole into one fold, largest first,
    each to the fold holding fewest of its class so far (then fewest in all): every fold keeps the class
    proportions of the whole as far as the groups allow, and folds stay equal in size."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    members = _group_members(groups)
    rng = np.random.default_rng(seed)
    order = sorted(rng.permutation(len(members)), key=lambda g: -len(members[g]))
    classes = int(labels.max()) + 1 if len(labels) else 1
    held = np.zeros((folds, classes), dtype=np.int64)
    assignment = np.empty(len(labels), dtype=np.int64)
    for group in order:
        rows = members[group]
        label = int(np.bincount(labels[rows]).argmax())
        fold = min(range(folds), key=lambda f: (held[f, label], held[f].sum()))
        assignment[rows] = fold
        held[fold] += np.bincount(labels[rows], minlength=classes)
    return assignment


def _group_members(groups: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def usable_folds(labels: np.ndarray, wanted: int = FOLDS, groups: np.ndarray | None = None) -> int:
    """As many folds as the rarest class allows (groups of it, when samples are grouped), 2 to `wanted`:
    each fold should hold out and train on every class."""
    labels = np.asarray(labels)
    if not len(labels):
        return 2
    if groups is None:
        counts = np.bincount(labels)
    else:
        first = np.unique(np.asarray(groups), return_index=True)[1]
        counts = np.bincount(labels[first], minlength=int(labels.max()) + 1)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    return max(2, min(wanted, smallest))
