"""Run Python's cyclic garbage collector only in the GUI thread.

Automatic collection runs in whichever thread happens to allocate. When a worker thread (building a
model, training) triggers it and it frees the last reference to a Qt wrapper, the QObject is destroyed
from the wrong thread and the process crashes. So automatic collection is switched off and a GUI-thread
timer collects instead, generation by generation as the thresholds say (pyqtgraph's GarbageCollector
does the same; this copy avoids importing pyqtgraph before the window is shown).
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class GuiThreadGarbageCollector(QObject):
    def __init__(self, parent: QObject, interval_ms: int = 1000):
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        """Collect the oldest generation whose allocation count passed its threshold."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return
