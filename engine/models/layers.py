"""The model as a tree of named modules, and the freeze/unfreeze operations the user drives from it.

A node's trainable state is read from its parameters' `requires_grad`, never stored twice, so the tree,
the GUI checkboxes and what the optimizer trains cannot disagree.

Groups come from timm (`group_matcher`, `group_parameters`). timm's `freeze`/`unfreeze` are not used:
they swap BatchNorm layers for FrozenBatchNorm2d modules and back, which would replace the modules this
tree (and the window's checkboxes) hold on every click; frozen BatchNorm is kept in eval mode instead
(`frozen_batchnorm_to_eval`), which computes the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from engine.models.presets import FREEZE_PRESETS


@dataclass(eq=False)
class LayerNode:
    """One module: its dotted name ('' for the whole model), type, parameters and children."""

    name: str
    type_name: str
    params: list[nn.Parameter]
    children: list["LayerNode"] = field(default_factory=list)
    parent: "LayerNode | None" = None

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.name else "model"

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.params if p.requires_grad)

    @property
    def trainable(self) -> bool | None:
        """True when every parameter trains, False when none does, None when mixed (tri-state)."""
        flags = {p.requires_grad for p in self.params}
        if len(flags) == 1:
            return flags.pop()
        return None if flags else False

    def walk(self) -> Iterator["LayerNode"]:
        yield self
        for child in self.children:
            yield from child.walk()


class LayerTree:
    """Plain-Python view of a model's module tree with freeze operations and change listeners."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.root = self._build("", model, None)
        self._by_name = {node.name: node for node in self.root.walk()}
        self.listeners: list[Callable[[list[str]], None]] = []

    def _build(self, name: str, module: nn.Module, parent: LayerNode | None) -> LayerNode:
        node = LayerNode(name, type(module).__name__, list(module.parameters()), parent=parent)
        for child_name, child in module.named_children():
            if any(True for _ in child.parameters()):
                full = f"{name}.{child_name}" if name else child_name
                node.children.append(self._build(full, child, node))
        return node

    def node(self, name: str) -> LayerNode:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r}") from None

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Freeze or unfreeze a whole subtree; listeners hear which nodes may have changed."""
        for param in self.node(name).params:
            param.requires_grad_(trainable)
        self._notify()

    def apply_preset(self, preset: str, n_blocks: int = 2) -> None:
        """'head' trains only the classifier, 'last-n' the head plus the last n blocks, 'none' freezes nothing."""
        if preset not in FREEZE_PRESETS:
            raise ValueError(f"unknown freeze preset {preset!r}; choose one of {', '.join(FREEZE_PRESETS)}")
        trainable = set(trainable_param_names(self.model, preset, n_blocks))
        for param_name, param in self.model.named_parameters():
            param.requires_grad_(param_name in trainable)
        self._notify()

    def counts(self) -> tuple[int, int]:
        """(total, trainable) parameter counts of the whole model."""
        return self.root.num_params, self.root.num_trainable

    def frozen_parameter_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if not p.requires_grad]

    def freeze_parameters(self, frozen: list[str]) -> None:
        """Restore a saved freeze state (parameter names not listed train)."""
        frozen_set = set(frozen)
        for param_name, param in self.model.named_parameters():
            param.requires_grad_(param_name not in frozen_set)
        self._notify()

    def _notify(self) -> None:
        names = list(self._by_name)
        for listener in list(self.listeners):
            listener(names)


def block_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped stem → blocks → head, using timm's `group_matcher` where the model has one.

    Without a matcher every top-level child is one group, the last one taken as the head.
    """
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        return [list(names) for _, names in sorted(grouped.items())]
    groups: dict[str, list[str]] = {}
    for param_name, _ in model.named_parameters():
        groups.setdefault(param_name.split(".")[0], []).append(param_name)
    return list(groups.values())


def head_parameter_names(model: nn.Module) -> list[str]:
    """Parameters of the classifier: the last group of `block_groups`."""
    return block_groups(model)[-1]


def trainable_param_names(model: nn.Module, preset: str, n_blocks: int = 2) -> list[str]:
    groups = block_groups(model)
    if preset == "none":
        return [name for group in groups for name in group]
    if preset == "head":
        return list(groups[-1])
    kept = groups[-(n_blocks + 1):] if n_blocks > 0 else groups[-1:]
    return [name for group in kept for name in group]


def frozen_batchnorm_to_eval(model: nn.Module) -> int:
    """Keep running statistics of frozen BatchNorm layers fixed; call after every `model.train()`.

    Returns how many layers were switched, which tests use to check the rule is applied.
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
                switched += 1
    return switched


def feature_stages(model: nn.Module) -> list[nn.Module] | None:
    """`forward_features` as modules applied one after another, for the timm families where that is
    exactly what it does (EfficientNet, including Lite, and ResNet); None for other models."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet
    if isinstance(model, EfficientNet):
        return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks,
                nn.Sequential(model.conv_head, model.bn2)]
    if isinstance(model, ResNet):
        return [nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool),
                model.layer1, model.layer2, model.layer3, model.layer4]
    return None


class SuffixOnActivations(nn.Module):
    """The stages after the freeze boundary, then the model's own head, on cached activations.

    The whole model is a submodule so that train()/eval() reach its head: timm's head dropout reads
    `model.training`. Parameters are shared, so training lands in the model's checkpoint.
    """

    def __init__(self, model: nn.Module, boundary: int):
        super().__init__()
        self.model = model
        self.stages = nn.ModuleList(feature_stages(model)[boundary:])

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        x = activations
        for stage in self.stages:
            x = stage(x)
        return self.model.forward_head(x)
