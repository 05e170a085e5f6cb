"""An ensemble of classifiers that see the same input (an image, or a text's tokens): the mean of their
class probabilities.

Averaging the probabilities of independently trained networks is the standard ensemble (Lakshminarayanan
et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017). The
module returns the log of that mean, so the softmax that every consumer applies (evaluation, `predict`,
the ONNX file's users) gives the mean probability itself: one input, one output, like any single model,
and an exported graph holds the whole predictor. Each member keeps its own test-time flip inside.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import SuffixOnActivations, feature_stages
from engine.models.predictor import tta_setting

MEMBER_FIELDS = ("backbone", "arch", "head", "tta")
"""What a checkpoint records of each member, beside the preprocessing they share."""


class ProbabilityAverage(nn.Module):
    """log(mean_k softmax(member_k(x) / T_k)): the ensemble's logits, from its members' calibrated
    probabilities (T_k: each member's temperature, 1 for a member from before calibration). A member with
    `flip` predicts with the mean of its logits on x and on x mirrored left-right (as
    `predictor.MirrorAveraged`).

    The leading stages that every member holds with equal weights (the frozen pretrained layers that
    last-blocks and head-only runs of one backbone share) run once per view and feed every member's own
    remaining stages: the same numbers as running each member whole, for a fraction of the time.
    """

    def __init__(self, members: list[nn.Module], flips: list[bool], temperatures: list[float] | None = None):
        super().__init__()
        if len(members) < 2 or len(flips) != len(members):
            raise ValueError("an ensemble needs at least two members, each with its flip setting")
        self.members = nn.ModuleList(members)
        self.flips = [bool(flip) for flip in flips]
        self.temperatures = [float(t) for t in (temperatures or [1.0] * len(members))]
        self.shared = shared_stages(members)
        self.prefix = nn.Sequential(*feature_stages(members[0])[:self.shared]) if self.shared else None
        self.suffixes = nn.ModuleList(SuffixOnActivations(member, self.shared)
                                      for member in members) if self.shared else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x, x.flip(3)] if any(self.flips) else [x]
        if self.prefix is not None:
            inputs, nets = [self.prefix(view) for view in views], list(self.suffixes)
        else:
            inputs, nets = views, list(self.members)
        probabilities = []
        for net, flip, temperature in zip(nets, self.flips, self.temperatures):
            logits = (net(inputs[0]) + net(inputs[1])) / 2 if flip else net(inputs[0])
            probabilities.append((logits.float() / temperature).softmax(-1))
        return torch.stack(probabilities).mean(0).clamp_min(1e-12).log()


def shared_stages(models: list[nn.Module]) -> int:
    """How many leading stages (`feature_stages`) all `models` hold with equal weights and buffers."""
    stage_lists = [feature_stages(model) for model in models]
    if any(stages is None for stages in stage_lists) or len({type(m) for m in models}) > 1:
        return 0
    count = 0
    for group in zip(*stage_lists):
        first = group[0].state_dict()
        if not all(_same_tensors(first, stage.state_dict()) for stage in group[1:]):
            break
        count += 1
    return count


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def ensemble_module(bare_members: list[nn.Module], member_metas: list[dict]) -> ProbabilityAverage:
    """The ensemble of bare models, each with its own test-time flip per its metadata."""
    return ProbabilityAverage(bare_members, [tta_setting(meta) == "flip" for meta in member_metas],
                              [float(meta.get("temperature", 1.0)) for meta in member_metas])


def is_ensemble(meta: dict) -> bool:
    return bool(meta.get("ensemble"))


def describe_members(meta: dict) -> str:
    """'2 models: efficientnet_lite0 (last 2 blocks trained), efficientnet_lite0 (...)' for cards and notes."""
    members = meta.get("ensemble") or []
    parts = [f"{m['backbone']}" + (" with test-time flip" if m.get("tta") == "flip" else "") for m in members]
    return f"the mean probability of {len(members)} models: {', '.join(parts)}"
