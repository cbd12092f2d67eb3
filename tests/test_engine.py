"""The engine as its own process, through the client: the same results as in-process, events in
order, cancelling (50 queued jobs included), a clean protocol stream despite stray output, logs in
the log folder, no listening socket.

One engine process serves the whole module.  It runs in a deliberately noisy environment
(tests/noisy/sitecustomize.py writes to stdout at start-up and keeps printing from a thread).
"""

import asyncio
import importlib.util
import os
import random
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from core.contract.events import Accepted, Failed, Finished, JobCancelled, Preview, Progress
from core.contract.jobs import MODES
from core.link import bulk
from core.link.client import EngineClient
from core.pipelines import run_job
from core.raster import pixels

from .engine_helpers import ROOT, RawEngine, collect, engine_env, finals_of
from .helpers import inpaint_request, rect_mask, rgba_u8

H, W = 64, 80
IMG = rgba_u8(H, W, seed=11)
MASK = rect_mask(H, W, 20, 16, 60, 48)


@pytest.fixture(scope="module")
def engine(loop, tiny_root):
    statuses, caps, model_status = [], [], []
    env = engine_env(tiny_root, PYTHONPATH=ROOT / "tests" / "noisy", DD_TEST_NOISE=1)
    client = EngineClient(cwd=ROOT, env=env, on_status=statuses.append, on_capabilities=caps.append,
                          on_model_status=model_status.append, heartbeat_timeout=60)
    t0 = time.perf_counter()
    loop.run(client.start())
    client.ready_seconds = time.perf_counter() - t0
    client.statuses, client.caps, client.model_status = statuses, caps, model_status
    yield client
    loop.run(client.stop())
    assert client.status.state == "stopped"


def run(loop, client, req, **kw):
    handle = loop.call(lambda: client.submit(req, **kw))
    return loop.run(collect(handle))


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def as_layout(img, fmt, linear=False):
    from .helpers import buffer

    return pixels.convert_buffer(buffer(img[..., [2, 1, 0, 3]], "BGRA_U8"), fmt, linear)


def test_engine_is_ready_quickly_then_announces_device_and_models(engine, tiny_root, policy):
    assert [s.state for s in engine.statuses[:2]] == ["starting", "ready"]
    assert engine.ready_seconds < 30  # generous: measured in the benchmark, here only a sanity bound
    wait_for(lambda: engine.caps)
    caps = engine.caps[-1]
    assert caps.device == policy.device and caps.dtype == policy.dtype
    assert "inpaint" in caps.modes
    by_key = {m["key"]: m for m in caps.models}
    assert by_key["sd2-inpainting"]["found"] and by_key["sd2-inpainting"]["path"].startswith(str(tiny_root))
    assert engine.engine_pid and engine.engine_pid != os.getpid()


@pytest.mark.parametrize("fmt,linear", [("BGRA_U8", False), ("RGBA_F32", True)])
def test_inpaint_over_the_protocol_matches_in_process_byte_for_byte(engine, loop, models, fmt, linear):
    image = as_layout(IMG, fmt, linear)
    req = replace(inpaint_request(IMG, MASK, steps=3, seed=21, num_images=2), image=image)
    events = run(loop, engine, req)
    local = run_job(req, models)
    (final,) = finals_of(events)
    assert isinstance(final, Finished), final
    remote = final.result
    assert len(remote.patches) == 2
    for a, b in zip(remote.patches, local.patches):
        assert (a.x, a.y, a.seed) == (b.x, b.y, b.seed)
        assert (a.image.format, a.image.linear) == (fmt, linear)  # the request's own layout
        assert a.image.header() == b.image.header()
        assert a.image.data == b.image.data
    assert remote.params == local.params and remote.warnings == local.warnings


@pytest.mark.skipif(bulk.directory() is None, reason="no shared-memory directory on this machine")
def test_a_large_layer_goes_both_ways_through_shared_memory(engine, loop, models, monkeypatch):
    """A 4 MiB layer and its patch travel as files in /dev/shm (agreed in the hello), give the very
    result of the in-process job, and leave no file behind."""
    assert engine.link.bulk == bulk.directory()
    taken = []
    restore = bulk.restore
    monkeypatch.setattr(bulk, "restore", lambda msg, *a, **k: taken.append(msg.header["bulk"]) or restore(msg, *a, **k))
    side = 1024                                    # 1024² BGRA U8 = 4 MiB: the smallest payload that moves
    img = rgba_u8(side, side, seed=5)
    req = inpaint_request(img, rect_mask(side, side, 40, 30, side - 20, side - 50), steps=2, seed=8)  # region: all
    assert len(req.image.data) >= bulk.MIN_BYTES
    events = run(loop, engine, req)
    (final,) = finals_of(events)
    assert isinstance(final, Finished), final
    local = run_job(req, models)
    assert [len(refs) for refs in taken] == [1]    # the result's patch came back through a file
    patch = final.result.patches[0]
    assert bytes(patch.image.data) == bytes(local.patches[0].image.data) and patch.x == local.patches[0].x
    leftovers = [n for n in os.listdir(bulk.directory())
                 if bulk.NAME.match(n) and n.split("-")[1] in (str(os.getpid()), str(engine.engine_pid))]
    assert leftovers == []


def mode_request(mode):
    """A small job of each mode, in the editor's BGRA U8 layout."""
    from core.contract.jobs import JobRequest, Options, Params

    image = as_layout(IMG, "BGRA_U8")
    mask = inpaint_request(IMG, MASK).mask
    small = as_layout(IMG[:20, :24], "BGRA_U8")
    return {
        "inpaint": inpaint_request(IMG, MASK, steps=2, seed=3),
        "restyle": JobRequest("restyle", Params(prompt="stone", steps=2, seed=3, strength=0.9), image=image, mask=mask),
        "depth": JobRequest("depth", image=image, mask=mask),
        "upscale": JobRequest("upscale", Params(prompt="sharp", steps=2, seed=5), Options(tile=64), image=small),
        "generate": JobRequest("generate", Params(prompt="a lighthouse", steps=2, seed=9), Options(width=64, height=64),
                               model="sd2-1-base"),
        "fill": JobRequest("fill", options=Options(backend="opencv"), image=image, mask=mask),
        "expand": JobRequest("expand", Params(prompt="a meadow", steps=1, seed=4), Options(expand_right=16),
                             image=small),
        "live": JobRequest("live", Params(prompt="glass", steps=2, seed=4, strength=0.5), image=image, mask=mask),
        "preprocess": JobRequest("preprocess", options=Options(control_type="softedge"), image=image, mask=mask),
    }[mode]


AVAILABLE_MODES = [m for m in MODES if m != "inpaint" and importlib.util.find_spec(f"core.pipelines.{m}")]


@pytest.mark.parametrize("mode", AVAILABLE_MODES)
def test_every_mode_runs_over_the_protocol_exactly_as_in_process(engine, loop, models, mode):
    """The engine dispatches any mode through run_job: a new mode needs no engine change."""
    req = mode_request(mode)
    (final,) = finals_of(run(loop, engine, req))
    assert isinstance(final, Finished), final
    local = run_job(req, models)
    assert [(p.x, p.y, p.seed, p.image.header()) for p in final.result.patches] == \
        [(p.x, p.y, p.seed, p.image.header()) for p in local.patches]
    assert [p.image.data for p in final.result.patches] == [p.image.data for p in local.patches]
    if req.image is not None:
        assert {p.image.format for p in final.result.patches} == {req.image.format}


def test_job_events_come_in_order_with_exactly_one_final(engine, loop):
    events = run(loop, engine, inpaint_request(IMG, MASK, steps=4, seed=1))
    assert isinstance(events[0], Accepted)
    assert isinstance(events[-1], Finished) and len(finals_of(events)) == 1
    denoise = [(e.step, e.total) for e in events if isinstance(e, Progress) and e.phase == "denoising"]
    assert denoise == [(i, 4) for i in range(1, 5)]
    phases = [e.phase for e in events if isinstance(e, Progress)]
    assert phases.index("encoding") < phases.index("denoising") < phases.index("decoding")
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and all(len(p.data) == p.width * p.height * 3 for p in previews)


def test_previews_can_be_turned_off(engine, loop):
    events = run(loop, engine, inpaint_request(IMG, MASK, steps=2, seed=1), previews=False)
    assert not [e for e in events if isinstance(e, Preview)]
    assert isinstance(events[-1], Finished)


def test_bad_parameter_is_refused_naming_it_before_anything_runs(engine, loop):
    events = run(loop, engine, inpaint_request(IMG, MASK, steps=0))
    assert len(events) == 1 and events[0].code == "invalid_parameter" and events[0].parameter == "steps"
    assert "1–512" in events[0].message


def test_missing_model_fails_cleanly_and_the_engine_carries_on(engine, loop, tmp_path):
    req = replace(inpaint_request(IMG, MASK, steps=2), model=str(tmp_path / "no-such-model"))
    events = run(loop, engine, req)
    assert isinstance(events[-1], Failed) and events[-1].code == "model_missing"
    assert "does not exist" in events[-1].message
    assert isinstance(run(loop, engine, inpaint_request(IMG, MASK, steps=2))[-1], Finished)


def test_the_local_engine_takes_a_model_folder_by_its_path(engine, loop, tiny_root, tmp_path):
    """Paths are refused from remote clients only (tests/test_serve_limits.py): the editor's own engine
    loads a model folder it is given, wherever it is."""
    import shutil

    folder = tmp_path / "elsewhere" / "my-inpainting"
    shutil.copytree(tiny_root / "sd2-inpainting", folder)
    events = run(loop, engine, replace(inpaint_request(IMG, MASK, steps=2), model=str(folder)))
    assert isinstance(events[-1], Finished), events[-1]


def test_cancel_the_running_job_within_a_step(engine, loop):
    async def go():
        handle = engine.submit(inpaint_request(IMG, MASK, steps=400, strength=1.0))
        events, cancelled_at = [], None
        async for ev in handle.events():
            events.append(ev)
            if isinstance(ev, Progress) and ev.phase == "denoising" and cancelled_at is None:
                cancelled_at = ev.step
                handle.cancel()
        return events, cancelled_at

    events, at = loop.run(go())
    assert isinstance(events[-1], JobCancelled) and len(finals_of(events)) == 1
    last = max(e.step for e in events if isinstance(e, Progress) and e.phase == "denoising")
    assert last <= at + 2


class FinalFrameSpy:
    """Counts the final frames the engine really sends (before the client's own bookkeeping)."""

    def __init__(self, client):
        self.counts = {}
        self.client = client
        self.original = client._dispatch

    def __enter__(self):
        def spy(link, msg):
            if msg.type in ("result", "cancelled") or (msg.type == "error" and msg.get("job_id")):
                self.counts[msg.get("job_id")] = self.counts.get(msg.get("job_id"), 0) + 1
            return self.original(link, msg)

        self.client._dispatch = spy
        return self

    def __exit__(self, *exc):
        self.client._dispatch = self.original


def test_cancelling_50_queued_jobs_gives_each_exactly_one_final_event(engine, loop):
    async def go():
        blocker = engine.submit(inpaint_request(IMG, MASK, steps=400, strength=1.0, seed=2))
        blocked = asyncio.ensure_future(collect(blocker))
        # Queued behind a running job: each is told its exact place when accepted (later moves as runs of
        # shifts, exact too: core.link.queuemoves).
        while blocker.state != "running":
            await asyncio.sleep(0.01)
        queued = [engine.submit(inpaint_request(IMG, MASK, steps=2, seed=i)) for i in range(50)]
        streams = [blocked, *(asyncio.ensure_future(collect(h)) for h in queued)]
        while any(h.position is None for h in queued):
            await asyncio.sleep(0.01)
        positions = [h.position for h in queued]
        for h in queued:
            h.cancel()
        done = await asyncio.gather(*streams[1:])
        blocker.cancel()
        return positions, await streams[0], done

    with FinalFrameSpy(engine) as spy:
        positions, blocker_events, queued_events = loop.run(go())
    assert positions == list(range(1, 51))
    for events in queued_events:
        assert finals_of(events) == [events[-1]] and isinstance(events[-1], JobCancelled)
        assert not [e for e in events if isinstance(e, Progress)]  # none of them ever started
    assert isinstance(blocker_events[-1], JobCancelled)
    assert len(spy.counts) == 51 and set(spy.counts.values()) == {1}
    assert engine.jobs() == []


def test_queued_jobs_know_their_exact_place_after_jobs_ahead_leave(engine, loop):
    """Issue 24.2: queue updates are moves (core.link.queuemoves), so a job far back knows its exact place
    too (positions that moved enough told a job at 25–40 nothing when 4 jobs ahead left)."""
    async def go():
        blocker = engine.submit(inpaint_request(IMG, MASK, steps=400, strength=1.0, seed=3))
        while blocker.state != "running":
            await asyncio.sleep(0.01)
        queued = [engine.submit(inpaint_request(IMG, MASK, steps=2, seed=i)) for i in range(40)]
        while any(h.position is None for h in queued):
            await asyncio.sleep(0.01)
        told = [h.position for h in queued]
        gone = [queued[0], queued[1], queued[2], queued[20]]
        for h in gone:
            h.cancel()
        await asyncio.gather(*(h.wait() for h in gone))
        left = [h for h in queued if h not in gone]
        deadline = time.monotonic() + 10
        while [h.position for h in left] != list(range(1, 37)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        positions = [h.position for h in left]
        for h in [*left, blocker]:
            h.cancel()
        await asyncio.gather(*(h.wait() for h in [*left, blocker]))
        return told, positions

    told, positions = loop.run(go())
    assert told == list(range(1, 41))
    assert positions == list(range(1, 37))
    assert engine.jobs() == []


def test_cancels_racing_with_running_jobs_never_lose_or_duplicate_a_final(engine, loop):
    rng = random.Random(7)

    async def go():
        handles = [engine.submit(inpaint_request(IMG, MASK, steps=1, strength=1.0, seed=i)) for i in range(16)]
        streams = [asyncio.ensure_future(collect(h)) for h in handles]
        for h in rng.sample(handles, 8):
            await asyncio.sleep(rng.random() * 0.3)
            h.cancel()
        return await asyncio.gather(*streams)

    with FinalFrameSpy(engine) as spy:
        all_events = loop.run(go())
    kinds = []
    for events in all_events:
        finals = finals_of(events)
        assert finals == [events[-1]] and isinstance(finals[0], (Finished, JobCancelled))
        kinds.append(type(finals[0]).__name__)
    assert "Finished" in kinds and "JobCancelled" in kinds
    assert len(spy.counts) == 16 and set(spy.counts.values()) == {1}


def test_stray_output_never_reaches_the_protocol_stream(engine):
    # tests/noisy wrote a banner before the engine started and has been printing ever since;
    # every job above decoded, and the text went where stray text belongs
    wait_for(lambda: any("stray print" in line for line in engine.engine_output()), timeout=30)
    wait_for(lambda: any("stray raw write" in line for line in engine.engine_output()), timeout=30)


def test_model_status_reports_the_load(engine):
    states = [(s.model, s.state) for s in engine.model_status]
    assert ("sd2-inpainting", "loading") in states and ("sd2-inpainting", "loaded") in states


def test_engine_logs_to_its_file_in_the_log_folder(engine, loop, isolated_app_dirs, tmp_path):
    log = isolated_app_dirs / "logs" / "engine.log"
    assert engine.engine_info["log"] == str(log)
    req = replace(inpaint_request(IMG, MASK, steps=2), model=str(tmp_path / "missing"))
    assert run(loop, engine, req)[-1].code == "model_missing"
    wait_for(lambda: "model_missing" in log.read_text(), timeout=10)
    text = log.read_text()
    assert f"engine {engine.engine_pid} starting on stdio" in text and "stdio: hello" in text
    assert "stray" not in text  # library chatter is not the log's business either


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_stdio_engine_has_no_listening_socket(engine):
    pid = engine.engine_pid
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if table.startswith("udp") or cols[3] == "0A":  # 0A = LISTEN; any UDP socket is open for input
                listening.add(cols[9])
    for line in open(f"/proc/{pid}/net/unix").read().splitlines()[1:]:
        cols = line.split()
        if int(cols[3], 16) & 0x10000:  # __SO_ACCEPTCON: a listening unix socket
            listening.add(cols[6])
    assert not inodes & listening


def test_the_engine_exits_when_its_stdin_closes():
    raw = RawEngine()
    assert raw.hello().type == "hello"
    t0 = time.monotonic()
    assert raw.close(timeout=20) == 0
    assert time.monotonic() - t0 < 20
    assert b"Traceback" not in raw.stderr


def test_a_patch_outside_the_selection_leaves_pixels_bit_identical_in_every_layout(engine, loop):
    from core.pipelines import regionjob

    for fmt, linear in (("BGRA_U16", False), ("RGBA_F16", True)):
        req = replace(inpaint_request(IMG, MASK, steps=2, seed=4), image=as_layout(IMG, fmt, linear))
        (final,) = finals_of(run(loop, engine, req))
        patch = final.result.patches[0]
        assert (patch.image.format, patch.image.linear) == (fmt, linear)
        comp = regionjob.composite(req, patch)
        original = pixels.as_array(req.image)
        outside = MASK[..., 0] == 0
        assert np.array_equal(comp[outside], original[outside])

