"""Benchmark 1: head-only training on cached features vs one plain inference pass over the same images,
with the frozen pass in ONNX Runtime and in PyTorch, and vs the naive loop that pushes every image
through the frozen backbone every epoch.

    .venv/bin/python bench/bench_head_cache.py [--per-class 20] [--epochs 10] [--repeats 3] [--naive-repeats 1]
                                               [--views-repeats 3]

Data: Fashion-MNIST photos (Debian's dataset-fashion-mnist, 10 classes, upsampled to 96 px), split by the
engine into train/val/test. Model: EfficientNet-Lite0 with its ImageNet weights at 224 px. Each engine
fit is timed whole: decoding, feature caching, 10 epochs, validation, checkpoints and the final metrics
on val and test, with an empty cache folder each time (nothing reused from an earlier run). The plain
pass is a DataLoader with the eval transform and one forward per image in inference mode, on the same
channels_last model and batch size (FEATURE_BATCH, the fastest here) as the engine's feature pass. The
naive loop is the engine itself with `cache='off'`, so its accuracy must equal the cached fit's when
augmentation is off.

The frozen pass runs in ONNX Runtime (`frozen_runtime='auto'`, the default) or in PyTorch
(`frozen_runtime='pytorch'`), side by side in the same rounds. With an empty cache folder the ONNX
Runtime fit pays the export too; "exported file reused" starts from a cache folder holding only the
exported backbone (as every head-only fit after the first on the same backbone and input size does).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

# common first: it sets OpenMP's wait policy as the app does, and OpenMP reads it when torch loads
from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio

import torch  # noqa: I001
from torch.utils.data import DataLoader

from engine.data.scan import scan_dataset
from engine.data.transforms import ImageDataset, eval_transform
from engine.models.catalog import create_model
from engine.training.caches import FEATURE_BATCH
from engine.training.config import TrainConfig
from engine.training.optim import seed_everything
from engine.training.trainer import Trainer

GOAL = 1.3              # the fit with the frozen pass in PyTorch, against one inference pass
ONNX_GOAL = 0.5         # the same fit with the frozen pass in ONNX Runtime (issue 16)


def inference_pass(report, image_size: int) -> float:
    bundle = create_model("efficientnet_lite0", len(report.classes), input_size=image_size)
    model = bundle.model.to(memory_format=torch.channels_last).eval()
    loader = DataLoader(ImageDataset([s.path for s in report.samples], [s.label for s in report.samples],
                                     eval_transform(bundle.preprocessing)), batch_size=FEATURE_BATCH)
    start = time.perf_counter()
    with torch.inference_mode():
        for images, _ in loader:
            model(images)
    return time.perf_counter() - start


def engine_fit(report, config: TrainConfig, accuracies: dict, name: str, exported: Path | None = None,
               notes: dict | None = None) -> float:
    """Seconds of one whole fit in an empty cache folder; with `exported`, a folder holding only that
    frozen-onnx folder."""
    seed_everything(config.seed)        # the new head's initial weights, as when the Trainer builds the model
    bundle = create_model(config.backbone, len(report.classes), input_size=config.image_size)
    with fresh_cache_dir() as cache, tempfile.TemporaryDirectory() as run:
        if exported is not None:
            shutil.copytree(exported, cache / "frozen-onnx")
        start = time.perf_counter()
        trainer = Trainer(report, config, Path(run) / "run", bundle=bundle)
        result = trainer.fit()
        seconds = time.perf_counter() - start
    accuracies.setdefault(name, []).append((result.metrics["val_accuracy"], result.metrics["test_accuracy"]))
    if notes is not None:
        notes[name] = next((n for n in trainer.path_notes if n.startswith("frozen layers")), "")
    return seconds


def exported_backbone(report, config: TrainConfig, folder: Path) -> Path | None:
    """The frozen-onnx folder a first ONNX Runtime fit leaves in the cache folder (None: it chose PyTorch)."""
    with fresh_cache_dir() as cache, tempfile.TemporaryDirectory() as run:
        Trainer(report, config, Path(run) / "run").fit()
        if not (cache / "frozen-onnx").is_dir():
            return None
        shutil.copytree(cache / "frozen-onnx", folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-repeats", type=int, default=1, help="rounds that include the slow naive loop")
    ap.add_argument("--views-repeats", type=int, default=3, help="rounds that include the 4-view fit")
    args = ap.parse_args()
    report = scan_dataset(fashion_dataset(args.per_class, 96), seed=0)
    counts = {split: len(report.split(split)) for split in ("train", "val", "test")}
    print(f"{len(report.samples)} images {counts}, {args.image_size} px, {args.epochs} epochs")
    base = dict(epochs=args.epochs, image_size=args.image_size, freeze="head", lr=3e-3)
    plain_config = TrainConfig(**base, augmentation="none")
    torch_config = TrainConfig(**base, augmentation="none", frozen_runtime="pytorch")
    accuracies, notes = {}, {}
    plain, onnx, reused, pytorch = ("one inference pass (all images)", "fit, ONNX Runtime (export included)",
                                    "fit, ONNX Runtime (exported file reused)", "fit, PyTorch frozen pass")
    views, naive = "fit, ONNX Runtime, 4 augmented views", "naive loop (cache off), no augmentation"
    with tempfile.TemporaryDirectory() as tmp:
        exported = exported_backbone(report, plain_config, Path(tmp) / "frozen-onnx")
        variants = {
            plain: lambda: inference_pass(report, args.image_size),
            onnx: lambda: engine_fit(report, plain_config, accuracies, onnx, notes=notes),
            reused: lambda: engine_fit(report, plain_config, accuracies, reused, exported, notes),
            pytorch: lambda: engine_fit(report, torch_config, accuracies, pytorch, notes=notes),
            views: lambda: engine_fit(report, TrainConfig(**base, augmentation="light", cached_views=4),
                                      accuracies, views, notes=notes),
            naive: lambda: engine_fit(report, TrainConfig(**base, augmentation="none", cache="off"),
                                      accuracies, naive),
        }
        times = interleave(variants, args.repeats, only_first={naive: args.naive_repeats,
                                                               views: args.views_repeats})
    table = Table(f"Benchmark 1: head-only training, {args.epochs} epochs, vs one inference pass "
                  f"({len(report.samples)} images)")
    table.add(plain, f"{median(times[plain]):.1f} s")
    for name in (onnx, reused, pytorch, views, naive):
        if not times[name]:
            continue
        val, test = accuracies[name][0]
        goal = {onnx: ONNX_GOAL, reused: ONNX_GOAL, pytorch: GOAL}.get(name)
        table.add(f"{name} / inference pass", f"{median(times[name]):.1f} s, val {val:.3f} test {test:.3f}",
                  ratio(times[name], times[plain]), goal, ratio(times.cpu[name], times.cpu[plain]))
    table.add("ONNX Runtime fit / PyTorch fit (export included)", "", ratio(times[onnx], times[pytorch]),
              cpu_ratio=ratio(times.cpu[onnx], times.cpu[pytorch]))
    table.add("same accuracy, ONNX Runtime and PyTorch fits",
              str(accuracies[onnx][0] == accuracies[pytorch][0] == accuracies[reused][0]))
    if times[naive]:
        for name in (onnx, pytorch):
            table.add(f"speed-up of the {name} over the naive loop", "", ratio(times[naive], times[name]),
                      cpu_ratio=ratio(times.cpu[naive], times.cpu[name]))
    for name, note in notes.items():
        print(f"{name}: {note}")
    table.print()


if __name__ == "__main__":
    main()
