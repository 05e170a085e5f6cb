"""Near-duplicates within and across splits: the frozen features bring each sample's nearest neighbours
together (exact search, blockwise: fine to ~50k samples), and the modality confirms a pair by what the
samples themselves hold (images: aligned fine detail, engine.data.pixels; texts: their characters), so a
look-alike is not reported as a copy. A near-duplicate across splits is leakage: the test figure counts a
sample the model has, in effect, trained on.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.training.folds import BLOCK

NEIGHBOURS = 5          # pairs checked per sample: its 5 nearest (planted copies: 99 % among the 3 nearest)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows centred on the mean of the finite ones and scaled to length 1 (NaN rows become zeros), so a
    cosine is about what differs between samples."""
    features = features.float()
    finite = torch.isfinite(features).all(1)
    centred = torch.where(finite[:, None], features - features[finite].mean(0), 0.0)
    return torch.nn.functional.normalize(centred, dim=1)


def nearest(unit: torch.Tensor, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine [N, count], index [N, count]) of each row's nearest other rows, closest first."""
    count = min(count, len(unit) - 1)
    values, indices = [], []
    for start in range(0, len(unit), BLOCK):
        block = unit[start:start + BLOCK] @ unit.T
        block[torch.arange(len(block)), torch.arange(start, start + len(block))] = -2.0
        top = block.topk(count, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values).numpy(), torch.cat(indices).numpy()


def candidate_pairs(index: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """[P, 2] pairs (i < j) of a usable sample and one of its nearest usable neighbours, each once."""
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    pairs = np.stack([rows, index.ravel()], 1)
    pairs = pairs[usable[pairs[:, 0]] & usable[pairs[:, 1]]]
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def groups_of(count: int, pairs: np.ndarray) -> np.ndarray:
    """Group index per sample: samples linked by a chain of near-duplicate pairs share one."""
    parent = np.arange(count)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.unique([root(i) for i in range(count)], return_inverse=True)[1]
