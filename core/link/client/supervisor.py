"""Starting, watching and restarting the engine.  Standard library only.

The supervisor owns the current link and the engine's status.  It starts the engine when a job needs
one, exchanges hellos, watches heartbeats and stuck jobs, and when the engine is lost settles the jobs
that were on it (``JobTable.settle_lost``) and starts a new engine for the ones still queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...contract.events import EngineStatus
from .. import bulk
from .. import protocol as P
from .jobs import JobTable
from .link import EngineError, EngineLink, os_reason

log = logging.getLogger("diffusion_dock.client")


@dataclass
class EngineOptions:
    """Where the engine is and how patient to be with it (see ``EngineClient``)."""

    python: str | None = None
    cwd: str | None = None
    url: str | None = None
    token: str | None = None
    cafile: str | None = None
    engine_args: tuple = ()
    env: dict | None = None
    start_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 20.0
    job_timeout: float = 600.0
    cancel_timeout: float = 120.0
    stuck_grace: float = 5.0
    stop_timeout: float = 5.0
    max_resubmits: int = 2


class Supervisor:
    """``on_ready(link)``: a new engine is ready (the client starts reading it); ``on_status(status)``."""

    def __init__(self, options: EngineOptions, jobs: JobTable, on_ready: Callable[[EngineLink], None],
                 on_status: Callable[[EngineStatus], None]):
        self.options = options
        self.jobs = jobs
        self.on_ready = on_ready
        self.on_status = on_status
        self.status = EngineStatus("stopped")
        self.link: EngineLink | None = None        # the ready engine
        self.starting: EngineLink | None = None    # the engine being started
        self.engine_pid: int | None = None
        self.last_output: list[str] = []
        self._start_task: asyncio.Task | None = None
        self._stopping = False
        self._was_ready = False

    def set_status(self, state: str, reason: str = "", code: str = "") -> None:
        status = EngineStatus(state, reason, code)
        if status != self.status:
            self.status = status
            self.on_status(status)

    # --- starting --------------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        if self.link is not None or (self._start_task is not None and not self._start_task.done()):
            return
        self._start_task = asyncio.get_running_loop().create_task(self._start())

    async def wait_started(self) -> None:
        self._stopping = False
        if self.link is None:
            self.ensure_started()
        if self._start_task is not None:
            await asyncio.shield(self._start_task)

    async def _start(self) -> None:
        o = self.options
        self.set_status("restarting" if self._was_ready else "starting", self.status.reason, self.status.code)
        t0 = time.monotonic()
        try:
            link = await asyncio.wait_for(self._open(), o.start_timeout)
        except asyncio.TimeoutError:
            await self._start_failed("engine_start_timeout", f"the engine did not answer within {o.start_timeout:g} s")
            return
        except EngineError as e:
            await self._start_failed(e.code, str(e))
            return
        except OSError as e:
            await self._start_failed("engine_start_failed", f"cannot start the engine: {os_reason(e)}")
            return
        except asyncio.CancelledError:  # stop() while starting: no process may be left behind
            if self.starting is not None:
                await self.starting.close()
            raise
        finally:
            self.starting = None
        self.link = link
        self._was_ready = True
        pid = link.hello.get("pid")
        self.engine_pid = pid if isinstance(pid, int) else None
        log.info("engine ready after %.2f s (%s)", time.monotonic() - t0, link.where)
        link.tasks.append(asyncio.get_running_loop().create_task(self._watch(link)))
        if link.proc is not None:
            link.tasks.append(asyncio.get_running_loop().create_task(self._wait_exit(link)))
        self.on_ready(link)
        self.set_status("ready")
        self.jobs.send_pending(link)

    async def _open(self) -> EngineLink:
        """Spawn or connect, then exchange hellos.  Raises EngineError or OSError."""
        o = self.options
        if o.url is not None:
            link = await EngineLink.connect(o.url, o.cafile)
        else:
            link = await EngineLink.spawn(o.python, o.engine_args, cwd=o.cwd, env=o.env)
        self.starting = link
        hello = {"heartbeat": o.heartbeat_interval, "client": "diffusion-dock", "queue_shifts": True}
        if o.token is not None:
            hello["token"] = o.token
        if link.proc is not None and (shared := bulk.directory()):
            hello["bulk_dir"] = shared
        await link.say_hello(hello)
        return link

    async def _start_failed(self, code: str, reason: str) -> None:
        link = self.starting
        if link is not None:
            if code == "engine_start_timeout":
                tail = link.tail()
                reason += f" ({tail})" if tail else ""
            await link.close()
            self.last_output = list(link.stderr_tail)
        log.warning("engine start failed: %s", reason)
        self.jobs.fail_pending(code, reason)
        self.set_status("dead", reason, code)

    # --- stopping --------------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel every job (each ends with JobCancelled) and stop the engine (or disconnect)."""
        self._stopping = True
        try:
            self.jobs.cancel_everything()
            task = self._start_task
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            link = self.link
            if link is not None:
                if link.proc is not None:
                    link.send(P.message("shutdown"))
                    try:
                        await asyncio.wait_for(link.proc.wait(), self.options.stop_timeout)
                    except asyncio.TimeoutError:
                        log.warning("the engine did not stop within %.0f s: killing it", self.options.stop_timeout)
                await self.lost(link, "engine_stopped", "stopped")
            self.set_status("stopped")
        finally:
            self._stopping = False

    # --- watching --------------------------------------------------------------------------------------

    async def _watch(self, link: EngineLink) -> None:
        """Heartbeat loss and stuck jobs."""
        o = self.options
        tick = max(0.05, min(1.0, o.heartbeat_timeout / 4, o.job_timeout / 4, o.cancel_timeout / 4, o.stuck_grace / 2))
        try:
            while not link.lost:
                await asyncio.sleep(tick)
                now = time.monotonic()
                silent = now - link.last_seen
                # Until its capabilities arrive the engine is importing torch, whose native libraries load
                # with the GIL held: no heartbeat can be sent then, for seconds on a slow disk.
                limit = o.heartbeat_timeout if link.capabilities else max(o.heartbeat_timeout, o.start_timeout)
                if silent > limit:
                    await self.lost(link, "heartbeat_lost", f"the engine sent nothing for {silent:.0f} s")
                    return
                self.jobs.end_stuck(link, now, o.job_timeout, o.cancel_timeout)
                for job_id, since in list(link.stuck.items()):
                    if job_id not in link.running_ids:
                        del link.stuck[job_id]
                    elif now - since > o.stuck_grace and link.proc is not None:
                        await self.lost(link, "job_stuck", "a stuck job did not stop when cancelled")
                        return
        except asyncio.CancelledError:
            return

    async def _wait_exit(self, link: EngineLink) -> None:
        try:
            await link.proc.wait()
        except asyncio.CancelledError:
            return
        await self.lost(link, "engine_died", "")

    async def lost(self, link: EngineLink, code: str, reason: str) -> None:
        """The engine behind ``link`` is gone (or must go): fail what ran, keep what was queued."""
        if link.lost:
            await link.closed.wait()
            return
        link.lost = True
        if self.link is link:
            self.link = None
        try:
            await self._settle(link, code, reason)
        finally:
            link.closed.set()

    async def _settle(self, link: EngineLink, code: str, reason: str) -> None:
        if link.proc is not None and code in ("engine_died", "engine_stopped"):
            reason = await link.exit_reason("", reason)
        await link.close()
        if link.proc is not None:      # reaped now: the result files the engine wrote and we never took
            left = bulk.sweep_writer(link.bulk, link.proc.pid)
            if left:
                log.info("removed %d shared-memory files of the engine (pid %d), which is gone", left, link.proc.pid)
        self.last_output = list(link.stderr_tail)
        if code == "engine_stopped" or self._stopping:
            return
        log.warning("engine lost (%s): %s", code, reason)
        if self.jobs.settle_lost(link, code, reason, self.options.max_resubmits):
            self.set_status("restarting", reason, code)
            self.ensure_started()
        else:
            self.set_status("dead", f"{reason}; it restarts for the next job", code)
