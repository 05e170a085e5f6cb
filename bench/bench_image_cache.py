"""Benchmark 4: loading an epoch of training images (epoch 2 and later) from the decoded-image cache vs
decoding every image from its file every epoch.

    .venv/bin/python bench/bench_image_cache.py [--photos 300] [--long-side 1024] [--repeats 5]

Data: JPEG photos cut from scikit-image's bundled photos (6 classes, 1024x768 and 768x1024 px, quality
90, like downsized camera pictures), and Fashion-MNIST PNGs (96 px). Each measurement iterates one epoch
of a DataLoader (batch 32, the main process, as the engine does) through the light training transform
of EfficientNet-Lite0 at 224 px, with no model, so only loading is timed. The cache is built once
beforehand; its one-time cost (decoding with one thread per core) is compared with one decoding epoch.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from torch.utils.data import DataLoader

from common import Table, fashion_dataset, interleave, median, photo_dataset, ratio
from engine.data.imagecache import DecodedImageCache
from engine.data.transforms import ImageDataset, train_transform
from engine.models.catalog import create_model


def epoch(paths, transform, source=None) -> None:
    dataset = ImageDataset(paths, [0] * len(paths), transform, source)
    for _ in DataLoader(dataset, batch_size=32, shuffle=True):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--long-side", type=int, default=1024)
    ap.add_argument("--fashion-per-class", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    pre = create_model("efficientnet_lite0", None).preprocessing
    transform = train_transform(pre, "light")
    table = Table("Benchmark 4: one epoch of training-image loading, decoded-image cache vs decoding "
                  "(ratio = decoding time / cached time: the speed-up)")
    datasets = {f"{args.photos} JPEG photos {args.long_side}px": photo_dataset(args.photos, args.long_side),
                f"{args.fashion_per_class * 10} Fashion-MNIST PNGs 96px": fashion_dataset(args.fashion_per_class)}
    for label, folder in datasets.items():
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))
        with tempfile.TemporaryDirectory() as disk:
            start = time.perf_counter()
            memory, _ = DecodedImageCache(disk, budget=2**40).build(paths, label, pre)
            build = time.perf_counter() - start
            on_disk, _ = DecodedImageCache(disk, budget=0).build(paths, label, pre)
            print(f"{label}: {len(paths)} images, cache {memory.nbytes / 1e6:.0f} MB, built in {build:.1f} s")
            times = interleave({
                "decode every epoch": lambda: epoch(paths, transform),
                "decoded cache in memory": lambda: epoch(paths, transform, memory.source(range(len(paths)))),
                "decoded cache on disk (memory-mapped)": lambda: epoch(paths, transform,
                                                                       on_disk.source(range(len(paths)))),
            }, args.repeats)
            del on_disk
        decode = times["decode every epoch"]
        table.add(f"{label}: decode every epoch", f"{len(paths) / median(decode):.0f} img/s")
        for name in ("decoded cache in memory", "decoded cache on disk (memory-mapped)"):
            table.add(f"{label}: {name}", f"{len(paths) / median(times[name]):.0f} img/s",
                      ratio(decode, times[name]), cpu_ratio=ratio(times.cpu["decode every epoch"], times.cpu[name]))
        table.add(f"{label}: one-time build / one decoding epoch", f"{build:.1f} s", build / median(decode))
    table.print()


if __name__ == "__main__":
    main()
