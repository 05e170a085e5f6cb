"""Classifier heads: the timm model's own linear classifier, or a small MLP in its place.

The head replaces the module `model.get_classifier()` returns, wherever the architecture keeps it
(`classifier` in EfficientNet and MobileNet, `fc` in ResNet, `head.fc` in ConvNeXt, `head` in ViT), so
timm's `forward_head`, `get_classifier()` and `group_matcher` keep working: the MLP's parameters are not
matched by any of the backbone's groups and fall into the last, the head group, exactly as the linear
classifier's do. Freezing 'head' therefore trains the whole MLP, and the feature cache still applies.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from engine.models.presets import HEADS

HIDDEN_FEATURES = 512
DEFAULT_DROPOUT = 0.2


class MlpHead(nn.Sequential):
    """Linear(D, H) → GELU → Dropout(p) → Linear(H, C).

    H = min(512, D). One hidden layer lets the head combine pooled features non-linearly, which a
    linear probe cannot, while staying small enough for datasets of a few hundred images: 0.66M
    parameters on EfficientNet-Lite0's 1280 features, a millisecond per batch on cached features. A hidden
    layer wider than the features it reads (ViT-Tiny's 192, ConvNeXt-Atto's 320) would add parameters
    and over-fitting, not information, so H never exceeds D.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = DEFAULT_DROPOUT,
                 hidden: int = HIDDEN_FEATURES):
        hidden = min(hidden, in_features)
        super().__init__(OrderedDict(hidden=nn.Linear(in_features, hidden), act=nn.GELU(),
                                     drop=nn.Dropout(dropout), out=nn.Linear(hidden, num_classes)))
        self.in_features, self.out_features = in_features, num_classes


def make_head(kind: str, in_features: int, num_classes: int, dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """A fresh head from D pooled features to C logits (PyTorch's default initialisation)."""
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        return MlpHead(in_features, num_classes, dropout)
    raise ValueError(f"head must be one of {', '.join(HEADS)}, not {kind!r}")


def head_kind(model: nn.Module) -> str:
    """'mlp' or 'linear': read from the model itself, so a checkpoint's metadata always matches its weights."""
    return "mlp" if isinstance(model.get_classifier(), MlpHead) else "linear"


def head_dropout(model: nn.Module) -> float:
    """The MLP's hidden dropout: the model's own head dropout (timm `drop_rate`) when it has one, else 0.2
    (timm leaves it at 0 for every backbone of the catalog)."""
    return float(getattr(model, "drop_rate", 0.0) or 0.0) or DEFAULT_DROPOUT


def set_head(model: nn.Module, kind: str) -> nn.Module:
    """Put a fresh head of `kind` in place of the model's classifier; a head already of that kind is kept.

    Only the classifier changes: timm's own pooling and head dropout (in `forward_head`) stay before it.
    """
    classifier = model.get_classifier()
    if head_kind(model) == kind:
        return model
    head = make_head(kind, classifier.in_features, classifier.out_features, head_dropout(model))
    head.train(classifier.training)
    _replace_module(model, classifier, head)
    return model


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, module in model.named_modules():
        if module is old:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, new)
            return
    raise ValueError(f"{type(model).__name__} does not hold its classifier as a submodule")
