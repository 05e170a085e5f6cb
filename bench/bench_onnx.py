"""Benchmark 5: inference throughput of the exported ONNX model in ONNX Runtime vs the same checkpoint
in PyTorch.

    .venv/bin/python bench/bench_onnx.py [--per-class 5] [--images 32] [--repeats 7]

A short head-only run on Fashion-MNIST photos (EfficientNet-Lite0, ImageNet weights, 224 px) is exported
with `engine.outputs.export.export_run` (verified against PyTorch). Both then classify the same real images,
already preprocessed, one at a time (batch 1, as a GUI or a predict call on single files does) and in
batches of 32: PyTorch as `engine.outputs.predict.TorchClassifier` loads it (NCHW) and in channels_last,
ONNX Runtime as `engine.outputs.predict.OnnxClassifier` runs it (CPU provider, default threads).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio
from engine.data.images import load_image
from engine.data.scan import scan_dataset
from engine.outputs.export import export_run
from engine.outputs.predict import OnnxClassifier, TorchClassifier
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer


def torch_runner(model, memory_format):
    def run(batch: np.ndarray) -> np.ndarray:
        model.to(memory_format=memory_format)
        with torch.inference_mode():
            return model(torch.from_numpy(batch).contiguous(memory_format=memory_format)).numpy()
    return run


def throughput(run, inputs: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for first in range(0, len(inputs), batch):
        run(inputs[first:first + batch])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--images", type=int, default=32, help="images classified per measurement")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    report = scan_dataset(fashion_dataset(args.per_class, 96), seed=0)
    with tempfile.TemporaryDirectory() as tmp, fresh_cache_dir():
        run_dir = Path(tmp) / "run"
        Trainer(report, TrainConfig(epochs=1, freeze="head", augmentation="none"), run_dir).fit()
        start = time.perf_counter()
        exported = export_run(run_dir, Path(tmp) / "model.onnx")
        print(f"exported with {exported.exporter} in {time.perf_counter() - start:.0f} s, "
              f"max |logit diff| {exported.max_abs_diff:.1e}")
        pytorch, onnx = TorchClassifier(run_dir / "model.safetensors"), OnnxClassifier(exported.path)
        paths = [s.path for s in report.samples][:args.images]
        inputs = pytorch.inputs([load_image(p) for p in paths]).numpy()
        runners = {"PyTorch (NCHW, as loaded)": torch_runner(pytorch.model, torch.contiguous_format),
                   "PyTorch channels_last": torch_runner(pytorch.model, torch.channels_last),
                   "ONNX Runtime": onnx.run}
        difference = np.abs(runners["PyTorch (NCHW, as loaded)"](inputs) - onnx.run(inputs)).max()
        for run in runners.values():
            throughput(run, inputs[:4], 1)                  # warm-up (allocations, first-run kernels)
        table = Table("Benchmark 5: inference, ONNX Runtime vs PyTorch "
                      "(ratio = PyTorch time / ONNX Runtime time: the speed-up of ONNX Runtime)")
        for batch in (1, 32):
            times = interleave({name: (lambda run=run: throughput(run, inputs, batch))
                                for name, run in runners.items()}, args.repeats)
            for name in runners:
                table.add(f"batch {batch}: {name}", f"{len(inputs) / median(times[name]):.1f} img/s")
            for name in list(runners)[:2]:
                table.add(f"batch {batch}: ONNX Runtime vs {name}", "", ratio(times[name], times["ONNX Runtime"]),
                          cpu_ratio=ratio(times.cpu[name], times.cpu["ONNX Runtime"]))
        table.add("max |logit difference| PyTorch vs ONNX Runtime", f"{difference:.1e}")
    table.print()


if __name__ == "__main__":
    main()
