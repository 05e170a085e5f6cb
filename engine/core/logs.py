"""The log file a user can send us: `<user data folder>/logs/transferlab.log`, rotating, set up by main.py.

The console stays for the user (the CLI's one-line errors); the file is for us: versions, how the app was
started (frozen or not), warnings and uncaught exceptions with their tracebacks.
"""
from __future__ import annotations

import logging
import os
import platform
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from engine import __version__
from engine.core.paths import user_data_dir

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
MAX_BYTES = 1_000_000
BACKUPS = 3

log = logging.getLogger("transferlab")


def log_file() -> Path:
    return user_data_dir() / "logs" / "transferlab.log"


def setup_logging(argv: list[str]) -> Path | None:
    """Attach the rotating log file to the root logger once per process; None when it cannot be written.

    `TRANSFERLAB_DEBUG=1` logs at debug level. A missing or read-only user folder must never stop the
    app, so failures only skip the file.
    """
    root = logging.getLogger()
    if any(isinstance(h, _TransferLabFileHandler) for h in root.handlers):
        return log_file()
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _TransferLabFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if os.environ.get("TRANSFERLAB_DEBUG") else logging.INFO)
    logging.captureWarnings(True)
    _log_uncaught_exceptions()
    frozen = f"frozen ({getattr(sys, '_MEIPASS', '?')})" if getattr(sys, "frozen", False) else "from source"
    log.info("TransferLab %s %s; Python %s on %s; argv=%s", __version__, frozen, platform.python_version(),
             platform.platform(), argv)
    return path


class _TransferLabFileHandler(RotatingFileHandler):
    """Our handler, recognisable so a second `setup_logging` call adds no duplicate."""


def _log_uncaught_exceptions() -> None:
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, KeyboardInterrupt):
            log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
        previous(exc_type, exc, tb)

    sys.excepthook = hook
