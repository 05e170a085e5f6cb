"""Shared by the benchmarks: real image datasets, side-by-side timing, and the printed table.

Other work shares the machine, so no benchmark compares against a figure measured at another time:
variants run in turns within one run (the order rotates each round), each variant's median is taken,
and ratios are medians of per-round ratios.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(tempfile.gettempdir()) / "transferlab-bench"

# What the app should do at start-up, before torch and numpy load and before other threads start (see
# engine/runtime.py and RESULTS.md). bench_settings.py chooses per process: 'process' (the default:
# wait policy and malloc), 'malloc' (malloc only) or 'none'.
TUNING = os.environ.get("TRANSFERLAB_BENCH_TUNING", "process")
if TUNING == "process":
    from engine.core.runtime import tune_process
    tune_process()
elif TUNING == "malloc":
    from engine.core.runtime import tune_malloc
    tune_malloc()

import numpy as np  # noqa: E402  (after the tuning: numpy starts OpenBLAS threads)


def machine() -> str:
    """CPU model, cores, RAM, torch and its threads, current load: printed above every table."""
    import torch
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{model}, {cores} cores, {ram:.0f} GiB RAM, torch {torch.__version__.split('+')[0]} "
            f"({torch.get_num_threads()} threads){load}")


def fashion_dataset(per_class: int, size: int = 96, test_per_class: int = 0) -> Path:
    """Fashion-MNIST class folders (Debian's dataset-fashion-mnist), upsampled to `size` px; made once.

    With `test_per_class`, `train/` comes from the package's training part and `test/` from its
    separate test part.
    """
    out = DATA / f"fashion-{per_class}-{size}{f'-test{test_per_class}' if test_per_class else ''}"
    if not (out / ".done").exists():
        spec = importlib.util.spec_from_file_location("fm", ROOT.parent / "shared" / "data" / "fashion_mnist_folder.py")
        fm = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fm)
        if test_per_class:
            fm.write(*fm.read("train"), out / "train", per_class, size)
            fm.write(*fm.read("t10k"), out / "test", test_per_class, size)
        else:
            fm.write(*fm.read("train"), out, per_class, size)
        (out / ".done").touch()
    return out


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field")


def photo_dataset(count: int, long_side: int = 1024, quality: int = 90) -> Path:
    """Real photos as JPEG files: random crops of scikit-image's bundled photos, one class per photo,
    resized to `long_side` px (4:3), like a downsized camera picture; made once."""
    out = DATA / f"photos-{count}-{long_side}"
    if (out / ".done").exists():
        return out
    from PIL import Image
    from skimage import data
    rng = np.random.default_rng(0)
    for k in range(count):
        name = PHOTOS[k % len(PHOTOS)]
        pixels = getattr(data, name)()
        h, w = pixels.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(pixels[y:y + ch, x:x + cw]).convert("RGB")
        size = (long_side, long_side * 3 // 4) if k % 3 else (long_side * 3 // 4, long_side)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        crop.resize(size, Image.BICUBIC).save(folder / f"{k:04d}.jpg", quality=quality)
    (out / ".done").touch()
    return out


@contextlib.contextmanager
def fresh_cache_dir():
    """A new, empty TRANSFERLAB_CACHE_DIR, so no run reuses what an earlier one cached on disk."""
    old = os.environ.get("TRANSFERLAB_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="tl-bench-cache-") as tmp:
        os.environ["TRANSFERLAB_CACHE_DIR"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("TRANSFERLAB_CACHE_DIR", None)
            else:
                os.environ["TRANSFERLAB_CACHE_DIR"] = old


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timings(dict):
    """name -> wall seconds per round; `.cpu` holds the CPU seconds of the same runs."""

    def __init__(self, names):
        super().__init__({name: [] for name in names})
        self.cpu = {name: [] for name in names}


def interleave(variants: dict[str, Callable[[], object]], repeats: int, log: Callable[[str], None] = print,
               only_first: dict[str, int] | None = None) -> Timings:
    """Seconds per variant and round; the variants take turns and the order rotates every round.

    A variant that returns a number timed itself (e.g. only its steady-state part): that number is its
    wall time, and its CPU time is scaled by the same fraction. `only_first` limits slow variants to
    the first rounds (ratios then pair them with those rounds only).
    """
    names = list(variants)
    times = Timings(names)
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            if round_ >= (only_first or {}).get(name, repeats):
                continue
            cpu, start = cpu_seconds(), time.perf_counter()
            result = variants[name]()
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            if isinstance(result, (int, float)) and not isinstance(result, bool):
                cpu, wall = cpu * float(result) / max(wall, 1e-9), float(result)
            times[name].append(wall)
            times.cpu[name].append(cpu)
            log(f"  round {round_ + 1}/{repeats}  {name:<44} {wall:8.2f} s wall {cpu:8.2f} s cpu")
    return times


def median(values) -> float:
    return statistics.median(values)


def ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios (rounds ran side by side, so they share the machine's load)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


class Table:
    """Rows of measure | value | wall-time ratio | CPU-time ratio | goal | verdict, printed aligned.

    The verdict reads the wall-time ratio; the CPU-time ratio is a second opinion that other processes'
    load disturbs less.
    """

    header = ("measure", "value", "ratio", "cpu ratio", "goal", "")

    def __init__(self, title: str):
        self.title = title
        self.rows: list[tuple[str, ...]] = []

    def add(self, measure: str, value: str = "", ratio_: float | None = None, goal: float | None = None,
            cpu_ratio: float | None = None, higher_is_better: bool = False) -> None:
        def shown(x):
            return "" if x is None else f"{x:.2f}x"
        verdict, goal_text = "", ""
        if goal is not None:
            goal_text = f"{'>=' if higher_is_better else '<='} {goal:.2f}x"
            if ratio_ is not None:
                verdict = "PASS" if (ratio_ >= goal if higher_is_better else ratio_ <= goal) else "MISS"
        self.rows.append((measure, value, shown(ratio_), shown(cpu_ratio), goal_text, verdict))

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        print(f"\n{self.title}\n{machine()}")
        line = "  ".join(h.ljust(w) for h, w in zip(self.header, widths))
        print(line)
        print("-" * len(line))
        for row in self.rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
