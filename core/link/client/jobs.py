"""The client's unfinished jobs, in submission order, and what happens to them when their engine
is ready, stuck or lost.  Standard library only."""

from __future__ import annotations

import logging

from ...contract.events import Failed, JobCancelled, JobState
from .. import protocol as P
from .handle import JobHandle
from .link import EngineLink

log = logging.getLogger("diffusion_dock.client")


class JobTable:
    def __init__(self):
        self._jobs: dict[str, JobHandle] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> JobHandle | None:
        return self._jobs.get(job_id)

    def all(self) -> list[JobHandle]:
        return list(self._jobs.values())

    def pending(self) -> list[JobHandle]:
        return [h for h in self._jobs.values() if h.pending]

    def on(self, link: EngineLink) -> list[JobHandle]:
        """The jobs sent to ``link``."""
        return [h for h in self._jobs.values() if h.sent_on is link]

    def add(self, handle: JobHandle) -> None:
        self._jobs[handle.job_id] = handle

    def end(self, handle: JobHandle, event) -> None:
        """End a job with its final event; it leaves the table."""
        if handle.finish(event):
            self._jobs.pop(handle.job_id, None)

    def send(self, link: EngineLink, handle: JobHandle) -> None:
        try:
            msg = P.submit(handle.job_id, handle.request, previews=handle.previews)
            P.encode(msg)  # fail here, not in the link, on what JSON cannot carry
        except (TypeError, ValueError) as e:   # (validated requests never get here)
            log.warning("job %s cannot be encoded: %s", handle.job_id, e)
            self.end(handle, Failed(handle.job_id, "invalid_parameter", "the request cannot be sent: a field holds "
                                    "a value the protocol cannot carry (a number that is not finite, or an "
                                    "object that is not text, a number or a list)"))
            return
        handle.mark_sent(link)
        link.send(msg)

    def send_pending(self, link: EngineLink) -> None:
        for handle in self.pending():
            self.send(link, handle)

    def fail_pending(self, code: str, reason: str) -> None:
        for handle in self.pending():
            self.end(handle, Failed(handle.job_id, code, f"The engine could not start: {reason}"))

    def cancel_everything(self) -> None:
        """Every job ends cancelled now (the client stops)."""
        for handle in self.all():
            handle.request_cancel()
            self.end(handle, JobCancelled(handle.job_id))

    def settle_lost(self, link: EngineLink, code: str, reason: str, max_resubmits: int) -> bool:
        """``link``'s engine is gone: a job it ran fails (cancelled if cancel was asked), a job it had
        only queued goes back to pending for the next engine (unless sent too often already).  True when
        jobs are pending, so an engine is needed again."""
        for handle in self.on(link):
            if handle.cancel_requested:
                self.end(handle, JobCancelled(handle.job_id))
            elif handle.state is JobState.RUNNING or handle.attempts > max_resubmits:
                self.end(handle, Failed(handle.job_id, code, f"The engine stopped while this job ran: {reason}. "
                                                              f"It restarts for the next job."))
            else:
                handle.requeue()
        return bool(self.pending())

    def end_stuck(self, link: EngineLink, now: float, job_timeout: float, cancel_timeout: float) -> None:
        """End the running jobs of ``link`` that make no progress (or ignore a cancel), ask the engine to
        cancel them, and note them in ``link.stuck`` so the supervisor can see the engine let go."""
        for handle in self.on(link):
            if handle.state is not JobState.RUNNING:
                continue
            if handle.cancel_requested and handle.cancel_age(now) > cancel_timeout:
                final = JobCancelled(handle.job_id)
            elif handle.idle(now) > job_timeout:
                final = Failed(handle.job_id, "job_stuck",
                               f"The job made no progress for {job_timeout:g} s and was stopped.")
            else:
                continue
            log.warning("job %s is stuck: %s", handle.job_id,
                        "cancel ignored" if isinstance(final, JobCancelled) else "no progress")
            link.send(P.message("cancel", job_id=handle.job_id))
            link.stuck[handle.job_id] = now
            link.running_ids.add(handle.job_id)
            self.end(handle, final)
