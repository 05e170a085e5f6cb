"""Benchmark 7: the frozen pass on ONNX Runtime vs PyTorch: throughput, export cost and break-even.

    .venv/bin/python bench/bench_frozen_runtime.py [--images 48] [--repeats 5] [--sizes 224 112]
                                                   [--session-options] [--dynamo]

Real Fashion-MNIST photos, preprocessed once, go through EfficientNet-Lite0's frozen part (ImageNet
weights) in batches of FEATURE_BATCH, as `engine.training.caches` runs it: the pooled features of a
head-only fit and the activations before the last 2 blocks of a last-N fit, in PyTorch (channels_last,
inference mode) and in an ONNX Runtime session made by `engine.training.frozen_runtime`. The fixed cost
of ONNX Runtime is the export, the session, its first batch's warm-up and the images PyTorch computes
too to verify it; the break-even is that cost over the time saved per image.
`--session-options` also times the session settings the engine chose against their alternatives;
`--dynamo` times torch.export's exporter once for comparison.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

# common first: it sets OpenMP's wait policy as the app does, and OpenMP reads it when torch loads
from common import Table, fashion_dataset, interleave, median, ratio

import torch  # noqa: I001
from engine.data.images import load_image
from engine.data.scan import scan_dataset
from engine.data.transforms import eval_transform
from engine.models.catalog import create_model
from engine.models.layers import LayerTree, feature_stages
from engine.training import frozen_runtime
from engine.training.caches import FEATURE_BATCH, PooledFeatures, plan_cache


def frozen_parts(size: int) -> dict[str, torch.nn.Module]:
    bundle = create_model("efficientnet_lite0", 10, input_size=size)
    model = bundle.model.to(memory_format=torch.channels_last).eval()
    LayerTree(model).apply_preset("last-n", 2)
    boundary = plan_cache(model).boundary
    return {"features": PooledFeatures(model).eval(),
            "activations (last 2 blocks train)": torch.nn.Sequential(*feature_stages(model)[:boundary]).eval()}


def real_images(count: int, size: int) -> torch.Tensor:
    report = scan_dataset(fashion_dataset(max(20, count // 10 + 1), 96), seed=0)
    pre = create_model("efficientnet_lite0", 10, input_size=size, weights="random").preprocessing
    return torch.stack([eval_transform(pre)(load_image(s.path)) for s in report.samples[:count]])


def torch_pass(module, images):
    def run():
        with torch.inference_mode():
            for first in range(0, len(images), FEATURE_BATCH):
                module(images[first:first + FEATURE_BATCH])
    return run


def session_pass(session, images):
    def run():
        for first in range(0, len(images), FEATURE_BATCH):
            session.run(None, {frozen_runtime.INPUT: images[first:first + FEATURE_BATCH].numpy()})
    return run


def session_with(path: Path, **changes):
    """A session as the engine makes it, with some settings changed (for --session-options)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = changes.get("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    options.intra_op_num_threads = changes.get("threads", torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", changes.get("spinning", "0"))
    options.enable_mem_pattern = changes.get("pattern", True)
    options.enable_cpu_mem_arena = changes.get("arena", True)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fixed_cost(module, size: int, folder: Path, images: torch.Tensor) -> dict:
    """Seconds of the export, the session and its first batch (median of 3; a first attempt before them
    pays one-off warm-ups a fit pays once per process)."""
    parts = {"export": [], "session": [], "first batch": []}
    path = folder / f"cost-{size}.onnx"
    for attempt in range(4):
        seconds = frozen_runtime.export_frozen(module, size, path)
        started = time.perf_counter()
        session = frozen_runtime.open_session(path)
        opened = time.perf_counter()
        session.run(None, {frozen_runtime.INPUT: images[:FEATURE_BATCH].numpy()})
        if attempt:
            parts["export"].append(seconds)
            parts["session"].append(opened - started)
            parts["first batch"].append(time.perf_counter() - opened)
    return {name: median(values) for name, values in parts.items()}


def break_even_row(table: Table, size: int, cost: dict, torch_rate: float, ort_rate: float) -> None:
    """The fixed cost of ONNX Runtime in a pass: export, session, the first batch's warm-up beyond a
    steady batch, and PyTorch on the VERIFY_IMAGES images it checks; over the time saved per image."""
    warm_up = max(0.0, cost["first batch"] - FEATURE_BATCH / ort_rate)
    verify = frozen_runtime.VERIFY_IMAGES / torch_rate
    total = cost["export"] + cost["session"] + warm_up + verify
    saved = 1 / torch_rate - 1 / ort_rate
    table.add(f"{size} px fixed cost: export + session + warm-up + verification",
              f"{cost['export']:.2f} + {cost['session']:.2f} + {warm_up:.2f} + {verify:.2f} s")
    table.add(f"{size} px break-even (fixed cost / time saved per image)",
              f"{total / saved:.0f} images" if saved > 0 else "never")
    table.add(f"{size} px break-even the engine uses", f"{frozen_runtime.break_even(size)} images")


def measure_size(size: int, args, table: Table, folder: Path) -> None:
    images = real_images(args.images, size)
    for name, module in frozen_parts(size).items():
        path = folder / f"{size}-{name.split()[0]}.onnx"
        frozen_runtime.export_frozen(module, size, path)
        session = frozen_runtime.open_session(path)
        with torch.inference_mode():
            reference = module(images[:FEATURE_BATCH])
        difference = float((torch.from_numpy(session.run(None, {frozen_runtime.INPUT: images[
            :FEATURE_BATCH].numpy()})[0]) - reference).abs().max())
        variants = {"PyTorch": torch_pass(module, images), "ONNX Runtime": session_pass(session, images)}
        for run in variants.values():
            run()                                           # warm-up: first-call allocations and kernels
        times = interleave(variants, args.repeats)
        torch_rate, ort_rate = (len(images) / median(times[v]) for v in variants)
        table.add(f"{size} px {name}: PyTorch", f"{torch_rate:.1f} img/s")
        table.add(f"{size} px {name}: ONNX Runtime (speed-up)", f"{ort_rate:.1f} img/s",
                  ratio(times["PyTorch"], times["ONNX Runtime"]),
                  cpu_ratio=ratio(times.cpu["PyTorch"], times.cpu["ONNX Runtime"]), higher_is_better=True)
        table.add(f"{size} px {name}: max |difference|", f"{difference:.1e} (largest |value| "
                  f"{float(reference.abs().max()):.1f})")
        if name == "features":
            break_even_row(table, size, fixed_cost(module, size, folder, images), torch_rate, ort_rate)


def measure_session_options(args, table: Table, folder: Path) -> None:
    import onnxruntime as ort
    images = real_images(args.images, 224)
    module = frozen_parts(224)["features"]
    path = folder / "options.onnx"
    frozen_runtime.export_frozen(module, 224, path)
    level = ort.GraphOptimizationLevel
    sessions = {"engine's settings": session_with(path),
                "threads spin when idle": session_with(path, spinning="1"),
                "1 intra-op thread": session_with(path, threads=1),
                "ORT_ENABLE_EXTENDED": session_with(path, level=level.ORT_ENABLE_EXTENDED),
                "no memory pattern": session_with(path, pattern=False),
                "no memory arena": session_with(path, arena=False, pattern=False)}
    variants = {name: session_pass(session, images) for name, session in sessions.items()}
    for run in variants.values():
        run()
    times = interleave(variants, args.repeats)
    chosen = "engine's settings"
    for name in variants:
        table.add(f"session options, 224 px features: {name}", f"{len(images) / median(times[name]):.1f} img/s",
                  ratio(times[name], times[chosen]), cpu_ratio=ratio(times.cpu[name], times.cpu[chosen]))


def measure_dynamo(table: Table, folder: Path) -> None:
    module = frozen_parts(224)["features"]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 3, 224, 224),), str(folder / "dynamo.onnx"), dynamo=True,
                          external_data=False, opset_version=frozen_runtime.OPSET,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    table.add("224 px features: torch.export (dynamo) exporter, once", f"{time.perf_counter() - started:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48, help="images per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    ap.add_argument("--session-options", action="store_true")
    ap.add_argument("--dynamo", action="store_true")
    args = ap.parse_args()
    table = Table("Benchmark 7: the frozen pass, ONNX Runtime vs PyTorch "
                  "(ratio = PyTorch time / ONNX Runtime time; for session options: time / the engine's)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            measure_size(size, args, table, Path(tmp))
        if args.session_options:
            measure_session_options(args, table, Path(tmp))
        if args.dynamo:
            measure_dynamo(table, Path(tmp))
    table.print()


if __name__ == "__main__":
    main()
