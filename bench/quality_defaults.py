"""Which defaults give the best model per minute? Trains the candidate recipes on real images
(Fashion-MNIST product photos from Debian's dataset-fashion-mnist: N per class for training, a separate
held-out test set from the package's own test part) and prints test accuracy and wall time per recipe.

    .venv/bin/python bench/quality_defaults.py [--per-class 30] [--test-per-class 100] [--size 96]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data.scan import scan_dataset  # noqa: E402
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer  # noqa: E402

RECIPES = {
    "head-only, features, lr 1e-3": dict(freeze="head", augmentation="none", lr=1e-3),
    "head-only, features, lr 3e-3": dict(freeze="head", augmentation="none", lr=3e-3),
    "head-only, features, lr 1e-2": dict(freeze="head", augmentation="none", lr=1e-2),
    "head-only, 4 augmented views, lr 3e-3": dict(freeze="head", augmentation="light", lr=3e-3),
    "last 2 blocks, cached activations, lr 1e-3": dict(freeze="last-n", freeze_blocks=2, augmentation="light",
                                                       lr=1e-3),
    "last 2 blocks, augmented images, lr 1e-3": dict(freeze="last-n", freeze_blocks=2, augmentation="light",
                                                     lr=1e-3, cache="off"),
    "two-stage (3 head + 7 all), lr 3e-3": dict(freeze="none", recipe="two-stage", head_epochs=3,
                                                augmentation="light", lr=3e-3),
    "from scratch (random init), lr 3e-3": dict(freeze="none", weights="random", augmentation="light", lr=3e-3),
}


def write_data(root: Path, per_class: int, test_per_class: int, size: int) -> Path:
    spec = importlib.util.spec_from_file_location("fm", ROOT.parent / "shared" / "data" / "fashion_mnist_folder.py")
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    fm.write(*fm.read("train"), root / "train", per_class, size)
    fm.write(*fm.read("t10k"), root / "test", test_per_class, size)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=96, help="pixel size the 28 px photos are upsampled to")
    ap.add_argument("--image-size", type=int, default=224, help="model input size")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--only", nargs="*", help="substrings of recipe names to run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "data", args.per_class, args.test_per_class, args.size)
        report = scan_dataset(data, seed=0)
        counts = report.counts()
        print(f"train {sum(counts['train'].values())}, val {sum(counts['val'].values())}, "
              f"test {sum(counts['test'].values())} images, {len(report.classes)} classes, "
              f"input {args.image_size} px, {args.epochs} epochs")
        print(f"{'recipe':<42} {'val acc':>8} {'test acc':>9} {'time s':>8}")
        for name, overrides in RECIPES.items():
            if args.only and not any(s in name for s in args.only):
                continue
            config = TrainConfig(epochs=args.epochs, image_size=args.image_size, **overrides)
            started = time.monotonic()
            result = Trainer(report, config, Path(tmp) / "runs" / name.replace(" ", "_")).fit()
            elapsed = time.monotonic() - started
            m = result.metrics
            print(f"{name:<42} {m['val_accuracy']:>8.3f} {m['test_accuracy']:>9.3f} {elapsed:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
