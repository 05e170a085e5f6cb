"""One progress vocabulary for every long job: `progress(stage, done, total)`, with `RunControl` for pause
and cancel (engine.core.control).

The engine reports every step it makes and never throttles: the consumers do, once, where it matters
(the window at the engine→Qt boundary with `Throttle`, the terminal through its progress bars). Time left
is estimated per stage from that stage's own rate (`StageClock`), and for a fit from measured epochs
(`EpochClock`), so an estimate never mixes the speed of a feature pass with that of training.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): `stage` is a key of STAGE_TITLES (or a short phrase), `done` <= `total`."""

STAGE_TITLES = {
    "scan": "Checking the dataset",
    "texts": "Reading texts",
    "thumbnails": "Drawing thumbnails",
    "images": "Decoding images",
    "features": "Computing backbone features",
    "activations": "Computing frozen-block activations",
    "embeddings": "Encoding texts",
    "hidden-states": "Reading texts through the frozen layers",
    "evaluate": "Evaluating",
    "assess": "Assessing backbones",
    "search": "Searching recipes",
    "export": "Exporting",
    "predict": "Predicting",
    "pixels": "Reading pixels",
    "folds": "Scoring every sample with models that never saw it",
    "checks": "Looking for near-duplicates and odd samples",
}


def stage_title(stage: str) -> str:
    """What a user reads for a stage key; an unknown stage is shown as it is."""
    return STAGE_TITLES.get(stage, stage)


def no_progress(stage: str, done: int, total: int) -> None:
    """The `Progress` to pass when nobody listens."""


class Throttle:
    """Lets a call through at most every `interval_s`, but always the first of a stage and its last
    (done == total), so a bar never stops short of 100 % and a new stage shows at once. Thread-safe."""

    def __init__(self, interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._stage: str | None = None
        self._lock = threading.Lock()

    def ready(self, stage: str = "", done: int = 0, total: int = 0) -> bool:
        """True when this call should pass; records it as the last one passed."""
        now = self._clock()
        with self._lock:
            if stage != self._stage or done >= total or now - self._last >= self.interval_s:
                self._stage, self._last = stage, now
                return True
            return False


class StageClock:
    """Time left in one stage, from the rate since the stage began; None until there is a rate to trust
    (`min_fraction` done and `min_seconds` elapsed), rather than a wild first guess."""

    def __init__(self, min_fraction: float = 0.02, min_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.min_fraction = min_fraction
        self.min_seconds = min_seconds
        self._clock = clock
        self._pass: tuple[str, int] | None = None     # stage and total
        self._started = 0.0
        self._first_done = 0
        self._last_done = 0

    def update(self, stage: str, done: int, total: int) -> float | None:
        """Seconds left in `stage`; a new stage, a new total or `done` going backwards (another pass of
        the stage, such as the next split's features) restarts the clock."""
        now = self._clock()
        restart = (stage, total) != self._pass or done < self._last_done
        self._last_done = done
        if restart:
            self._pass, self._started, self._first_done = (stage, total), now, done
            return None
        elapsed, progressed = now - self._started, done - self._first_done
        if total <= 0 or progressed <= 0 or elapsed < self.min_seconds or progressed / total < self.min_fraction:
            return None
        return max(0.0, elapsed / progressed * (total - done))


class EpochClock:
    """Time left in a fit: from the last epoch's measured time (validation included, and the current
    stage's speed in a two-stage run), or during the first epoch from the time it has taken so far."""

    def __init__(self, epochs: int, clock: Callable[[], float] = time.monotonic):
        self.epochs = epochs
        self._clock = clock
        self.started = clock()
        self.last_epoch_s: float | None = None

    def epoch_ended(self, seconds: float) -> None:
        self.last_epoch_s = seconds

    def fraction(self, logs: dict) -> float:
        """How much of the fit is done, from a batch's logs (epoch counts from 1)."""
        return (logs["epoch"] - 1 + logs["batch"] / max(1, logs["batches"])) / max(1, self.epochs)

    def eta(self, logs: dict) -> float:
        """Seconds left, from a batch's logs: epoch, batch, batches and eta_s (left in this epoch)."""
        fraction = logs["batch"] / max(1, logs["batches"])
        if self.last_epoch_s is None:
            per_epoch = (self._clock() - self.started) / max(fraction, 1e-6)
            return per_epoch * (self.epochs - logs["epoch"] + 1 - fraction)
        return logs["eta_s"] + (self.epochs - logs["epoch"]) * self.last_epoch_s


def format_duration(seconds: float) -> str:
    """'0:42', '12:05', '1:02:03': what a progress bar's "about … left" says."""
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
