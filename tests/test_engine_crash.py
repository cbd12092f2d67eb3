"""Crash isolation: the engine killed mid-job, frozen, stuck in a job, or failing to start.  The client
reports each as an error with a stable code (never a silent hang), restarts the engine, and keeps
the jobs that were still queued."""

import asyncio
import os
import signal
import sys
import time
from dataclasses import replace

import pytest

from core.contract.events import Failed, Finished, JobCancelled, Progress
from core.link.client import EngineClient, EngineError

from .engine_helpers import LONG, ROOT, collect, engine_env, finals_of
from .helpers import inpaint_request, rect_mask, rgba_u8

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

H, W = 64, 80
IMG = rgba_u8(H, W, seed=2)
MASK = rect_mask(H, W, 20, 16, 60, 48)


def small(seed=0):
    return inpaint_request(IMG, MASK, steps=2, seed=seed)


def long_job():
    return inpaint_request(IMG, MASK, steps=500, strength=1.0, seed=3)


class Watch:
    """Consume a job's events, noting when denoising starts and when the final event arrives."""

    def __init__(self, handle):
        self.handle = handle
        self.events = []
        self.denoising = asyncio.Event()
        self.final_at = None
        self.task = asyncio.ensure_future(self._run(handle))

    async def _run(self, handle):
        async for ev in handle.events():
            self.events.append(ev)
            if isinstance(ev, Progress) and ev.phase == "denoising":
                self.denoising.set()
        self.final_at = time.monotonic()
        return self.events


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split(")")[-1].split()[0] != "Z"


def test_kill_9_mid_job_fails_it_within_2_s_and_the_queued_jobs_survive(loop, tiny_root):
    statuses = []
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root), on_status=statuses.append)

    async def go():
        await client.start()
        first = client.engine_pid
        running = Watch(client.submit(long_job()))
        queued = [Watch(client.submit(small(seed))) for seed in (1, 2)]
        await asyncio.wait_for(running.denoising.wait(), 300)
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        await running.task
        latency = running.final_at - killed_at
        queued_events = [await w.task for w in queued]
        after = await collect(client.submit(small(5)))
        second = client.engine_pid
        await client.stop()
        return first, second, latency, running.events, queued_events, after

    first, second, latency, running_events, queued_events, after = loop.run(go())
    final = running_events[-1]
    assert isinstance(final, Failed) and final.code == "engine_died", final
    assert "SIGKILL" in final.message
    assert latency < 2.0, latency
    print(f"\nkill -9 detected after {latency * 1000:.0f} ms")
    for events in queued_events:  # they ran on the restarted engine
        assert finals_of(events) == [events[-1]] and isinstance(events[-1], Finished), events[-1]
    assert isinstance(after[-1], Finished)
    assert second != first and not alive(first)
    states = [s.state for s in statuses]
    assert states[:2] == ["starting", "ready"]
    restarting = next(s for s in statuses if s.state == "restarting")
    assert restarting.code == "engine_died"
    assert states[states.index("restarting") + 1] == "ready"


def test_a_frozen_engine_is_detected_by_heartbeat_and_replaced(loop, tiny_root):
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root), heartbeat_interval=0.2, heartbeat_timeout=5)

    async def go():
        await client.start()
        warm = await collect(client.submit(small(0)))  # imports done: no long pauses any more
        assert isinstance(warm[-1], Finished)
        while client.capabilities is None:  # from now on the short heartbeat timeout applies
            await asyncio.sleep(0.05)
        frozen = client.engine_pid
        running = Watch(client.submit(long_job()))
        queued = Watch(client.submit(small(9)))
        await asyncio.wait_for(running.denoising.wait(), 300)
        os.kill(frozen, signal.SIGSTOP)
        stopped_at = time.monotonic()
        await running.task
        await queued.task
        await client.stop()
        return frozen, running.final_at - stopped_at, running.events, queued.events

    frozen, after, running_events, queued_events = loop.run(go())
    final = running_events[-1]
    assert isinstance(final, Failed) and final.code == "heartbeat_lost", final
    assert 5.0 <= after < 10.0, after
    assert isinstance(queued_events[-1], Finished)
    assert not alive(frozen)  # the frozen engine was killed, not left behind


def test_stuck_jobs_time_out_and_the_engine_is_replaced(loop, tiny_root, tmp_path):
    """A model file that never delivers its bytes (a FIFO): loading blocks in open() forever, where no
    cancel can reach it.  A cancelled job that does not stop and a job that makes no progress both end
    (JobCancelled, Failed job_stuck), the engine is replaced, and the queued jobs run."""
    import shutil

    stuck = tmp_path / "stuck-model"
    shutil.copytree(tiny_root / "sd2-inpainting", stuck, ignore=shutil.ignore_patterns(".tok"))
    weights = stuck / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    os.mkfifo(weights)
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root), stuck_grace=1)

    async def go():
        await client.start()
        warm = await collect(client.submit(small(0)))  # the first job imports the libraries: no tight timeout
        assert isinstance(warm[-1], Finished)
        pids = [client.engine_pid]
        # 1. the artist cancels a job that cannot stop
        client.options.cancel_timeout = 2
        blocked = Watch(client.submit(replace(small(1), model=str(stuck))))
        queued = Watch(client.submit(small(2)))
        while not [e for e in blocked.events if isinstance(e, Progress) and e.phase == "loading"]:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # inside the blocked open() now
        t0 = time.monotonic()
        blocked.handle.cancel()
        await blocked.task
        cancel_seconds = blocked.final_at - t0
        client.options.cancel_timeout = 600
        await queued.task
        pids.append(client.engine_pid)
        # 2. a job that makes no progress at all
        client.options.job_timeout = 3
        t0 = time.monotonic()
        stuck_job = Watch(client.submit(replace(small(3), model=str(stuck))))
        queued2 = Watch(client.submit(small(4)))
        await stuck_job.task
        stuck_seconds = stuck_job.final_at - t0
        client.options.job_timeout = 600  # the restarted engine imports its libraries again for the queued job
        await queued2.task
        pids.append(client.engine_pid)
        await client.stop()
        return pids, cancel_seconds, stuck_seconds, blocked.events, queued.events, stuck_job.events, queued2.events

    pids, cancel_seconds, stuck_seconds, blocked, queued, stuck_events, queued2 = loop.run(go())
    assert isinstance(blocked[-1], JobCancelled) and 2.0 <= cancel_seconds < 10, cancel_seconds
    assert isinstance(stuck_events[-1], Failed) and stuck_events[-1].code == "job_stuck"
    assert 3.0 <= stuck_seconds < 15, stuck_seconds
    assert [e.phase for e in stuck_events if isinstance(e, Progress)][-1] == "loading"
    assert isinstance(queued[-1], Finished) and isinstance(queued2[-1], Finished)
    assert len(set(pids)) == 3  # a blocked open() cannot be cancelled: each time the engine was replaced
    assert not any(alive(p) for p in pids)


FAKE_ENGINE = r'''
import json, os, struct, sys, time
mode = os.environ["FAKE_MODE"]
if mode == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr)
    sys.exit(1)
if mode == "silent":
    time.sleep(120)
if mode == "old":
    sys.stdin.buffer.read(16)
    header = json.dumps({"type": "hello", "protocol": 99, "payloads": []}).encode()
    sys.stdout.buffer.write(struct.pack("!4sIQ", b"\x89DDP", len(header), 0) + header)
    sys.stdout.buffer.flush()
    time.sleep(120)
'''


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-engine")
    (root / "core" / "engine").mkdir(parents=True)
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "engine" / "__init__.py").write_text("")
    (root / "core" / "engine" / "__main__.py").write_text(FAKE_ENGINE)
    return root


def start_failure(loop, client):
    async def go():
        handle = client.submit(small())
        events = await collect(handle, timeout=60)
        with pytest.raises(EngineError) as e:
            await client.start()
        await client.stop()
        return events, e.value

    return loop.run(go())


def test_a_missing_python_fails_the_job_with_the_reason(loop, tmp_path):
    statuses = []
    client = EngineClient(python=str(tmp_path / "no-python"), on_status=statuses.append)
    events, err = start_failure(loop, client)
    assert len(events) == 1 and events[0].code == "engine_start_failed"
    assert "no-python" in events[0].message
    assert err.code == "engine_start_failed"
    assert ("dead", "engine_start_failed") in [(s.state, s.code) for s in statuses]


def test_an_engine_that_dies_at_start_up_reports_its_last_words(loop, fake_engine):
    client = EngineClient(cwd=fake_engine, env={"FAKE_MODE": "crash"})
    events, err = start_failure(loop, client)
    assert events[0].code == "engine_start_failed"
    assert "exited with status 1" in events[0].message and "No module named 'torch'" in events[0].message
    assert "No module named 'torch'" in client.engine_output()[-1]


def test_an_engine_that_never_says_hello_times_out_and_is_killed(loop, fake_engine):
    client = EngineClient(cwd=fake_engine, env={"FAKE_MODE": "silent"}, start_timeout=1.5)
    pids = []

    async def go():
        handle = client.submit(small())
        while client.starting_pid is None:
            await asyncio.sleep(0.01)
        pids.append(client.starting_pid)
        t0 = time.monotonic()
        events = await collect(handle, timeout=60)
        return events, time.monotonic() - t0

    events, seconds = loop.run(go())
    assert events[0].code == "engine_start_timeout" and "1.5 s" in events[0].message
    assert seconds < 5
    assert not alive(pids[0])


def test_a_different_protocol_version_is_refused(loop, fake_engine):
    client = EngineClient(cwd=fake_engine, env={"FAKE_MODE": "old"}, start_timeout=20)
    events, err = start_failure(loop, client)
    assert events[0].code == "version_mismatch" and "99" in events[0].message


def test_a_bad_request_fails_at_once_without_starting_an_engine(loop):
    client = EngineClient(python="/nonexistent/python")

    async def go():
        final = await client.submit(inpaint_request(IMG, MASK, guidance=99)).wait()
        return final, client.status.state

    final, state = loop.run(go())
    assert final.code == "invalid_parameter" and final.parameter == "guidance" and "1–20" in final.message
    assert state == "stopped"


def test_jobs_waiting_for_a_starting_engine_can_be_cancelled_and_stop_ends_the_rest(loop, fake_engine):
    client = EngineClient(cwd=fake_engine, env={"FAKE_MODE": "silent"}, start_timeout=60)

    async def go():
        a, b, c = (client.submit(small(i)) for i in range(3))
        while client.starting_pid is None:
            await asyncio.sleep(0.01)
        pid = client.starting_pid
        assert client.status.state == "starting"
        a.cancel()
        first = await a.wait()
        await client.stop()
        return pid, first, await b.wait(), await c.wait(), client.status.state

    pid, first, second, third, state = loop.run(go())
    assert [type(e).__name__ for e in (first, second, third)] == ["JobCancelled"] * 3
    assert state == "stopped" and not alive(pid)


KILLS = 100 if LONG else 10


@pytest.mark.timeout(300 + 150 * KILLS)    # each round starts a fresh engine (imports, model load)
def test_kill_9_mid_job_again_and_again_every_job_ends_and_none_is_lost(loop, tiny_root):
    """The reliability figure: the engine is killed (SIGKILL) in the middle of a job, KILLS times.  Each
    time the client reports that job as engine_died, restarts the engine and runs the job queued behind
    it there; every job submitted ends exactly once, and every job that was not running when its engine
    died ends with its result."""
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root))
    rounds = []

    async def go():
        await client.start()
        for i in range(KILLS):
            pid = client.engine_pid
            running = Watch(client.submit(long_job()))
            queued = [Watch(client.submit(small(100 * i + k))) for k in range(2)]
            await asyncio.wait_for(running.denoising.wait(), 300)
            os.kill(pid, signal.SIGKILL)
            await running.task
            for w in queued:
                await w.task
            rounds.append((pid, client.engine_pid, running.events, [w.events for w in queued]))
        await client.stop()

    loop.run(go(), timeout=240 + 140 * KILLS)
    recoveries = lost = 0
    for pid, new_pid, running_events, queued_events in rounds:
        assert finals_of(running_events) == [running_events[-1]]
        assert isinstance(running_events[-1], Failed) and running_events[-1].code == "engine_died"
        for events in queued_events:
            assert finals_of(events) == [events[-1]]
            lost += not (isinstance(events[-1], Finished) and events[-1].result.patches)
        recoveries += new_pid is not None and new_pid != pid and not alive(pid)
    print(f"\nkill -9 mid-job x{KILLS}: {recoveries} recoveries, {lost} lost results "
          f"({2 * KILLS} queued jobs, each ended once)")
    assert recoveries == KILLS and lost == 0
