"""Training inputs for images: decoded images, and the frozen layers' output cached where that is exact.

Pooled features when only the classifier trains ('features'), activations at the freeze boundary when
training starts at a later block ('activations'), each computed once per (model, images, view) and kept
in memory and on disk (engine.training.caches); anything else trains on images, decoded once per fit when
they fit in memory ('images'). Where the strategy shares passes between processes, each computes a slice
of a frozen pass and all gather the whole.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.core.memory import MEMORY_FRACTION, format_bytes, memory_budget
from engine.core.runtime import release_freed_memory
from engine.data.imagecache import DecodedImageCache, DecodedImages
from engine.data.transforms import ImageDataset, ReadableLoader, eval_transform, train_transform
from engine.models.catalog import ModelBundle, create_model
from engine.models.layers import SuffixOnActivations
from engine.training.caches import (ActivationCache, CachePlan, FeatureCache, FeatureDataset, HeadOnFeatures,
                                    ViewAveraged, plan_cache, view_id, view_transform)
from engine.training.config import TrainConfig
from engine.training.inputs import TrainingInputs

log = logging.getLogger("transferlab")


def cached_view_count(config: TrainConfig) -> int:
    """Views of each training image on a cached path: the plain one alone without augmentation, plain and
    mirrored for 'flip' (whatever `cached_views` says), else `cached_views` (1 plain + random ones).

    Epochs take the views in turn, so an epoch costs the same with or without them and the recipe search's
    cross-validation trains the same way. Both flip views in every epoch (twice the steps) was no better:
    on Fashion-MNIST photos (600, 3 splits x 2 seeds, 10 epochs) test accuracy 0.776 vs 0.781 in turn with
    a linear head, 0.785 vs 0.780 with the MLP, within the ±2-point noise of the mean."""
    if config.augmentation == "none":
        return 1
    return 2 if config.augmentation == "flip" else max(1, config.cached_views)


def eval_views(config: TrainConfig) -> tuple[str, ...]:
    """The cached views evaluation reads: the plain one, and the mirrored one for test-time flip."""
    return ("plain", "mirrored") if config.tta == "flip" else ("plain",)


def skipped_images_note(unreadable: dict[str, str], shown: int = 10) -> str:
    """'skipped 2 images that could not be read during training: red/a.png, blue/b.png' ('' for none)."""
    if not unreadable:
        return ""
    names = ["/".join(Path(path).parts[-2:]) for path in list(unreadable)[:shown]]
    more = f" and {len(unreadable) - shown} more" if len(unreadable) > shown else ""
    count = len(unreadable)
    return (f"skipped {count} image{'s' * (count > 1)} that could not be read during training: "
            f"{', '.join(names)}{more}")


class ImageInputs(TrainingInputs):
    """The inputs of a fit on images (module docstring)."""

    def __init__(self):
        super().__init__()
        self.caches: dict[tuple, FeatureCache] = {}
        self.decoded: DecodedImages | None = None        # every image decoded once, built on first use
        self._decoded_index: dict[str, int] | None = None

    def create_bundle(self, config: TrainConfig, num_classes: int) -> ModelBundle:
        return create_model(config.backbone, num_classes, weights=config.weights, input_size=config.image_size,
                            head=config.head)

    # -- images --------------------------------------------------------------------------------------
    def _image_loader(self, samples, transform, shuffle: bool) -> DataLoader:
        """Images that can no longer be read (deleted or damaged since the scan) are left out and noted."""
        trainer = self.trainer
        dataset = ImageDataset([s.path for s in samples], [s.label for s in samples], transform,
                               self._image_source(samples), skip_unreadable=True)
        sampler = self.balanced_sampler(samples) if shuffle else None
        return ReadableLoader(dataset, self._note_unreadable, batch_size=trainer.config.batch_size,
                              shuffle=shuffle and sampler is None, sampler=sampler,
                              generator=trainer.generator if shuffle else None,
                              num_workers=trainer.config.num_workers, drop_last=False,
                              pin_memory=self.pin_memory)

    def _note_unreadable(self, path: str, reason: str) -> None:
        """One path note for every image skipped so far: the fit goes on without them."""
        if path in self.unreadable:
            return
        log.warning("%s: cannot be read any more (%s); skipped for the rest of this fit", path, reason)
        notes = self.trainer.path_notes
        before = skipped_images_note(self.unreadable)
        self.unreadable[path] = reason
        if before and before in notes:
            notes.remove(before)
        notes.append(skipped_images_note(self.unreadable))

    def _unreadable_rows(self, samples) -> list[int]:
        return [row for row, sample in enumerate(samples) if sample.path in self.unreadable]

    def _note_cache(self, cache: FeatureCache) -> None:
        """What a feature pass had to say: images it could not read, entries damaged or not kept on disk."""
        for path, reason in cache.unreadable.items():
            self._note_unreadable(path, reason)
        for note in cache.notes:
            self.note_once(note)

    def _image_source(self, samples):
        """Images decoded once per fit (`cache='auto'` and it fits), or None: decode on every use. Never
        with several processes: each would hold every image, and each sees another share every epoch."""
        trainer = self.trainer
        if trainer.config.cache != "auto" or self.strategy.world_size > 1:
            return None
        if self._decoded_index is None:
            every = trainer.train_samples + trainer.val_samples + trainer.test_samples
            paths = list(dict.fromkeys(s.path for s in every))
            self.decoded, note = DecodedImageCache().build(
                paths, trainer.report.content_hash, trainer.bundle.preprocessing, trainer.control,
                trainer.callbacks.on_progress)
            self._decoded_index = {path: index for index, path in enumerate(paths)}
            trainer.path_notes.append(note)
        if self.decoded is None:
            return None
        return self.decoded.source([self._decoded_index[s.path] for s in samples])

    # -- the pipeline ----------------------------------------------------------------------------------
    def pipeline(self):
        """(network to step, train loader, val loader, path name) for the current freeze state: cached
        'features' or 'activations' where exact and they fit in memory, else 'images'."""
        trainer = self.trainer
        self.cached_net = None
        plan = plan_cache(trainer.model, trainer.config.train_frozen_bn) if trainer.config.cache == "auto" \
            else CachePlan("images", reason="cache off")
        if plan.kind != "images":
            cached = self._cached_pipeline(plan)
            if cached is not None:
                return cached
        else:
            trainer.path_notes.append(f"training on images: {plan.reason}")
        pre = trainer.bundle.preprocessing
        train = self._image_loader(trainer.train_samples, train_transform(pre, trainer.config.augmentation), True)
        val = self._image_loader(trainer.val_samples, eval_transform(pre), False)
        return trainer.model, train, val, "images"

    def _cached_pipeline(self, plan: CachePlan):
        """The loaders of `pipeline` on cached features or activations; None when they would not fit."""
        trainer = self.trainer
        pre, config = trainer.bundle.preprocessing, trainer.config
        key = (plan.kind, plan.boundary)
        if key not in self.caches:
            runtime = config.frozen_runtime
            self.caches[key] = FeatureCache(trainer.model, frozen_runtime=runtime) if plan.kind == "features" \
                else ActivationCache(trainer.model, plan.boundary, frozen_runtime=runtime)
        cache = self.caches[key]
        views = cached_view_count(config)
        count = views * len(trainer.train_samples) + len(eval_views(config)) * (len(trainer.val_samples) +
                                                                                len(trainer.test_samples))
        cache.planned_images = count
        needed = cache.item_bytes(pre.input_size) * count
        if needed > memory_budget():
            trainer.path_notes.append(f"training on images: cached {plan.kind} would need "
                                      f"{format_bytes(needed)}, more than {MEMORY_FRACTION:.0%} of RAM")
            return None
        self.feature_cache = cache
        self.cached_net = HeadOnFeatures(trainer.model) if plan.kind == "features" else \
            SuffixOnActivations(trainer.model, plan.boundary)
        trainer.path_notes.append(f"training on cached {plan.kind} ({views} view{'s' * (views > 1)}, "
                                  f"{format_bytes(needed)})")
        if views == 1 and config.augmentation != "none":
            trainer.path_notes.append(f"augmentation not applied: each image's {plan.kind} are computed once "
                                      "(cached_views=1; each extra view costs one more pass and did not "
                                      "improve accuracy in our measurements)")
        train_set = FeatureDataset(self._train_views(views), [s.label for s in trainer.train_samples],
                                   skip=self._unreadable_rows(trainer.train_samples))
        val_set = self._eval_set(trainer.val_samples)
        if cache.runtime_note:
            self.note_once(cache.runtime_note)
        if self.strategy.shares_passes and trainer.evaluate_test and trainer.test_samples:
            self._eval_set(trainer.test_samples)     # process 0 evaluates it alone at the end, then finds it
        batch = max(config.batch_size, 1)
        sampler = self.balanced_sampler(trainer.train_samples)
        train = DataLoader(train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                           generator=trainer.generator, pin_memory=self.pin_memory)
        val = DataLoader(val_set, batch_size=256 if plan.kind == "features" else batch,
                         pin_memory=self.pin_memory)
        return self.cached_net, train, val, plan.kind

    def _train_views(self, views: int) -> list[torch.Tensor]:
        """The training split's cached views: the plain one (the same cache entry for every augmentation),
        then the mirrored one for 'flip', or `views - 1` random augmented ones."""
        trainer = self.trainer
        pre, augmentation = trainer.bundle.preprocessing, trainer.config.augmentation
        plain = self._view_features(trainer.train_samples, "plain", views)
        if views == 1:
            return [plain]
        if augmentation == "flip":
            return [plain, self._view_features(trainer.train_samples, "mirrored", views)]
        augmented = self._features(trainer.train_samples, [train_transform(pre, augmentation)] * (views - 1),
                                   f"{pre.to_dict()}|{augmentation}", views)
        return [plain, *augmented]

    def _eval_set(self, samples) -> FeatureDataset:
        """Cached inputs to evaluate `samples` on; with test-time flip each item holds both views, which
        `evaluated` averages."""
        views = eval_views(self.trainer.config)
        dataset = FeatureDataset([self._view_features(samples, view, len(views)) for view in views],
                                 [s.label for s in samples], skip=self._unreadable_rows(samples))
        dataset.view = None if len(views) > 1 else 0
        return dataset

    def _view_features(self, samples, view: str, views_of_split: int) -> torch.Tensor:
        """One deterministic view of a split, [N, ...]: one cache call per (split, view), keyed as a recipe
        search computing the same view of the same images with the same seed keys it."""
        pre = self.trainer.bundle.preprocessing
        return self._features(samples, [view_transform(pre, view)], view_id(pre, view), views_of_split)[0]

    def _features(self, samples, transforms, transform_id: str, views_of_split: int | None = None) -> torch.Tensor:
        try:
            if self.strategy.shares_passes and samples:
                return self._shared_features(samples, transforms, transform_id)
            return self._own_features(samples, transforms, transform_id, views_of_split)
        finally:
            self._note_cache(self.feature_cache)

    def _own_features(self, samples, transforms, transform_id: str, views_of_split: int | None) -> torch.Tensor:
        """[V, N, ...] from the cache, or computed here by this process alone."""
        trainer = self.trainer

        def open_images():
            # with one view each image is read once either way: decoding them all first only pays
            # when they are decoded already (an earlier split) or each is read for several views
            if max(len(transforms), views_of_split or 1) > 1 or self._decoded_index is not None:
                return self._image_source(samples)
            return None
        return self.feature_cache.features(
            [s.path for s in samples], [s.label for s in samples], trainer.report.content_hash, transforms,
            transform_id, trainer.config.seed, trainer.control,
            trainer.callbacks.on_progress, open_images, skip_unreadable=True)

    def _shared_features(self, samples, transforms, transform_id: str) -> torch.Tensor:
        """[V, N, ...] as `FeatureCache.features` returns them: read when every process has them cached,
        else each process computes its slice and all gather the whole (kept as an entry when every image
        could be read; on disk by process 0)."""
        trainer, cache, strategy = self.trainer, self.feature_cache, self.strategy
        seed, paths, labels = trainer.config.seed, [s.path for s in samples], [s.label for s in samples]
        key, found = cache.lookup(paths, trainer.report.content_hash, transform_id, seed, len(transforms))
        if not strategy.any(found is None):
            return found
        missing: dict[str, str] = {}

        def compute(share: range) -> torch.Tensor:
            views, rows = cache.compute(paths[share.start:share.stop], labels[share.start:share.stop],
                                        transforms, seed, trainer.control, trainer.callbacks.on_progress,
                                        skip_unreadable=True)
            missing.update({paths[share.start + row]: cache.unreadable[paths[share.start + row]] for row in rows})
            return views
        views = strategy.sharded(len(samples), compute)
        unreadable = {path: why for part in strategy.gather(missing) for path, why in part.items()}
        cache.unreadable.update(unreadable)
        if not unreadable:
            cache.adopt(key, views, on_disk=strategy.is_main)
        return views

    # -- evaluation and the fit's record ---------------------------------------------------------------
    def eval_inputs(self, samples) -> tuple[nn.Module, DataLoader]:
        """Cached inputs when the last stage trained on them (its frozen part is the same, and the cache key
        checks it), else images."""
        trainer = self.trainer
        if self.cached_net is None:
            loader = self._image_loader(samples, eval_transform(trainer.bundle.preprocessing), False)
            return self.evaluated(trainer.model), loader
        return self.evaluated(self.cached_net), DataLoader(self._eval_set(samples),
                                                           batch_size=trainer.config.batch_size,
                                                           pin_memory=self.pin_memory)

    def evaluated(self, net: nn.Module) -> nn.Module:
        """On cached inputs, the mean over each item's cached views (test-time flip)."""
        if net is self.trainer.model:
            return super().evaluated(net)
        return ViewAveraged(net) if len(eval_views(self.trainer.config)) > 1 else net

    def cache_fingerprint(self, path: str) -> str | None:
        return None if path == "images" else self.feature_cache.fingerprint

    def frozen_pass(self, path: str) -> str:
        """'onnxruntime' | 'pytorch', 'reused' (read from the cache) or 'none' (training on images)."""
        if path == "images" or self.feature_cache is None:
            return "none"
        return self.feature_cache.runtime_used or "reused"

    def fit_start(self, path: str) -> dict:
        """Cached inputs are augmented only through extra views."""
        config = self.trainer.config
        augmented = config.augmentation != "none" and (path == "images" or cached_view_count(config) > 1)
        return {"augmented": augmented, "images_decoded_once": self.decoded is not None}

    def release(self) -> None:
        """Cached images and activations can take a quarter of RAM each: free them with the fit."""
        self.decoded, self._decoded_index, self.caches, self.cached_net = None, None, {}, None
        release_freed_memory()
