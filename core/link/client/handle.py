"""One submitted job as the client follows it.  Standard library only.

The handle owns its state: the client tells it what happened (sent on a link, a queue position, a
step, a final event, the engine lost) through methods, and it decides what that means for its state
(``contract.events.JobState``) and which events its owner sees.  Nothing else assigns its fields.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ...contract.events import FINAL_EVENTS, Accepted, JobState, Progress
from ...contract.jobs import JobRequest

if TYPE_CHECKING:
    from .link import EngineLink


class JobHandle:
    """One submitted job.  Iterate ``events()`` once; ``wait()`` returns the final event.

    ``state`` is ``QUEUED`` until the engine reports it running; a queued job is *pending* until it is
    sent to an engine (``sent_on`` is its link), and becomes pending again when that engine is lost
    before it ran (it is resubmitted to the next one)."""

    def __init__(self, job_id: str, request: JobRequest, previews: bool, cancel=None):
        self.job_id = job_id
        self.request = request
        self.previews = previews
        self._cancel = cancel                  # the client's cancel(job_id)
        self._state = JobState.QUEUED
        self._final = None
        self._position: int | None = None
        self._link: EngineLink | None = None
        self._attempts = 0
        self._cancelled_at: float | None = None
        self._last_progress = time.monotonic()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} {self.request.mode} {self._state.value}>"

    # --- what the owner reads ------------------------------------------------------------------------

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def final(self):
        """The final event, or None while the job is unfinished."""
        return self._final

    @property
    def done(self) -> bool:
        return self._final is not None

    @property
    def position(self) -> int | None:
        """Place in the engine's queue (0 = running), as last reported."""
        return self._position

    @property
    def pending(self) -> bool:
        """Queued here and not sent to any engine (yet, or again after losing one)."""
        return self._link is None and not self.done

    @property
    def sent_on(self) -> EngineLink | None:
        return self._link

    @property
    def attempts(self) -> int:
        """How many times it was sent to an engine."""
        return self._attempts

    @property
    def cancel_requested(self) -> bool:
        return self._cancelled_at is not None

    def cancel_age(self, now: float) -> float:
        """Seconds since cancel was asked (0 when it was not)."""
        return 0.0 if self._cancelled_at is None else now - self._cancelled_at

    def idle(self, now: float) -> float:
        """Seconds since the running job last reported a step."""
        return now - self._last_progress

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
        return self._cancel(self.job_id) if self._cancel is not None else False

    # --- what the client tells it --------------------------------------------------------------------

    def mark_sent(self, link: EngineLink) -> None:
        self._link = link
        self._attempts += 1

    def request_cancel(self, now: float | None = None) -> bool:
        """Remember that cancel was asked; True the first time."""
        if self._cancelled_at is not None:
            return False
        self._cancelled_at = time.monotonic() if now is None else now
        return True

    def at_position(self, position: int) -> None:
        """The engine reported the job's queue position (0 = running); announced when it changes.
        A running job never goes back into the queue (an older snapshot arriving late)."""
        if self.done or (self._state is JobState.RUNNING and position > 0):
            return
        if position == 0 and self._state is not JobState.RUNNING:
            self._state = JobState.RUNNING
            self._last_progress = time.monotonic()
        if position != self._position:
            self._position = position
            self._queue.put_nowait(Accepted(self.job_id, position))

    def report(self, event) -> None:
        """A Progress or Preview event of the running job."""
        if self.done:
            return
        if self._state is not JobState.RUNNING:
            self.at_position(0)
        if isinstance(event, Progress):
            self._last_progress = time.monotonic()
        self._queue.put_nowait(event)

    def requeue(self) -> None:
        """Its engine was lost before it ran: pending again, for the next engine."""
        if not self.done:
            self._state, self._position, self._link = JobState.QUEUED, None, None

    def finish(self, event) -> bool:
        """End the job with a final event; False when it had already ended (late events are dropped)."""
        if self._final is not None:
            return False
        self._final = event
        self._state = JobState.of_final(event)
        self._queue.put_nowait(event)
        if not self._done.done():
            self._done.set_result(event)
        return True
