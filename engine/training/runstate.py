"""Runs that survive being stopped: each run folder says whether its fit runs or how it ended, and keeps the
last training state to continue from.

Files (names in engine.core.runfolder):
- `status.json`: `running` (with pid, hostname, boot id, start and last-update times), then `completed`,
  `cancelled`, `failed` or `stopped-early`; also the data path, epochs done and the best validation
  accuracy. `read_status` turns a `running` whose process is gone into `interrupted`.
- `state/run.json`: written when a fit starts: its config, data path, the dataset's identity (content hash,
  split counts) and a digest of the starting weights; what a resume must find unchanged.
- `state/last.json` + `state/last-<epoch>-<step>-<tag>.safetensors`: the last training state, after every
  epoch and every `STATE_EVERY_S` within one (tensors: trained weights, buffers, optimizer moments, torch's
  random state and the loader generator's at the epoch's start; JSON: everything else). The tensors are
  written to a new file first, then `last.json` names it (its atomic rename is the commit point), then
  older tensor files go: a kill at any instant leaves the previous complete state.

The public API, for the window and the CLI: `read_status`, `can_resume`, `check_resume` (raises
`ResumeRefused`), `load_run_config`, `resume_summary`. The Trainer writes and reads the rest.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine.core.files import atomic_path, write_json
from engine.core.runfolder import RunFolder
from engine.training.config import TrainConfig

FORMAT = "transferlab-training-state/1"


def _seconds_from_environment(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


STATE_EVERY_S = _seconds_from_environment("TRANSFERLAB_STATE_EVERY_S", 300.0)
"""Seconds between training states within an epoch (one is always written after each epoch). The
environment variable is for tests and the kill harness; a Trainer takes `state_every_s` too."""
STALE_AFTER_S = 600.0
"""A `running` status written on another machine (a shared folder) whose last update is older than this
reads as interrupted: its process cannot be asked. Twice STATE_EVERY_S, at which the status is refreshed."""
RESUMABLE = ("interrupted", "cancelled", "failed")
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}

_active: set[str] = set()          # run folders a fit in this process is writing now
_active_lock = threading.Lock()


class ResumeRefused(ValueError):
    """A run cannot be continued; the message says why in plain words (what changed, or that it finished)."""


# -- status ----------------------------------------------------------------------------------------------
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def running_status(data_path: str, epochs: int) -> dict:
    """The status of a fit starting in this process."""
    started = now_iso()
    return {"status": "running", "pid": os.getpid(), "hostname": socket.gethostname(), "boot_id": _boot_id(),
            "started": started, "updated": started, "data": data_path, "epoch": 0, "epochs": epochs,
            "best_val_accuracy": None}


def write_status(folder: RunFolder, status: dict, durable: bool = True) -> None:
    """`durable=False` for the refreshes while a fit runs: a power cut may lose one (an unreadable status
    reads as interrupted, which it then is), and each fsync costs a head-only epoch about its own time."""
    text = json.dumps({**status, "updated": now_iso()}, indent=2, ensure_ascii=False) + "\n"
    with atomic_path(folder.status, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def active_run(run_dir: str | Path):
    """Marks `run_dir` as trained by this process while the block runs: a `running` status with this
    process's own pid is then true, and false once the fit is over (e.g. a pid reused after a reboot)."""
    key = str(Path(run_dir).resolve())
    with _active_lock:
        _active.add(key)
    try:
        yield
    finally:
        with _active_lock:
            _active.discard(key)


def read_status(run_dir: str | Path) -> str:
    """'none' (no status file), 'running', 'interrupted' (it says running, but its process is gone),
    'completed', 'cancelled', 'failed' or 'stopped-early'. An unreadable status file reads as interrupted."""
    folder = RunFolder(run_dir)
    if not folder.status.exists():
        return "none"
    data = _read_json(folder.status)
    if not isinstance(data, dict):
        return "interrupted"
    status = str(data.get("status", "interrupted"))
    if status == "running" and not _still_running(data, folder.path):
        return "interrupted"
    return status


def _still_running(status: dict, run_dir: Path) -> bool:
    """Whether the process a `running` status names is alive. On this machine: its pid (not a zombie, the
    same boot); in this very process, whether a fit is active on the folder. Elsewhere (another host, or no
    POSIX signals) only the age of its last update can tell."""
    same_host = status.get("hostname") == socket.gethostname()
    if not same_host or os.name != "posix":
        return _age_s(status.get("updated")) < STALE_AFTER_S
    if status.get("boot_id") and _boot_id() and status["boot_id"] != _boot_id():
        return False
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        with _active_lock:
            return str(run_dir.resolve()) in _active
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True               # alive, another user's
    # a killed child its parent has not reaped yet is a zombie: it exists, but runs no more
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _age_s(iso: str | None) -> float:
    try:
        return time.time() - datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return float("inf")


# -- the run's start record ---------------------------------------------------------------------------
def split_counts(report) -> dict[str, int]:
    return {split: len(report.split(split)) for split in SPLIT_WORDS}


def dataset_identity(report) -> dict:
    return {"content_hash": report.content_hash, "counts": split_counts(report)}


def write_run_start(folder: RunFolder, config: TrainConfig, data_path: str, report, digest: str) -> None:
    """state/run.json for a fit that starts from scratch; any state of an earlier fit here is removed."""
    clear_state(folder)
    write_json(folder.run_start, {"format": FORMAT, "config": config.to_dict(), "data": data_path,
                                  "dataset": dataset_identity(report), "weights_digest": digest,
                                  "started": now_iso()})


def read_run_start(folder: RunFolder) -> dict | None:
    data = _read_json(folder.run_start)
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def data_path(report) -> str:
    """Where the images are, as an absolute path, so `train --resume RUN` finds them from anywhere."""
    return os.path.abspath(report.root) if report.root else ""


def recorded_data_path(run_dir: str | Path) -> str | None:
    """The dataset a run trained on (its start record, else its status file)."""
    folder = RunFolder(run_dir)
    for data in (read_run_start(folder), _read_json(folder.status)):
        if isinstance(data, dict) and data.get("data"):
            return str(data["data"])
    return None


# -- the last state ------------------------------------------------------------------------------------------
@dataclass
class SavedState:
    """A training state read back: `meta` is last.json, `tensors` its safetensors file."""

    meta: dict
    tensors: dict

    @property
    def position(self) -> dict:
        return self.meta["position"]


def save_state(folder: RunFolder, meta: dict, tensors: dict) -> str:
    """Write a state: tensors to a new file, then last.json naming it (the commit point), then remove the
    older tensor files and the leftovers of writes a kill interrupted. Returns the tensor file's name."""
    from safetensors.torch import save_file
    position = meta["position"]
    name = f"last-{position['epoch']}-{position['step']}-{secrets.token_hex(3)}.safetensors"
    with atomic_path(folder.state_dir / name) as tmp:
        save_file(tensors, str(tmp))
    write_json(folder.last_state, {"format": FORMAT, "tensors": name, "written": now_iso(), **meta})
    remove_stale_state_files(folder, keep=name)
    return name


def remove_stale_state_files(folder: RunFolder, keep: str | None = None) -> None:
    """Tensor files last.json does not name, and temporary files of interrupted writes (one writer per run
    folder: nothing else is writing them)."""
    if keep is None:
        meta = _read_json(folder.last_state)
        keep = meta.get("tensors") if isinstance(meta, dict) else None
    if folder.state_dir.is_dir():
        for path in folder.state_dir.iterdir():
            stale = path.name.startswith("last-") and path.suffix == ".safetensors" and path.name != keep
            if stale or (path.name.startswith(".") and path.name.endswith(".tmp")):
                path.unlink(missing_ok=True)
    for path in folder.path.glob(".*.tmp"):
        if any(path.name.startswith(f".{name}.") for name in folder.names()):
            path.unlink(missing_ok=True)


def load_state(folder: RunFolder) -> SavedState | None:
    """The last state, or None when the fit stopped before its first one."""
    if not folder.last_state.exists():
        return None
    meta = _read_json(folder.last_state)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResumeRefused(f"the saved training state in {folder.path} is unreadable or from another version")
    path = folder.state_dir / str(meta.get("tensors"))
    try:
        from safetensors.torch import load_file
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise ResumeRefused(f"the saved training state {path.name} is damaged: {exc}") from None
    return SavedState(meta, tensors)


def clear_state(folder: RunFolder) -> None:
    """Remove the training state: a finished run no longer needs it; a fresh fit must not find an old one."""
    folder.last_state.unlink(missing_ok=True)          # first: without it the tensor files are not a state
    if folder.state_dir.is_dir():
        for path in folder.state_dir.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.state_dir.rmdir()


# -- for the window and the CLI -----------------------------------------------------------------------------
def can_resume(run_dir: str | Path) -> bool:
    """A training state exists and the fit did not finish: interrupted, cancelled or failed."""
    return read_status(run_dir) in RESUMABLE and RunFolder(run_dir).last_state.is_file()


def check_resume(run_dir: str | Path, report=None, config: TrainConfig | None = None) -> None:
    """Raise ResumeRefused unless the fit in `run_dir` can continue on `report` (a scanned dataset) with
    `config`; None skips that check. A run stopped before its first state is allowed: it starts over."""
    folder = RunFolder(run_dir)
    refusal = _status_refusal(read_status(run_dir), folder)
    if refusal:
        raise ResumeRefused(refusal)
    start = read_run_start(folder)
    if start is None:
        raise ResumeRefused(f"nothing to resume in {folder.path}: it has no record of its start")
    if report is not None:
        change = dataset_change(start["dataset"], report)
        if change:
            raise ResumeRefused(change)
    if config is not None:
        change = config_change(start["config"], config.to_dict())
        if change:
            raise ResumeRefused(f"the settings differ from this run's own ({change}): resuming continues "
                                "with the run's settings")


def _status_refusal(status: str, folder: RunFolder) -> str:
    if status == "none":
        return f"nothing to resume in {folder.path}: no training status there"
    if status == "running":
        data = _read_json(folder.status) or {}
        return f"{folder.path} is still training (process {data.get('pid')} on {data.get('hostname')})"
    if status == "completed":
        return f"{folder.path} already completed: nothing to resume"
    if status == "stopped-early":
        return f"{folder.path} already finished (early stopping ended it): nothing to resume"
    return "" if status in RESUMABLE else f"{folder.path} has an unknown status {status!r}"


def dataset_change(recorded: dict, report) -> str:
    """'' when `report` is the dataset the run started on, else what changed, in words."""
    now, before = split_counts(report), recorded.get("counts", {})
    counts = [f"{before.get(split, 0):,} -> {now[split]:,} {word} images"
              for split, word in SPLIT_WORDS.items() if before.get(split) != now[split]]
    if counts:
        return "the dataset changed since this run started: " + ", ".join(counts)
    if recorded.get("content_hash") != report.content_hash:
        return ("the dataset changed since this run started: as many images, but some files, labels or "
                "splits differ")
    return ""


def config_change(recorded: dict, config: dict) -> str:
    return "; ".join(f"{key} {recorded.get(key)!r} -> {value!r}" for key, value in config.items()
                     if key in recorded and recorded[key] != value)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run trains with: its start record, else its config.json."""
    folder = RunFolder(run_dir)
    start = read_run_start(folder)
    data = start["config"] if start else _read_json(folder.config)
    if not isinstance(data, dict):
        raise ResumeRefused(f"{folder.path} holds no training settings (config.json)")
    config = TrainConfig.from_dict(data)
    config.validate()
    return config


def resume_summary(run_dir: str | Path) -> dict:
    """What an offer to resume shows: status, epochs done of epochs, batches done in the epoch in
    progress, the best validation accuracy so far, the data path, and whether it can resume."""
    folder = RunFolder(run_dir)
    status = _read_json(folder.status)
    status = status if isinstance(status, dict) else {}
    last = _read_json(folder.last_state) if folder.last_state.exists() else None
    position = last.get("position", {}) if isinstance(last, dict) else {}
    best = last.get("best") if isinstance(last, dict) else None
    start = read_run_start(folder)
    epochs = status.get("epochs") or (start["config"]["epochs"] if start else None)
    return {"status": read_status(run_dir), "epochs_done": position.get("epoch", status.get("epoch", 0)),
            "epochs": epochs, "batches_done": position.get("batches_done", 0),
            "best_val_accuracy": best[0] if best else status.get("best_val_accuracy"),
            "data": recorded_data_path(run_dir), "can_resume": can_resume(run_dir)}


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
