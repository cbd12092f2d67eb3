"""``EngineClient``: what the editor calls to run jobs on the engine.  Standard library only."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid

from ...contract.events import (
    Accepted,
    Capabilities,
    EngineStatus,
    Failed,
    JobCancelled,
    ModelStatus,
    Preview,
    Progress,
)
from ...contract.jobs import JobRequest, validate
from ...contract.params import ValidationError
from .. import protocol as P
from .. import queuemoves
from .handle import JobHandle
from .jobs import JobTable
from .link import EngineError, EngineLink, os_reason
from .supervisor import EngineOptions, Supervisor

log = logging.getLogger("diffusion_dock.client")


class EngineClient:
    """Starts (or connects to) the engine, sends jobs, and turns the engine's messages into events.

    Local engine: ``python`` (default: this interpreter), ``cwd`` (a folder from which ``core`` is
    importable), ``engine_args`` (e.g. ``["--device", "cpu"]``), ``env`` (variables added to this
    process's environment).  Remote engine: ``url`` ("tcp://host:port" or "tls://host:port"),
    ``token``, and for a self-signed certificate ``cafile``.

    Callbacks: ``on_status(EngineStatus)``, ``on_capabilities(Capabilities)``, ``on_model_status(ModelStatus)``,
    ``on_cluster(dict)`` (a cluster gateway's view: replicas, models loaded, the queue; when it changes).
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
                 on_status=None, on_capabilities=None, on_model_status=None, on_cluster=None,
                 start_timeout: float = 60.0, heartbeat_interval: float = 1.0, heartbeat_timeout: float = 20.0,
                 job_timeout: float = 600.0, cancel_timeout: float = 120.0, stuck_grace: float = 5.0,
                 stop_timeout: float = 5.0, max_resubmits: int = 2):
        if url is not None and python is not None:
            raise ValueError("give either python (local engine) or url (remote engine), not both")
        self.options = EngineOptions(
            python=python or (None if url else sys.executable), cwd=os.fspath(cwd) if cwd is not None else None,
            url=url, token=token, cafile=cafile, engine_args=tuple(engine_args), env=env,
            start_timeout=start_timeout, heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout,
            job_timeout=job_timeout, cancel_timeout=cancel_timeout, stuck_grace=stuck_grace,
            stop_timeout=stop_timeout, max_resubmits=max_resubmits)
        self.on_status = on_status
        self.on_capabilities = on_capabilities
        self.on_model_status = on_model_status
        self.on_cluster = on_cluster
        self.capabilities: Capabilities | None = None
        self.cluster: dict | None = None      # the last view a cluster gateway sent (None: a single engine)
        self._jobs = JobTable()
        self._supervisor = Supervisor(self.options, self._jobs, self._read_from,
                                      lambda status: self._call(self.on_status, status))

    # --- public ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return self.options.url

    @property
    def python(self) -> str | None:
        return self.options.python

    @property
    def remote(self) -> bool:
        return self.options.url is not None

    @property
    def status(self) -> EngineStatus:
        return self._supervisor.status

    @property
    def engine_pid(self) -> int | None:
        return self._supervisor.engine_pid

    @property
    def link(self) -> EngineLink | None:
        """The ready engine's link (None while none is ready)."""
        return self._supervisor.link

    @property
    def starting_pid(self) -> int | None:
        """The process id of a local engine being started (None otherwise)."""
        link = self._supervisor.starting
        return link.proc.pid if link is not None and link.proc is not None else None

    def jobs(self) -> list[JobHandle]:
        """Unfinished jobs, in submission order."""
        return self._jobs.all()

    @property
    def engine_info(self) -> dict:
        """The running engine's hello: version, pid, Python version, log file, shared or not."""
        link = self._supervisor.link
        return dict(link.hello) if link is not None else {}

    def engine_output(self) -> list[str]:
        """The last lines the local engine wrote to stderr (for an error report)."""
        link = self._supervisor.link or self._supervisor.starting
        return list(link.stderr_tail) if link else list(self._supervisor.last_output)

    async def start(self) -> EngineClient:
        """Start (or connect to) the engine and wait until it is ready.  Raises EngineError."""
        await self._supervisor.wait_started()
        if self._supervisor.link is None:
            status = self._supervisor.status
            raise EngineError(status.code or "engine_start_failed", status.reason or "engine not started")
        return self

    async def stop(self) -> None:
        """Cancel every job (each ends with JobCancelled) and stop the engine (or disconnect)."""
        await self._supervisor.stop()

    async def __aenter__(self) -> EngineClient:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def submit(self, request: JobRequest, *, job_id: str | None = None, previews: bool = True,
               validated: bool = False) -> JobHandle:
        """Queue a job; starts the engine if needed.  Returns at once with the job's handle.  A request
        is validated here unless the caller did (``validated``: the dock validates as it builds it); a
        bad one ends at once with ``Failed`` (invalid_parameter) and starts no engine."""
        handle = JobHandle(job_id or uuid.uuid4().hex, request, previews, cancel=self.cancel)
        if handle.job_id in self._jobs:
            raise ValueError(f"job id {handle.job_id!r} is already in use")
        if not validated:
            try:
                validate(request)
            except ValidationError as e:
                handle.finish(Failed(handle.job_id, "invalid_parameter", str(e), e.parameter))
                return handle
        self._jobs.add(handle)
        if self._supervisor.link is not None:
            self._jobs.send(self._supervisor.link, handle)
        else:
            self._supervisor.ensure_started()
        return handle

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued one ends now, a running one at its next step.  False if unknown."""
        handle = self._jobs.get(job_id)
        if handle is None:
            return False
        handle.request_cancel()
        if handle.pending:
            self._jobs.end(handle, JobCancelled(job_id))
        elif handle.sent_on is not None:
            handle.sent_on.send(P.message("cancel", job_id=job_id))
        return True

    def cancel_all(self) -> int:
        """Cancel every unfinished job; returns how many."""
        handles = self._jobs.all()
        link, sent = self._supervisor.link, False
        for handle in handles:
            handle.request_cancel()
            if handle.pending:
                self._jobs.end(handle, JobCancelled(handle.job_id))
            elif handle.sent_on is not None and handle.sent_on is link and not sent:
                sent = link.send(P.message("cancel_all"))
        return len(handles)

    async def refresh_capabilities(self) -> None:
        """Ask the engine to list devices and models again (after installing a model)."""
        if self._supervisor.link is not None:
            self._supervisor.link.send(P.message("capabilities"))

    # --- reading the engine ------------------------------------------------------------------------------

    def _read_from(self, link: EngineLink) -> None:
        link.tasks.insert(0, asyncio.get_running_loop().create_task(self._read_loop(link)))

    async def _read_loop(self, link: EngineLink) -> None:
        code, reason = ("connection_lost", f"the connection to {link.where} was lost") if link.proc is None \
            else ("engine_died", "")
        try:
            while True:
                try:
                    msg = await link.read()
                except P.MessageError as e:
                    log.warning("bad message from the engine: %s", e)
                    continue
                if msg is None:
                    break
                try:
                    self._dispatch(link, msg)
                except P.ProtocolError as e:
                    log.warning("bad %s message from the engine: %s", msg.type, e)
        except P.FramingError as e:
            reason = f"the engine sent a broken frame ({e})"
        except (OSError, EOFError) as e:
            reason = reason or f"the engine's connection failed: {os_reason(e)}"
        except asyncio.CancelledError:
            return
        await self._supervisor.lost(link, code, reason)

    def _dispatch(self, link: EngineLink, msg: P.Message) -> None:
        kind = msg.type
        if kind == "heartbeat":
            running = msg.get("running")
            if isinstance(running, list):
                link.running_ids = {j for j in running if isinstance(j, str)}
            self._cluster_view(msg.get("cluster"))
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
            self._cluster_view(msg.get("cluster"))
            self._queue_update(link, *queuemoves.queue_update_of(msg))
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
        if handle is None or handle.sent_on is not link:
            return  # a job that already ended here (cancelled, stuck) or belongs to an older engine
        if isinstance(event, Accepted):
            link.told[event.job_id] = event.position
            handle.at_position(event.position)
        elif isinstance(event, (Progress, Preview)):
            handle.report(event)
        else:
            self._jobs.end(handle, event)

    def _queue_update(self, link: EngineLink, positions: dict[str, int], shifts: list[list[int]]) -> None:
        """Move the positions the engine last told by its shifts, then take its explicit positions
        (``core.link.queuemoves``); each job of this link whose place changed is told."""
        told = queuemoves.applied(link.told, positions, shifts) if shifts else {**link.told, **positions}
        link.told = {}
        for job_id, pos in told.items():
            handle = self._jobs.get(job_id)
            if handle is None or handle.sent_on is not link or handle.done:
                continue      # ended here (its final event came): the engine no longer counts it
            link.told[job_id] = pos
            handle.at_position(pos)

    def _cluster_view(self, view) -> None:
        """A gateway's ``cluster`` field (heartbeats and queue messages): kept, and told when it changes."""
        if isinstance(view, dict) and view != self.cluster:
            self.cluster = view
            self._call(self.on_cluster, view)

    @staticmethod
    def _call(callback, value) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("client callback failed")
