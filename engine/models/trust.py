"""When to trust a prediction: calibrated probabilities and a score for inputs unlike anything taught.

Calibration is temperature scaling (Guo et al., 2017, "On calibration of modern neural networks"): one
number T, fitted on the validation split by minimising the negative log-likelihood of softmax(logits / T).
It changes no prediction, only how sure each one says it is.

The "unknown" score is higher for inputs less like the training data. Each scorer is a small module of
(features, calibrated logits) -> score, so a checkpoint's predictor and an exported ONNX graph compute it
from what the model computes anyway; the scorers are the published ones:
- "msp": 1 - the largest softmax probability (Hendrycks & Gimpel, 2017);
- "energy": -logsumexp(logits) (Liu et al., 2020);
- "mahalanobis": the smallest Mahalanobis distance to a class mean, one shared covariance (Lee et al., 2018),
  shrunk towards a multiple of the identity (Ledoit & Wolf, 2004) so a few hundred samples of
  1280 features give a usable inverse;
- "relative-mahalanobis": that distance less the distance to one Gaussian of all training features (Ren et
  al., 2021, "A simple fix to Mahalanobis distance for improving near-OOD detection");
- "knn": 1 - the cosine similarity to the k-th nearest training sample (Sun et al., 2022);
- "mean:a+b" / "max:a+b": the mean or the largest of several of those, each standardised on the known
  validation inputs.
The threshold is the score that accepts a stated share of the validation inputs (95 % by default).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engine.core.confidence import (ACCEPT_GRID, DEFAULT_ACCEPT, ECE_BINS, accepted_share,  # noqa: F401
                                    auroc, expected_calibration_error, reliability, threshold_at,
                                    threshold_grid)

DEFAULT_METHOD = "max:msp+knn"
"""The larger of the two standardised scores: an input is unknown when the model is unsure of its class
or when it is far from every training sample. Chosen on held-out-class experiments (bench/ood_study.py,
bench/RESULTS.md): maximum softmax alone misses other domains (AUROC 0.01-0.70 far), k-NN alone is the
weaker near, their mean lets a sure but far input through (ELPV scans vs photos: 0.37 far)."""
KNN_K = 10
KNN_BANK = 2048            # most training samples a k-NN scorer keeps (seeded), stored as float16
STATE_PREFIX = "trust."    # a checkpoint's tensors of the scorer, beside the model's own
SCALE_FLOOR = 1e-3         # the least spread a fused score is divided by (a sure model's max-softmax has
                           # almost none: float noise must not become a jump in the score)


# -- calibration --------------------------------------------------------------------------------------
def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in (0.05, 20) that minimises the mean NLL of softmax(logits / T) on (logits, labels) plus
    (log T)^2 / 2N: a log-normal prior at T = 1 worth one sample, so a small validation split without a
    mistake (whose NLL only falls as T -> 0) does not make every answer "100 %". 1 without data."""
    logits, labels = logits.detach().double().clone(), labels.detach().long().clone()   # not inference tensors
    if len(labels) < 2:
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels) + log_t.square().sum() / (2 * len(labels))
        loss.backward()
        return loss
    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    return float(min(max(temperature, 0.05), 20.0)) if math.isfinite(temperature) else 1.0


# -- scorers --------------------------------------------------------------------------------------------
class MaxSoftmax(nn.Module):
    method = "msp"

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - logits.softmax(-1).amax(-1)


class Energy(nn.Module):
    method = "energy"

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(logits, dim=-1)


class Mahalanobis(nn.Module):
    """min over classes of |W (f - mean_c)|^2, W the inverse square root of the shrunk shared covariance;
    with `relative`, less |W0 (f - mean_0)|^2 of one Gaussian of all training features."""

    def __init__(self, means: torch.Tensor, whitening: torch.Tensor, background_mean: torch.Tensor | None = None,
                 background_whitening: torch.Tensor | None = None):
        super().__init__()
        self.relative = background_mean is not None
        self.method = "relative-mahalanobis" if self.relative else "mahalanobis"
        self.register_buffer("whitening", whitening.float())
        self.register_buffer("means", (means.float() @ whitening.float()))       # [C, D] in whitened space
        if self.relative:
            self.register_buffer("background_whitening", background_whitening.float())
            self.register_buffer("background_mean", (background_mean.float() @ background_whitening.float()))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        projected = features.float() @ self.whitening                         # [B, D]
        distances = ((projected[:, None, :] - self.means[None]) ** 2).sum(-1)  # [B, C]
        score = distances.amin(-1)
        if self.relative:
            background = ((features.float() @ self.background_whitening - self.background_mean) ** 2).sum(-1)
            score = score - background
        return score


class NearestNeighbours(nn.Module):
    """1 - cosine similarity to the k-th nearest of a bank of unit-length training features."""

    method = "knn"

    def __init__(self, bank: torch.Tensor, k: int = KNN_K):
        super().__init__()
        self.register_buffer("bank", nn.functional.normalize(bank.float(), dim=-1).half())
        self.k = int(min(k, len(bank)))

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        unit = nn.functional.normalize(features.float(), dim=-1)
        similarity = unit @ self.bank.float().T
        return 1.0 - similarity.topk(self.k, dim=-1).values[:, -1]


class Fused(nn.Module):
    """The mean or the largest (`combine`) of several scores, each standardised (centre, scale) on the
    known validation inputs."""

    def __init__(self, parts: list[nn.Module], centres: list[float], scales: list[float], combine: str = "mean"):
        super().__init__()
        self.combine = combine
        self.parts = nn.ModuleList(parts)
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32))
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.method = f"{combine}:" + "+".join(part.method for part in parts)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        standardised = torch.stack([(part(features, logits) - self.centres[index]) / self.scales[index]
                                    for index, part in enumerate(self.parts)], dim=-1)
        return standardised.amax(-1) if self.combine == "max" else standardised.mean(-1)


def shrunk_covariance(centred: torch.Tensor, shrinkage: float | None = None) -> tuple[torch.Tensor, float]:
    """(covariance, shrinkage): Ledoit-Wolf, the sample covariance of `centred` [N, D] shrunk towards
    mu * I by the estimated best amount (sklearn.covariance.ledoit_wolf's formula), or by `shrinkage`."""
    x = centred.double()
    n, d = x.shape
    sample = x.T @ x / n
    mu = torch.trace(sample) / d
    if shrinkage is None:
        delta = ((sample - mu * torch.eye(d, dtype=x.dtype)) ** 2).sum() / d
        beta = (((x ** 2).T @ (x ** 2)) / n - sample ** 2).sum() / (d * n)
        shrinkage = float(torch.clamp(beta / delta.clamp_min(1e-12), 0.0, 1.0)) if delta > 0 else 1.0
    return (1 - shrinkage) * sample + shrinkage * mu * torch.eye(d, dtype=x.dtype), shrinkage


def inverse_sqrt(covariance: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(covariance)
    values = values.clamp_min(values.max() * 1e-6)
    return (vectors / values.sqrt()) @ vectors.T


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor, classes: int, relative: bool = False) -> Mahalanobis:
    features, labels = features.double(), labels.long()
    present = [c for c in range(classes) if (labels == c).any()]
    means = torch.stack([features[labels == c].mean(0) for c in present])
    centred = features - means[torch.searchsorted(torch.tensor(present), labels)]
    covariance, shrinkage = shrunk_covariance(centred)
    whitening = inverse_sqrt(covariance)
    if not relative:
        return Mahalanobis(means, whitening)
    background = features.mean(0)      # shrunk as much as the classes' covariance, so the two distances compare
    return Mahalanobis(means, whitening, background,
                       inverse_sqrt(shrunk_covariance(features - background, shrinkage)[0]))


def knn_bank(features: torch.Tensor, limit: int = KNN_BANK, seed: int = 0) -> torch.Tensor:
    """At most `limit` rows of `features`, a seeded random choice (so each class keeps about its share)."""
    if len(features) <= limit:
        return features
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(features), generator=generator)[:limit]
    return features[order.sort().values]


def fit_scorer(method: str, features: torch.Tensor, labels: torch.Tensor, classes: int, seed: int = 0) -> nn.Module:
    """A scorer of `method` from the training split's features and labels."""
    if method == "msp":
        return MaxSoftmax()
    if method == "energy":
        return Energy()
    if method in ("mahalanobis", "relative-mahalanobis"):
        return fit_mahalanobis(features, labels, classes, relative=method == "relative-mahalanobis")
    if method == "knn":
        return NearestNeighbours(knn_bank(features, seed=seed))
    raise ValueError(f"unknown score {method!r}")


def fuse(parts: list[nn.Module], known_features: torch.Tensor, known_logits: torch.Tensor,
         combine: str = "mean") -> Fused:
    """`parts` combined ("mean" or "max") after standardising each on known inputs (median and interquartile
    range, at least SCALE_FLOOR)."""
    centres, scales = [], []
    with torch.no_grad():
        for part in parts:
            scores = part(known_features, known_logits).double()
            q1, q2, q3 = torch.quantile(scores, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
            centres.append(float(q2))
            scales.append(max(float(q3 - q1), SCALE_FLOOR))
    return Fused(parts, centres, scales, combine)


def fit_default(features: torch.Tensor | None, labels: torch.Tensor, classes: int, known_features: torch.Tensor | None,
                known_logits: torch.Tensor, seed: int = 0) -> nn.Module:
    """DEFAULT_METHOD from the training features and the known (validation) inputs; maximum softmax alone
    for a model without features of its own (an ensemble)."""
    if features is None or known_features is None or not len(features):
        return MaxSoftmax()
    parts = [MaxSoftmax(), NearestNeighbours(knn_bank(features, seed=seed))]
    return fuse(parts, known_features, known_logits, combine="max")


def checkpoint_scorer(meta: dict, state: dict[str, torch.Tensor]) -> nn.Module | None:
    """The unknown scorer a checkpoint holds (its metadata and `trust.*` tensors), None for one without."""
    trust = meta.get("trust") or {}
    return rebuild_scorer(trust["method"], state, trust.get("k", KNN_K)) if trust.get("method") else None


def rebuild_scorer(method: str, state: dict[str, torch.Tensor], k: int = KNN_K) -> nn.Module:
    """The scorer a checkpoint saved (`method` and its tensors, without STATE_PREFIX)."""
    if ":" in method:
        combine, names = method.split(":", 1)
        parts = [rebuild_scorer(name, {key[len(f"parts.{i}."):]: value for key, value in state.items()
                                       if key.startswith(f"parts.{i}.")}, k)
                 for i, name in enumerate(names.split("+"))]
        return Fused(parts, state["centres"].tolist(), state["scales"].tolist(), combine)
    if method == "msp":
        return MaxSoftmax()
    if method == "energy":
        return Energy()
    if method == "knn":
        scorer = NearestNeighbours(state["bank"].float(), k)
        scorer.bank.copy_(state["bank"])
        return scorer
    if method in ("mahalanobis", "relative-mahalanobis"):
        scorer = Mahalanobis.__new__(Mahalanobis)
        nn.Module.__init__(scorer)
        scorer.relative = method == "relative-mahalanobis"
        scorer.method = method
        for name, value in state.items():
            scorer.register_buffer(name, value.float())
        return scorer
    raise ValueError(f"unknown score {method!r}")
