"""Grad-CAM: which region of an image drove the score of a chosen class.

Works on the backbone's last feature map (`forward_features`), which every timm model has: a 4-D map
for CNNs, or patch tokens for ViTs (reshaped to their grid). Returns plain numpy arrays so the GUI can
paint them without touching torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from engine.data.preprocessing import Preprocessing
from engine.data.transforms import eval_transform


def _as_spatial(features: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """[B, C, H, W] view of the last feature map (ViT tokens are reshaped onto their patch grid)."""
    if features.ndim == 4:
        return features
    if features.ndim == 3:
        tokens = features[:, getattr(model, "num_prefix_tokens", 1):]
        side = int(math.isqrt(tokens.shape[1]))
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    raise ValueError(f"Grad-CAM needs a spatial feature map, got shape {tuple(features.shape)}")


def grad_cam(model: nn.Module, image: Image.Image, preprocessing: Preprocessing,
             class_index: int | None = None, temperature: float = 1.0) -> tuple[np.ndarray, int, float]:
    """Heat map in [0, 1] at the model's input size, for `class_index` (default: the predicted class).

    Returns (heat map [H, W] float32, class index used, that class's probability, calibrated by the run's
    `temperature`). For an ensemble: the
    class and probability are the ensemble's, the map the mean of its members' maps for that class.
    """
    from engine.models.ensemble import ProbabilityAverage
    if isinstance(model, ProbabilityAverage):
        with torch.inference_mode():
            probs = (model.eval()(eval_transform(preprocessing)(image)[None]) / temperature).softmax(-1)[0]
        index = int(probs.argmax()) if class_index is None else int(class_index)
        heats = [grad_cam(member, image, preprocessing, index)[0] for member in model.members]
        return np.mean(heats, axis=0).astype(np.float32), index, float(probs[index])
    tensor = eval_transform(preprocessing)(image)[None]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            features = model.forward_features(tensor)
            features.retain_grad()
            logits = model.forward_head(features)
            probs = (logits.detach() / temperature).softmax(-1)[0]
            index = int(probs.argmax()) if class_index is None else int(class_index)
            model.zero_grad(set_to_none=True)
            logits[0, index].backward()
        spatial = _as_spatial(features, model)
        grads = _as_spatial(features.grad, model)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * spatial).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tensor.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        cam = cam.detach()
        cam = (cam - cam.min()) / (cam.max() - cam.min()).clamp_min(1e-8)
        return cam.numpy().astype(np.float32), index, float(probs[index].detach())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _colormap(values: np.ndarray) -> np.ndarray:
    """A perceptually ordered blue→red ramp (like 'jet', without a matplotlib dependency)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, preprocessing: Preprocessing, alpha: float = 0.45) -> np.ndarray:
    """The centre-cropped image the model saw, blended with the heat map: uint8 RGB [H, W, 3]."""
    size = preprocessing.input_size
    from torchvision.transforms import v2 as T
    from engine.data.transforms import interpolation_mode
    shown = T.Compose([T.Resize(preprocessing.resize_size, interpolation=interpolation_mode(preprocessing)),
                       T.CenterCrop(size)])(image.convert("RGB"))
    base = np.asarray(shown, dtype=np.float32)
    colours = _colormap(heat).astype(np.float32)
    return np.clip((1 - alpha) * base + alpha * colours, 0, 255).astype(np.uint8)
