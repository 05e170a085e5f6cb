"""Benchmark 6: peak memory (RSS) of training on 2,000 images at 224 px.

    .venv/bin/python bench/bench_memory.py [--per-class 200] [--batch 32] [--steps 4]

Data: 2,000 Fashion-MNIST photos (96 px PNG, 10 classes), split by the engine (train/val/test).
Model: EfficientNet-Lite0 with ImageNet weights at 224 px. Each variant runs in a fresh process and
reports its own peak resident set size (getrusage ru_maxrss): memory does not suffer from other load,
so each runs once. Head-only and last-2-blocks runs train 2 epochs end to end (augmentation off, one
cached view); full fine-tunes stop after `--steps` batches, when the training memory has peaked.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Table, fashion_dataset

VARIANTS = {
    "python + torch + model, nothing else": dict(),
    "head-only, cached features (default path)": dict(freeze="head", augmentation="none", epochs=2),
    "last 2 blocks, cached activations": dict(freeze="last-n", freeze_blocks=2, augmentation="none", epochs=2),
    "full fine-tune, decoded-image cache": dict(freeze="none", epochs=1),
    "full fine-tune, no cache": dict(freeze="none", epochs=1, cache="off"),
}


def child(name: str, args) -> None:
    from engine.core.callbacks import Callback
    from engine.core.control import RunControl
    from engine.data.scan import scan_dataset
    from engine.models.catalog import create_model
    from engine.training.config import TrainConfig
    from engine.training.trainer import Trainer

    class StopAfter(Callback):
        def __init__(self, control, steps):
            self.control, self.steps, self.note = control, steps, ""

        def on_fit_start(self, info):
            self.note = info.get("path_note", "")

        def on_batch_end(self, step, logs):
            if step >= self.steps and self.control is not None:
                self.control.cancel()

    report = scan_dataset(fashion_dataset(args.per_class, 96), seed=0)
    overrides = VARIANTS[name]
    if not overrides:
        create_model("efficientnet_lite0", len(report.classes))
        note = ""
    else:
        control = RunControl() if overrides["freeze"] == "none" else None
        watcher = StopAfter(control, args.steps)
        config = TrainConfig(batch_size=args.batch, **overrides)
        with tempfile.TemporaryDirectory() as run:
            Trainer(report, config, Path(run) / "run", [watcher], control).fit()
        note = watcher.note
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(json.dumps({"peak": peak, "note": note, "images": len(report.samples)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="full fine-tune batches before stopping")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args)
    fashion_dataset(args.per_class, 96)
    table = Table(f"Benchmark 6: peak RSS, training {args.per_class * 10} images at 224 px, batch {args.batch}")
    with tempfile.TemporaryDirectory() as cache:
        for name in VARIANTS:
            command = [sys.executable, __file__, "--child", name, "--per-class", str(args.per_class),
                       "--batch", str(args.batch), "--steps", str(args.steps)]
            env = {**os.environ, "TRANSFERLAB_CACHE_DIR": cache}
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name}: {result['peak'] / 2**20:.0f} MiB  {result['note']}")
            table.add(name, f"{result['peak'] / 2**20:.0f} MiB")
    table.print()


if __name__ == "__main__":
    main()
