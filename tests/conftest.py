"""Shared fixtures: small real image datasets written to disk, and isolated user folders."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def write_colour_dataset(root: Path, per_class: int = 8, size: int = 40, seed: int = 0,
                         colours: dict | None = None) -> Path:
    """Class folders of noisy solid-colour images: learnable in a few steps, distinct bytes per file."""
    rng = np.random.default_rng(seed)
    for name, rgb in (colours or COLOURS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, size=(size, size, 3))
            pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Never write into the real user data/cache folders from a test."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("TRANSFERLAB_CACHE_DIR", str(base / "cache"))


@pytest.fixture
def colour_dataset(tmp_path) -> Path:
    return write_colour_dataset(tmp_path / "colours")


@pytest.fixture(scope="session")
def demo_dataset() -> Path:
    return ROOT / "resources" / "demo" / "fashion-mnist"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)


# -- the desktop app --------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_dangling_qthreads(request, monkeypatch):
    """Fail a Qt test if a QThread it started is still running at the end (napari's check)."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    import traceback

    import shiboken6
    from PySide6.QtCore import QThread
    started: list[tuple[QThread, str]] = []
    original_start = QThread.start

    def recording_start(self, *args):
        started.append((self, "".join(traceback.format_stack(limit=8))))
        original_start(self, *args)

    monkeypatch.setattr(QThread, "start", recording_start)
    yield
    running = [stack for thread, stack in started if shiboken6.isValid(thread) and thread.isRunning()]
    assert not running, "QThread left running, started at:\n" + "\n".join(running)


@pytest.fixture
def window(qtbot, tmp_path):
    """A shown main window whose engine and default layer tree have loaded."""
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow
    from gui_support import delete_now
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    with qtbot.waitSignals([win.engine_ready, win.model_ready], timeout=60_000):
        win.show()
    yield win
    win.shutdown()
    win.close()
    delete_now(win)


@pytest.fixture
def windows(qtbot, tmp_path):
    """Opens main windows (engine and default layer tree loaded); closes whatever is left open."""
    import shiboken6
    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow
    from gui_support import delete_now
    made = []

    def open_window(settings_file: Path | None = None) -> MainWindow:
        settings = QSettings(str(settings_file or tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings)
        made.append(window)
        with qtbot.waitSignals([window.engine_ready, window.model_ready], timeout=60_000):
            window.show()
        return window

    yield open_window
    for window in made:
        if shiboken6.isValid(window):
            window.shutdown()
            window.close()
            delete_now(window)


FORTUNE_FILES = Path("/usr/share/games/fortunes")


def pytest_sessionstart(session):
    """In CI the text tests must run: a machine without Debian's fortunes (the real texts they train on) is
    a set-up failure, not 22 quiet skips. scripts/setup.sh installs them."""
    if os.environ.get("CI") and not (FORTUNE_FILES / "computers").is_file():
        raise pytest.UsageError("Debian's fortunes are not installed (the text tests train on them): "
                                "run scripts/setup.sh, which installs the package 'fortunes'")
