"""Where a model runs: the device a user asked for, what it is called, whether it trains in mixed precision,
and what to do when a GPU runs out of memory.

Every decision is a pure function of what it is given (the name asked, the GPUs torch sees, their
capabilities), so the CUDA branches are tested on a machine without one. Asking for a device that is not
there is an error, never a silent fallback to the CPU: a user who asked for a GPU must know they lack one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypeVar

import torch

from engine.core.devicenames import DEVICE_NAMES

log = logging.getLogger("transferlab")


T = TypeVar("T")


class DeviceUnavailable(ValueError):
    """The device asked for is not on this machine (a ValueError: the CLI reports it as bad input)."""


# -- which device -----------------------------------------------------------------------------------------
def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto", cuda_devices: int | None = None, has_mps: bool | None = None) -> torch.device:
    """The torch device for `name` (auto | cpu | cuda | cuda:N | mps). 'auto' takes CUDA, then Apple MPS,
    then the CPU. `cuda_devices` / `has_mps` default to what torch sees (tests pass them in)."""
    name = (name or "auto").strip().lower()
    if not DEVICE_NAMES.match(name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {name!r}")
    count = cuda_count() if cuda_devices is None else cuda_devices
    mps = mps_available() if has_mps is None else has_mps
    if name == "auto":
        return torch.device("cuda", 0) if count else torch.device("mps") if mps else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps:
            raise DeviceUnavailable(unavailable_message(name, "torch sees no Apple MPS device on this machine"))
        return torch.device("mps")
    index = int(name.split(":")[1]) if ":" in name else 0
    if not count:
        raise DeviceUnavailable(unavailable_message(name, "torch sees no CUDA GPU on this machine"))
    if index >= count:
        raise DeviceUnavailable(unavailable_message(
            name, f"torch sees {count} CUDA GPU{'s' * (count > 1)} (cuda:0{f' to cuda:{count - 1}' * (count > 1)})"))
    return torch.device("cuda", index)


def unavailable_message(name: str, why: str) -> str:
    kind = "CUDA" if name.startswith("cuda") else "MPS"
    return f"{kind} was asked for (--device {name}) but {why}; use --device cpu or auto"


def device_choices(cuda_names: list[str] | None = None, has_mps: bool | None = None) -> list[tuple[str, str]]:
    """(value, label) of every device this machine offers, 'auto' first: what the window's Device menu
    lists. `cuda_names` defaults to the GPUs torch sees."""
    if cuda_names is None:
        cuda_names = [torch.cuda.get_device_name(i) for i in range(cuda_count())]
    mps = mps_available() if has_mps is None else has_mps
    auto = resolve_device("auto", len(cuda_names), mps)
    choices = [("auto", f"Automatic ({short_name(auto)})"), ("cpu", "CPU")]
    choices += [(f"cuda:{i}", f"GPU {i}: {gpu}") for i, gpu in enumerate(cuda_names)]
    if mps:
        choices.append(("mps", "Apple GPU (MPS)"))
    return choices


# -- what it is called ------------------------------------------------------------------------------------
def short_name(device: torch.device) -> str:
    """'CPU', 'CUDA:0', 'MPS': for a status bar."""
    if device.type == "cuda":
        return f"CUDA:{device.index or 0}"
    return device.type.upper()


def describe_device(device: torch.device, threads: int | None = None, gpu_name: str | None = None,
                    gpu_memory_bytes: int | None = None) -> str:
    """'CPU (2 threads)', 'CUDA: NVIDIA H200 (139 GiB)', 'Apple MPS'. What is not given is asked of torch."""
    if device.type == "cpu":
        return f"CPU ({threads or torch.get_num_threads()} threads)"
    if device.type == "mps":
        return "Apple MPS"
    if device.type == "cuda":
        index = device.index or 0
        if gpu_name is None or gpu_memory_bytes is None:
            props = torch.cuda.get_device_properties(index)
            gpu_name, gpu_memory_bytes = props.name, props.total_memory
        return f"CUDA: {gpu_name} ({gpu_memory_bytes / 2**30:.0f} GiB)"
    return str(device)


def device_label(device: torch.device) -> str:
    """`describe_device`, or the bare device name when the driver will not say more."""
    try:
        return describe_device(device)
    except Exception:  # noqa: BLE001 - only a label
        return str(device)


# -- mixed precision --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AmpPolicy:
    """Autocast for the forward pass: on or off, in which dtype, and whether the loss needs a GradScaler
    (fp16 underflows small gradients; bf16 has fp32's range and does not)."""

    enabled: bool
    dtype: torch.dtype | None = None
    use_grad_scaler: bool = False

    def autocast(self, device: torch.device):
        """The autocast context for `device` (a no-op context when disabled)."""
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled) if self.enabled \
            else nullcontext()


AMP_OFF = AmpPolicy(False)


def amp_policy(device: torch.device, bf16_supported: bool | None = None) -> AmpPolicy:
    """bf16 autocast on a CUDA GPU that supports it, else fp16 with a GradScaler; off on the CPU and MPS,
    so CPU training is exactly what it was. `bf16_supported` defaults to what torch says of the GPU."""
    if device.type != "cuda":
        return AMP_OFF
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return AmpPolicy(True, torch.bfloat16, False)
    return AmpPolicy(True, torch.float16, True)


def grad_scaler(policy: AmpPolicy, device: torch.device):
    """A GradScaler when the policy needs one, else None."""
    return torch.amp.GradScaler(device.type) if policy.use_grad_scaler else None


def to_device(value, device: torch.device):
    """`value` on `device`: the same tensor on the CPU (no copy), a non-blocking copy elsewhere."""
    if device.type == "cpu" or not isinstance(value, torch.Tensor):
        return value
    return value.to(device, non_blocking=True)


def prepare_backends(device: torch.device) -> None:
    """cuDNN picks the fastest convolution for the fixed input sizes of a fit."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


# -- out of GPU memory ------------------------------------------------------------------------------------
class OutOfMemory(RuntimeError):
    """Even the smallest batch size ran out of device memory."""


@dataclass
class BatchSizeBackoff:
    """Halves the batch size after an out-of-memory error, down to `floor`, and says so in one line."""

    batch_size: int
    floor: int = 1

    def next_after_oom(self, device_name: str = "the GPU") -> int:
        """The halved batch size to retry with; OutOfMemory when the floor was already reached."""
        if self.batch_size <= self.floor:
            raise OutOfMemory(f"{device_name} ran out of memory even at batch size {self.batch_size}: "
                              "choose a smaller image size or model, or --device cpu")
        smaller = max(self.floor, self.batch_size // 2)
        log.warning("%s ran out of memory at batch size %d: retrying the epoch with batch size %d",
                    device_name, self.batch_size, smaller)
        self.batch_size = smaller
        return smaller


def with_oom_retry(step: Callable[[int], T], batch_size: int, floor: int = 1,
                   on_retry: Callable[[int, int], None] | None = None, device_name: str = "the GPU") -> T:
    """`step(batch_size)`, again with half the batch size whenever it raises torch.OutOfMemoryError, until
    it succeeds or the floor fails too (OutOfMemory). `on_retry(old, new)` hears of each retry."""
    backoff = BatchSizeBackoff(batch_size, floor)
    while True:
        try:
            return step(backoff.batch_size)
        except torch.OutOfMemoryError:
            old = backoff.batch_size
            new = backoff.next_after_oom(device_name)
            release_device_memory()
            if on_retry is not None:
                on_retry(old, new)


def release_device_memory() -> None:
    """Give the failed step's cached blocks back before the retry."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
