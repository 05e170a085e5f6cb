"""Process-wide settings that make CPU training faster, applied once at start-up, before torch loads.

Both were measured on two cores (bench/bench_settings.py, bench/RESULTS.md):
- GNU OpenMP threads (torch on Linux) spin for up to 300,000 rounds before they sleep. Whenever
  anything else wants the cores (the GUI thread, a browser, a build) they take turns with spinning
  threads that do no work. `OMP_WAIT_POLICY=PASSIVE` lets them sleep at once: as fast as spinning on
  an idle machine at 224 px (1.00x; 0.90x with the very short operations of 96 px inputs), 1.44x
  faster next to two busy processes; a short spin (GOMP_SPINCOUNT=10000) was the worst there (0.87x).
  OpenMP reads it when torch loads, so it only helps when set before the first `import torch`.
- glibc's malloc hands large freed blocks back to the OS, and the next step faults them in again
  (system time); threads other than the main one get arenas of their own that ignore the tuning, which
  made training on the GUI's worker thread about 20 % slower than on the main thread. The settings
  keep freed memory for the next step and put every thread on the main arena; a thread keeps the
  arena it first allocated from, so they must be applied before other threads start.

No torch import here, so `engine` can call this first thing.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

TRACING = threading.RLock()
"""Held while torch.export traces a model (the ONNX export) and while a text encoder loads: the tracer keeps
its metadata in module globals (torch.fx.traceback.current_meta), and a transformers model loading on
another thread meanwhile failed with "KeyError: 'custom'" (the window's soak: a text export beside the
labelling window's pass)."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
MALLOC_SETTINGS = ((_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 2**30), (_M_TOP_PAD, 256 * 2**20),
                   (_M_ARENA_MAX, 1))


def tune_process() -> None:
    """Both settings; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins."""
    if "GOMP_SPINCOUNT" not in os.environ:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tune_malloc()


def tune_malloc() -> bool:
    """The MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_ and MALLOC_ARENA_MAX settings,
    applied at run time. Linux with glibc only; returns whether they were applied."""
    libc = _glibc()
    return libc is not None and all(libc.mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS)


def release_freed_memory() -> None:
    """Give memory kept for the next step back to the OS, e.g. once a fit is over."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:            # musl and other C libraries
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
