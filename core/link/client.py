"""The editor's side of the engine: start, watch and talk to the engine process.  Standard library only.

The editor never runs torch.  ``EngineClient`` starts ``python -m core.engine`` from the engine's own
Python (which may differ from the editor's) and talks the wire protocol over its pipes, or connects to
a shared engine (``python -m core serve``) with a URL and its token.  It is plain asyncio, so it runs
under any asyncio loop, qasync's Qt loop included::

    client = EngineClient(python="/path/to/engine/venv/bin/python", cwd="/path/to/diffusion-dock",
                          on_status=show_status)
    handle = client.submit(request)          # starts the engine if needed
    async for event in handle.events():      # Accepted, Progress, Preview ... then one final event
        ...
    await client.stop()

Every job ends with exactly one final event (``Finished``, ``Failed`` or ``JobCancelled``).
Failures of the engine itself become ``Failed`` events with stable codes (``core.link.protocol.CLIENT_ERRORS``):
the jobs running when the engine died fail at once, the engine is restarted, and the jobs still
queued are sent to the new engine in their order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import sys
import time
import uuid
from urllib.parse import urlsplit

from ..contract.events import (
    FINAL_EVENTS,
    Accepted,
    Capabilities,
    EngineStatus,
    Failed,
    JobCancelled,
    ModelStatus,
    Preview,
    Progress,
)
from ..contract.jobs import JobRequest, validate
from ..contract.params import ValidationError
from . import bulk
from . import protocol as P

log = logging.getLogger("diffusion_dock.client")
engine_log = logging.getLogger("diffusion_dock.engine")

STREAM_LIMIT = 1 << 20
WRITE_SLICE = 1 << 20      # frames larger than this are written a slice at a time (see _Link.send)


class EngineError(Exception):
    """The engine could not be started or reached.  ``code`` is one of ``core.link.protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class JobHandle:
    """One submitted job.  Iterate ``events()`` once; ``wait()`` returns the final event."""

    def __init__(self, client: EngineClient, job_id: str, request: JobRequest, previews: bool):
        self.job_id = job_id
        self.request = request
        self.previews = previews
        self.final = None
        self.state = "pending"          # pending (not sent) | sent | running | done
        self.position: int | None = None
        self.cancel_requested = False
        self._cancelled_at = 0.0
        self._client = client
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done = asyncio.get_running_loop().create_future()
        self._link = None
        self._attempts = 0
        self._last_progress = time.monotonic()

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} {self.request.mode} {self.state}>"

    @property
    def done(self) -> bool:
        return self.final is not None

    async def events(self):
        """The job's events in order, ending after its single final event."""
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, FINAL_EVENTS):
                return

    async def wait(self):
        """The final event (Finished, Failed or JobCancelled)."""
        return await asyncio.shield(self._done)

    def cancel(self) -> bool:
        return self._client.cancel(self.job_id)

    def _emit(self, event) -> None:
        if self.final is None:
            self._queue.put_nowait(event)

    def _end(self, event) -> bool:
        if self.final is not None:
            return False
        self.final = event
        self.state = "done"
        self._queue.put_nowait(event)
        if not self._done.done():
            self._done.set_result(event)
        return True

    def _at(self, position: int) -> None:
        """The engine reported the job's queue position (0 = running)."""
        if self.state == "running" and position > 0:
            return  # never back into the queue (an older snapshot)
        if position == 0 and self.state != "running":
            self.state = "running"
            self._last_progress = time.monotonic()
        if position != self.position:
            self.position = position
            self._emit(Accepted(self.job_id, position))


PIPE_BYTES = 1 << 20   # Linux's default limit for an unprivileged pipe (/proc/sys/fs/pipe-max-size)
READ_BYTES = 1 << 20


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


class _Link:
    """One engine: a child process on pipes, or a connection to a remote engine."""

    def __init__(self, reader, writer, *, proc=None, where: str = ""):
        self.reader, self.writer, self.proc, self.where = reader, writer, proc, where
        self.hello: dict = {}
        self.capabilities = False      # the engine announced them (its heavy imports are done)
        self.last_seen = time.monotonic()
        self.lost = False
        self.running_ids: set[str] = set()
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


class EngineClient:
    """Starts (or connects to) the engine, sends jobs, and turns the engine's messages into events.

    Local engine: ``python`` (default: this interpreter), ``cwd`` (a folder from which ``core`` is
    importable), ``engine_args`` (e.g. ``["--device", "cpu"]``), ``env`` (variables added to this
    process's environment).  Remote engine: ``url`` ("tcp://host:port" or "tls://host:port"),
    ``token``, and for a self-signed certificate ``cafile``.

    Callbacks: ``on_status(EngineStatus)``, ``on_capabilities(Capabilities)``, ``on_model_status(ModelStatus)``.
    Timeouts (seconds): ``start_timeout`` (until the engine's hello), ``heartbeat_timeout`` (silence
    before the engine counts as frozen), ``job_timeout`` (a running job without progress counts as
    stuck), ``cancel_timeout`` (a cancelled running job that has not ended by then is reported cancelled
    and handled as stuck), ``stuck_grace`` (after cancelling a stuck job, how long before a local engine
    is restarted to free its worker)
    Methods that do not wait (``submit``, ``cancel``, ``cancel_all``) must be called from the loop's thread.
    """

    def __init__(self, python: str | None = None, cwd: str | os.PathLike | None = None, *,
                 url: str | None = None, token: str | None = None, cafile: str | None = None,
                 engine_args=(), env: dict | None = None,
                 on_status=None, on_capabilities=None, on_model_status=None,
                 start_timeout: float = 60.0, heartbeat_interval: float = 1.0, heartbeat_timeout: float = 20.0,
                 job_timeout: float = 600.0, cancel_timeout: float = 120.0, stuck_grace: float = 5.0,
                 stop_timeout: float = 5.0, max_resubmits: int = 2):
        if url is not None and python is not None:
            raise ValueError("give either python (local engine) or url (remote engine), not both")
        self.url = url
        self.token = token
        self.cafile = cafile
        self.python = python or (None if url else sys.executable)
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.engine_args = list(engine_args)
        self.env = env
        self.on_status = on_status
        self.on_capabilities = on_capabilities
        self.on_model_status = on_model_status
        self.start_timeout = start_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.job_timeout = job_timeout
        self.cancel_timeout = cancel_timeout
        self.stuck_grace = stuck_grace
        self.stop_timeout = stop_timeout
        self.max_resubmits = max_resubmits
        self.status = EngineStatus("stopped")
        self.capabilities: Capabilities | None = None
        self.engine_pid: int | None = None
        self._jobs: dict[str, JobHandle] = {}          # unfinished jobs in submission order
        self._link: _Link | None = None
        self._starting: _Link | None = None
        self._start_task: asyncio.Task | None = None
        self._stopping = False
        self._was_ready = False
        self._last_output: list[str] = []

    # --- public ---------------------------------------------------------------------------------

    @property
    def remote(self) -> bool:
        return self.url is not None

    def jobs(self) -> list[JobHandle]:
        """Unfinished jobs, in submission order."""
        return list(self._jobs.values())

    @property
    def engine_info(self) -> dict:
        """The running engine's hello: version, pid, Python version, log file, shared or not."""
        return dict(self._link.hello) if self._link is not None else {}

    def engine_output(self) -> list[str]:
        """The last lines the local engine wrote to stderr (for an error report)."""
        link = self._link or self._starting
        return list(link.stderr_tail) if link else list(self._last_output)

    async def start(self) -> EngineClient:
        """Start (or connect to) the engine and wait until it is ready.  Raises EngineError."""
        self._stopping = False
        if self._link is None:
            self._ensure_started()
        if self._start_task is not None:
            await asyncio.shield(self._start_task)
        if self._link is None:
            raise EngineError(self.status.code or "engine_start_failed", self.status.reason or "engine not started")
        return self

    async def stop(self) -> None:
        """Cancel every job (each ends with JobCancelled) and stop the engine (or disconnect)."""
        self._stopping = True
        try:
            for handle in list(self._jobs.values()):
                handle.cancel_requested = True
                self._end(handle, JobCancelled(handle.job_id))
            task = self._start_task
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            link = self._link
            if link is not None:
                if link.proc is not None:
                    link.send(P.message("shutdown"))
                    try:
                        await asyncio.wait_for(link.proc.wait(), self.stop_timeout)
                    except asyncio.TimeoutError:
                        log.warning("the engine did not stop within %.0f s: killing it", self.stop_timeout)
                await self._lost(link, "engine_stopped", "stopped")
            self._set_status("stopped")
        finally:
            self._stopping = False

    async def __aenter__(self) -> EngineClient:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def submit(self, request: JobRequest, *, job_id: str | None = None, previews: bool = True) -> JobHandle:
        """Queue a job; starts the engine if needed.  Returns at once with the job's handle."""
        handle = JobHandle(self, job_id or uuid.uuid4().hex, request, previews)
        if handle.job_id in self._jobs:
            raise ValueError(f"job id {handle.job_id!r} is already in use")
        try:
            validate(request)
        except ValidationError as e:
            handle._end(Failed(handle.job_id, "invalid_parameter", str(e), e.parameter))
            return handle
        self._jobs[handle.job_id] = handle
        if self._link is not None:
            self._send_job(self._link, handle)
        else:
            self._ensure_started()
        return handle

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued one ends now, a running one at its next step.  False if unknown."""
        handle = self._jobs.get(job_id)
        if handle is None:
            return False
        if not handle.cancel_requested:
            handle.cancel_requested = True
            handle._cancelled_at = time.monotonic()
        if handle.state == "pending":
            self._end(handle, JobCancelled(job_id))
        elif handle._link is not None:
            handle._link.send(P.message("cancel", job_id=job_id))
        return True

    def cancel_all(self) -> int:
        """Cancel every unfinished job; returns how many."""
        handles = list(self._jobs.values())
        sent = False
        for handle in handles:
            if not handle.cancel_requested:
                handle.cancel_requested = True
                handle._cancelled_at = time.monotonic()
            if handle.state == "pending":
                self._end(handle, JobCancelled(handle.job_id))
            elif handle._link is not None and handle._link is self._link and not sent:
                sent = self._link.send(P.message("cancel_all"))
        return len(handles)

    async def refresh_capabilities(self) -> None:
        """Ask the engine to list devices and models again (after installing a model)."""
        if self._link is not None:
            self._link.send(P.message("capabilities"))

    # --- starting -------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._link is not None or (self._start_task is not None and not self._start_task.done()):
            return
        self._start_task = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        self._set_status("restarting" if self._was_ready else "starting", self.status.reason, self.status.code)
        t0 = time.monotonic()
        try:
            link = await asyncio.wait_for(self._open(), self.start_timeout)
        except asyncio.TimeoutError:
            await self._start_failed("engine_start_timeout",
                                     f"the engine did not answer within {self.start_timeout:g} s")
            return
        except EngineError as e:
            await self._start_failed(e.code, str(e))
            return
        except OSError as e:
            await self._start_failed("engine_start_failed", f"cannot start the engine: {e}")
            return
        except asyncio.CancelledError:  # stop() while starting: no process may be left behind
            if self._starting is not None:
                await self._close_link(self._starting)
            raise
        finally:
            self._starting = None
        self._link = link
        self._was_ready = True
        self.engine_pid = link.hello.get("pid") if isinstance(link.hello.get("pid"), int) else None
        log.info("engine ready after %.2f s (%s)", time.monotonic() - t0, link.where)
        loop = asyncio.get_running_loop()
        link.tasks += [loop.create_task(self._read_loop(link)), loop.create_task(self._watch(link))]
        if link.proc is not None:
            link.tasks.append(loop.create_task(self._wait_exit(link)))
        self._set_status("ready")
        for handle in list(self._jobs.values()):
            if handle.state == "pending":
                self._send_job(link, handle)

    async def _open(self) -> _Link:
        """Spawn or connect, then exchange hellos.  Raises EngineError or OSError."""
        if self.url is not None:
            host, port, ctx = parse_url(self.url, self.cafile)
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=STREAM_LIMIT)
            link = _Link(reader, writer, where=self.url)
        else:
            kw = {"start_new_session": True} if os.name == "posix" else {"creationflags": 0x08000000}
            env = None if self.env is None else {**os.environ, **self.env}
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "core.engine", *self.engine_args, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=self.cwd, env=env,
                limit=STREAM_LIMIT, **kw)
            widen_pipes(proc)
            link = _Link(proc.stdout, proc.stdin, proc=proc, where=f"pid {proc.pid}")
            link.pump = asyncio.get_running_loop().create_task(self._pump_stderr(link))
        self._starting = link
        hello = {"heartbeat": self.heartbeat_interval, "client": "diffusion-dock"}
        if self.token is not None:
            hello["token"] = self.token
        if link.proc is not None and (shared := bulk.directory()):
            hello["bulk_dir"] = shared
        link.send(P.hello(**hello))
        try:
            junk, prefix = await P.skip_to_frame_async(link.reader)
            if junk:
                text = junk.decode("utf-8", "replace").strip()
                log.warning("the engine wrote text before its first frame (ignored): %s", text[:500])
                link.stderr_tail.extend(text.splitlines()[-5:])
            msg = None if prefix is None else await P.read_message_async(link.reader, prefix=prefix)
        except P.ProtocolError as e:
            raise EngineError("engine_start_failed", f"{link.where} is not a Diffusion Dock engine: {e}") from None
        except (OSError, EOFError) as e:
            raise EngineError("engine_start_failed", f"the connection closed during the hello: {e}") from None
        if msg is None:
            raise EngineError("engine_start_failed", await self._exit_reason(link, "before saying hello"))
        if msg.type == "error":
            code = msg.get("code") if msg.get("code") in P.ERROR_CODES else "engine_start_failed"
            raise EngineError(code, f"the engine refused the connection: {msg.get('message')}")
        if msg.type != "hello":
            raise EngineError("engine_start_failed", f"the engine sent {msg.type!r} before its hello")
        try:
            P.check_hello(msg)
        except P.ProtocolError as e:
            raise EngineError("version_mismatch", str(e)) from None
        link.hello = msg.header
        if hello.get("bulk_dir") and msg.get("bulk_dir") == hello["bulk_dir"]:
            link.bulk = hello["bulk_dir"]
        link.last_seen = time.monotonic()
        return link

    async def _start_failed(self, code: str, reason: str) -> None:
        link = self._starting
        if link is not None:
            if code == "engine_start_timeout":
                tail = self._tail(link)
                reason += f" ({tail})" if tail else ""
            await self._close_link(link)
            self._last_output = list(link.stderr_tail)
        log.warning("engine start failed: %s", reason)
        for handle in list(self._jobs.values()):
            if handle.state == "pending":
                self._end(handle, Failed(handle.job_id, code, f"The engine could not start: {reason}"))
        self._set_status("dead", reason, code)

    # --- running --------------------------------------------------------------------------------

    def _send_job(self, link: _Link, handle: JobHandle) -> None:
        try:
            msg = P.submit(handle.job_id, handle.request, previews=handle.previews)
            P.encode(msg)  # fail here, not in the link, on what JSON cannot carry
        except (TypeError, ValueError) as e:
            self._end(handle, Failed(handle.job_id, "invalid_parameter", f"the request cannot be sent: {e}"))
            return
        handle._link = link
        handle._attempts += 1
        handle.state = "sent"
        link.send(msg)

    async def _read_loop(self, link: _Link) -> None:
        code, reason = ("connection_lost", f"the connection to {link.where} was lost") if link.proc is None \
            else ("engine_died", "")
        try:
            while True:
                try:
                    msg = await P.read_message_async(link.reader)
                except P.MessageError as e:
                    log.warning("bad message from the engine: %s", e)
                    continue
                if msg is None:
                    break
                link.last_seen = time.monotonic()
                if "bulk" in msg.header:
                    try:
                        msg = await asyncio.to_thread(bulk.restore, msg, link.bulk, mapped=True)
                    except P.MessageError as e:
                        log.warning("bad bulk payload from the engine: %s", e)
                        msg = P.error("bad_message", f"the engine's result could not be read: {e}",
                                      job_id=msg.get("job_id") if isinstance(msg.get("job_id"), str) else None)
                try:
                    self._dispatch(link, msg)
                except P.ProtocolError as e:
                    log.warning("bad %s message from the engine: %s", msg.type, e)
        except P.FramingError as e:
            reason = f"the engine sent a broken frame ({e})"
        except (OSError, EOFError) as e:
            reason = reason or f"the engine's connection failed: {e}"
        except asyncio.CancelledError:
            return
        await self._lost(link, code, reason)

    def _dispatch(self, link: _Link, msg: P.Message) -> None:
        kind = msg.type
        if kind == "heartbeat":
            running = msg.get("running")
            if isinstance(running, list):
                link.running_ids = {j for j in running if isinstance(j, str)}
            return
        if kind == "capabilities":
            link.capabilities = True
            self.capabilities = P.capabilities_of(msg)
            self._call(self.on_capabilities, self.capabilities)
            return
        if kind == "model_status":
            h = msg.header
            status = ModelStatus(str(h.get("model", "")), str(h.get("state", "")), str(h.get("path") or ""),
                                 tuple(h.get("shared") or ()), h.get("seconds"), str(h.get("message") or ""))
            self._call(self.on_model_status, status)
            return
        if kind == "queue":
            positions = msg.get("positions")
            if isinstance(positions, dict):
                for job_id, pos in positions.items():
                    handle = self._jobs.get(job_id)
                    if handle is not None and handle._link is link and type(pos) is int:
                        handle._at(pos)
            return
        if kind in ("bye", "hello"):
            return
        event = P.event_of(msg)
        if event is None:
            if kind == "error":
                log.warning("engine error: %s: %s", msg.get("code"), msg.get("message"))
                if msg.get("fatal"):
                    link.fatal = f"{msg.get('code')}: {msg.get('message')}"[:300]
            return
        handle = self._jobs.get(event.job_id)
        if handle is None or handle._link is not link:
            return  # a job that already ended here (cancelled, stuck) or belongs to an older engine
        if isinstance(event, Accepted):
            handle._at(event.position)
        elif isinstance(event, (Progress, Preview)):
            if handle.state != "running":
                handle._at(0)
            if isinstance(event, Progress):
                handle._last_progress = time.monotonic()
            handle._emit(event)
        else:
            self._end(handle, event)

    def _end(self, handle: JobHandle, event) -> None:
        if handle._end(event):
            self._jobs.pop(handle.job_id, None)

    async def _watch(self, link: _Link) -> None:
        """Heartbeat loss and stuck jobs."""
        tick = max(0.05, min(1.0, self.heartbeat_timeout / 4, self.job_timeout / 4, self.cancel_timeout / 4,
                             self.stuck_grace / 2))
        try:
            while not link.lost:
                await asyncio.sleep(tick)
                now = time.monotonic()
                silent = now - link.last_seen
                # Until its capabilities arrive the engine is importing torch, whose native libraries load
                # with the GIL held: no heartbeat can be sent then, for seconds on a slow disk.
                limit = self.heartbeat_timeout if link.capabilities else max(self.heartbeat_timeout,
                                                                             self.start_timeout)
                if silent > limit:
                    await self._lost(link, "heartbeat_lost", f"the engine sent nothing for {silent:.0f} s")
                    return
                for handle in list(self._jobs.values()):
                    if handle._link is not link or handle.state != "running":
                        continue
                    if handle.cancel_requested and now - handle._cancelled_at > self.cancel_timeout:
                        self._stuck(link, handle, JobCancelled(handle.job_id))
                    elif now - handle._last_progress > self.job_timeout:
                        self._stuck(link, handle)
                for job_id, since in list(link.stuck.items()):
                    if job_id not in link.running_ids:
                        del link.stuck[job_id]
                    elif now - since > self.stuck_grace and link.proc is not None:
                        await self._lost(link, "job_stuck", "a stuck job did not stop when cancelled")
                        return
        except asyncio.CancelledError:
            return

    def _stuck(self, link: _Link, handle: JobHandle, final=None) -> None:
        """End a job that does not move (or does not stop when cancelled) and watch that the engine lets
        go of it; a local engine still running it after ``stuck_grace`` is restarted."""
        log.warning("job %s is stuck: %s", handle.job_id, "cancel ignored" if final else "no progress")
        link.send(P.message("cancel", job_id=handle.job_id))
        link.stuck[handle.job_id] = time.monotonic()
        link.running_ids.add(handle.job_id)
        self._end(handle, final or Failed(handle.job_id, "job_stuck",
                                          f"The job made no progress for {self.job_timeout:g} s and was stopped."))

    async def _wait_exit(self, link: _Link) -> None:
        try:
            await link.proc.wait()
        except asyncio.CancelledError:
            return
        await self._lost(link, "engine_died", "")

    async def _lost(self, link: _Link, code: str, reason: str) -> None:
        """The engine behind ``link`` is gone (or must go): fail what ran, keep what was queued."""
        if link.lost:
            await link.closed.wait()
            return
        link.lost = True
        if self._link is link:
            self._link = None
        try:
            await self._settle(link, code, reason)
        finally:
            link.closed.set()

    async def _settle(self, link: _Link, code: str, reason: str) -> None:
        if link.proc is not None and code in ("engine_died", "engine_stopped"):
            reason = await self._exit_reason(link, "", reason)
        await self._close_link(link)
        self._last_output = list(link.stderr_tail)
        if code == "engine_stopped" or self._stopping:
            return
        log.warning("engine lost (%s): %s", code, reason)
        for handle in list(self._jobs.values()):
            if handle._link is not link or handle.state == "pending":
                continue
            if handle.cancel_requested:
                self._end(handle, JobCancelled(handle.job_id))
            elif handle.state == "running" or handle._attempts > self.max_resubmits:
                self._end(handle, Failed(handle.job_id, code, f"The engine stopped while this job ran: {reason}. "
                                                              f"It restarts for the next job."))
            else:
                handle.state, handle.position, handle._link = "pending", None, None
        if any(h.state == "pending" for h in self._jobs.values()):
            self._set_status("restarting", reason, code)
            self._ensure_started()
        else:
            self._set_status("dead", f"{reason}; it restarts for the next job", code)

    async def _close_link(self, link: _Link) -> None:
        bulk.discard(link.bulk, link.bulk_written)     # what the engine never took
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current and not task.done():
                task.cancel()
        try:
            link.writer.close()
        except (OSError, RuntimeError):
            pass
        if link.proc is not None:
            if link.proc.returncode is None:
                try:
                    link.proc.kill()
                except ProcessLookupError:
                    pass
            try:
                await asyncio.wait_for(link.proc.wait(), 5.0)
            except asyncio.TimeoutError:
                log.error("engine process %s did not exit after SIGKILL", link.proc.pid)
            await self._drain_pump(link, 0.5)
            if link.pump is not None:
                link.pump.cancel()

    async def _exit_reason(self, link: _Link, when: str, fallback: str = "") -> str:
        proc = link.proc
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
        await self._drain_pump(link, 0.3)
        tail = link.fatal or self._tail(link)
        text = f"the engine {what}" + (f" {when}" if when else "")
        return text + (f": {tail}" if tail else "")

    @staticmethod
    async def _drain_pump(link: _Link, seconds: float) -> None:
        """Give the stderr reader a moment to catch the engine's last lines (it ends at EOF)."""
        if link.pump is not None and not link.pump.done():
            try:
                await asyncio.wait_for(asyncio.shield(link.pump), seconds)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass

    @staticmethod
    def _tail(link: _Link) -> str:
        """The engine's most telling last line: the last one naming an error, else the last one."""
        lines = [ln.strip() for ln in link.stderr_tail if ln.strip()]
        for line in reversed(lines):
            if re.search(r"Error|Exception|Fatal|Killed|error:", line):
                return line[:300]
        return lines[-1][:300] if lines else ""

    async def _pump_stderr(self, link: _Link) -> None:
        """Keep reading the engine's stderr (so it never blocks) and remember the last lines."""
        stream = link.proc.stderr
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
                    link.stderr_tail.append(text)
                    engine_log.info("%s", text)
        except (asyncio.CancelledError, OSError):
            return

    # --- helpers --------------------------------------------------------------------------------

    def _set_status(self, state: str, reason: str = "", code: str = "") -> None:
        status = EngineStatus(state, reason, code)
        if status == self.status:
            return
        self.status = status
        self._call(self.on_status, status)

    @staticmethod
    def _call(callback, value) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("client callback failed")


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
