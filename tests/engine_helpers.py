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


class ServeProcess:
    """``python -m core serve`` in a subprocess: its URL and token, raw connections, its memory."""

    def __init__(self, args=(), env: dict | None = None, listen: str = "127.0.0.1:0"):
        self.proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--listen", listen, *args], cwd=ROOT,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stderr = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + 60
        while len(self.lines) < 2 and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        assert len(self.lines) >= 2, (self.lines, self.proc.poll(), self.stderr)
        self.url = self.lines[0].split("serving on ")[1].strip()
        self.token = self.lines[1].split("token: ")[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr += line

    def connect(self, timeout: float = 60, source: str | None = None):
        """A plain TCP connection (``source``: the local address to connect from, e.g. 127.0.0.7)."""
        import socket

        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        return sock

    def hello(self, sock, **fields) -> P.Message:
        """Say hello with the token on ``sock``; the engine's answer."""
        sock.sendall(P.encode_bytes(P.hello(token=self.token, **fields)))
        f = sock.makefile("rb", buffering=0)   # unbuffered: a later read gets what this one did not use
        while True:
            msg = P.read_message(f.read)
            if msg is None or msg.type in ("hello", "error"):
                return msg

    def memory(self) -> dict:
        """VmRSS and VmHWM (peak) of the server process, in bytes, from /proc."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=None, timeout: float = 30) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def socket_connection(service, name: str, **kw):
    """(our socket, the service's ``Connection`` on the other end of a socket pair): the stdio engine's
    connection, reading and writing a socket instead of pipes; closing it shuts its end."""
    import socket

    from core.engine.connection import Connection

    ours, theirs = socket.socketpair()
    reader = theirs.makefile("rb")

    def close():
        try:
            theirs.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        reader.close()
        theirs.close()

    return ours, Connection(service, reader.read, theirs.sendall, name=name, close=close, **kw)


class SocketPeer:
    """A client of an in-process ``EngineService`` over a socket pair (the stdio engine's ``Connection``):
    it sends frames, and a thread collects every message with the bytes its frame took."""

    def __init__(self, service, **kw):
        self.ours, self.conn = socket_connection(service, "peer", **kw)
        self.thread = threading.Thread(target=self.conn.serve, daemon=True)
        self.thread.start()
        self.messages: list = []
        self.sizes: dict[str, int] = {}
        self.finals: set = set()
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        f = self.ours.makefile("rb")
        count = {"n": 0}

        def read(n):
            data = f.read(n)
            count["n"] += len(data)
            return data

        while True:
            before = count["n"]
            try:
                m = P.read_message(read)
            except (OSError, P.ProtocolError):
                m = None
            with self.cond:
                if m is None:
                    self.messages.append(None)
                    self.cond.notify_all()
                    return
                self.messages.append(m)
                self.sizes[m.type] = self.sizes.get(m.type, 0) + count["n"] - before
                if m.type in ("result", "cancelled", "error") and m.get("job_id"):
                    self.finals.add(m.get("job_id"))
                self.cond.notify_all()

    def send(self, msg):
        self.ours.sendall(P.encode_bytes(msg))

    def wait(self, predicate, timeout: float = 300):
        """Wait until a received message satisfies ``predicate`` (or, given no message, until it holds)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                try:
                    if any(m is not None and predicate(m) for m in self.messages):
                        return
                except TypeError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("no such message")
                self.cond.wait(0.1)

    def bytes_of(self, kind: str) -> int:
        with self.cond:
            return self.sizes.get(kind, 0)

    def close(self):
        import socket

        try:
            self.ours.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.thread.join(60)
        self.ours.close()


def socket_peer(service, **kw) -> SocketPeer:
    return SocketPeer(service, **kw)
