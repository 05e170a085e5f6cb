"""Torch-side data: transforms matching a backbone's pretrained preprocessing, and the image Dataset."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from engine.data.images import load_image
from engine.data.preprocessing import AUGMENTATIONS, Preprocessing

_INTERPOLATIONS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


def _to_normalized_tensor(pre: Preprocessing) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def interpolation_mode(pre: Preprocessing) -> T.InterpolationMode:
    return _INTERPOLATIONS.get(pre.interpolation, T.InterpolationMode.BILINEAR)


def eval_transform(pre: Preprocessing) -> Callable:
    """Resize the shorter side, centre-crop: exactly the preprocessing the weights were trained with."""
    return T.Compose([T.Resize(pre.resize_size, interpolation=interpolation_mode(pre), antialias=True),
                      T.CenterCrop(pre.input_size), *_to_normalized_tensor(pre)])


def mirrored_eval_transform(pre: Preprocessing) -> Callable:
    """The eval transform, then a left-right mirror of the result: exactly the input test-time flip
    feeds the model second (`x.flip(3)` of the eval batch), and the cached 'mirrored' view."""
    return T.Compose([eval_transform(pre), T.Lambda(T.functional.horizontal_flip)])


def train_transform(pre: Preprocessing, augmentation: str = "light") -> Callable:
    """Augmentation presets: 'none' (= eval transform), 'flip' (the eval transform, mirrored half the
    time: the two inputs the cached path trains on), 'light' (crop, flip, mild colour), 'strong'."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, not {augmentation!r}")
    if augmentation == "none":
        return eval_transform(pre)
    if augmentation == "flip":
        return T.Compose([eval_transform(pre), T.RandomHorizontalFlip()])
    mode = interpolation_mode(pre)
    if augmentation == "light":
        steps = [T.RandomResizedCrop(pre.input_size, scale=(0.6, 1.0), interpolation=mode, antialias=True),
                 T.RandomHorizontalFlip(),
                 T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
        return T.Compose(steps + _to_normalized_tensor(pre))
    steps = [T.RandomResizedCrop(pre.input_size, scale=(0.3, 1.0), interpolation=mode, antialias=True),
             T.RandomHorizontalFlip(), T.TrivialAugmentWide(interpolation=mode)]
    return T.Compose(steps + _to_normalized_tensor(pre) + [T.RandomErasing(p=0.25)])


class ImageDataset(Dataset):
    """(image tensor, label) pairs for a list of samples; images come from `image_source(index)`.

    The source is `load_image` on the path by default; the decoded-image cache supplies its own.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Callable,
                 image_source: Callable[[int], object] | None = None):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform
        self.image_source = image_source or (lambda index: load_image(self.paths[index]))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(self.image_source(index)), self.labels[index]
