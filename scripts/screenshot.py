"""Run the real app under Xvfb, train on the demo dataset, and save a screenshot mid-training.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png] [--epochs 12] [--at-epoch 6]

Without a display it re-runs itself under `xvfb-run`. Settings and runs go to a temporary folder,
so the window has its default layout and your own settings are untouched.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--at-epoch", type=int, default=6, help="take the picture when this epoch ends")
    parser.add_argument("--image-size", type=int, default=96)
    return parser.parse_args()


def rerun_under_xvfb() -> int:
    if not shutil.which("xvfb-run"):
        print("no display and no xvfb-run: install xvfb", file=sys.stderr)
        return 2
    command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, *sys.argv]
    return subprocess.run(command, env={**os.environ, "TRANSFERLAB_UNDER_XVFB": "1"}).returncode


def wait_for(app, signal, timeout_s: float = 300) -> None:
    """Spin the event loop until `signal` fires (the app's own signals, no sleeping)."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)


def take_screenshot(args: argparse.Namespace) -> int:
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    from gui.app import create_window
    app, window = create_window([])
    window.resize(1280, 800)
    try:
        wait_for(app, window.engine_ready)
        window.open_demo()
        wait_for(app, window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(app, window.model_ready)     # the layer tree is rebuilt for the demo's classes
        window.model_panel.n_blocks.setValue(2)
        window.model_panel.train_last_blocks()     # fine-tune the last two blocks and the head
        window.train_panel.settings.set_values(epochs=args.epochs, image_size=args.image_size, batch_size=32)
        ended = []
        window.epoch_ended.connect(lambda epoch, _logs: ended.append(epoch))
        window.start_training()
        while len(ended) < args.at_epoch:
            wait_for(app, window.epoch_ended)
        for _ in range(5):                          # let the plot timer draw the latest points
            wait_for(app, window.train_panel.plots.timer.timeout)
        picture = window.screen().grabWindow(window.winId())   # what the X server shows
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        picture.save(args.out)
        print(f"saved {args.out} ({picture.width()}×{picture.height()}) after epoch {ended[-1]}")
    finally:
        window.shutdown()                          # cancel the run and join its thread
        window.close()
    return 0


def main() -> int:
    args = parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("TRANSFERLAB_UNDER_XVFB"):
        return rerun_under_xvfb()
    return take_screenshot(args)


if __name__ == "__main__":
    sys.exit(main())
