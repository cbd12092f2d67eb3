"""First-in-first-out job queue run by one worker thread per device.

Every job ends exactly once: the queue calls ``on_final(job, outcome)`` a single time, whether the job
ran to its end, failed, or was cancelled while queued or running.  The queue knows nothing about
torch or the protocol: ``execute(job, device)`` does the work and returns the outcome.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..contract.jobcontrol import JobControl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``kind`` is "result", "cancelled" or "error"."""

    kind: str
    result: object = None
    code: str = ""
    message: str = ""
    parameter: str | None = None

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls("cancelled")

    @classmethod
    def error(cls, code: str, message: str, parameter: str | None = None) -> Outcome:
        return cls("error", code=code, message=message, parameter=parameter)


@dataclass(eq=False)
class Job:
    id: str
    request: object
    owner: object = None            # who submitted it (a connection); job ids are unique per owner
    previews: bool = True
    control: JobControl = field(default_factory=JobControl)
    state: str = "new"              # new | queued | running | done
    cancel_requested: bool = False
    device: str | None = None
    bulk_names: set = field(default_factory=set)   # shared-memory files its patches were made in (core.link.bulk)
    hold: object = None             # what was reserved for its pixels (a shared engine's budget), released at its end

    @property
    def key(self) -> tuple:
        return (id(self.owner), self.id)


class DuplicateJob(ValueError):
    pass


class QueueClosed(RuntimeError):
    pass


class JobQueue:
    """Jobs run in submission order, one at a time per device.

    ``execute(job, device) -> Outcome`` runs in the device's worker thread.  ``on_final(job, outcome)``
    and ``on_change()`` (queue order changed) are called from whichever thread made the change, never
    with the queue's lock held.
    """

    def __init__(self, execute: Callable[[Job, str], Outcome], *, devices=("cpu",),
                 on_final: Callable[[Job, Outcome], None] | None = None,
                 on_change: Callable[[], None] | None = None):
        self._execute = execute
        self._on_final = on_final or (lambda job, outcome: None)
        self._on_change = on_change or (lambda: None)
        self._cond = threading.Condition()
        self._queued: deque[Job] = deque()
        self._jobs: dict[tuple, Job] = {}       # queued and running, by key
        self._running: dict[str, Job] = {}      # device -> job
        self._closed = False
        self.devices = tuple(devices)
        self._workers = [threading.Thread(target=self._work, args=(d,), name=f"worker-{d}", daemon=True)
                         for d in self.devices]
        for w in self._workers:
            w.start()

    # --- what clients do -----------------------------------------------------------------------

    def submit(self, job: Job, announce: Callable[[int], None] | None = None) -> int:
        """Queue ``job``; returns its position (0 = starts now, n = n-th in line).

        ``announce(position)`` is called before any worker can pick the job up, so a job's
        acceptance is always reported before its progress."""
        with self._cond:
            if self._closed:
                raise QueueClosed("the engine is shutting down")
            if job.key in self._jobs:
                raise DuplicateJob(f"job {job.id!r} is already queued or running")
            job.state = "queued"
            self._queued.append(job)
            self._jobs[job.key] = job
            idle = len(self.devices) - len(self._running)
            position = max(0, len(self._queued) - idle)
            if announce is not None:
                announce(position)
            self._cond.notify()
        self._on_change()
        return position

    def cancel(self, owner, job_id: str) -> bool:
        """Cancel a queued job (it ends now) or a running one (it ends at its next step)."""
        with self._cond:
            job = self._jobs.get((id(owner), job_id))
            if job is None:
                return False
            job.cancel_requested = True
            if job.state == "queued":
                self._queued.remove(job)
                final = self._take(job)
            else:
                job.control.cancel()
                final = False
        if final:
            self._finish(job, Outcome.cancelled())
        return True

    def cancel_owner(self, owner) -> int:
        """Cancel every job of ``owner`` (queued ones end now, running ones at their next step)."""
        with self._cond:
            mine = [j for j in self._jobs.values() if j.owner is owner]
        for job in mine:
            self.cancel(owner, job.id)
        return len(mine)

    def positions(self, owner=None) -> dict[str, int]:
        """Job id -> position (0 = running, n = n-th in line) for ``owner``'s jobs (or all)."""
        with self._cond:
            pos = {j.id: 0 for j in self._running.values() if owner is None or j.owner is owner}
            for i, j in enumerate(self._queued, start=1):
                if owner is None or j.owner is owner:
                    pos[j.id] = i
            return pos

    def running(self, owner=None) -> list[str]:
        with self._cond:
            return [j.id for j in self._running.values() if owner is None or j.owner is owner]

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def positions_by_owner(self) -> dict[int, tuple[object, dict[str, int]]]:
        """id(owner) -> (owner, {job id: position}) for every owner with a queued or running job, in one pass."""
        with self._cond:
            out: dict[int, tuple[object, dict[str, int]]] = {}
            for j in self._running.values():
                out.setdefault(id(j.owner), (j.owner, {}))[1][j.id] = 0
            for i, j in enumerate(self._queued, start=1):
                out.setdefault(id(j.owner), (j.owner, {}))[1][j.id] = i
            return out

    def owners(self) -> list:
        with self._cond:
            seen = {}
            for j in self._jobs.values():
                seen[id(j.owner)] = j.owner
            return list(seen.values())

    def close(self, timeout: float = 5.0) -> bool:
        """Cancel everything and stop the workers.  True if they stopped within ``timeout``."""
        with self._cond:
            self._closed = True
            queued = list(self._queued)
            self._queued.clear()
            for job in queued:
                job.cancel_requested = True
                self._take(job)
            for job in self._running.values():
                job.cancel_requested = True
                job.control.cancel()
            self._cond.notify_all()
        for job in queued:
            self._finish(job, Outcome.cancelled())
        for w in self._workers:
            w.join(timeout)
        return not any(w.is_alive() for w in self._workers)

    # --- inside ---------------------------------------------------------------------------------

    def _take(self, job: Job) -> bool:
        """Remove ``job`` from the books (lock held); False if it had already ended."""
        if job.state == "done":
            return False
        job.state = "done"
        self._jobs.pop(job.key, None)
        if job.device is not None and self._running.get(job.device) is job:
            del self._running[job.device]
        return True

    def _finish(self, job: Job, outcome: Outcome) -> None:
        try:
            self._on_final(job, outcome)
        except Exception:
            log.exception("reporting the end of job %s failed", job.id)
        self._on_change()

    def _work(self, device: str) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queued.popleft()
                job.state, job.device = "running", device
                self._running[device] = job
            self._on_change()
            try:
                outcome = self._execute(job, device)
            except BaseException:  # execute reports its own errors; this is the last resort
                log.exception("job %s crashed its worker", job.id)
                outcome = Outcome.error("job_failed", "the job failed because of an internal error in the engine "
                                                      "(described in the engine's log)")
            if job.cancel_requested and outcome.kind == "result":
                outcome = Outcome.cancelled()  # the artist asked to drop it: no late layer
            with self._cond:
                final = self._take(job)
            if final:
                self._finish(job, outcome)
