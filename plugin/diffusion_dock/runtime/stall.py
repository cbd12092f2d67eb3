"""How long the editor's event loop was blocked: a Qt timer that should fire every ``interval_ms``
measures how late each tick comes.  The dock runs it while jobs are queued or running and records
the largest stall of each job (``JobItem.max_stall_ms``); tests and ``scripts/bench_dock.py`` read it.

The goal is that waiting for the engine never blocks the UI: every stall stays under 50 ms.
"""

from __future__ import annotations

import time

from .qt import QObject, Qt, QTimer

GOAL_MS = 50.0


class StallMeter(QObject):
    def __init__(self, interval_ms: int = 10, parent=None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0
        self.max_ms = 0.0          # largest stall since the last reset()
        self.ticks = 0
        self._watchers: list = []  # objects with a ``max_stall_ms`` attribute (jobs being measured)

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def reset(self) -> None:
        self.max_ms = 0.0
        self.ticks = 0
        self._last = time.perf_counter()

    def watch(self, item) -> None:
        """Measure while ``item`` lives: its ``max_stall_ms`` gets the largest stall seen meanwhile."""
        if item in self._watchers:
            return
        self._watchers.append(item)
        if not self._timer.isActive():
            self._last = time.perf_counter()
            self._timer.start()

    def unwatch(self, item) -> None:
        if item in self._watchers:
            self._watchers.remove(item)
        if not self._watchers:
            self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        late = (now - self._last) * 1000.0 - self.interval_ms
        self._last = now
        self.ticks += 1
        if late > self.max_ms:
            self.max_ms = late
        for item in self._watchers:
            if late > item.max_stall_ms:
                item.max_stall_ms = late
