"""What every workflow controller tells the window: lines for the Log, status-bar messages, errors worth
a message box, and which step the user should see."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class Controller(QObject):
    """A workflow's messages to the window, which shows them; the controller never touches the window."""

    logged = Signal(str)                 # a line for the Log dock (and the log file)
    status = Signal(str, int)            # a status-bar message and how long it shows (ms; 0: until replaced)
    status_withdrawn = Signal(str)       # a status-bar message starting so no longer holds
    error = Signal(str, str, str)        # title, one readable line, details: a message box
    step_wanted = Signal(object)         # the panel the user should see now
