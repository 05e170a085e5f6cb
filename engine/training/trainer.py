"""Fine-tuning: from a dataset report and a config to a run folder with the best checkpoint and metrics.

The loop is plain PyTorch. It reports through `Callback` hooks carrying plain values, checks
`RunControl` between batches (pause/cancel), and writes the best checkpoint atomically whenever
validation improves, so stopping at any moment never loses it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from engine.core.callbacks import Callback, CallbackList
from engine.core.control import Cancelled, RunControl
from engine.core.errors import readable_error
from engine.core.files import write_json
from engine.core.memory import MEMORY_FRACTION, format_bytes, memory_budget
from engine.core.runfolder import RunFolder
from engine.core.runtime import release_freed_memory, tune_malloc
from engine.data.imagecache import DecodedImageCache, DecodedImages
from engine.data.report import DatasetReport
from engine.data.transforms import ImageDataset, eval_transform, train_transform
from engine.models.catalog import ModelBundle, create_model
from engine.models.checkpoint import save_checkpoint
from engine.models.heads import set_head
from engine.models.layers import LayerTree, frozen_batchnorm_to_eval
from engine.models.predictor import predictor
from engine.training.caches import (ActivationCache, CachePlan, FeatureCache, FeatureDataset, HeadOnFeatures,
                                    SuffixOnActivations, ViewAveraged, plan_cache, view_id, view_transform)
from engine.training.callbacks import BestCheckpoint, EarlyStopping
from engine.training.config import TrainConfig
from engine.training.metrics import classification_metrics, predict_logits
from engine.training.optim import class_weights, make_optimizer, make_schedule, param_groups, seed_everything


@dataclass
class Stage:
    """A phase of training with one freeze state, learning rate and number of epochs."""

    name: str
    epochs: int
    lr: float
    frozen: list[str] | None = None      # parameter names; None means "use the preset below"
    preset: str = "head"
    blocks: int = 2


@dataclass
class FitResult:
    status: str                     # 'completed' | 'cancelled' | 'stopped-early'
    run_dir: str
    checkpoint: str | None
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_stages(config: TrainConfig) -> list[Stage]:
    if config.recipe == "single":
        return [Stage("train", config.epochs, config.lr, config.frozen_parameters, config.freeze,
                      config.freeze_blocks)]
    # Stage 2 trains what the user chose (an explicit tree state wins); "head" would repeat stage 1.
    second = "none" if config.freeze == "head" else config.freeze
    return [Stage("head", config.head_epochs, config.lr, None, "head"),
            Stage("fine-tune", config.epochs - config.head_epochs, config.lr * config.stage2_lr_factor,
                  config.frozen_parameters, second, config.freeze_blocks)]


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


def apply_stage_freeze(tree: LayerTree, stage: Stage) -> None:
    if stage.frozen is not None:
        tree.freeze_parameters(stage.frozen)
    else:
        tree.apply_preset(stage.preset, stage.blocks)


class Trainer:
    """Runs one fit. Construct, then call `fit()`; safe to run on a worker thread."""

    def __init__(self, report: DatasetReport, config: TrainConfig, run_dir: str | Path,
                 callbacks: list[Callback] | None = None, control: RunControl | None = None,
                 bundle: ModelBundle | None = None, evaluate_test: bool = True):
        config.validate()
        self.report = report
        self.config = config
        self.run_dir = Path(run_dir)
        self.checkpointer = BestCheckpoint(self._save_checkpoint)
        self.early_stopping = EarlyStopping(config.early_stopping)
        # the trainer's own callbacks first: they set logs["best"] before anyone else sees an epoch
        self.callbacks = CallbackList([self.checkpointer, self.early_stopping, *(callbacks or [])])
        self.control = control or RunControl()
        self.bundle = bundle
        self.evaluate_test = evaluate_test  # a recipe search's candidates never see the test split
        self.history: list[dict] = []
        self.files = RunFolder(self.run_dir)
        self._epoch = 0
        self._step = 0
        self.feature_cache: FeatureCache | None = None   # the cache the current stage trains on
        self._caches: dict[tuple, FeatureCache] = {}
        self._cached_net: nn.Module | None = None        # set while a stage trains on cached inputs
        self.decoded: DecodedImages | None = None        # every image decoded once, built on first use
        self._decoded_index: dict[str, int] | None = None
        self.path_notes: list[str] = []                  # where inputs come from, or why not cached

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        tune_malloc()      # in case the app did not call engine.core.runtime.tune_process() at start-up
        self.generator = seed_everything(self.config.seed)
        classes = self.report.classes
        if self.bundle is None:
            self.bundle = create_model(self.config.backbone, len(classes), weights=self.config.weights,
                                       input_size=self.config.image_size, head=self.config.head)
        set_head(self.bundle.model, self.config.head)     # a bundle passed in trains the configured head
        # channels_last: 1.4x inference and 1.7x training for EfficientNet-Lite0 on CPU, never slower
        # for the other backbones (bench/bench_settings.py, bench/RESULTS.md)
        self.model = self.bundle.model.to(memory_format=torch.channels_last)
        self.tree = LayerTree(self.model)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.train_samples = self.report.split("train")
        self.val_samples = self.report.split("val") or self.train_samples
        self.test_samples = self.report.split("test")
        labels = [s.label for s in self.train_samples]
        weights = class_weights(labels, len(classes)) if self.config.balance == "loss" else None
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.config.label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()

    def _image_loader(self, samples, transform, shuffle: bool) -> DataLoader:
        dataset = ImageDataset([s.path for s in samples], [s.label for s in samples], transform,
                               self._image_source(samples))
        sampler = self._balanced_sampler(samples) if shuffle else None
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, generator=self.generator if shuffle else None,
                          num_workers=self.config.num_workers, drop_last=False)

    def _balanced_sampler(self, samples) -> WeightedRandomSampler | None:
        if self.config.balance != "sampler":
            return None
        labels = [s.label for s in samples]
        weights = class_weights(labels, len(self.report.classes))[labels]
        return WeightedRandomSampler(weights, len(samples), replacement=True, generator=self.generator)

    def _image_source(self, samples):
        """Images decoded once per fit (`cache='auto'` and it fits), or None: decode on every use."""
        if self.config.cache != "auto":
            return None
        if self._decoded_index is None:
            every = self.train_samples + self.val_samples + self.test_samples
            paths = list(dict.fromkeys(s.path for s in every))
            self.decoded, note = DecodedImageCache().build(
                paths, self.report.content_hash, self.bundle.preprocessing, self.control,
                self.callbacks.on_progress)
            self._decoded_index = {path: index for index, path in enumerate(paths)}
            self.path_notes.append(note)
        if self.decoded is None:
            return None
        return self.decoded.source([self._decoded_index[s.path] for s in samples])

    def _pipeline(self):
        """(network to step, train loader, val loader, path name) for the current freeze state.

        The frozen part is computed once where that is exact: pooled features when only the classifier
        trains ('features'), activations at the freeze boundary when training starts at a later block
        ('activations'). Anything else trains on images, decoded once ('images').
        """
        self._cached_net = None
        plan = plan_cache(self.model, self.config.train_frozen_bn) if self.config.cache == "auto" \
            else CachePlan("images", reason="cache off")
        if plan.kind != "images":
            cached = self._cached_pipeline(plan)
            if cached is not None:
                return cached
        else:
            self.path_notes.append(f"training on images: {plan.reason}")
        pre = self.bundle.preprocessing
        train = self._image_loader(self.train_samples, train_transform(pre, self.config.augmentation), True)
        val = self._image_loader(self.val_samples, eval_transform(pre), False)
        return self.model, train, val, "images"

    def _cached_pipeline(self, plan: CachePlan):
        """The loaders of `_pipeline` on cached features or activations; None when they would not fit."""
        pre, config = self.bundle.preprocessing, self.config
        key = (plan.kind, plan.boundary)
        if key not in self._caches:
            runtime = config.frozen_runtime
            self._caches[key] = FeatureCache(self.model, frozen_runtime=runtime) if plan.kind == "features" \
                else ActivationCache(self.model, plan.boundary, frozen_runtime=runtime)
        cache = self._caches[key]
        views = cached_view_count(config)
        count = views * len(self.train_samples) + len(eval_views(config)) * (len(self.val_samples) +
                                                                             len(self.test_samples))
        cache.planned_images = count
        needed = cache.item_bytes(pre.input_size) * count
        if needed > memory_budget():
            self.path_notes.append(f"training on images: cached {plan.kind} would need {format_bytes(needed)}, "
                                   f"more than {MEMORY_FRACTION:.0%} of RAM")
            return None
        self.feature_cache = cache
        self._cached_net = HeadOnFeatures(self.model) if plan.kind == "features" else \
            SuffixOnActivations(self.model, plan.boundary)
        self.path_notes.append(f"training on cached {plan.kind} ({views} view{'s' * (views > 1)}, "
                               f"{format_bytes(needed)})")
        if views == 1 and config.augmentation != "none":
            self.path_notes.append(f"augmentation not applied: each image's {plan.kind} are computed once "
                                   "(cached_views=1; each extra view costs one more pass and did not "
                                   "improve accuracy in our measurements)")
        train_set = FeatureDataset(self._train_views(views), [s.label for s in self.train_samples])
        val_set = self._eval_set(self.val_samples)
        if cache.runtime_note and cache.runtime_note not in self.path_notes:
            self.path_notes.append(cache.runtime_note)
        batch = max(config.batch_size, 1)
        sampler = self._balanced_sampler(self.train_samples)
        train = DataLoader(train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                           generator=self.generator)
        val = DataLoader(val_set, batch_size=256 if plan.kind == "features" else batch)
        return self._cached_net, train, val, plan.kind

    def _train_views(self, views: int) -> list[torch.Tensor]:
        """The training split's cached views: the plain one (the same cache entry for every augmentation),
        then the mirrored one for 'flip', or `views - 1` random augmented ones."""
        pre, augmentation = self.bundle.preprocessing, self.config.augmentation
        plain = self._view_features(self.train_samples, "plain", views)
        if views == 1:
            return [plain]
        if augmentation == "flip":
            return [plain, self._view_features(self.train_samples, "mirrored", views)]
        augmented = self._features(self.train_samples, [train_transform(pre, augmentation)] * (views - 1),
                                   f"{pre.to_dict()}|{augmentation}", views)
        return [plain, *augmented]

    def _eval_set(self, samples) -> FeatureDataset:
        """Cached inputs to evaluate `samples` on; with test-time flip each item holds both views, which
        `_evaluated` averages."""
        views = eval_views(self.config)
        dataset = FeatureDataset([self._view_features(samples, view, len(views)) for view in views],
                                 [s.label for s in samples])
        dataset.view = None if len(views) > 1 else 0
        return dataset

    def _view_features(self, samples, view: str, views_of_split: int) -> torch.Tensor:
        """One deterministic view of a split, [N, ...]: one cache call per (split, view), keyed as a recipe
        search computing the same view of the same images with the same seed keys it."""
        pre = self.bundle.preprocessing
        return self._features(samples, [view_transform(pre, view)], view_id(pre, view), views_of_split)[0]

    def _evaluated(self, net: nn.Module) -> nn.Module:
        """What predicts in evaluation: the model's predictor (test-time flip included), or on cached inputs
        the mean over each item's cached views."""
        if net is self.model:
            return predictor(net, self.config)
        return ViewAveraged(net) if len(eval_views(self.config)) > 1 else net

    def _features(self, samples, transforms, transform_id: str, views_of_split: int | None = None) -> torch.Tensor:
        def open_images():
            # with one view each image is read once either way: decoding them all first only pays
            # when they are decoded already (an earlier split) or each is read for several views
            if max(len(transforms), views_of_split or 1) > 1 or self._decoded_index is not None:
                return self._image_source(samples)
            return None
        return self.feature_cache.features(
            [s.path for s in samples], [s.label for s in samples], self.report.content_hash, transforms,
            transform_id, self.config.seed, self.control,
            self.callbacks.on_progress, open_images)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        try:
            return self._fit()
        except Exception as exc:
            self.callbacks.on_error(readable_error(exc))
            raise

    def _fit(self) -> FitResult:
        self._prepare()
        stages = plan_stages(self.config)
        status = "completed"
        started = False
        try:
            for stage in stages:
                apply_stage_freeze(self.tree, stage)
                net, train_loader, val_loader, path = self._pipeline()
                if not started:
                    self._announce(stages, len(train_loader), path)
                    started = True
                if self._run_stage(stage, net, train_loader, val_loader) == "stopped-early":
                    status = "stopped-early"
                    break
        except Cancelled:
            status = "cancelled"
        metrics = {}
        if status != "cancelled" and self.files.has_checkpoint():
            metrics = self._final_metrics()
        self._release_caches()
        result = FitResult(status, str(self.run_dir),
                           str(self.files.checkpoint) if self.files.has_checkpoint() else None,
                           metrics, self.history)
        write_json(self.files.history, self.history)
        self.callbacks.on_fit_end({"status": status, "run_dir": str(self.run_dir),
                                   "checkpoint": result.checkpoint,
                                   "val_accuracy": metrics.get("val_accuracy"),
                                   "test_accuracy": metrics.get("test_accuracy")})
        return result

    def _announce(self, stages: list[Stage], steps_per_epoch: int, path: str) -> None:
        write_json(self.files.config, {**self.config.to_dict(), "frozen_pass": self._frozen_pass(path)})
        total, trainable = self.tree.counts()
        self.callbacks.on_fit_start({
            "epochs": sum(s.epochs for s in stages), "steps_per_epoch": steps_per_epoch,
            "n_train": len(self.train_samples), "n_val": len(self.val_samples),
            "n_test": len(self.test_samples), "classes": list(self.report.classes), "path": path,
            "params_total": total, "params_trainable": trainable, "backbone": self.bundle.spec.name,
            "stages": [s.name for s in stages], "path_note": "; ".join(self.path_notes),
            "augmented": self._augmented(path), "images_decoded_once": self.decoded is not None})

    def _frozen_pass(self, path: str) -> str:
        """Which engine computed the frozen layers' output: 'onnxruntime' | 'pytorch', 'reused' (read from
        the cache) or 'none' (training on images)."""
        if path == "images" or self.feature_cache is None:
            return "none"
        return self.feature_cache.runtime_used or "reused"

    def _augmented(self, path: str) -> bool:
        """Whether training sees augmented images: cached inputs only through extra views."""
        if self.config.augmentation == "none":
            return False
        return path == "images" or cached_view_count(self.config) > 1

    def _run_stage(self, stage: Stage, net: nn.Module, train_loader, val_loader) -> str:
        # groups come from the whole model, so a net on cached inputs gets the same per-block rates
        groups = param_groups(self.model, stage.lr, self.config.layer_decay, self.config.weight_decay)
        if not groups:
            raise ValueError("every layer is frozen: choose at least one layer to train")
        optimizer = make_optimizer(groups, self.config)
        schedule = make_schedule(optimizer, self.config, len(train_loader), stage.epochs)
        for _ in range(stage.epochs):
            self._epoch += 1
            started = time.monotonic()
            loss, acc = self._train_epoch(net, train_loader, optimizer, schedule, stage)
            val_loss, val_acc = self._validate(net, val_loader)
            logs = {"epoch": self._epoch, "loss": loss, "accuracy": acc, "val_loss": val_loss,
                    "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
                    "epoch_time_s": time.monotonic() - started, "stage": stage.name}
            self.callbacks.on_epoch_end(self._epoch, logs)       # BestCheckpoint adds logs["best"]
            self.history.append(logs)
            if self.early_stopping.should_stop:
                return "stopped-early"
        return "completed"

    def _train_epoch(self, net, loader, optimizer, schedule, stage: Stage) -> tuple[float, float]:
        if isinstance(loader.dataset, FeatureDataset):
            loader.dataset.view = (self._epoch - 1) % len(loader.dataset.views)
        net.train()
        if not self.config.train_frozen_bn:
            frozen_batchnorm_to_eval(net)
        total_loss, correct, seen = 0.0, 0, 0
        started = time.monotonic()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for batch, (inputs, targets) in enumerate(loader, start=1):
            self.control.checkpoint()
            outputs = net(inputs)
            loss = self.criterion(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            optimizer.step()
            schedule.step()
            self._step += 1
            total_loss += float(loss.detach()) * len(targets)
            correct += int((outputs.argmax(1) == targets).sum())
            seen += len(targets)
            rate = seen / max(time.monotonic() - started, 1e-9)
            self.callbacks.on_batch_end(self._step, {
                "epoch": self._epoch, "batch": batch, "batches": len(loader), "loss": float(loss.detach()),
                "accuracy": correct / seen, "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": rate, "eta_s": (len(loader.dataset) - seen) / max(rate, 1e-9),
                "stage": stage.name})
        return total_loss / max(seen, 1), correct / max(seen, 1)

    def _validate(self, net, loader) -> tuple[float, float]:
        logits, labels = predict_logits(self._evaluated(net), loader, self.control)
        if not len(labels):
            return float("nan"), float("nan")
        loss = float(self.eval_criterion(logits, labels))
        return loss, float((logits.argmax(1) == labels).float().mean())

    def _save_checkpoint(self, epoch: int, logs: dict) -> None:
        save_checkpoint(self.files.checkpoint, self.model, self.bundle, self.report.classes,
                        {"epoch": epoch, "val_accuracy": logs["val_accuracy"], "val_loss": logs["val_loss"],
                         "config": self.config.to_dict()}, tta=self.config.tta)

    # -- after training ---------------------------------------------------------------------------
    def _final_metrics(self) -> dict:
        """Reload the best checkpoint and evaluate it on val and test; write metrics.json."""
        from safetensors.torch import load_file
        self.model.load_state_dict(load_file(str(self.files.checkpoint)))
        results, predictions = {}, {}
        test = self.test_samples if self.evaluate_test else []
        splits = [(split, samples) for split, samples in (("val", self.val_samples), ("test", test)) if samples]
        total, evaluated = sum(len(samples) for _, samples in splits), 0
        for split, samples in splits:
            net, loader = self._eval_inputs(samples)
            logits, labels = predict_logits(
                net, loader, self.control,
                lambda stage, done, _, before=evaluated: self.callbacks.on_progress(stage, before + done, total))
            evaluated += len(samples)
            results[split] = classification_metrics(logits, labels, self.report.classes,
                                                    [s.path for s in samples])
            predictions[split] = results[split].pop("predictions")
        metrics = summarize_metrics(self.report.classes, results, self.bundle, self.config)
        write_json(self.files.metrics, metrics)
        write_json(self.files.predictions, predictions)
        return metrics

    def _eval_inputs(self, samples) -> tuple[nn.Module, DataLoader]:
        """Network and loader for the best checkpoint: cached inputs when the last stage trained on them
        (its frozen part is the same, and the cache key checks it), else images."""
        if self._cached_net is None:
            loader = self._image_loader(samples, eval_transform(self.bundle.preprocessing), False)
            return self._evaluated(self.model), loader
        return self._evaluated(self._cached_net), DataLoader(self._eval_set(samples),
                                                             batch_size=self.config.batch_size)

    def _release_caches(self) -> None:
        """Cached images and activations can take a quarter of RAM each: free them with the fit."""
        self.decoded, self._decoded_index, self._caches, self._cached_net = None, None, {}, None
        release_freed_memory()


def summarize_metrics(classes: list[str], results: dict, bundle: ModelBundle, config: TrainConfig) -> dict:
    """metrics.json: headline numbers first; the test split's details when there is one, else val's."""
    main = results.get("test") or results.get("val") or {}
    return {
        "classes": list(classes),
        "backbone": bundle.spec.name,
        "weights": bundle.weights,
        "val_accuracy": results.get("val", {}).get("accuracy"),
        "test_accuracy": results.get("test", {}).get("accuracy"),
        "evaluated_on": "test" if "test" in results else "val",
        "per_class": main.get("per_class", []),
        "confusion_matrix": main.get("confusion_matrix", []),
        "most_confident_wrong": main.get("most_confident_wrong", []),
        "splits": results,
        "config": config.to_dict(),
    }


def train(report: DatasetReport, config: TrainConfig, run_dir: str | Path,
          callbacks: list[Callback] | None = None, control: RunControl | None = None) -> FitResult:
    """Convenience wrapper: one call from a scanned dataset to a finished run folder."""
    return Trainer(report, config, run_dir, callbacks, control).fit()
