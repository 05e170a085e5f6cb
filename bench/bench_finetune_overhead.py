"""Benchmark 2: the engine's full fine-tune epoch vs a minimal hand-written PyTorch loop on the same
model, data and batch size.

    .venv/bin/python bench/bench_finetune_overhead.py [--per-class 20] [--batch 16] [--epochs 3] [--repeats 5]

Data: Fashion-MNIST photos (96 px PNG, 10 classes) split by the engine. Model: EfficientNet-Lite0 with
ImageNet weights at 224 px, every layer training, channels_last in both (the engine's choice). One
epoch = a pass over the train split with light augmentation + a pass over val. Only epochs after the
first are timed: the engine's `epoch_time_s` (which also covers its gradient clipping, schedule,
callbacks, metrics and the best-checkpoint write) against the same span of the minimal loop:
forward, label-smoothed cross-entropy, backward, AdamW step; then validation in inference mode.

The minimal loop runs twice: decoding every image from its file each epoch (what a hand-written loop
does), and reading the engine's decoded-image cache (so the ratio isolates the loop's own overhead).
A last variant runs the engine with one DataLoader worker process instead of loading in the main one.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio
from engine.data.imagecache import DecodedImageCache
from engine.data.scan import scan_dataset
from engine.data.transforms import ImageDataset, eval_transform, train_transform
from engine.models.catalog import create_model
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

GOAL = 1.05


def engine_epochs(report, args, workers: int = 0) -> float:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, freeze="none", augmentation="light",
                         image_size=args.image_size, lr=1e-3, num_workers=workers)
    with fresh_cache_dir(), tempfile.TemporaryDirectory() as run:
        history = Trainer(report, config, Path(run) / "run").fit().history
    return sum(h["epoch_time_s"] for h in history[1:])


def minimal_epochs(report, args, decoded) -> float:
    """The smallest honest loop: the same model, transforms and batch size, none of the engine."""
    bundle = create_model("efficientnet_lite0", len(report.classes), input_size=args.image_size)
    model, pre = bundle.model.to(memory_format=torch.channels_last), bundle.preprocessing
    train, val = report.split("train"), report.split("val")

    def loader(samples, transform, shuffle):
        source = decoded[0].source([decoded[1][s.path] for s in samples]) if decoded else None
        dataset = ImageDataset([s.path for s in samples], [s.label for s in samples], transform, source)
        return DataLoader(dataset, batch_size=args.batch, shuffle=shuffle)

    train_loader = loader(train, train_transform(pre, "light"), True)
    val_loader = loader(val, eval_transform(pre), False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    timed = 0.0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in train_loader:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            for images, labels in val_loader:
                model(images)
        if epoch > 0:
            timed += time.perf_counter() - start
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; all but the first are timed")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    report = scan_dataset(fashion_dataset(args.per_class, 96), seed=0)
    pre = create_model("efficientnet_lite0", None, input_size=args.image_size).preprocessing
    paths = [s.path for s in report.samples]
    images, _ = DecodedImageCache(budget=2**40).build(paths, report.content_hash, pre)
    decoded = (images, {p: i for i, p in enumerate(paths)})
    print(f"train {len(report.split('train'))}, val {len(report.split('val'))} images, batch {args.batch}, "
          f"{args.image_size} px, {args.epochs - 1} timed epoch(s) per run")
    times = interleave({
        "engine fit (freeze none, decoded-image cache)": lambda: engine_epochs(report, args),
        "minimal loop, decoding files every epoch": lambda: minimal_epochs(report, args, None),
        "minimal loop on the decoded-image cache": lambda: minimal_epochs(report, args, decoded),
        "engine fit, 1 DataLoader worker process": lambda: engine_epochs(report, args, workers=1),
    }, args.repeats)
    engine, files, cached, worker = list(times)
    table = Table("Benchmark 2: full fine-tune epoch, engine vs minimal PyTorch loop")
    for name in times:
        table.add(name, f"{median(times[name]):.1f} s per {args.epochs - 1} epoch(s)")
    table.add("engine / minimal loop on the same cached images", "", ratio(times[engine], times[cached]), GOAL,
              ratio(times.cpu[engine], times.cpu[cached]))
    table.add("engine / minimal loop decoding files", "", ratio(times[engine], times[files]), GOAL,
              ratio(times.cpu[engine], times.cpu[files]))
    table.add("engine with 1 worker process / engine (num_workers=0, the default)", "",
              ratio(times[worker], times[engine]), cpu_ratio=ratio(times.cpu[worker], times.cpu[engine]))
    table.print()


if __name__ == "__main__":
    main()
