"""The client under qasync's Qt event loop, as the dock will run it: a real engine process, a job's
events, and a cancel coming from a Qt timer callback."""

import asyncio

import pytest

from core.client import EngineClient
from core.events import Finished, JobCancelled, Preview, Progress

from .engine_helpers import ROOT, engine_env
from .helpers import inpaint_request, rect_mask, rgba_u8

qasync = pytest.importorskip("qasync")


def test_client_under_qasync_runs_and_cancels_jobs(qapp, tiny_root):
    from PyQt6.QtCore import QTimer

    loop = qasync.QEventLoop(qapp)
    statuses = []
    img, mask = rgba_u8(48, 64, seed=4), rect_mask(48, 64, 10, 10, 40, 30)

    async def go():
        assert isinstance(asyncio.get_running_loop(), qasync.QEventLoop)
        client = EngineClient(cwd=ROOT, env=engine_env(tiny_root), on_status=lambda s: statuses.append(s.state))
        long = client.submit(inpaint_request(img, mask, steps=300, seed=1))
        seen = []
        async for ev in long.events():
            seen.append(ev)
            if isinstance(ev, Progress) and ev.phase == "denoising" and ev.step == 1:
                QTimer.singleShot(0, long.cancel)  # the dock's Cancel button, from a Qt slot
        short = await client.submit(inpaint_request(img, mask, steps=2, seed=2)).wait()
        await client.stop()
        return seen, short

    try:
        seen, short = loop.run_until_complete(go())
    finally:
        loop.close()
    assert isinstance(seen[-1], JobCancelled)
    assert any(isinstance(e, Preview) for e in seen)
    assert isinstance(short, Finished) and short.result.patches[0].image.format == "RGBA_U8"
    assert statuses == ["starting", "ready", "stopped"]
