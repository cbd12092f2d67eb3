"""A job handle owns its state: what each report does to it, and what its owner sees."""

from __future__ import annotations

import pytest

from core.contract.events import Accepted, Failed, Finished, JobCancelled, JobState, Preview, Progress
from core.contract.jobs import JobRequest, JobResult
from core.link.client import JobHandle


def handle() -> JobHandle:
    return JobHandle("j1", JobRequest("fill"), previews=True)


async def drained(h: JobHandle) -> list:
    out = []
    while not h._queue.empty():        # the test reads what the owner would iterate
        out.append(h._queue.get_nowait())
    return out


def test_a_new_job_is_queued_and_pending_until_sent(loop):
    async def go():
        h = handle()
        assert h.state is JobState.QUEUED and h.pending and h.sent_on is None and h.attempts == 0
        link = object()
        h.mark_sent(link)
        assert h.state is JobState.QUEUED and not h.pending and h.sent_on is link and h.attempts == 1
        return await drained(h)

    assert loop.run(go()) == []


def test_positions_are_announced_when_they_change_and_position_0_means_running(loop):
    async def go():
        h = handle()
        h.mark_sent(object())
        for pos in (3, 3, 2, 0, 1):          # the late 1 is an older snapshot: ignored once running
            h.at_position(pos)
        return h, await drained(h)

    h, seen = loop.run(go())
    assert seen == [Accepted("j1", 3), Accepted("j1", 2), Accepted("j1", 0)]
    assert h.state is JobState.RUNNING and h.position == 0


def test_a_step_makes_a_queued_job_running_and_is_passed_on(loop):
    async def go():
        h = handle()
        h.mark_sent(object())
        h.report(Progress("j1", 1, 4, "denoising"))
        h.report(Preview("j1", 1, 1, b"\0\0\0"))
        return h, await drained(h)

    h, seen = loop.run(go())
    assert h.state is JobState.RUNNING
    assert [type(e).__name__ for e in seen] == ["Accepted", "Progress", "Preview"]


@pytest.mark.parametrize("final, state", [
    (Finished("j1", JobResult("fill", ())), JobState.DONE),
    (Failed("j1", "engine_died", "gone"), JobState.FAILED),
    (JobCancelled("j1"), JobState.CANCELLED),
])
def test_one_final_event_ends_it_and_late_events_are_dropped(loop, final, state):
    async def go():
        h = handle()
        h.mark_sent(object())
        assert h.finish(final) is True
        assert h.finish(JobCancelled("j1")) is False          # a second final event changes nothing
        h.report(Progress("j1", 2, 4, "denoising"))
        h.at_position(0)
        h.requeue()
        return h, await drained(h), await h.wait()

    h, seen, waited = loop.run(go())
    assert seen == [final] and waited == final and h.final == final and h.state is state and h.done


def test_requeue_after_a_lost_engine_makes_it_pending_again_and_counts_attempts(loop):
    async def go():
        h = handle()
        first = object()
        h.mark_sent(first)
        h.at_position(2)
        h.requeue()
        assert h.pending and h.state is JobState.QUEUED and h.position is None
        h.mark_sent(object())
        return h

    h = loop.run(go())
    assert h.attempts == 2 and not h.pending


def test_cancel_is_remembered_once_with_its_time(loop):
    async def go():
        h = handle()
        assert h.request_cancel(now=10.0) is True and h.request_cancel(now=20.0) is False
        return h

    h = loop.run(go())
    assert h.cancel_requested and h.cancel_age(15.0) == 5.0
