"""Benchmark 3: a full fine-tune started from the window (offscreen, plots live) vs the same fit headless,
and the UI event loop's latency while the window trains.

    .venv/bin/python bench/bench_gui_overhead.py [--per-class 20] [--batch 16] [--epochs 3] [--repeats 3]

The window (`gui.main_window.MainWindow`, Qt offscreen platform) loads Fashion-MNIST photos (96 px PNG),
every layer is set to train with the Model step's "everything" preset, the Train form is filled and
training starts as a click would start it; the worker thread trains while the GUI thread draws the
live curves. The headless run is `Trainer` with the window's exact `TrainConfig`, in the same process
with no event loop. Timed: epochs after the first (`epoch_time_s`, steady state) and the whole run.
A 10 ms QTimer heartbeat on the GUI thread records the gaps between its ticks during training: a gap
is how long a click or a repaint would have waited.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from common import Table, fashion_dataset, fresh_cache_dir, interleave, median, ratio  # noqa: E402

GOAL_RATIO, GOAL_P99_MS = 1.10, 50.0
HEARTBEAT_MS = 10


def wait_for(signals, timeout_s: float = 900) -> tuple:
    """Run the event loop until every signal has fired; returns the first signal's arguments."""
    loop, received = QEventLoop(), {}

    def slot_for(index):
        def slot(*args):
            received.setdefault(index, args)
            if len(received) == len(signals):
                loop.quit()
        return slot

    slots = [slot_for(i) for i in range(len(signals))]
    for signal, slot in zip(signals, slots):
        signal.connect(slot)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    for signal, slot in zip(signals, slots):
        signal.disconnect(slot)
    if len(received) < len(signals):
        raise TimeoutError("the window did not answer in time")
    return received[0]


def settle(window) -> None:
    """Let the finished run's thread end, so the window accepts the next Start."""
    while window.training_task is not None:
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)


class Heartbeat:
    """Timestamps of a fast timer on the GUI thread."""

    def __init__(self):
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(HEARTBEAT_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def gaps_ms(self) -> np.ndarray:
        return np.diff(self.ticks) * 1000 if len(self.ticks) > 1 else np.zeros(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--watchdog-s", type=int, default=1800, help="give up (with thread stacks) after this")
    args = ap.parse_args()
    # A stuck window (a deadlock between threads) must end the benchmark with its stacks, not hang it.
    faulthandler.dump_traceback_later(args.watchdog_s, exit=True)
    app = QApplication.instance() or QApplication([])
    from engine.training.trainer import Trainer
    from gui.main_window import MainWindow
    with tempfile.TemporaryDirectory() as tmp, fresh_cache_dir():
        os.environ["TRANSFERLAB_DATA_DIR"] = str(Path(tmp) / "data")
        window = MainWindow(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        window.show()
        wait_for([window.engine_ready, window.model_ready])
        window.scans.load_dataset([str(fashion_dataset(args.per_class, 96))])
        wait_for([window.scan_finished, window.model_ready])
        window.model_panel.train_everything()
        window.train_panel.settings.set_values(epochs=args.epochs, batch_size=args.batch,
                                               image_size=args.image_size, augmentation="light")
        config = window.training_config()
        report = window.state.report
        print(f"train {len(report.split('train'))} images, batch {args.batch}, {args.epochs} epochs, "
              f"{args.image_size} px, {len(config.frozen_parameters)} frozen parameters")
        runs: dict[str, list] = {"window": [], "headless": []}
        heartbeat = Heartbeat()
        gaps: list[np.ndarray] = []

        def from_window() -> float:
            heartbeat.ticks.clear()
            heartbeat.timer.start()
            start = time.perf_counter()
            run = window.start_training()
            (result,) = wait_for([window.training_finished])
            wall = time.perf_counter() - start
            heartbeat.timer.stop()
            settle(window)
            gaps.append(heartbeat.gaps_ms())
            runs["window"].append((wall, result.history, run.trainer.path_notes))
            return sum(h["epoch_time_s"] for h in result.history[1:])

        def headless() -> float:
            start = time.perf_counter()
            result = Trainer(report, config, Path(tmp) / f"headless-{len(runs['headless'])}").fit()
            runs["headless"].append((time.perf_counter() - start, result.history, []))
            return sum(h["epoch_time_s"] for h in result.history[1:])

        times = interleave({"window (offscreen, live plots)": from_window, "headless": headless}, args.repeats)
        window.shutdown()
        window.close()
    gap = np.concatenate(gaps)
    shown, plain = "window (offscreen, live plots)", "headless"
    table = Table("Benchmark 3: full fine-tune from the window vs headless, and UI latency while training")
    for name, key in ((shown, "window"), (plain, "headless")):
        table.add(f"{name}: epochs 2+", f"{median(times[name]):.1f} s")
        table.add(f"{name}: whole run", f"{median(w for w, _, _ in runs[key]):.1f} s")
    table.add("window / headless, epochs 2+", "", ratio(times[shown], times[plain]), GOAL_RATIO,
              ratio(times.cpu[shown], times.cpu[plain]))
    table.add("window / headless, whole run", "", ratio([w for w, _, _ in runs["window"]],
                                                        [w for w, _, _ in runs["headless"]]), GOAL_RATIO)
    p99 = float(np.percentile(gap, 99))
    table.add(f"heartbeat gap ({HEARTBEAT_MS} ms timer): median / p99 / max",
              f"{np.median(gap):.0f} / {p99:.0f} / {gap.max():.0f} ms")
    table.add("heartbeat p99 gap / 50 ms goal", f"{len(gap)} gaps", p99 / GOAL_P99_MS, 1.0)
    table.print()
    del app


if __name__ == "__main__":
    main()
