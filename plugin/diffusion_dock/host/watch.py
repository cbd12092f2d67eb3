"""How a host tells the dock that the active document may have changed (Live repaints after every
change of the layer or the selection).

Krita's Python API has no signal for pixel changes (its ``Notifier`` tells of documents, views and
windows only), so the default is a ``PollWatch``: a QTimer that calls back every ``POLL_MS`` while Live
is on; the dock then compares a cheap token of what a Live job would read (``HostDocument.change_token``:
a CRC of the layer's pixels and the selection over the Live region) and sends a job only when it
differs.  A host with real signals (the standalone editor) gives a ``SignalWatch`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

from ..runtime.qt import QTimer

POLL_MS = 250


class Watch:
    """A subscription; ``stop()`` ends it (idempotent)."""

    def stop(self) -> None:
        raise NotImplementedError


class PollWatch(Watch):
    def __init__(self, on_change: Callable[[], None], interval_ms: int = POLL_MS):
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(on_change)
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


class SignalWatch(Watch):
    """``on_change`` connected to Qt signals (and disconnected by ``stop``)."""

    def __init__(self, on_change: Callable[[], None], signals):
        self._on_change = on_change
        self._signals = list(signals)
        for signal in self._signals:
            signal.connect(self._fire)

    def _fire(self, *_args) -> None:
        self._on_change()

    def stop(self) -> None:
        for signal in self._signals:
            try:
                signal.disconnect(self._fire)
            except (TypeError, RuntimeError):
                pass
        self._signals = []
