"""An ensemble of classifiers that see the same input: the mean of their class probabilities.

Averaging the probabilities of independently trained networks is the standard ensemble (Lakshminarayanan
et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017). The
module returns the log of that mean, so the softmax that every consumer applies (evaluation, `predict`,
the ONNX file's users) gives the mean probability itself: one input, one output, like any single model,
and an exported graph holds the whole predictor. Each member keeps its own test-time flip inside.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.predictor import predictor

MEMBER_FIELDS = ("backbone", "arch", "head", "tta")
"""What a checkpoint records of each member, beside the preprocessing they share."""


class ProbabilityAverage(nn.Module):
    """log(mean_k softmax(member_k(x))): the ensemble's logits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([member(x).float().softmax(-1) for member in self.members]).mean(0)
        return probabilities.clamp_min(1e-12).log()


def ensemble_module(bare_members: list[nn.Module], member_metas: list[dict]) -> ProbabilityAverage:
    """The ensemble of bare models, each behind its own predictor (test-time flip per its metadata)."""
    return ProbabilityAverage([predictor(model, meta) for model, meta in zip(bare_members, member_metas)])


def bare_members(ensemble: ProbabilityAverage) -> list[nn.Module]:
    """The members without their test-time flip wrappers (what Grad-CAM and the checkpoint hold)."""
    return [getattr(member, "model", member) for member in ensemble.members]


def is_ensemble(meta: dict) -> bool:
    return bool(meta.get("ensemble"))


def describe_members(meta: dict) -> str:
    """'2 models: efficientnet_lite0 (last 2 blocks trained), efficientnet_lite0 (...)' for cards and notes."""
    members = meta.get("ensemble") or []
    parts = [f"{m['backbone']}" + (" with test-time flip" if m.get("tta") == "flip" else "") for m in members]
    return f"the mean probability of {len(members)} models: {', '.join(parts)}"
