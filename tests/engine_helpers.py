"""Helpers for tests that run the engine process: an asyncio loop in a background thread (so one engine
can serve a whole test module), event collection, and a raw synchronous protocol peer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.contract.events import FINAL_EVENTS
from core.link import protocol as P

ROOT = Path(__file__).resolve().parent.parent


class LoopThread:
    """An event loop running in a daemon thread; ``run(coro)`` waits for a coroutine from the test."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        """Run a plain function in the loop's thread (client methods that must be called there)."""

        async def wrapper():
            return fn(*args)

        return self.run(wrapper())

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def collect(handle, timeout: float = 300) -> list:
    """Every event of a job, final one last."""

    async def go():
        return [ev async for ev in handle.events()]

    return await asyncio.wait_for(go(), timeout)


def engine_env(tiny_root: Path, **extra) -> dict:
    """Environment for an engine subprocess that finds the tiny models by catalogue key."""
    env = {"DD_MODELS_DIR": str(tiny_root), "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def finals_of(events) -> list:
    return [e for e in events if isinstance(e, FINAL_EVENTS)]


class RawEngine:
    """``python -m core.engine`` spoken to frame by frame, synchronously (wire-level tests)."""

    def __init__(self, env: dict | None = None, args=()):
        self.proc = subprocess.Popen([sys.executable, "-m", "core.engine", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.stderr = b""
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr += line

    def send_bytes(self, data: bytes) -> bool:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):
            return False

    def send(self, msg: P.Message) -> bool:
        return self.send_bytes(P.encode_bytes(msg))

    def read(self):
        return P.read_message(self.proc.stdout.read)

    def until(self, predicate, timeout: float = 60):
        """Read messages until ``predicate(msg)``; returns (that message, the ones before it)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.read()
            if msg is None:
                raise EOFError(f"engine ended; saw {[m.type for m in seen]}")
            if predicate(msg):
                return msg, seen
            seen.append(msg)
        raise TimeoutError("no matching message")

    def hello(self):
        self.send(P.hello())
        msg, _ = self.until(lambda m: m.type in ("hello", "error"))
        return msg

    def close(self, timeout: float = 10) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# Long opt-in runs (``DD_TEST_LONG=1``): the full counts of the reliability figures; CI runs smaller ones.
LONG = os.environ.get("DD_TEST_LONG", "").strip() not in ("", "0")
