"""Desktop app: how fast the window appears next to a bare PySide6 window, and whether the live plots
stay fast on long runs.

    xvfb-run -a .venv/bin/python bench/bench_gui.py [--repeats 9] [--points 300000]

Start-up: each sample is a fresh process, from launch until its main window gets its first paint
event (the interpreter's own start included in both); the issue asks for about 2x a bare window.
Plots: one refresh (setData on every curve) plus a full repaint, with a long run's worth of batch
points against a short run's. (The GUI thread's latency while the window trains is measured by
`bench_gui_overhead.py`.) Without a display Qt's offscreen platform is used (and printed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from common import ROOT, Table, interleave, median, ratio

FIRST_PAINT = """
import os, sys
from PySide6.QtCore import QEvent, QObject

class FirstPaint(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint:
            os._exit(0)          # only the time to the first frame counts
        return False
"""

BARE = FIRST_PAINT + """
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
app = QApplication(sys.argv)
window = QMainWindow()
window.setCentralWidget(QLabel("bare"))
window.resize(1280, 820)
probe = FirstPaint()
window.installEventFilter(probe)
window.show()
app.exec()
sys.exit(1)
"""

APP = FIRST_PAINT + """
from gui.app import create_window
app, window = create_window([])
probe = FirstPaint()
window.installEventFilter(probe)
app.exec()
sys.exit(1)
"""


def launch(code: str, env: dict) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"the window never painted:\n{done.stderr}")


def startup(table: Table, repeats: int, env: dict) -> None:
    with tempfile.TemporaryDirectory() as scratch:       # the user's settings stay out of it
        env = {**env, "TRANSFERLAB_DATA_DIR": scratch}
        launch(BARE, env), launch(APP, env)                # warm the file cache
        times = interleave({"bare PySide6 window": lambda: launch(BARE, env),
                            "TransferLab window": lambda: launch(APP, env)}, repeats)
    bare, app = times["bare PySide6 window"], times["TransferLab window"]
    table.add("start-up: bare PySide6 window", f"{median(bare):.3f} s")
    table.add("start-up: TransferLab window", f"{median(app):.3f} s", ratio(app, bare), goal=2.0,
              cpu_ratio=ratio(times.cpu["TransferLab window"], times.cpu["bare PySide6 window"]))


def plots(table: Table, repeats: int, points: int) -> None:
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])
    from gui.plots import TrainingPlots

    def filled(n: int) -> TrainingPlots:
        widget = TrainingPlots()
        widget.resize(900, 600)
        widget.show()
        widget.start()
        widget.timer.stop()                                # refreshed by hand below
        batches = max(1, n // 100)
        for i in range(n):
            epoch, batch = divmod(i, batches)
            widget.add_batch({"epoch": epoch + 1, "batch": batch + 1, "batches": batches,
                              "loss": 1.0 / (1 + i / batches) + 0.05 * (i % 7), "lr": 1e-3})
        app.processEvents()
        return widget

    def redraw(widget: TrainingPlots) -> None:
        widget.add_batch({"epoch": 100, "batch": 1, "batches": 1, "loss": 0.5, "lr": 1e-3})
        widget.refresh()
        widget.canvas.grab()                               # forces the full repaint

    short, long = filled(1000), filled(points)
    times = interleave({"1k points": lambda: redraw(short), "long run": lambda: redraw(long)}, repeats)
    table.add("plots: refresh + repaint, 1,000 batch points", f"{1000 * median(times['1k points']):.1f} ms")
    table.add(f"plots: refresh + repaint, {points:,} batch points", f"{1000 * median(times['long run']):.1f} ms",
              ratio(times["long run"], times["1k points"]), goal=3.0,
              cpu_ratio=ratio(times.cpu["long run"], times.cpu["1k points"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--points", type=int, default=300_000,
                        help="batch points of the long run (the engine reports up to 10 per second: ~8 h)")
    args = parser.parse_args()
    env = dict(os.environ)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY") and not env.get("QT_QPA_PLATFORM"):
        env["QT_QPA_PLATFORM"] = os.environ["QT_QPA_PLATFORM"] = "offscreen"
    table = Table(f"Desktop app (ratio = TransferLab / reference time, lower is better; "
                  f"platform {env.get('QT_QPA_PLATFORM', 'xcb')})")
    startup(table, args.repeats, env)
    plots(table, args.repeats, args.points)
    table.print()
    sys.stdout.flush()
    os._exit(0)      # skip PySide's teardown of the plot widgets: nothing is left to measure


if __name__ == "__main__":
    main()
