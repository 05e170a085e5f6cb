"""Shared by the screenshot scripts: run under Xvfb, open the real window on the demo dataset, train,
wait on the app's own signals (never sleep), and save what the X server shows."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(take: Callable[[], int]) -> int:
    """`take()` on a display: this one, or a fresh Xvfb the script re-runs itself under."""
    if os.environ.get("DISPLAY") or os.environ.get("TRANSFERLAB_UNDER_XVFB"):
        return take()
    if not shutil.which("xvfb-run"):
        print("no display and no xvfb-run: install xvfb", file=sys.stderr)
        return 2
    command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, *sys.argv]
    return subprocess.run(command, env={**os.environ, "TRANSFERLAB_UNDER_XVFB": "1"}).returncode


def wait_for(signal, timeout_s: float = 300) -> None:
    """Spin the event loop until `signal` fires (or the timeout passes)."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)


def settle(ms: int) -> None:
    """Run the event loop for `ms` milliseconds, e.g. to let a table lay out and paint."""
    from PySide6.QtCore import QEventLoop, QTimer
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def save(widget, path: str) -> None:
    """What the X server shows of `widget`'s window (so menus, shadows and GL plots are as seen)."""
    from PySide6.QtWidgets import QApplication
    for _ in range(3):
        QApplication.processEvents()
    picture = widget.screen().grabWindow(widget.winId())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    print(f"saved {path} ({picture.width()}×{picture.height()})")


@contextlib.contextmanager
def demo_window(width: int = 1280, height: int = 800):
    """The window with the demo dataset loaded and its layer tree built; settings and runs go to a
    temporary folder, so the layout is the default one and the user's own settings are untouched.
    Any run is cancelled and joined on the way out."""
    os.environ["TRANSFERLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="transferlab-screenshot-")
    from gui.app import create_window
    _app, window = create_window([])
    window.resize(width, height)
    try:
        wait_for(window.engine_ready)
        window.scans.open_demo()
        wait_for(window.scan_finished)
        while not window.start_action.isEnabled():
            wait_for(window.model_ready)     # the layer tree is rebuilt for the demo's classes
        yield window
    finally:
        window.shutdown()
        window.close()


def start_training(window, epochs: int, image_size: int, last_blocks: int | None = None) -> None:
    """Head only by default; `last_blocks` fine-tunes that many blocks and the head."""
    if last_blocks:
        window.model_panel.n_blocks.setValue(last_blocks)
        window.model_panel.train_last_blocks()
    window.train_panel.settings.set_values(epochs=epochs, image_size=image_size, batch_size=32)
    window.start_training()
