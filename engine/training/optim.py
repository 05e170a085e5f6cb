"""The optimisation recipe of a fit: seeding, parameter groups with layer-wise learning-rate decay, the
optimizer, the learning-rate schedule and class weights for balancing.

Layer groups come from timm's `group_matcher` (engine.models.layers.block_groups). timm's own
`param_groups_layer_decay` is not used: it splits blocks into their sub-blocks (`coarse=False`), which
would change the per-block rates the defaults were measured with.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import nn

from engine.models.layers import block_groups
from engine.training.config import TrainConfig


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def param_groups(model: nn.Module, lr: float, layer_decay: float, weight_decay: float) -> list[dict]:
    """One optimizer group per block group, lr shrinking by `layer_decay` with each step from the head.

    Biases and norm weights (1-D tensors) get no weight decay, as is usual for fine-tuning.
    """
    named = dict(model.named_parameters())
    groups = block_groups(model)
    result = []
    for depth, names in enumerate(reversed(groups)):
        scale = layer_decay ** depth
        for decay, chosen in ((weight_decay, [n for n in names if named[n].ndim > 1]),
                              (0.0, [n for n in names if named[n].ndim <= 1])):
            params = [named[n] for n in chosen if named[n].requires_grad]
            if params:
                result.append({"params": params, "lr": lr * scale, "weight_decay": decay, "lr_scale": scale})
    return result


def make_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int,
                  epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, steps_per_epoch * epochs)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=0.25)
    warmup = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)
