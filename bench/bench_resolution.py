"""Lower input resolution, a user choice: what it saves in time and what it costs in accuracy.

    .venv/bin/python bench/bench_resolution.py [--per-class 30] [--test-per-class 50] [--sizes 224 192 160 128]

Data: Fashion-MNIST photos (Debian's dataset-fashion-mnist, upsampled to 96 px): `--per-class` per
class from the package's training part (split by the engine into train and val), a separate test set
from its test part. Model: EfficientNet-Lite0 with ImageNet weights. Per input size, side by side:
a whole head-only fit (cached features, no augmentation, 10 epochs; accuracy on the test set) and one
epoch of full fine-tuning (every layer; the engine's `epoch_time_s` of a one-epoch fit).

Fashion-MNIST photos are 28 px originals, so they hold no detail that a lower input size could lose:
on photos with fine detail the accuracy cost of a smaller input is larger than measured here.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio
from engine.data.scan import scan_dataset
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer


def fit(report, config: TrainConfig, accuracy: dict, key) -> float:
    with fresh_cache_dir(), tempfile.TemporaryDirectory() as run:
        result = Trainer(report, config, Path(run) / "run").fit()
    accuracy.setdefault(key, result.metrics["test_accuracy"])
    return result.history[0]["epoch_time_s"] if config.freeze == "none" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 192, 160, 128])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    report = scan_dataset(fashion_dataset(args.per_class, 96, args.test_per_class), seed=0)
    print(f"train {len(report.split('train'))}, val {len(report.split('val'))}, "
          f"test {len(report.split('test'))} images")
    accuracy: dict = {}
    variants = {}
    for size in args.sizes:
        head = TrainConfig(image_size=size, freeze="head", augmentation="none", epochs=10, lr=3e-3)
        tune = TrainConfig(image_size=size, freeze="none", augmentation="light", epochs=1, batch_size=16)
        variants[f"{size} px head-only fit"] = lambda c=head, k=("head", size): fit(report, c, accuracy, k)
        variants[f"{size} px fine-tune epoch"] = lambda c=tune, k=("tune", size): fit(report, c, accuracy, k)
    times = interleave(variants, args.repeats)
    base = args.sizes[0]
    table = Table(f"Input resolution (ratio = time at {base} px / time at this size: the speed-up)")
    for size in args.sizes:
        head, tune = f"{size} px head-only fit", f"{size} px fine-tune epoch"
        table.add(f"{head}, test accuracy {accuracy[('head', size)]:.3f}", f"{median(times[head]):.1f} s",
                  ratio(times[f'{base} px head-only fit'], times[head]),
                  cpu_ratio=ratio(times.cpu[f'{base} px head-only fit'], times.cpu[head]))
        table.add(tune, f"{median(times[tune]):.1f} s", ratio(times[f'{base} px fine-tune epoch'], times[tune]),
                  cpu_ratio=ratio(times.cpu[f'{base} px fine-tune epoch'], times.cpu[tune]))
    table.print()


if __name__ == "__main__":
    main()
