"""Feature cache: when only the classifier trains, push each image through the frozen backbone once.

Training the head then costs milliseconds per epoch instead of a full forward pass. Features are keyed
by everything that could change them (backbone weights, preprocessing, the images and their order,
the augmentation view), kept in memory and on disk, so a stale cache is never used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engine.control import RunControl
from engine.data import ImageDataset
from engine.fileio import atomic_path
from engine.layers import head_parameter_names
from engine.paths import cache_dir


class HeadOnFeatures(nn.Module):
    """The part of the model that trains on cached pooled features: dropout (as timm applies it) and the
    classifier itself, shared with the full model so its trained weights land in the checkpoint."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.dropout = nn.Dropout(float(getattr(model, "drop_rate", 0.0) or 0.0))
        self.classifier = model.get_classifier()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


def classifier_parameter_names(model: nn.Module) -> set[str]:
    classifier = model.get_classifier()
    ids = {id(p) for p in classifier.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def feature_cache_applies(model: nn.Module) -> bool:
    """True when exactly the classifier trains and the head holds nothing else (e.g. no extra norm)."""
    if not hasattr(model, "forward_head") or not hasattr(model, "get_classifier"):
        return False
    classifier = classifier_parameter_names(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return bool(classifier) and trainable == classifier == set(head_parameter_names(model))


def backbone_fingerprint(model: nn.Module) -> str:
    """Digest of every tensor outside the classifier: changes whenever the frozen backbone would."""
    skip = classifier_parameter_names(model)
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name not in skip:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(images), pre_logits=True)


class FeatureDataset(Dataset):
    """(feature, label) pairs drawn from one of several cached views; `view` is set per epoch."""

    def __init__(self, views: torch.Tensor, labels: list[int]):
        self.views = views           # [V, N, D]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.view = 0

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, index: int):
        return self.views[self.view, index], self.labels[index]


class FeatureCache:
    """Computes and stores pooled features; one instance per fit (memory) over a folder (disk)."""

    def __init__(self, model: nn.Module, folder: Path | None = None, batch_size: int = 64):
        self.model = model
        self.folder = Path(folder) if folder else cache_dir() / "features"
        self.batch_size = batch_size
        self.fingerprint = backbone_fingerprint(model)
        self.hits = 0
        self.misses = 0

    def key(self, paths: list[str], content_hash: str, transform_id: str, seed: int, views: int) -> str:
        parts = {"backbone": self.fingerprint, "paths": paths, "content": content_hash,
                 "transform": transform_id, "seed": seed, "views": views}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def features(self, paths: list[str], labels: list[int], content_hash: str,
                 transforms: list[Callable], transform_id: str, seed: int,
                 control: RunControl | None = None,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """[len(transforms), N, D] features, one view per transform, from disk when already computed."""
        key = self.key(paths, content_hash, transform_id, seed, len(transforms))
        path = self.folder / f"{key}.safetensors"
        if path.exists():
            try:
                self.hits += 1
                return load_file(str(path))["features"]
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
                path.unlink(missing_ok=True)
        self.misses += 1
        views = self._compute(paths, labels, transforms, seed, control, progress)
        with atomic_path(path) as tmp:
            save_file({"features": views.contiguous()}, str(tmp))
        return views

    def _compute(self, paths, labels, transforms, seed, control, progress) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng():  # the fit's own random stream stays untouched
                return torch.stack([self._view(paths, labels, transform, seed * 1000 + index, control,
                                               progress, index * len(paths), len(transforms) * len(paths))
                                    for index, transform in enumerate(transforms)])
        finally:
            self.model.train(was_training)

    def _view(self, paths, labels, transform, seed, control, progress, done, total) -> torch.Tensor:
        torch.manual_seed(seed)            # augmented views are reproducible
        loader = DataLoader(ImageDataset(paths, labels, transform), batch_size=self.batch_size)
        chunks = []
        for images, _ in loader:
            if control is not None:
                control.checkpoint()
            chunks.append(pooled_features(self.model, images).float())
            done += len(images)
            if progress:
                progress(done, total)
        return torch.cat(chunks)
