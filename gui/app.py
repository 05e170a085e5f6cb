"""Desktop app entry point: show the window first, load torch and the plots afterwards.

`python main.py [gui] [DATASET ...]` opens the window and scans the given folders, zips or CSVs;
`--demo` opens the bundled demo dataset.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.core.paths import APP_NAME, demo_dataset, resources_dir


def create_window(argv: list[str]):
    """The QApplication (created if needed) and the shown main window; no event loop yet."""
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setWindowIcon(QIcon(str(resources_dir() / "icons" / "transferlab.svg")))
    from gui.main_window import MainWindow
    window = MainWindow()
    window.show()
    sources = [str(demo_dataset()) if arg == "--demo" else arg for arg in argv
               if arg == "--demo" or Path(arg).exists()]
    if sources:
        window.load_dataset(sources)
    return app, window


def run_app(argv: list[str]) -> int:
    app, window = create_window(argv)           # the reference keeps the window alive
    _quit_after_env_delay(window)
    previous_hook = sys.excepthook
    sys.excepthook = _show_unexpected_error(previous_hook)
    try:
        return app.exec()
    finally:
        sys.excepthook = previous_hook


def _quit_after_env_delay(window) -> None:
    """`TRANSFERLAB_QUIT_AFTER_MS` (smoke tests of the frozen app): close the window as a user would,
    so it shuts its threads down, and log which windows were shown."""
    delay = os.environ.get("TRANSFERLAB_QUIT_AFTER_MS")
    if not delay:
        return

    def close() -> None:
        shown = [w.windowTitle() for w in QApplication.topLevelWidgets() if w.isVisible()]
        logging.getLogger("transferlab").info("quit after %s ms: windows shown: %s", delay, shown)
        window.close()
    QTimer.singleShot(int(delay), close)


def _show_unexpected_error(previous_hook):
    """A bug in a slot must reach the user as a message, not only as a console traceback; the
    previous hook still runs (it writes the log file)."""
    def hook(exc_type, exc, tb):
        previous_hook(exc_type, exc, tb)
        box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error", f"{exc_type.__name__}: {exc}",
                          parent=QApplication.activeWindow())
        box.setDetailedText("".join(traceback.format_exception(exc_type, exc, tb)))
        box.open()
    return hook
