"""Torch-side data: transforms matching a backbone's pretrained preprocessing, and the image Dataset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2 as T

from engine.data.images import ImageError, load_image
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


@dataclass(frozen=True)
class Unreadable:
    """An item whose image could not be read when its batch was built: deleted, truncated or replaced by
    something that is not an image since the dataset was scanned."""

    index: int
    path: str
    reason: str


class ImageDataset(Dataset):
    """(image tensor, label) pairs for a list of samples; images come from `image_source(index)`.

    The source is `load_image` on the path by default; the decoded-image cache supplies its own. With
    `skip_unreadable` an image that cannot be read any more gives an `Unreadable` item instead of an
    exception, for `collate_readable` to leave out of its batch; without it the ImageError is raised.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Callable,
                 image_source: Callable[[int], object] | None = None, skip_unreadable: bool = False):
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform
        self.image_source = image_source or (lambda index: load_image(self.paths[index]))
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = self.image_source(index)
        except (ImageError, OSError) as exc:
            if not self.skip_unreadable:
                raise
            return Unreadable(index, self.paths[index], getattr(exc, "reason", None) or str(exc))
        return self.transform(image), self.labels[index]


class ReadableBatch(tuple):
    """(images, labels) of the items of a batch that could be read; `skipped` holds the `Unreadable` others.
    A tuple, so it unpacks like any batch and crosses from DataLoader workers with its `skipped`."""

    skipped: tuple[Unreadable, ...] = ()

    def pin_memory(self) -> "ReadableBatch":
        """Page-locked copies for a GPU (DataLoader(pin_memory=True) calls this), keeping `skipped`."""
        pinned = ReadableBatch(tensor.pin_memory() for tensor in self)
        pinned.skipped = self.skipped
        return pinned


def collate_readable(items: list) -> ReadableBatch:
    """`default_collate` of the readable items; an all-unreadable batch has empty images and labels."""
    readable = [item for item in items if not isinstance(item, Unreadable)]
    images, labels = default_collate(readable) if readable else (torch.empty(0), torch.empty(0, dtype=torch.long))
    batch = ReadableBatch((images, labels))
    batch.skipped = tuple(item for item in items if isinstance(item, Unreadable))
    return batch


class ReadableLoader(DataLoader):
    """A DataLoader over an `ImageDataset(skip_unreadable=True)` that leaves out images that can no longer
    be read, so a file deleted or damaged during training costs that sample, never the run.

    It yields plain (images, labels) pairs and skips batches left empty. Each image left out is passed to
    `on_unreadable(path, reason)`; `skipped_rows` maps the dataset indices left out in the latest pass to
    their paths, so whoever pairs outputs with samples (evaluation) can leave the same ones out.
    """

    def __init__(self, dataset: ImageDataset, on_unreadable: Callable[[str, str], None] | None = None,
                 **kwargs):
        super().__init__(dataset, collate_fn=collate_readable, **kwargs)
        self.on_unreadable = on_unreadable
        self.skipped_rows: dict[int, str] = {}

    def __iter__(self):
        self.skipped_rows = {}
        for batch in super().__iter__():
            for item in batch.skipped:
                self.skipped_rows[item.index] = item.path
                if self.on_unreadable is not None:
                    self.on_unreadable(item.path, item.reason)
            images, labels = batch
            if len(labels):
                yield images, labels
