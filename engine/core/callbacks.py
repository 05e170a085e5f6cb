"""Training events as plain-Python hooks (Keras/Lightning style): every argument is a float, int, str,
list or dict of those, so a GUI can forward them across threads without touching torch objects."""
from __future__ import annotations

import sys
import time


class Callback:
    """Override the hooks you need; each default does nothing."""

    def on_fit_start(self, info: dict) -> None:
        """`info`: epochs, steps_per_epoch, n_train, n_val, n_test, classes, path ('features'|'images')."""

    def on_progress(self, stage: str, done: int, total: int) -> None:
        """Work outside training batches: 'features' (caching), 'evaluate', 'images' (decoding)."""

    def on_batch_end(self, step: int, logs: dict) -> None:
        """Throttled: at most every ~0.1 s. `logs`: epoch, batch, batches, loss, accuracy, lr,
        images_per_s, eta_s."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """`logs`: loss, accuracy, val_loss, val_accuracy, lr, epoch_time_s, best (bool as 0/1), stage."""

    def on_fit_end(self, result: dict) -> None:
        """`result`: status ('completed'|'cancelled'|'stopped-early'), run_dir, checkpoint, metrics."""

    def on_error(self, message: str) -> None:
        """A one-line, human-readable reason the fit failed."""


class CallbackList(Callback):
    """Fans each event out to several callbacks."""

    def __init__(self, callbacks=()):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_fit_start(self, info):
        for c in self.callbacks:
            c.on_fit_start(info)

    def on_progress(self, stage, done, total):
        for c in self.callbacks:
            c.on_progress(stage, done, total)

    def on_batch_end(self, step, logs):
        for c in self.callbacks:
            c.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_fit_end(self, result):
        for c in self.callbacks:
            c.on_fit_end(result)

    def on_error(self, message):
        for c in self.callbacks:
            c.on_error(message)


class ConsoleProgress(Callback):
    """Terminal output for the CLI: one line per epoch, a live batch line when stderr is a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._last_progress = 0.0

    def _line(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_fit_start(self, info):
        self._line(f"training {info['n_train']} images ({info['n_val']} val, {info['n_test']} test), "
                   f"{len(info['classes'])} classes, {info['epochs']} epochs, path: {info['path']}")
        if info.get("path_note"):
            self._line(f"  {info['path_note']}")

    def on_progress(self, stage, done, total):
        now = time.monotonic()
        if self.live and (now - self._last_progress > 0.2 or done == total):
            self._last_progress = now
            self.stream.write(f"\r\033[K{stage}: {done}/{total}")
            self.stream.flush()

    def on_batch_end(self, step, logs):
        if self.live:
            self.stream.write(f"\r\033[Kepoch {logs['epoch']} batch {logs['batch']}/{logs['batches']} "
                              f"loss {logs['loss']:.3f} {logs['images_per_s']:.1f} img/s "
                              f"eta {logs['eta_s']:.0f}s")
            self.stream.flush()

    def on_epoch_end(self, epoch, logs):
        mark = " *" if logs.get("best") else ""
        self._line(f"epoch {epoch:>3}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.3f}  "
                   f"val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.3f}  "
                   f"lr {logs['lr']:.2e}  {logs['epoch_time_s']:.1f}s{mark}")

    def on_fit_end(self, result):
        self._line(f"{result['status']}: best checkpoint {result.get('checkpoint')}")
