"""The gateway: ``serve``'s network front (``core.engine.serve``) with the jobs run on a Ray Serve cluster.

It is the ``service`` behind ``serve``'s connections: editors connect over the same protocol (TLS,
pre-authentication limits), say hello with their own token (``tokens``), and submit jobs as to one
engine.  Jobs wait in the fair queue (``fairqueue``); at most one per replica (at the most replicas the
config allows) is handed to Ray Serve at a time, so the order is decided here and placement by Serve.
Each job's events stream back from its replica and are relayed as they come.  When the replica dies
mid-job the job runs again from the start on another replica (``retries`` times, the editor sees the
phase *retrying*); after that it ends ``worker_lost``.  Every job ends exactly once.

Threads: ``handle`` runs in ``serve``'s worker threads; jobs, heartbeats and token checks run on the
server's asyncio loop.  ``lock`` guards the job table and the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .. import __version__
from ..contract.catalog import CATALOG, MODE_MODELS
from ..contract.jobs import validate
from ..contract.params import ValidationError
from ..engine import handshake
from ..link.protocol import (
    Message,
    capabilities_of,
    error,
    hello,
    job_id_of,
    message,
    request_of,
)
from ..models import remote
from .fairqueue import FairQueue, QueueFull
from .replica import is_final
from .tokens import TokenError, TokenStore
from .view import cluster_view

log = logging.getLogger("core.cluster.gateway")
TICK = 0.1
RECHECK_EVERY = 2.0       # seconds between checks of the tokens file and of the replicas' status


@dataclass(eq=False)
class GatewayJob:
    artist: str
    job_id: str
    conn: object
    header: dict
    ref: object
    model_id: str
    previews: bool = True
    state: str = "queued"             # queued | running | done
    attempts: int = 0
    cancel_requested: bool = False
    replica: str | None = None
    stream: object = None
    lost_by: str = ""                 # how the last loss reached the gateway (a Ray exception's name)
    submitted: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, str]:
        return (self.artist, self.job_id)


class Gateway:
    """The ``service`` of ``core.engine.serve.AsyncConnection`` for a cluster (see the module doc)."""

    heartbeat = 1.0
    token = None

    def __init__(self, cfg, backend, tokens: TokenStore, *, capabilities: dict | None = None):
        self.cfg = cfg
        self.backend = backend
        self.tokens = tokens
        self.queue = FairQueue(cfg.max_queued_per_artist)
        self.jobs: dict[tuple[str, str], GatewayJob] = {}
        self.in_flight = 0
        self.dispatched: deque = deque(maxlen=200)    # (artist, job id), in the order handed to Serve
        self.replicas: dict[str, dict] = {}           # replica id -> its last report
        self.status: dict = {}
        self.routing = {"hits": 0, "misses": 0}         # jobs that found their model loaded on their replica
        self.missed: deque = deque(maxlen=20)          # (artist, job id) of the recent misses
        self.capabilities = capabilities
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._conns: list = []
        self.lock = threading.RLock()
        self._handlers = {"submit": self._submit, "cancel": self._cancel, "cancel_all": self._cancel_all,
                          "capabilities": self._send_capabilities, "heartbeat": lambda c, m: None,
                          "shutdown": self._refuse_shutdown, "hello": self._hello_again}
        self._tasks: set = set()
        self._next_check = 0.0

    # --- connections ------------------------------------------------------------------------------

    def connected(self, conn) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self._spawn(self._ticker())
        with self.lock:
            self._conns.append(conn)

    def disconnected(self, conn) -> None:
        with self.lock:
            if conn in self._conns:
                self._conns.remove(conn)
            mine = [j for j in self.jobs.values() if j.conn is conn]
        for job in mine:
            self._cancel_job(job)
        if mine:
            log.info("%s left: cancelled its %d job(s)", conn.name, len(mine))

    def handle(self, conn, msg: Message) -> str | None:
        return handshake.route(conn, msg, self._handlers, self._hello, token_required=True)

    def _hello(self, conn, msg: Message) -> str | None:
        try:
            artist = handshake.accept_hello(conn, msg, lambda token: self._artist(conn, token))
        except handshake.Refused as e:
            return e.close(conn)
        conn.artist = artist
        conn.ready = True
        conn.send(hello(engine_version=__version__, pid=os.getpid(), python=platform.python_version(),
                        heartbeat=conn.heartbeat_every, shared=True, log=None, bulk_dir=None,
                        cluster=True, artist=artist.name, admin=artist.admin))
        log.info("%s: hello from %s%s", conn.name, artist.name, " (admin)" if artist.admin else "")
        if self.capabilities is not None:
            conn.send(message("capabilities", capabilities=self.capabilities))
        return None

    def _artist(self, conn, token):
        """The artist whose token this is (``tokens``)."""
        try:
            return self.tokens.verify(token)
        except TokenError as e:
            log.warning("%s: refused: %s token", conn.name, e.reason if token else "missing")
            raise handshake.Refused("unauthorized", str(e)) from None

    def _hello_again(self, conn, msg: Message) -> None:
        conn.send(error("bad_message", "hello was already exchanged on this connection"))

    def _refuse_shutdown(self, conn, msg: Message) -> None:
        conn.send(error("bad_message", "a shared engine cannot be stopped by a client"))

    def _send_capabilities(self, conn, msg: Message) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._spawn, self._refresh_capabilities(conn))

    async def _refresh_capabilities(self, conn) -> None:
        try:
            caps = await self.backend.capabilities()
            capabilities_of(message("capabilities", capabilities=caps))   # check it before sending it on
        except Exception as e:
            log.warning("capabilities from the cluster failed: %s", e)
            conn.send(error("cluster_unavailable", "the cluster did not list its models: try again shortly"))
            return
        self.capabilities = caps
        conn.send(message("capabilities", capabilities=caps))

    # --- jobs ---------------------------------------------------------------------------------------

    def model_id(self, req) -> str:
        """The catalogue model a job will use: its multiplexed model id ("" for jobs without one)."""
        if req.model is not None:
            if req.model not in CATALOG:
                shown = req.model if len(req.model) <= 80 else req.model[:77] + "..."
                raise ValidationError("model", f"a cluster takes catalogue model names ({', '.join(CATALOG)}), "
                                               f"never a path on the server; got {shown!r}")
            return req.model
        choices = MODE_MODELS.get(req.mode) or ()
        return next((m for m in choices if m in self.cfg.models), choices[0] if choices else "")

    def _submit(self, conn, msg: Message) -> None:
        job_id = job_id_of(msg)
        if self.closing:
            conn.send(error("engine_shutting_down", "the gateway is shutting down", job_id=job_id))
            return
        try:
            req = validate(request_of(msg))
            remote.check_names(req, self.cfg.models)   # artists name models and files, never server paths
            model_id = self.model_id(req)
        except ValidationError as e:
            conn.send(error("invalid_parameter", str(e), job_id=job_id, parameter=e.parameter))
            return
        artist = conn.artist.name
        with self.lock:
            taken = (artist, job_id) in self.jobs
        if taken:   # without job_id: this error must not end the job that already has this id
            conn.send(error("duplicate_job", f"job {job_id!r} is already queued or running"))
            return
        try:
            ref = self.backend.put(msg.payloads)
        except Exception as e:
            log.warning("putting job %s into the object store failed: %s", job_id, e)
            conn.send(error("cluster_unavailable", "the cluster's object store did not take the job's images",
                            job_id=job_id))
            return
        header = {k: v for k, v in msg.header.items() if k != "type"}
        job = GatewayJob(artist, job_id, conn, header, ref, model_id, previews=bool(msg.get("previews", True)))
        with self.lock:
            if job.key in self.jobs:
                conn.send(error("duplicate_job", f"job {job_id!r} is already queued or running"))
                return
            try:
                self.queue.push(artist, job.key)
            except QueueFull as e:
                conn.send(error("queue_full", str(e), job_id=job_id))
                return
            self.jobs[job.key] = job
            conn.send(message("accepted", job_id=job_id, position=self.queue.positions()[job.key]))
        log.info("job %s of %s queued (%s)", job_id, artist, model_id or "no model")
        self._queue_changed()      # a new artist's job goes ahead of others: their places change
        self._kick()

    def _kick(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._pump)

    def _pump(self) -> None:
        """Hand queued jobs to Serve while a replica slot is free (loop thread)."""
        started = []
        with self.lock:
            while self.in_flight < self.cfg.max_in_flight and not self.closing:
                nxt = self.queue.pop()
                if nxt is None:
                    break
                job = self.jobs[nxt[1]]
                job.state = "running"
                self.in_flight += 1
                self.dispatched.append(job.key)
                started.append(job)
        for job in started:
            self._spawn(self._run(job))
        if started:
            self._queue_changed()

    async def _run(self, job: GatewayJob) -> None:
        try:
            while True:
                job.attempts += 1
                outcome = await self._attempt(job)
                if outcome != "lost":
                    break
                if job.cancel_requested:
                    self._deliver(job, message("cancelled", job_id=job.job_id))
                    break
                if job.attempts > self.cfg.retries:
                    self._deliver(job, error("worker_lost", f"the GPU worker running this job was lost "
                                             f"{job.attempts} times (process killed or machine gone); the job "
                                             f"did not finish: submit it again", job_id=job.job_id))
                    break
                log.warning("job %s of %s: its replica died (%s); running it again from the start (%d of %d)",
                            job.job_id, job.artist, job.lost_by, job.attempts, self.cfg.retries)
                job.conn.send(message("progress", job_id=job.job_id, step=0, total=0, phase="retrying"))
        except Exception:
            log.exception("job %s: the gateway failed", job.job_id)
            self._deliver(job, error("job_failed", "the gateway failed while running this job (see its log)",
                                     job_id=job.job_id))
        finally:
            with self.lock:
                self.in_flight -= 1
                self.jobs.pop(job.key, None)
                job.state = "done"
            self._pump()
            self._queue_changed()

    async def _attempt(self, job: GatewayJob) -> str:
        """One run on a replica: "done" (a final message was delivered) or "lost" (run it again)."""
        stream = self.backend.stream(job.header, job.ref, job.model_id)
        job.stream = stream
        if job.cancel_requested:
            stream.cancel()
        final = False
        try:
            async for item in stream:
                if "started" in item or "ended" in item:
                    self._report(job, item.get("started") or item.get("ended"), started="started" in item)
                    if "ended" in item:
                        break
                    continue
                if final:
                    continue
                msg = Message(dict(item["h"]), [memoryview(a) for a in item["p"]])
                if msg.type == "preview" and not job.previews:
                    continue
                if is_final(msg):
                    self._deliver(job, msg)
                    final = True
                    continue
                job.conn.send(msg, droppable=msg.type == "preview")
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError) and self.closing:
                raise
            kind = self.backend.kind_of(e)
            if final:
                return "done"
            if kind == "cancelled":
                self._deliver(job, message("cancelled", job_id=job.job_id))
                return "done"
            if kind == "lost":
                job.lost_by = type(e).__name__
                self._forget_replica(job.replica)
                abandon(stream)
                return "lost"
            if isinstance(e, asyncio.CancelledError):
                raise
            log.error("job %s failed on replica %s: %s", job.job_id, job.replica, str(e)[:2000])
            self._deliver(job, error("job_failed", "the job failed on its GPU worker (details in the worker's "
                                     "log)", job_id=job.job_id))
            return "done"
        if not final:
            job.lost_by = "stream ended early"
            self._forget_replica(job.replica)
            return "lost"
        return "done"

    def _deliver(self, job: GatewayJob, msg: Message) -> None:
        """A job's one final message (a late result of a cancelled job becomes ``cancelled``)."""
        if job.state == "done":
            return
        if job.cancel_requested and msg.type == "result":
            msg = message("cancelled", job_id=job.job_id)
        job.state = "done"
        job.conn.send(msg)
        log.info("job %s of %s: %s after %d attempt(s)", job.job_id, job.artist,
                 msg.get("code") or msg.type, job.attempts)

    def _report(self, job: GatewayJob, info, *, started: bool) -> None:
        if not isinstance(info, dict) or not isinstance(info.get("replica"), str):
            return
        job.replica = info["replica"]
        with self.lock:
            if job.model_id and started:
                hit = job.model_id in (info.get("models") or ())
                self.routing["hits" if hit else "misses"] += 1
                if not hit:
                    self.missed.append(job.key)
            self.replicas[info["replica"]] = {**info, "seen": time.time()}

    def _forget_replica(self, replica: str | None) -> None:
        with self.lock:
            self.replicas.pop(replica or "", None)

    # --- cancelling -----------------------------------------------------------------------------------

    def _cancel(self, conn, msg: Message) -> None:
        job_id = job_id_of(msg)
        artist = conn.artist
        owner = msg.get("artist") if artist.admin and isinstance(msg.get("artist"), str) else artist.name
        with self.lock:
            job = self.jobs.get((owner, job_id))
        if job is None:     # another artist's job id is "no such job" too: nothing to see or stop
            log.info("%s: cancel of %s: no such job of %s", conn.name, job_id, owner)
            return
        self._cancel_job(job)

    def _cancel_all(self, conn, msg: Message) -> None:
        with self.lock:
            mine = [j for j in self.jobs.values() if j.conn is conn]
        for job in mine:
            self._cancel_job(job)

    def _cancel_job(self, job: GatewayJob) -> None:
        with self.lock:
            job.cancel_requested = True
            queued = job.state == "queued" and self.queue.remove(job.artist, job.key)
            if queued:
                self.jobs.pop(job.key, None)
        if queued:
            self._deliver(job, message("cancelled", job_id=job.job_id))
            self._queue_changed()
        elif self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop_stream, job)

    @staticmethod
    def _stop_stream(job: GatewayJob) -> None:
        if job.stream is not None and job.state != "done":
            job.stream.cancel()      # Serve cancels the replica's task: the engine cancels the job

    # --- the editors' view ---------------------------------------------------------------------------

    def positions(self, conn) -> dict[str, int]:
        with self.lock:
            ahead = self.queue.positions()
            return {j.job_id: (0 if j.state == "running" else ahead.get(j.key, 0))
                    for j in self.jobs.values() if j.conn is conn and j.state != "done"}

    def _queue_changed(self) -> None:
        with self.lock:
            conns = [c for c in self._conns if c.ready]
        for c in conns:
            c.send(message("queue", positions=self.positions(c), cluster=cluster_view(self, c)))

    def _heartbeat(self, conn) -> Message:
        with self.lock:
            running = [j.job_id for j in self.jobs.values() if j.conn is conn and j.state == "running"]
            queued = len(self.queue)
        return message("heartbeat", time=time.time(), running=running, queued=queued,
                       cluster=cluster_view(self, conn))

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            with self.lock:
                conns = list(self._conns)
            for c in conns:
                c.beat(now, lambda c=c: self._heartbeat(c))
            if now >= self._next_check:
                self._next_check = now + RECHECK_EVERY
                self._check_tokens(conns)
                self.status = await loop.run_in_executor(None, self.backend.status)

    def _check_tokens(self, conns) -> None:
        for c in conns:
            artist = getattr(c, "artist", None)
            if artist is None or not c.ready:
                continue
            try:
                why = self.tokens.still_valid(artist)
            except TokenError as e:
                log.error("tokens file: %s", e)
                return
            if why is not None:
                log.warning("%s: closing the connection of %s: %s", c.name, artist.name, why.reason)
                c.last_word(error("unauthorized", str(why), fatal=True))
                close_soon(c)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self, timeout: float = 3.0) -> bool:
        """Stop taking jobs and stop the running ones on their replicas (the deployment stays up)."""
        self.closing = True
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel_requested = True
            if job.stream is not None:
                try:
                    job.stream.cancel()
                except Exception:
                    pass
        self.backend.close()
        return True


def abandon(stream) -> None:
    """Cancel a lost attempt's request (best effort). ``ActorUnavailableError`` means Ray could not reach the
    replica, not that it is dead: a replica cut off from the network but still running must not finish the
    job next to its retry; when it is dead, there is nothing left to cancel."""
    try:
        stream.cancel()
    except Exception:
        pass


def close_soon(conn) -> None:
    """Close a network connection after what was sent to it (``serve.AsyncConnection``: its writer is
    closed on its loop, behind the writes already scheduled there); its reader then ends and
    ``disconnected`` cancels its jobs."""
    writer = getattr(conn, "writer", None)
    if writer is not None:
        conn.loop.call_soon_threadsafe(writer.close)
