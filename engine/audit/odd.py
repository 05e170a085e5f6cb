"""Samples far from every other: by the frozen features, a sample whose 5th nearest neighbour is further
than Tukey's far-out fence (third quartile + 3 interquartile ranges) of that distance over the dataset. A
photo of something else, a text in another language or a scan of the wrong side end up there."""
from __future__ import annotations

import numpy as np

OUTLIER_NEIGHBOUR = 5
FENCE = 3.0


def far_from_all(similarity: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Indices of the outliers, given each sample's cosines to its nearest neighbours [N, >= 5]."""
    if similarity.shape[1] < OUTLIER_NEIGHBOUR or usable.sum() < 20:
        return np.array([], dtype=np.int64)
    distance = 1.0 - similarity[:, OUTLIER_NEIGHBOUR - 1]
    q1, q3 = np.percentile(distance[usable], [25, 75])
    return np.flatnonzero(usable & (distance > q3 + FENCE * (q3 - q1)))
