"""One connection to one engine: a child process on pipes, or a remote engine over TCP/TLS.  Standard
library only.

Framing of outgoing messages (large frames a slice at a time, large payloads through shared memory),
the hello exchange, the engine's stderr, and why a process ended.  What the client does with the
messages it reads is ``client.EngineClient``'s business; when to start and restart is the supervisor's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import time
from urllib.parse import urlsplit

from .. import bulk
from .. import protocol as P

log = logging.getLogger("diffusion_dock.client")
engine_log = logging.getLogger("diffusion_dock.engine")

STREAM_LIMIT = 1 << 20
WRITE_SLICE = 1 << 20      # frames larger than this are written a slice at a time (see EngineLink.send)
PIPE_BYTES = 1 << 20       # Linux's default limit for an unprivileged pipe (/proc/sys/fs/pipe-max-size)
READ_BYTES = 1 << 20


def os_reason(e: BaseException) -> str:
    """What went wrong with a connection or a process start, in words for the artist (the exception's own
    text, with its errno and its C file, goes to the log only)."""
    import ssl

    log.info("connection or start failure: %r", e)
    if isinstance(e, ssl.SSLCertVerificationError):
        return ("the server's TLS certificate could not be verified: give the dock the server's certificate "
                "(or the authority that signed it)")
    if isinstance(e, ssl.SSLError):
        return "the TLS handshake failed: check that the server uses TLS and the URL starts with tls://"
    if isinstance(e, ConnectionRefusedError):
        return "the connection was refused: is the server running at that address and port?"
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"{e.filename} was not found"
    strerror = getattr(e, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror[:1].lower() + strerror[1:]
    return "the connection ended unexpectedly"


class EngineError(Exception):
    """The engine could not be started or reached.  ``code`` is one of ``core.link.protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def widen_pipes(proc) -> None:
    """Let a layer's pixels cross the engine's pipes in megabytes rather than the default 64 KiB (then
    256 KiB per read): each piece costs one turn of the editor's event loop.  Linux only (elsewhere
    the pipes keep their size: slower, not wrong)."""
    try:
        import fcntl
    except ImportError:
        return
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    for stream in (proc.stdin, proc.stdout):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        try:
            fcntl.fcntl(pipe.fileno(), set_size, PIPE_BYTES)
        except (OSError, AttributeError, ValueError):
            pass
        if transport is not None and hasattr(transport, "max_size"):
            transport.max_size = READ_BYTES   # asyncio's pipe reader reads at most this much per turn


def parse_url(url: str, cafile: str | None = None):
    """(host, port, ssl context or None) of "tcp://host:port" or "tls://host:port"."""
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise EngineError("engine_start_failed", f"engine URL must look like tcp://host:port or tls://host:port, "
                                                 f"got {url!r}")
    ctx = None
    if parts.scheme == "tls":
        import ssl

        ctx = ssl.create_default_context(cafile=cafile)
    return parts.hostname, parts.port, ctx


class EngineLink:
    """One engine: a child process on pipes, or a connection to a remote engine."""

    def __init__(self, reader, writer, *, proc=None, where: str = ""):
        self.reader, self.writer, self.proc, self.where = reader, writer, proc, where
        self.hello: dict = {}
        self.capabilities = False      # the engine announced them (its heavy imports are done)
        self.last_seen = time.monotonic()
        self.lost = False
        self.running_ids: set[str] = set()
        self.told: dict[str, int] = {}   # job id -> the queue position the engine last told (core.link.queuemoves)
        self.stuck: dict[str, float] = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.tasks: list[asyncio.Task] = []
        self.pump: asyncio.Task | None = None   # reads the local engine's stderr until it ends
        self.fatal = ""                          # what the engine said before closing the connection
        self.closed = asyncio.Event()   # set once the link is closed and its jobs are settled
        self._backlog: collections.deque = collections.deque()   # chunks (or messages) waiting for _flush
        self._flusher: asyncio.Task | None = None
        self.bulk: str | None = None     # shared-memory directory agreed with a local engine (core.link.bulk)
        self.bulk_written: set[str] = set()

    # --- opening ---------------------------------------------------------------------------------------

    @classmethod
    async def spawn(cls, python: str, args, *, cwd: str | None, env: dict | None) -> EngineLink:
        """Start ``python -m core.engine ARGS`` in its own session, with its stderr read by a pump."""
        kw = {"start_new_session": True} if os.name == "posix" else {"creationflags": 0x08000000}
        full_env = None if env is None else {**os.environ, **env}
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "core.engine", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=cwd, env=full_env, limit=STREAM_LIMIT, **kw)
        widen_pipes(proc)
        link = cls(proc.stdout, proc.stdin, proc=proc, where=f"pid {proc.pid}")
        link.pump = asyncio.get_running_loop().create_task(link.pump_stderr())
        return link

    @classmethod
    async def connect(cls, url: str, cafile: str | None) -> EngineLink:
        host, port, ctx = parse_url(url, cafile)
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=STREAM_LIMIT)
        return cls(reader, writer, where=url)

    async def say_hello(self, hello: dict) -> None:
        """Exchange hellos: send ours, read the engine's (text before its first frame is logged and
        kept).  Raises EngineError with a stable code."""
        self.send(P.hello(**hello))
        try:
            junk, prefix = await P.skip_to_frame_async(self.reader)
            if junk:
                text = junk.decode("utf-8", "replace").strip()
                log.warning("the engine wrote text before its first frame (ignored): %s", text[:500])
                self.stderr_tail.extend(text.splitlines()[-5:])
            msg = None if prefix is None else await P.read_message_async(self.reader, prefix=prefix)
        except P.ProtocolError as e:
            raise EngineError("engine_start_failed", f"{self.where} is not a Diffusion Dock engine: {e}") from None
        except (OSError, EOFError) as e:
            raise EngineError("engine_start_failed", f"the connection closed during the hello: {os_reason(e)}") from None
        if msg is None:
            raise EngineError("engine_start_failed", await self.exit_reason("before saying hello"))
        if msg.type == "error":
            code = msg.get("code") if msg.get("code") in P.ERROR_CODES else "engine_start_failed"
            raise EngineError(code, f"the engine refused the connection: {msg.get('message')}")
        if msg.type != "hello":
            raise EngineError("engine_start_failed", f"the engine sent {msg.type!r} before its hello")
        try:
            P.check_hello(msg)
        except P.ProtocolError as e:
            raise EngineError("version_mismatch", str(e)) from None
        self.hello = msg.header
        if hello.get("bulk_dir") and msg.get("bulk_dir") == hello["bulk_dir"]:
            self.bulk = hello["bulk_dir"]
        self.last_seen = time.monotonic()

    # --- sending ---------------------------------------------------------------------------------------

    def send(self, msg: P.Message) -> bool:
        """Send ``msg`` in order.  A small frame is written at once; a large one (a layer's pixels) goes
        through ``_flush`` a slice at a time, so no single write copies it whole into the transport's
        buffer while the editor's event loop waits."""
        if self.lost or self.writer.is_closing():
            return False
        if self.bulk and any(memoryview(p).nbytes >= bulk.MIN_BYTES for p in msg.payloads):
            self._backlog.append(msg)      # its large payloads go to files, off the event loop (_flush)
            self._start_flush()
            return True
        chunks = P.encode(msg)
        flushing = self._flusher is not None and not self._flusher.done()   # mid-frame even when the deque is empty
        if not flushing and sum(memoryview(c).nbytes for c in chunks) <= WRITE_SLICE:
            try:
                for chunk in chunks:
                    self.writer.write(chunk)
            except (OSError, RuntimeError) as e:
                log.info("sending to the engine failed: %s", e)
                return False
            return True
        self._backlog.extend(chunks)
        self._start_flush()
        return True

    def _start_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
            self.tasks.append(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._backlog:
                item = self._backlog.popleft()
                if isinstance(item, P.Message):
                    item = await asyncio.to_thread(bulk.offload_or_pipe, item, self.bulk, self.bulk_written)
                    for chunk in P.encode(item):
                        await self._write_sliced(chunk)
                else:
                    await self._write_sliced(item)
        except (OSError, RuntimeError) as e:     # the read loop notices the engine is gone
            log.info("sending to the engine failed: %s", e)
            self._backlog.clear()

    async def _write_sliced(self, chunk) -> None:
        view = memoryview(chunk).cast("B")
        for start in range(0, view.nbytes, WRITE_SLICE):
            self.writer.write(view[start:start + WRITE_SLICE])
            await self.writer.drain()
            await asyncio.sleep(0)   # drain() does not yield while the pipe keeps up: yield once per slice

    # --- reading ---------------------------------------------------------------------------------------

    async def read(self) -> P.Message | None:
        """The next message (large payloads restored from shared memory), None at the end of the
        stream.  Raises MessageError for a message to skip, FramingError/OSError when the link broke."""
        msg = await P.read_message_async(self.reader)
        if msg is None:
            return None
        self.last_seen = time.monotonic()
        if "bulk" in msg.header:
            try:
                msg = await asyncio.to_thread(bulk.restore, msg, self.bulk, mapped=True)
            except P.MessageError as e:
                log.warning("bad bulk payload from the engine: %s", e)
                job_id = msg.get("job_id")
                msg = P.error("bad_message", f"the engine's result could not be read: {e}",
                              job_id=job_id if isinstance(job_id, str) else None)
        return msg

    # --- closing and diagnostics -------------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel the link's tasks, close it and, for a child process, kill and reap it."""
        bulk.discard(self.bulk, self.bulk_written)     # what the engine never took
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current and not task.done():
                task.cancel()
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass
        if self.proc is not None:
            if self.proc.returncode is None:
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
            try:
                await asyncio.wait_for(self.proc.wait(), 5.0)
            except asyncio.TimeoutError:
                log.error("engine process %s did not exit after SIGKILL", self.proc.pid)
            await self.drain_pump(0.5)
            if self.pump is not None:
                self.pump.cancel()

    async def exit_reason(self, when: str, fallback: str = "") -> str:
        """One line: how the engine process ended (signal, status) and its most telling last line."""
        proc = self.proc
        if proc is None:
            return fallback or "the connection closed"
        try:
            await asyncio.wait_for(proc.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        rc = proc.returncode
        if rc is None:
            what = "closed its pipes"
        elif rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            what = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            what = f"exited with status {rc}"
        await self.drain_pump(0.3)
        tail = self.fatal or self.tail()
        text = f"the engine {what}" + (f" {when}" if when else "")
        return text + (f": {tail}" if tail else "")

    async def drain_pump(self, seconds: float) -> None:
        """Give the stderr reader a moment to catch the engine's last lines (it ends at EOF)."""
        if self.pump is not None and not self.pump.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.pump), seconds)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass

    def tail(self) -> str:
        """The engine's most telling last line: the last one naming an error, else the last one."""
        lines = [ln.strip() for ln in self.stderr_tail if ln.strip()]
        for line in reversed(lines):
            if re.search(r"Error|Exception|Fatal|Killed|error:", line):
                return line[:300]
        return lines[-1][:300] if lines else ""

    async def pump_stderr(self) -> None:
        """Keep reading the engine's stderr (so it never blocks) and remember the last lines."""
        stream = self.proc.stderr
        try:
            while True:
                try:
                    line = await stream.readline()
                except ValueError:  # a line longer than the stream limit
                    line = await stream.read(STREAM_LIMIT)
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip()
                if text:
                    self.stderr_tail.append(text)
                    engine_log.info("%s", text)
        except (asyncio.CancelledError, OSError):
            return
