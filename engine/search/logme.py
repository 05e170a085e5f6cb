"""LogME: how well a pretrained model's frozen features fit the labels, before any training.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021. For each class, the one-hot target y (N) is modelled as a Bayesian linear regression on the
features F (N x D): weights m ~ N(0, 1/alpha I), noise ~ N(0, 1/beta I). The evidence (marginal
likelihood) p(y | F, alpha, beta) is maximised over alpha and beta by the paper's fixed-point iteration;
the score is the maximised log evidence per sample, averaged over classes. Higher is better; it ranks
backbones for one dataset (values are not comparable across datasets).

Everything goes through one thin SVD of F, so the cost is O(N D min(N, D)) once, then O(min(N, D)) per
iteration: a second or two for thousands of images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITERATIONS = 100
TOLERANCE = 1e-3        # relative change of alpha/beta at which the fixed point counts as reached


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence for one target: log p(y | F, alpha, beta) / N and where it was reached."""

    log_evidence: float
    alpha: float
    beta: float


def logme_score(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of features [N, D] for integer class labels [N]: mean over classes of the
    per-sample log evidence of the one-vs-rest target."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels) or len(features) < 2:
        raise ValueError("LogME needs features [N, D] and N labels, N >= 2")
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    classes = np.unique(labels)
    return float(np.mean([maximize_evidence(u, singular, (labels == c).astype(np.float64),
                                            features.shape[1]).log_evidence for c in classes]))


def maximize_evidence(u: np.ndarray, singular: np.ndarray, y: np.ndarray, dim: int) -> Evidence:
    """Fixed-point iteration of the paper (Algorithm 1) in the SVD basis F = U diag(s) V^T.

    With sigma_i = s_i^2 the eigenvalues of F^T F (zero beyond the rank), the posterior mean is
    m = beta (alpha I + beta F^T F)^-1 F^T y, gamma = sum beta sigma_i / (alpha + beta sigma_i), and the
    updates are alpha = gamma / |m|^2, beta = (N - gamma) / |F m - y|^2.
    """
    n = len(y)
    sigma = singular ** 2
    projected = u.T @ y                                   # U^T y: y's coordinates in F's column space
    outside = float(y @ y - projected @ projected)        # the part of |y|^2 no weights can reach
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        shrink = beta * sigma / (alpha + beta * sigma)    # per direction: how much of y the fit keeps
        gamma = float(shrink.sum())
        weight_norm = float(np.sum((beta * singular / (alpha + beta * sigma) * projected) ** 2))   # |m|^2
        residual = float(np.sum(((1 - shrink) * projected) ** 2)) + outside                     # |Fm - y|^2
        new_alpha = gamma / max(weight_norm, 1e-12)
        new_beta = max(n - gamma, 1e-12) / max(residual, 1e-12)
        converged = abs(new_alpha - alpha) <= TOLERANCE * alpha and abs(new_beta - beta) <= TOLERANCE * beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    return Evidence(log_evidence(sigma, projected, outside, n, dim, alpha, beta) / n, alpha, beta)


def log_evidence(sigma: np.ndarray, projected: np.ndarray, outside: float, n: int, dim: int,
                 alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta), equation (2) of the paper, in the SVD basis.

    = D/2 log alpha + N/2 log beta - 1/2 sum_i log(alpha + beta sigma_i) - beta/2 |Fm - y|^2
      - alpha/2 |m|^2 - N/2 log 2 pi, where directions beyond the rank (sigma = 0) add log alpha each.
    """
    denominator = alpha + beta * sigma
    weight_norm = float(np.sum((beta * np.sqrt(sigma) / denominator * projected) ** 2))
    residual = float(np.sum((alpha / denominator * projected) ** 2)) + outside
    log_det = float(np.sum(np.log(denominator))) + (dim - len(sigma)) * np.log(alpha)
    return (dim / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * residual
            - alpha / 2 * weight_norm - n / 2 * np.log(2 * np.pi))
