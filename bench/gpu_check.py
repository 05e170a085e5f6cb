"""The GPU path, checked on a machine that has one (called by bench/gpu_check.sh).

Trains head-only (cached features) and the last 2 blocks (on images, where mixed precision matters) on the
bundled demo photos: on CUDA with AMP and without, and on the CPU; reports training and inference images/s;
then checks that a GPU-trained checkpoint predicts the same on the CPU (top-1 identical, logits within a
tolerance). Without CUDA the GPU parts print "no CUDA device: skipped" and the CPU parts still run.

    python bench/gpu_check.py [--quick] [--out FILE.json]

Results go to FILE.json (default: $OUT/gpu-check.json when OUT is set, else bench/out/gpu-check.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from engine.core.device import AMP_OFF, describe_device, resolve_device
from engine.core.paths import demo_dataset
from engine.data.scan import scan_dataset
from engine.outputs.predict import TorchClassifier
from engine.training.config import TrainConfig
from engine.training.trainer import Trainer

RECIPES = {
    "head-only": dict(freeze="head"),                                   # cached features: the default
    "last-2-blocks": dict(freeze="last-n", freeze_blocks=2, cache="off", lr=1e-3),   # on images
}
LOGIT_TOLERANCE = 1e-2          # relative to the largest |logit|; TF32 convolutions differ about 1e-3


class TrainerWithoutAmp(Trainer):
    """The Trainer with mixed precision off: the fp32 baseline on the same GPU."""

    def _use_device(self) -> None:
        super()._use_device()
        self.amp, self.scaler = AMP_OFF, None


def timed_fit(report, config: TrainConfig, run_dir: Path, amp: bool) -> dict:
    began = time.perf_counter()
    result = (Trainer if amp else TrainerWithoutAmp)(report, config, run_dir).fit()
    wall = time.perf_counter() - began
    epoch_time = sum(logs["epoch_time_s"] for logs in result.history)
    images = len(report.split("train")) * len(result.history)
    return {"status": result.status, "wall_s": round(wall, 2), "epochs": len(result.history),
            "train_images_per_s": round(images / max(epoch_time, 1e-9), 1),
            "val_accuracy": result.metrics.get("val_accuracy"), "checkpoint": result.checkpoint}


def inference_rate(checkpoint: str, device: str, paths: list[str], batch: int = 64) -> tuple[float, torch.Tensor]:
    """(images/s of the checkpoint on `device`, its logits for `paths`) with images decoded beforehand."""
    from PIL import Image
    classifier = TorchClassifier(checkpoint, device)
    images = [Image.open(path).convert("RGB") for path in paths]
    classifier.logits(images[:batch])                           # warm-up (cuDNN, allocator)
    if classifier.device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    logits = [classifier.logits(images[i:i + batch]) for i in range(0, len(images), batch)]
    if classifier.device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - began), torch.from_numpy(np.concatenate(logits))


def same_predictions(gpu_logits: torch.Tensor, cpu_logits: torch.Tensor) -> dict:
    difference = float((gpu_logits - cpu_logits).abs().max())
    allowed = LOGIT_TOLERANCE * max(1.0, float(cpu_logits.abs().max()))
    top1_same = bool((gpu_logits.argmax(1) == cpu_logits.argmax(1)).all())
    return {"top1_identical": top1_same, "max_logit_difference": difference, "allowed": allowed,
            "ok": top1_same and difference <= allowed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test of this script)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(os.environ["OUT"]) / "gpu-check.json" if os.environ.get("OUT") \
        else ROOT / "bench" / "out" / "gpu-check.json"
    has_cuda = torch.cuda.is_available()
    results = {"torch": torch.__version__, "python": platform.python_version(), "quick": args.quick,
               "cuda_available": has_cuda, "auto_device": describe_device(resolve_device("auto")),
               "runs": [], "prediction_match": None, "ok": True}
    print(f"torch {torch.__version__}; --device auto runs on {results['auto_device']}", flush=True)

    report = scan_dataset(demo_dataset(), seed=0)
    paths = [s.path for s in report.split("val") or report.split("train")]
    base = dict(epochs=1, image_size=64, batch_size=16) if args.quick else dict(epochs=3, batch_size=64)
    cpu_base = dict(base, epochs=1) if not args.quick else base
    plans = []
    if has_cuda:
        plans += [("cuda", recipe, amp, base) for recipe in RECIPES for amp in (True, False)]
    else:
        print("CUDA training (AMP and fp32): no CUDA device: skipped", flush=True)
    plans += [("cpu", recipe, False, cpu_base) for recipe in RECIPES]

    with tempfile.TemporaryDirectory() as tmp:
        gpu_checkpoint = None
        for device, recipe, amp, settings in plans:
            config = TrainConfig(**{**settings, **RECIPES[recipe]}, device=device)
            run_dir = Path(tmp) / f"{device}-{recipe}-{'amp' if amp else 'fp32'}"
            # a cache of its own: each run computes its frozen pass (and is timed with it)
            os.environ["TRANSFERLAB_CACHE_DIR"] = str(run_dir / "cache")
            row = {"device": device, "recipe": recipe, "amp": amp, **settings}
            try:
                row.update(timed_fit(report, config, run_dir, amp))
                rate, _ = inference_rate(row["checkpoint"], device, paths)
                row["inference_images_per_s"] = round(rate, 1)
                if device == "cuda" and amp and recipe == "last-2-blocks":
                    gpu_checkpoint = row["checkpoint"]
            except Exception as exc:  # noqa: BLE001 - report every run, then fail at the end
                row.update(status="error", error=f"{type(exc).__name__}: {exc}")
                results["ok"] = False
            row.pop("checkpoint", None)
            results["runs"].append(row)
            print(json.dumps(row), flush=True)

        if gpu_checkpoint is None:
            print("GPU-trained model predicts the same on the CPU: no CUDA device: skipped", flush=True)
        else:
            _, gpu_logits = inference_rate(gpu_checkpoint, "cuda", paths)
            _, cpu_logits = inference_rate(gpu_checkpoint, "cpu", paths)
            match = results["prediction_match"] = same_predictions(gpu_logits, cpu_logits)
            results["ok"] &= match["ok"]
            print(f"GPU-trained model on the CPU: {json.dumps(match)}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out} ({'ok' if results['ok'] else 'FAILED'})", flush=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
