"""Predicting what a candidate will cost before starting it, from a measured training step."""
from __future__ import annotations

import time

import torch
from torch import nn

from engine.models.catalog import create_model
from engine.models.layers import LayerTree, SuffixOnActivations, feature_stages, frozen_batchnorm_to_eval
from engine.training.caches import plan_cache
from engine.training.config import TrainConfig


def suffix_step_seconds(config: TrainConfig, classes: int, repeats: int = 2) -> float:
    """Seconds for one training step (forward, backward, update) of what `config` trains, on cached
    activations when it trains the last blocks, else on images; the best of `repeats` after a warm-up."""
    bundle = create_model(config.backbone, classes, weights="random", input_size=config.image_size,
                          head=config.head)
    model = bundle.model.to(memory_format=torch.channels_last)
    LayerTree(model).apply_preset(config.freeze, config.freeze_blocks)
    size = bundle.preprocessing.input_size
    images = torch.randn(config.batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    plan = plan_cache(model, config.train_frozen_bn)
    if plan.kind == "activations":
        with torch.inference_mode():
            activations = nn.Sequential(*feature_stages(model)[:plan.boundary])(images)
        inputs = activations.clone()       # cloned outside inference mode: a tensor autograd may save
        net = SuffixOnActivations(model, plan.boundary)
    else:
        inputs, net = images, model
    targets = torch.randint(0, classes, (config.batch_size,))
    net.train()
    frozen_batchnorm_to_eval(net)
    return best_step_seconds(net, model, inputs, targets, repeats)


def best_step_seconds(net: nn.Module, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      repeats: int = 2, lr: float = 1e-4) -> float:
    """The fastest of `repeats` training steps (forward, backward, AdamW update of `model`'s trainable
    parameters) of `net` on one batch, after a warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    best = float("inf")
    for attempt in range(repeats + 1):
        began = time.perf_counter()
        loss = nn.functional.cross_entropy(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if attempt:
            best = min(best, time.perf_counter() - began)
    return best
