"""The asyncio loop the dock waits on: qasync's loop over the editor's own Qt event loop.

Inside Krita (and in tests) the Qt event loop is already running when the plugin wakes up: qasync's
``QEventLoop(app, already_running=True)`` then makes asyncio callbacks ride on Qt's events, and
coroutines started from Qt slots run without blocking anything.  The standalone editor runs its
window through qasync itself; its loop is reused.

    task = aio.spawn(coroutine, "what it does")   # from any slot; errors are logged, not lost
"""

from __future__ import annotations

import asyncio
import logging

from .coreapi import qasync
from .qt import QtWidgets

log = logging.getLogger(__name__)

_loop = None
_tasks: set = set()


def loop() -> asyncio.AbstractEventLoop:
    """The dock's event loop (created on first use, over the running QApplication)."""
    global _loop
    running = asyncio.events._get_running_loop()
    q = qasync()
    if isinstance(running, q.QEventLoop):
        _loop = running
        return running
    if _loop is None or _loop.is_closed():
        app = QtWidgets.QApplication.instance()
        if app is None:
            raise RuntimeError("the dock needs a QApplication")
        _loop = q.QEventLoop(app, already_running=True)
    if running is None:
        # Something ran another loop to completion in this thread meanwhile (which unsets the running
        # loop when it ends): ours is still the one Qt drives.
        asyncio.events._set_running_loop(_loop)
    return _loop


def spawn(coro, what: str = "task") -> asyncio.Task:
    """Run ``coro`` on the dock's loop; its exception (if any) is logged with ``what``."""
    task = loop().create_task(coro)
    _tasks.add(task)

    def done(t: asyncio.Task) -> None:
        _tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("%s failed", what, exc_info=t.exception())

    task.add_done_callback(done)
    return task


def close() -> None:
    """Cancel the dock's tasks and release the loop (tests; the editor at exit)."""
    global _loop
    for t in list(_tasks):
        t.cancel()
    _tasks.clear()
    if _loop is not None and asyncio.events._get_running_loop() is _loop:
        asyncio.events._set_running_loop(None)
    _loop = None
