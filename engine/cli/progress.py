"""Progress on the terminal: tqdm bars for every stage (scan, features, epochs, evaluation, export) when
stderr is a terminal, and plain lines (one per finished stage, one per epoch) when it is a log or pipe,
so bad input still costs exactly one line there."""
from __future__ import annotations

import sys
import time

from engine.core import modality as modalities
from engine.core.callbacks import Callback
from engine.core.progress import stage_title


class TerminalProgress(Callback):
    """A training callback and a `Progress` function (`progress(stage, done, total)`) in one."""

    def __init__(self, stream=None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._bar = None
        self._stage: str | None = None
        self._stage_started = 0.0
        self._epochs = 0

    def __enter__(self) -> "TerminalProgress":
        return self

    def __exit__(self, *exc) -> None:
        self._close_bar()

    # -- stages outside training batches ------------------------------------------------------
    def __call__(self, stage: str, done: int, total: int) -> None:
        self.on_progress(stage, done, total)

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._begin(stage, total, stage_title(stage))
        if self._bar is not None:
            self._bar.total = total
            self._bar.update(done - self._bar.n)
        if done >= total:
            self._end(f"{stage_title(stage)}: {total:,} in {time.monotonic() - self._stage_started:.1f} s")

    def _begin(self, stage: str, total: int, title: str, unit: str = "img") -> None:
        self._close_bar()
        self._stage, self._stage_started = stage, time.monotonic()
        if self.live:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=title, unit=unit, file=self.stream, leave=False,
                             dynamic_ncols=True)

    def _end(self, summary: str) -> None:
        self._close_bar()
        self._stage = None
        self._line(summary)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    # -- training -----------------------------------------------------------------------------
    def on_fit_start(self, info: dict) -> None:
        self._epochs = info["epochs"]
        samples = modalities.named(info.get("modality")).count(info["n_train"])
        self._line(f"training {samples} ({info['n_val']} val, {info['n_test']} test), "
                   f"{len(info['classes'])} classes, {info['epochs']} epochs, path: {info['path']}")
        if info.get("path_note"):
            self._line(f"  {info['path_note']}")

    def on_batch_end(self, step: int, logs: dict) -> None:
        if not self.live:
            return
        stage = f"epoch {logs['epoch']}"
        if stage != self._stage:
            self._begin(stage, logs["batches"], f"epoch {logs['epoch']}/{self._epochs}", unit="batch")
        self._bar.update(logs["batch"] - self._bar.n)
        self._bar.set_postfix(loss=f"{logs['loss']:.3f}", img_s=f"{logs['images_per_s']:.0f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        mark = " *" if logs.get("best") else ""
        self._close_bar()
        self._stage = None
        self._line(f"epoch {epoch:>3}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.3f}  "
                   f"val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.3f}  "
                   f"lr {logs['lr']:.2e}  {logs['epoch_time_s']:.1f}s{mark}")

    def on_fit_end(self, result: dict) -> None:
        self._close_bar()
        self._line(f"{result['status']}: checkpoint {result.get('checkpoint')}")

    def on_candidate(self, entry: dict) -> None:
        self._close_bar()
        self._stage = None
        self._line(format_candidate(entry))

    def on_error(self, message: str) -> None:
        self._close_bar()


def format_candidate(entry: dict) -> str:
    """One leaderboard row as a terminal line: name, backbone, the recipe's main choices, score, time."""
    recipe = entry.get("recipe") or {}
    choices = " ".join(f"{key}={_short(recipe[key])}" for key in ("head", "lr", "weight_decay", "label_smoothing",
                                                                  "epochs", "augmentation", "tta", "freeze")
                       if recipe.get(key) is not None)
    if recipe.get("members"):
        choices = "mean of " + " + ".join(recipe["members"])
    score = f"{entry['score']:.1%}" if entry.get("score") is not None else "-"
    if entry.get("interval"):
        low, high = entry["interval"]
        score += f" [{low:.1%}-{high:.1%}]"
    scored = f" ({entry['scored_by']})" if entry.get("scored_by") else ""
    comparison = entry.get("comparison")
    if comparison:
        scored += (f" vs default {comparison['difference']:+.1%}, p={comparison['p_value']:.2g}"
                   + (" better" if comparison.get("significant") else ""))
    note = f"  [{entry['status']}: {entry['note']}]" if entry.get("status") != "done" and entry.get("note") else \
        f"  [{entry['status']}]" if entry.get("status") != "done" else ""
    return f"[search] {entry['name']:<18} {entry['backbone']:<18} {score}{scored}  {entry.get('seconds', 0):.1f} s" \
           f"  {choices}{note}"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
