"""What a trained model predicts with: the model itself, or with test-time flip the mean of its logits on
the image and on its mirror image.

One function, `predictor`, decides it from a checkpoint's metadata or a training config, and the trainer's
evaluation, `predict` and the ONNX export all call it, so the accuracy a run reports is the accuracy of
the file a user exports. The mirror is taken of the preprocessed tensor (`x.flip(3)`), inside the
module, so an exported graph holds the whole predictor: one input, one output, nothing for the caller
to add. Grad-CAM explains the bare model.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.presets import TEST_TIME_AUGMENTATIONS



class MirrorAveraged(nn.Module):
    """(model(x) + model(x mirrored left-right)) / 2 for an NCHW batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)      # wrapping changes no mode (predict_logits restores the wrapper's)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(x.flip(3))) / 2


def tta_setting(meta_or_config) -> str:
    """'none' or 'flip' from checkpoint metadata (a dict; older checkpoints have no key: 'none') or a
    config object with a `tta` attribute."""
    if isinstance(meta_or_config, dict):
        tta = meta_or_config.get("tta", "none")
    else:
        tta = getattr(meta_or_config, "tta", "none")
    if tta not in TEST_TIME_AUGMENTATIONS:
        raise ValueError(f"tta must be one of {', '.join(TEST_TIME_AUGMENTATIONS)}, not {tta!r}")
    return tta


def predictor(model: nn.Module, meta_or_config) -> nn.Module:
    """The module whose logits are the model's predictions: `model`, or `MirrorAveraged(model)`."""
    return MirrorAveraged(model) if tta_setting(meta_or_config) == "flip" else model


class Trusted(nn.Module):
    """What `predict` and an exported file compute: (calibrated logits, probabilities, unknown score), or
    the first two for a run without a score (from before calibration). The logits are the predictor's
    divided by the run's temperature; the score reads the pooled features the classifier reads (averaged
    over the two views with test-time flip) and the calibrated logits (engine.models.trust)."""

    def __init__(self, model: nn.Module, meta: dict, scorer: nn.Module | None = None):
        super().__init__()
        trust = meta.get("trust") or {}
        self.model = model
        self.flip = tta_setting(meta) == "flip"
        self.temperature = float(trust.get("temperature", 1.0))
        self.scorer = scorer
        self.own_features = hasattr(model, "forward_features") and hasattr(model, "get_classifier")
        self.train(model.training)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("logits", "probabilities", "ood_score") if self.scorer is not None else ("logits", "probabilities")

    def forward(self, x: torch.Tensor):
        if self.own_features:
            features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            classifier = self.model.get_classifier()
            logits = classifier(features)
            if self.flip:
                mirrored = self.model.forward_head(self.model.forward_features(x.flip(3)), pre_logits=True)
                logits, features = (logits + classifier(mirrored)) / 2, (features + mirrored) / 2
        else:                                   # an ensemble: its log mean probabilities
            logits = self.model(x)
            features = logits
        logits = logits.float() / self.temperature
        probabilities = logits.softmax(-1)
        if self.scorer is None:
            return logits, probabilities
        return logits, probabilities, self.scorer(features, logits)


def trusted(model: nn.Module, checkpoint) -> Trusted:
    """`Trusted` for a loaded checkpoint: its temperature and unknown score when it has them."""
    from engine.models.trust import checkpoint_scorer
    return Trusted(model, checkpoint.meta, checkpoint_scorer(checkpoint.meta, checkpoint.trust_state)).eval()
