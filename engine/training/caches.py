"""Feature cache: when only the classifier trains, push each image through the frozen backbone once.

Training the head then costs milliseconds per epoch instead of a full forward pass. Features are keyed
by everything that could change them (backbone weights, preprocessing, the images and their order,
the augmentation view), kept in memory and on disk, so a stale cache is never used.

An entry on disk carries its byte count and CRC-32 in its header, checked on every read: a truncated,
damaged or unreadable entry is deleted and computed again, never trusted (CRC-32 of a 230 MB activation
entry: about 75 ms, a tenth of writing it). A disk that refuses an entry (full, read-only) costs a later
run the pass, never this one: the entry stays in memory and `notes` says it was not kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset

from engine.core.control import RunControl
from engine.core.files import atomic_path
from engine.core.paths import cache_dir
from engine.core.progress import Progress
from engine.data.preprocessing import Preprocessing
from engine.data.transforms import ImageDataset, collate_readable, eval_transform, mirrored_eval_transform
from engine.models.layers import feature_stages, head_parameter_names
from engine.training.frozen_runtime import FrozenRunner

log = logging.getLogger("transferlab")

# Images per forward pass when computing features. On two cores batch 8 and 16 ran at 172 and 165
# images/s and batch 64 at 110, with peak memory 0.2, 0.4 and 1.0 GB above the model's
# (EfficientNet-Lite0, 224 px): small batches stay in the CPU caches. 16 leaves more work per call for
# machines with more cores.
FEATURE_BATCH = 16


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
    return _state_digest(model, skip=classifier_parameter_names(model))


def _state_digest(module: nn.Module, skip: set[str] = frozenset(), salt: str = "") -> str:
    digest = hashlib.sha256(salt.encode())
    for name, tensor in module.state_dict().items():
        if name not in skip:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(images), pre_logits=True)


class PooledFeatures(nn.Module):
    """`pooled_features` as a module: the frozen part a feature pass exports to ONNX Runtime."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


VIEWS = ("plain", "mirrored")
"""The deterministic views of an image: as evaluation sees it, and its left-right mirror image."""


def view_transform(pre: Preprocessing, view: str) -> Callable:
    """The eval transform, or (mirrored) the eval transform then a left-right mirror: the second input of
    test-time flip, and the extra training view of augmentation 'flip'."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    return eval_transform(pre) if view == "plain" else mirrored_eval_transform(pre)


def view_id(pre: Preprocessing, view: str) -> str:
    """The transform id of a view in the cache key. The plain view keeps the id evaluation always used,
    so every fit, whatever its augmentation, and a recipe search share one entry per split."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    return f"{pre.to_dict()}|eval" + ("" if view == "plain" else f"|{view}")


class FeatureDataset(Dataset):
    """(feature, label) pairs drawn from one of several cached views; `view` is set per epoch. With
    `view = None` an item holds all its views, [V, ...], for `ViewAveraged`.

    Views are kept as a list of [N, ...] tensors, so views cached apart are never copied into one tensor
    (cached activations can take a quarter of RAM); a [V, N, ...] tensor is accepted as well. `skip`: rows
    left out, e.g. images that could not be read in a feature pass (their rows hold NaN), by index, so
    nothing is copied.
    """

    def __init__(self, views: torch.Tensor | list[torch.Tensor], labels: list[int], skip=()):
        self.views = list(views)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.view: int | None = 0
        self.skip = frozenset(skip)
        self.rows = [row for row in range(len(self.labels)) if row not in self.skip] if self.skip else None

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.labels)

    def __getitem__(self, index: int):
        if self.rows is not None:
            index = self.rows[index]
        if self.view is None:
            return torch.stack([view[index] for view in self.views]), self.labels[index]
        return self.views[self.view][index], self.labels[index]


class ViewAveraged(nn.Module):
    """The cached-input twin of `engine.models.predictor.MirrorAveraged`: the mean of `net`'s logits over
    the views of each input ([B, V, ...] batches), summed in view order and divided as it does."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.train(net.training)        # wrapping changes no mode (predict_logits restores the wrapper's)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        total = self.net(views[:, 0])
        for index in range(1, views.shape[1]):
            total = total + self.net(views[:, index])
        return total / views.shape[1]


class FeatureCache:
    """Computes and stores pooled features; one instance per fit (memory) over a folder (disk).

    Results up to `max_disk_bytes` are also written to disk, for the next run on the same data. `notes`
    collects what a fit's path notes should say about the disk (an entry damaged, or not kept), and
    `unreadable` each image (path -> reason) a pass with `skip_unreadable` could not read.
    """

    max_disk_bytes = 512 * 2**20
    stage = "features"                # what its progress reports

    def __init__(self, model: nn.Module, folder: Path | None = None, batch_size: int = FEATURE_BATCH,
                 frozen_runtime: str = "auto"):
        self.model = model
        self.folder = Path(folder) if folder else cache_dir() / "features"
        self.batch_size = batch_size
        self.fingerprint = self._fingerprint()
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, torch.Tensor] = {}
        self.runner = FrozenRunner(frozen_runtime)   # the engine of the frozen pass: ONNX Runtime or PyTorch
        self.planned_images = 0         # images the whole fit will compute: the break-even looks at all
        self.runtime_used: str | None = None          # 'onnxruntime' | 'pytorch': the latest pass's engine
        self.runtime_note = ""                        # and why, for the fit's path notes
        self.notes: list[str] = []
        self.unreadable: dict[str, str] = {}

    def _fingerprint(self) -> str:
        return backbone_fingerprint(self.model)

    def _extract(self, images: torch.Tensor) -> torch.Tensor:
        return on_model_device(self.model, images, lambda batch: pooled_features(self.model, batch))

    def _frozen_module(self) -> nn.Module:
        return PooledFeatures(self.model)

    @torch.inference_mode()
    def item_bytes(self, input_size: int) -> int:
        """Bytes cached per image and view, from one blank image (float32)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._extract(torch.zeros(1, 3, input_size, input_size)).numel() * 4
        finally:
            self.model.train(was_training)

    def key(self, paths: list[str], content_hash: str, transform_id: str, seed: int, views: int) -> str:
        parts = {"backbone": self.fingerprint, "paths": paths, "content": content_hash,
                 "transform": transform_id, "seed": seed, "views": views}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def features(self, paths: list[str], labels: list[int], content_hash: str,
                 transforms: list[Callable], transform_id: str, seed: int,
                 control: RunControl | None = None,
                 progress: Progress | None = None,
                 open_images: Callable[[], Callable[[int], object] | None] | None = None,
                 skip_unreadable: bool = False) -> torch.Tensor:
        """[len(transforms), N, ...] features, one view per transform, reused when already computed.

        `open_images`, called only when the features must be computed, gives an image source (index ->
        image) that stands in for decoding `paths`, e.g. the decoded-image cache; building one is work
        a cache hit should not pay for.

        `skip_unreadable`: an image that cannot be read any more (deleted or damaged since the scan) gets
        NaN rows and is listed in `unreadable`, for the caller to leave out with its label; such a result
        is kept nowhere, so the file is read again next time. Without it the ImageError is raised.
        """
        self.fingerprint = self._fingerprint()       # the frozen part may differ from the last call
        key = self.key(paths, content_hash, transform_id, seed, len(transforms))
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self.folder / f"{key}.safetensors"
        views = self._read_from_disk(path)
        if views is not None:
            self.hits += 1
            self._memory[key] = views
            return views
        self.misses += 1
        image_source = open_images() if open_images is not None else None
        views, missing = self._compute(paths, labels, transforms, seed, control, progress, image_source,
                                       skip_unreadable)
        if missing:
            return views
        self._memory[key] = views
        if views.numel() * views.element_size() <= self.max_disk_bytes:
            self._keep_on_disk(path, views)
        return views

    # -- a pass shared by several processes (engine.training.distributed) ---------------------------------
    def lookup(self, paths: list[str], content_hash: str, transform_id: str, seed: int,
               views: int) -> tuple[str, torch.Tensor | None]:
        """(key, the features already computed for these arguments, or None): every process asks before
        any computes its share, so a pass cached on disk is never sharded again."""
        self.fingerprint = self._fingerprint()
        key = self.key(paths, content_hash, transform_id, seed, views)
        found = self._memory.get(key)
        if found is None:
            found = self._read_from_disk(self.folder / f"{key}.safetensors")
        if found is not None:
            self.hits += 1
            self._memory[key] = found
        return key, found

    def compute(self, paths: list[str], labels: list[int], transforms: list[Callable], seed: int,
                control: RunControl | None = None, progress: Progress | None = None,
                skip_unreadable: bool = False) -> tuple[torch.Tensor, set[int]]:
        """(views, rows that could not be read) of one process's share of a pass, kept nowhere: only the
        gathered whole is an entry."""
        self.misses += 1
        return self._compute(paths, labels, transforms, seed, control, progress, None, skip_unreadable)

    def adopt(self, key: str, views: torch.Tensor, on_disk: bool) -> None:
        """Keep `views` (the gathered shares of a pass) as `key`'s entry; on disk from one process only."""
        self._memory[key] = views
        if on_disk and views.numel() * views.element_size() <= self.max_disk_bytes:
            self._keep_on_disk(self.folder / f"{key}.safetensors", views)

    def _read_from_disk(self, path: Path) -> torch.Tensor | None:
        """The entry at `path` once its size and checksum are right; a damaged one is deleted and noted."""
        if not path.exists():
            return None
        try:
            return read_entry(path)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            self._note(f"a {self.stage} cache entry failed its check ({exc}): deleted and computed again")
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None

    def _keep_on_disk(self, path: Path, views: torch.Tensor) -> None:
        """Best effort: a cache folder that cannot be written (full disk, read-only) costs a later run
        the feature pass, never this run its result."""
        try:
            write_entry(path, views)
        except Exception as exc:  # noqa: BLE001 - whatever the disk says, this run keeps its result
            why = getattr(exc, "strerror", None) or exc
            self._note(f"{self.stage} not kept on disk in {path.parent} ({why}): this run keeps them in "
                       "memory, the next run computes them again")

    def _note(self, line: str) -> None:
        if line not in self.notes:
            log.warning(line)
            self.notes.append(line)

    def _compute(self, paths, labels, transforms, seed, control, progress, image_source=None,
                 skip_unreadable=False) -> tuple[torch.Tensor, set[int]]:
        """(the views, the indices of images that could not be read: NaN in every view)."""
        missing: set[int] = set()
        views = self._compute_views(paths, labels, transforms, seed, control, progress, image_source,
                                    skip_unreadable, missing)
        if missing:
            views[:, sorted(missing)] = float("nan")   # a view read before the file went is not kept either
        return views, missing

    def _compute_views(self, paths, labels, transforms, seed, control, progress, image_source,
                       skip_unreadable, missing: set[int]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        # Either engine may compute a pass and the cache key does not name it: ONNX Runtime is used only
        # after its output agreed with PyTorch's on real images within 1e-4 (of the largest value, when
        # above 1; float32 rounding), so the results interchange.
        self.runner.begin_pass(self._frozen_module(), self.stage, self.fingerprint,
                               max(len(transforms) * len(paths), self.planned_images))
        try:
            with torch.random.fork_rng():  # the fit's own random stream stays untouched
                return torch.stack([self._view(paths, labels, transform, seed * 1000 + index, control,
                                               progress, index * len(paths), len(transforms) * len(paths),
                                               image_source, skip_unreadable, missing)
                                    for index, transform in enumerate(transforms)])
        finally:
            self.model.train(was_training)
            self.runtime_used, self.runtime_note = self.runner.runtime_used, self.runner.note

    def _view(self, paths, labels, transform, seed, control, progress, done, total,
              image_source=None, skip_unreadable=False, missing: set[int] | None = None) -> torch.Tensor:
        """[N, ...] features of one view; the rows of images that cannot be read are added to `missing`
        and hold zeros until `_compute` marks them."""
        torch.manual_seed(seed)            # augmented views are reproducible
        dataset = ImageDataset(paths, labels, transform, image_source, skip_unreadable=skip_unreadable)
        loader = DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate_readable)
        chunks, skipped = [], set()
        for batch in loader:
            if control is not None:
                control.checkpoint()
            images, _ = batch
            if len(images):
                chunks.append(self.runner.run(images, self._extract).float().contiguous())
            for item in batch.skipped:
                skipped.add(item.index)
                self.unreadable[item.path] = item.reason
                log.warning("%s: cannot be read any more (%s); left out of the %s pass", item.path,
                            item.reason, self.stage)
            done += len(images) + len(batch.skipped)
            if progress:
                progress(self.stage, done, total)
        if missing is not None:
            missing |= skipped
        return _with_rows_for(chunks, skipped, len(paths))


# -- the freeze-boundary cache ------------------------------------------------------------------------

@dataclass(frozen=True)
class CachePlan:
    """What a fit trains on: 'features' (pooled, only the classifier trains), 'activations' (cached
    after the first `boundary` stages, all frozen) or 'images'; `reason` says why when 'images'."""

    kind: str
    boundary: int = 0
    reason: str = ""


def plan_cache(model: nn.Module, train_frozen_bn: bool = False) -> CachePlan:
    """Which frozen part of `model` can be computed once and give exactly what training would compute.

    Frozen layers must behave the same in training and eval mode: no dropout or stochastic depth, and
    BatchNorm statistics kept fixed (`train_frozen_bn` off).
    """
    if not any(p.requires_grad for p in model.parameters()):
        return CachePlan("images", reason="nothing trains")
    classifier = set(classifier_parameter_names(model)) if hasattr(model, "get_classifier") else set()
    # the classifier's own parameter-free layers (an MLP head's GELU and dropout) train with it
    in_classifier = {id(m) for m in model.get_classifier().modules()} if classifier else set()
    frozen_modules = [m for n, m in model.named_modules()
                      if n and id(m) not in in_classifier and not any(p.requires_grad for p in m.parameters())]
    if feature_cache_applies(model):
        unstable = _changes_in_training(frozen_modules, train_frozen_bn)
        return CachePlan("images", reason=unstable) if unstable else CachePlan("features")
    stages = feature_stages(model)
    if stages is None:
        return CachePlan("images", reason=f"no frozen-layer cache for {type(model).__name__}")
    boundary = 0
    while boundary < len(stages) and not any(p.requires_grad for p in stages[boundary].parameters()):
        boundary += 1
    if boundary == 0:
        return CachePlan("images", reason="the first block trains: nothing frozen to compute once")
    staged = {id(p) for stage in stages for p in stage.parameters()} | {
        id(p) for n, p in model.named_parameters() if n in classifier}
    if any(id(p) not in staged and p.requires_grad for p in model.parameters()):
        return CachePlan("images", reason="trainable layers outside the block sequence")
    unstable = _changes_in_training(list(nn.Sequential(*stages[:boundary]).modules()), train_frozen_bn)
    return CachePlan("images", reason=unstable) if unstable else CachePlan("activations", boundary)


def _changes_in_training(modules: list[nn.Module], train_frozen_bn: bool) -> str:
    """Why frozen modules would compute something else in training mode; '' when they would not."""
    for module in modules:
        if float(getattr(module, "drop_prob", 0.0) or 0.0) > 0 or (
                isinstance(module, nn.Dropout) and module.p > 0):
            return "frozen layers use dropout or stochastic depth"
        if train_frozen_bn and isinstance(module, _BatchNorm):
            return "frozen BatchNorm layers update their statistics"
    return ""


class ActivationCache(FeatureCache):
    """Activations after the first `boundary` stages of `feature_stages(model)`, which are frozen."""

    stage = "activations"

    def __init__(self, model: nn.Module, boundary: int, folder: Path | None = None,
                 batch_size: int = FEATURE_BATCH, frozen_runtime: str = "auto"):
        self.prefix = nn.Sequential(*feature_stages(model)[:boundary])
        self.boundary = boundary
        super().__init__(model, folder or cache_dir() / "activations", batch_size, frozen_runtime)

    def _fingerprint(self) -> str:
        return _state_digest(self.prefix, salt=f"{type(self.model).__name__}|{self.boundary}")

    @torch.inference_mode()
    def _extract(self, images: torch.Tensor) -> torch.Tensor:
        return on_model_device(self.model, images, self.prefix)

    def _frozen_module(self) -> nn.Module:
        return self.prefix


def on_model_device(model: nn.Module, images: torch.Tensor, compute: Callable) -> torch.Tensor:
    """`compute(images)` where the model is (a GPU runs the frozen pass), the result back on the CPU, where
    the cache keeps it. On the CPU both moves are no-ops: no copy."""
    device = next(model.parameters(), images).device
    if device.type == "cpu":
        return compute(images)
    return compute(images.to(device, non_blocking=True)).float().cpu()


def _with_rows_for(chunks: list[torch.Tensor], skipped: set[int], count: int) -> torch.Tensor:
    """The computed rows in sample order, with a zero row at each skipped index."""
    if not chunks:
        raise ValueError(f"none of the {count} images of this pass could be read any more")
    computed = torch.cat(chunks)
    if not skipped:
        return computed
    rows = torch.zeros((count, *computed.shape[1:]), dtype=computed.dtype)
    rows[[row for row in range(count) if row not in skipped]] = computed
    return rows


# -- entries on disk -------------------------------------------------------------------------------------

def write_entry(path: Path, views: torch.Tensor) -> None:
    """One cache entry, its byte count and CRC-32 in the safetensors header. Not flushed to disk: a torn
    entry fails its check and is computed again (flushing 230 MB took about 0.5 s)."""
    views = views.contiguous()
    meta = {"bytes": str(_nbytes(views)), "crc32": str(_crc32(views))}
    with atomic_path(path, durable=False) as tmp:
        save_file({"features": views}, str(tmp), metadata=meta)


def read_entry(path: Path) -> torch.Tensor:
    """The entry's tensor, or ValueError when its size or checksum is not the one written (older entries,
    without them, are refused too)."""
    with safe_open(str(path), framework="pt") as entry:
        meta = entry.metadata() or {}
    if "bytes" not in meta or "crc32" not in meta:
        raise ValueError("no size or checksum recorded")
    with open(path, "rb") as f:
        header = struct.unpack("<Q", f.read(8))[0]
    expected = 8 + header + int(meta["bytes"])
    if os.path.getsize(path) != expected:
        raise ValueError(f"{os.path.getsize(path)} bytes instead of {expected}")
    views = load_file(str(path))["features"]
    if _nbytes(views) != int(meta["bytes"]) or _crc32(views) != int(meta["crc32"]):
        raise ValueError("its checksum does not match")
    return views


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _crc32(tensor: torch.Tensor) -> int:
    """CRC-32 of a contiguous CPU tensor's bytes, read in place."""
    return zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy())
