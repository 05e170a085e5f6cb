"""Where things live: bundled resources (also inside a PyInstaller bundle) and the user's data folders."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "TransferLab"


def resources_dir() -> Path:
    """`resources/` beside the sources, or inside the frozen bundle (`sys._MEIPASS`)."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "resources"


def demo_dataset() -> Path:
    return resources_dir() / "demo" / "fashion-mnist"


def user_data_dir() -> Path:
    """Runs, projects and logs; `TRANSFERLAB_DATA_DIR` overrides (tests, portable installs)."""
    override = os.environ.get("TRANSFERLAB_DATA_DIR")
    if override:
        return Path(override)
    from platformdirs import user_data_dir as platform_dir
    return Path(platform_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Feature and image caches, extracted zips; `TRANSFERLAB_CACHE_DIR` overrides."""
    override = os.environ.get("TRANSFERLAB_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir(APP_NAME, appauthor=False))
