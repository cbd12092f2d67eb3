"""Helpers of the dock tests that run the real engine: one ``DockSession`` per test module (one engine
process), driven the way Krita drives it: qasync's loop rides on the Qt event loop, which the test
spins while it waits."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..engine_helpers import engine_env

ROOT = Path(__file__).resolve().parent.parent.parent


def spin_until(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    """Process Qt events (and with them the asyncio callbacks) until ``predicate()``."""
    from plugin.diffusion_dock.runtime.qt import QtWidgets

    app = QtWidgets.QApplication.instance()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.002)


def run_coro(coro, timeout: float = 60.0):
    """Run a coroutine on the dock's loop, spinning Qt until it is done."""
    from plugin.diffusion_dock.runtime import aio

    task = aio.spawn(coro, "test")
    spin_until(task.done, timeout, "a coroutine")
    return task.result()


def make_session(tiny_root: Path, results: Path, **client_options):
    """A DockSession on the tiny models, with the engine started by this Python from the checkout."""
    from plugin.diffusion_dock.runtime import aio
    from plugin.diffusion_dock.session.dock_session import DockSession
    from plugin.diffusion_dock.session.results_store import ResultStore
    from plugin.diffusion_dock.session.settings import Settings

    aio.loop()
    return DockSession(Settings(python=sys.executable), ResultStore(results), env=engine_env(tiny_root),
                       client_options=client_options)


def close_session(session) -> None:
    from plugin.diffusion_dock.runtime import aio

    try:
        run_coro(session.stop(), 30)
    finally:
        aio.close()


def wait_job(item, timeout: float = 180.0):
    spin_until(lambda: item.final and item.finished is not None, timeout, f"job {item.summary}")
    return item
