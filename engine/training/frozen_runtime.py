"""The frozen part of a network on ONNX Runtime: the feature and activation passes run faster on a CPU.

Every head-only fit and every last-N fit starts with one pass of the frozen layers over all its images
(caches.py). On a CPU ONNX Runtime ran that pass 1.15-1.9x (typically 1.3-1.5x) faster than PyTorch with
the app's settings (bench/bench_frozen_runtime.py, bench/RESULTS.md), so the frozen part is exported
once and the pass runs there when that pays. Measured on two cores, EfficientNet-Lite0:

- Exporter: the TorchScript exporter (`dynamo=False`) exports the frozen part in 0.7-1.1 s (2.4 s under
  heavy load), torch.export's in 18-25 s. The export is paid once per frozen part and input size: the
  file stays in the cache folder, named by the cache's fingerprint (which covers the frozen weights and
  the freeze boundary).
- Session: `ORT_ENABLE_ALL` (its NCHWc layout rewrite; EXTENDED took 1.8-2.3x as long), as many intra-op
  threads as torch uses, threads that sleep when idle instead of spinning, like torch's
  (engine/core/runtime.py: spinning took 1.2-1.3x as long next to other work), a dynamic batch axis.
  Memory pattern and arena on (turning them off changed nothing beyond noise).
- Trust: the first images a session sees run in both engines; the pass stays in ONNX Runtime only when
  they agree within `TOLERANCE`, else PyTorch computes the rest of the fit. A cached file that does not
  load is deleted and exported again, never trusted.
- Break-even: the export, the session, its warm-up and the verification images cost 1.2-1.4 s at any
  input size, while the time ONNX Runtime saves per image grows with the pixels: a fit with fewer than
  `BREAK_EVEN_IMAGES` images (at 224 px, scaled by pixels at other sizes) stays in PyTorch, unless the
  exported file exists already.

onnxruntime is imported only when a pass uses it: importing the engine stays light.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from engine.core.errors import first_line
from engine.core.files import atomic_path
from engine.core.paths import cache_dir
from engine.training.config import FROZEN_RUNTIMES

log = logging.getLogger("transferlab")

# Largest accepted |ONNX Runtime - PyTorch| on the first batch, relative to its largest |value| when that
# is above 1. Float32 rounding differs by about 3e-6 of the largest value (EfficientNet-Lite0: 1e-5 on
# pooled features up to 6, 1e-4 to 2e-4 on activations up to 60); a wrong export differs by whole units.
TOLERANCE = 1e-4
VERIFY_IMAGES = 4               # of the first batch, computed by PyTorch too (the rest only in ONNX Runtime)
OPSET = 18
# At 224 px: the median of 11 break-evens measured at 112-224 px in four runs, scaled to 224 px (76-391;
# bench/bench_frozen_runtime.py, bench/RESULTS.md). Near it either engine takes about as long.
BREAK_EVEN_IMAGES = 170
BREAK_EVEN_SIZE = 224
INPUT, OUTPUT = "images", "frozen"


def break_even(input_size: int) -> int:
    """Images a pass needs before exporting pays, at `input_size` px: the export costs about the same at
    any size, the time ONNX Runtime saves per image grows with the pixels."""
    return math.ceil(BREAK_EVEN_IMAGES * (BREAK_EVEN_SIZE / input_size) ** 2)


def onnx_path(folder: Path, kind: str, fingerprint: str, input_size: int) -> Path:
    return folder / f"{kind}-{fingerprint[:40]}-{input_size}px.onnx"


def export_frozen(module: nn.Module, input_size: int, path: Path) -> float:
    """Write `module` (images -> features) as ONNX with a dynamic batch axis, atomically; seconds taken."""
    started = time.perf_counter()
    example = torch.zeros(2, 3, input_size, input_size)
    modes = {sub: sub.training for sub in module.modules()}
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")   # "the legacy exporter is deprecated": chosen for its speed
            torch.onnx.export(module.eval(), (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    finally:
        # the exporter restores only the top module's mode, over the whole tree
        for sub, training in modes.items():
            sub.training = training
    return time.perf_counter() - started


def open_session(path: Path):
    """An onnxruntime CPU session with the measured settings (module docstring)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3        # no warnings about initializers the graph does not use
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class FrozenRunner:
    """Runs one cache's frozen part over image batches, in ONNX Runtime where it pays and agrees with
    PyTorch, else in PyTorch. `runtime_used` and `note` tell which engine computed the latest pass and why.

    Call `begin_pass` before a pass, then `run` on each batch; the engine is chosen on the first batch,
    when the input size is known. A session is kept for the next passes of the same frozen part.
    """

    def __init__(self, setting: str = "auto", folder: Path | None = None):
        if setting not in FROZEN_RUNTIMES:
            raise ValueError(f"frozen_runtime must be one of {', '.join(FROZEN_RUNTIMES)}, not {setting!r}")
        self.setting = setting
        self.folder = Path(folder) if folder else cache_dir() / "frozen-onnx"
        self.runtime_used: str | None = None       # 'onnxruntime' | 'pytorch' for the latest pass
        self.exports = 0                           # files this runner exported
        self.export_seconds = 0.0
        self._reason = ""                          # why PyTorch ran the latest pass
        self._session = None
        self._session_path: Path | None = None
        self._verified = False                     # the session agreed with PyTorch on a batch
        self._rejected: dict[Path, str] = {}       # failed verification, and why: PyTorch for the fit
        self._pending: tuple | None = None
        self._timing = [0.0, 0]                    # ONNX Runtime's seconds and images after warm-up

    # -- a pass -----------------------------------------------------------------------------------
    def begin_pass(self, module: nn.Module, kind: str, fingerprint: str, images: int) -> None:
        """Get ready for a pass of about `images` images through `module` (images -> features)."""
        self._pending = (module, kind, fingerprint, images)

    def run(self, batch: torch.Tensor, pytorch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`batch`'s features; `pytorch` computes them in PyTorch."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return self._first_batch(batch, pytorch, *pending)
        if self.runtime_used == "onnxruntime":
            try:
                return self._in_session(batch)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: PyTorch computes the same
                self._reject(self._session_path, f"ONNX Runtime failed during the pass ({first_line(exc)})")
        return pytorch(batch)

    @property
    def note(self) -> str:
        """One line for the fit's path notes."""
        if self.runtime_used == "pytorch":
            return f"frozen layers ran in PyTorch: {self._reason}"
        if self.runtime_used != "onnxruntime":
            return ""
        export = f"exported in {self.export_seconds:.1f} s" if self.exports else "exported file reused"
        seconds, images = self._timing
        speed = f"{images / seconds:.0f} images/s, " if seconds > 0 and images else ""
        return f"frozen layers ran in ONNX Runtime ({speed}{export})"

    def _first_batch(self, batch, pytorch, module, kind, fingerprint, images) -> torch.Tensor:
        path = onnx_path(self.folder, kind, fingerprint, batch.shape[-1])
        reason = self._pytorch_reason(module, path, images, batch.shape[-1])
        if not reason:
            reason = self._open(module, path, batch.shape[-1])
        if reason:
            return self._use_pytorch(reason, batch, pytorch)
        if self._verified:
            self.runtime_used = "onnxruntime"
            return self._in_session(batch)
        return self._verify(batch, pytorch, path)

    def _pytorch_reason(self, module: nn.Module, path: Path, images: int, input_size: int) -> str:
        """Why this pass runs in PyTorch; '' when ONNX Runtime should run it."""
        if self.setting == "pytorch":
            return "frozen_runtime is 'pytorch'"
        device = next(module.parameters(), torch.empty(0)).device.type
        if device != "cpu":
            return f"the model is on {device}: ONNX Runtime is used on a CPU only"
        if path in self._rejected:
            return self._rejected[path]
        if path == self._session_path or path.exists():
            return ""            # no export to pay for: any pass is worth it
        needed = break_even(input_size)
        if images < needed:
            return f"{images} images, below the break-even of {needed} for exporting them to ONNX Runtime"
        return ""

    def _use_pytorch(self, reason: str, batch, pytorch) -> torch.Tensor:
        self.runtime_used, self._reason = "pytorch", reason
        return pytorch(batch)

    def _open(self, module: nn.Module, path: Path, input_size: int) -> str:
        """Load (exporting first when needed) the session for `path`; '' or why it failed."""
        if path == self._session_path:
            return ""
        self._session, self._session_path, self._verified = None, None, False
        if path.exists():
            try:
                self._session = open_session(path)
            except Exception as exc:  # noqa: BLE001 - a damaged file is exported again, never trusted
                log.warning("frozen-layer ONNX file %s does not load (%s): exporting it again", path.name, exc)
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        if self._session is None:
            try:
                self.export_seconds = export_frozen(module, input_size, path)
                self.exports += 1
                self._session = open_session(path)
            except Exception as exc:  # noqa: BLE001 - PyTorch computes the same, only slower
                return self._reject(path, f"the export to ONNX Runtime failed ({first_line(exc)})")
        self._session_path = path
        return ""

    def _verify(self, batch, pytorch, path: Path) -> torch.Tensor:
        """The session's first batch: ONNX Runtime's result when its first `VERIFY_IMAGES` images agree
        with PyTorch's, else PyTorch's for the batch and the rest of the fit. Passes after the first reuse
        the verdict: the same network gives the same numerics on other images."""
        ours = self._in_session(batch)
        self._timing = [0.0, 0]                    # the first run warms the session up: not its speed
        reference = pytorch(batch[:VERIFY_IMAGES])
        difference = float((ours[:len(reference)] - reference).abs().max())
        allowed = TOLERANCE * max(1.0, float(reference.abs().max()))
        if difference <= allowed:                  # False for NaN too
            self.runtime_used, self._verified = "onnxruntime", True
            return ours
        self._reject(path, f"its ONNX Runtime output differed from PyTorch's by {difference:.1e} "
                           f"(more than {allowed:.1e})")
        return torch.cat([reference, pytorch(batch[VERIFY_IMAGES:])]) if len(batch) > VERIFY_IMAGES else reference

    def _in_session(self, batch: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        out = self._session.run([OUTPUT], {INPUT: batch.float().contiguous().numpy()})[0]
        self._timing[0] += time.perf_counter() - started
        self._timing[1] += len(batch)
        return torch.from_numpy(out)

    def _reject(self, path: Path, reason: str) -> str:
        """PyTorch for the rest of the fit, and the file deleted: it is never trusted again."""
        log.warning("frozen layers: %s; PyTorch computes them for this fit", reason)
        self._rejected[path] = reason
        self._session, self._session_path, self._verified = None, None, False
        with contextlib.suppress(OSError):        # e.g. a cache folder that cannot be written
            path.unlink(missing_ok=True)
        self.runtime_used, self._reason = "pytorch", reason
        return reason
