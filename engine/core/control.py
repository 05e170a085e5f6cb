"""Pause and cancel for long jobs: plain flags the worker checks between steps (no Qt, no signals)."""
from __future__ import annotations

import threading


class Cancelled(Exception):
    """Raised inside a job when the user cancelled it; callers treat it as a clean stop, not an error."""


class RunControl:
    """Shared between the thread that runs a job and the one that steers it."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()          # a paused job must wake up to notice the cancel

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def checkpoint(self) -> None:
        """Block while paused; raise Cancelled once cancel was asked. Call between batches."""
        self._running.wait()
        if self._cancel.is_set():
            raise Cancelled()
