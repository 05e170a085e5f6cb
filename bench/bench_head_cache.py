"""Benchmark 1: head-only training on cached features vs one plain inference pass over the same images,
and vs the naive loop that pushes every image through the frozen backbone every epoch.

    .venv/bin/python bench/bench_head_cache.py [--per-class 20] [--epochs 10] [--repeats 3] [--naive-repeats 1]

Data: Fashion-MNIST photos (Debian's dataset-fashion-mnist, 10 classes, upsampled to 96 px), split by the
engine into train/val/test. Model: EfficientNet-Lite0 with its ImageNet weights at 224 px. Each engine
fit is timed whole: decoding, feature caching, 10 epochs, validation, checkpoints and the final metrics
on val and test, with an empty cache folder each time (nothing reused from an earlier run). The plain
pass is a DataLoader with the eval transform and one forward per image in inference mode, on the same
channels_last model and batch size (FEATURE_BATCH, the fastest here) as the engine's feature pass. The
naive loop is the engine itself with `cache='off'`, so its accuracy must equal the cached fit's when
augmentation is off.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio
from engine.data.scan import scan_dataset
from engine.data.transforms import ImageDataset, eval_transform
from engine.models.catalog import create_model
from engine.training.caches import FEATURE_BATCH
from engine.training.config import TrainConfig
from engine.training.optim import seed_everything
from engine.training.trainer import Trainer

GOAL = 1.3


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


def engine_fit(report, config: TrainConfig, accuracies: dict, name: str) -> float:
    seed_everything(config.seed)        # the new head's initial weights, as when the Trainer builds the model
    bundle = create_model(config.backbone, len(report.classes), input_size=config.image_size)
    with fresh_cache_dir(), tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        result = Trainer(report, config, Path(run) / "run", bundle=bundle).fit()
        seconds = time.perf_counter() - start
    accuracies.setdefault(name, []).append((result.metrics["val_accuracy"], result.metrics["test_accuracy"]))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-repeats", type=int, default=1, help="rounds that include the slow naive loop")
    args = ap.parse_args()
    report = scan_dataset(fashion_dataset(args.per_class, 96), seed=0)
    counts = {split: len(report.split(split)) for split in ("train", "val", "test")}
    print(f"{len(report.samples)} images {counts}, {args.image_size} px, {args.epochs} epochs")
    base = dict(epochs=args.epochs, image_size=args.image_size, freeze="head", lr=3e-3)
    accuracies: dict = {}
    variants = {
        "one inference pass (all images)": lambda: inference_pass(report, args.image_size),
        "cached features, no augmentation": lambda: engine_fit(
            report, TrainConfig(**base, augmentation="none"), accuracies, "cached features, no augmentation"),
        "cached features, 4 augmented views": lambda: engine_fit(
            report, TrainConfig(**base, augmentation="light", cached_views=4), accuracies,
            "cached features, 4 augmented views"),
        "naive loop (cache off), no augmentation": lambda: engine_fit(
            report, TrainConfig(**base, augmentation="none", cache="off"), accuracies,
            "naive loop (cache off), no augmentation"),
    }
    times = interleave(variants, args.repeats, only_first={"naive loop (cache off), no augmentation":
                                                           args.naive_repeats})
    table = Table(f"Benchmark 1: head-only training, {args.epochs} epochs, vs one inference pass "
                  f"({len(report.samples)} images)")
    plain = "one inference pass (all images)"
    table.add(plain, f"{median(times[plain]):.1f} s")
    for name in list(variants)[1:]:
        val, test = accuracies[name][0]
        value = f"{median(times[name]):.1f} s, val {val:.3f} test {test:.3f}"
        goal = GOAL if name == "cached features, no augmentation" else None
        table.add(f"{name} / inference pass", value, ratio(times[name], times[plain]), goal,
                  ratio(times.cpu[name], times.cpu[plain]))
    naive = "naive loop (cache off), no augmentation"
    for name in ("cached features, no augmentation", "cached features, 4 augmented views"):
        table.add(f"speed-up of {name} over the naive loop", "", ratio(times[naive], times[name]),
                  cpu_ratio=ratio(times.cpu[naive], times.cpu[name]))
    table.print()


if __name__ == "__main__":
    main()
