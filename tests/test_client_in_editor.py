"""The client as the editor runs it: under qasync's Qt event loop (a job's events, a cancel from a Qt
timer callback), and from the editor's own Python with nothing but the standard library."""

import asyncio

import pytest

from core.contract.events import Finished, JobCancelled, Preview, Progress
from core.link.client import EngineClient

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


EDITOR_SIDE = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from core.link.client import EngineClient
from core.contract.jobs import ImageBuffer, JobRequest, Params

w, h = 32, 24
img = ImageBuffer(w, h, "BGRA_U8", bytes((x * 7) % 256 for x in range(w * h * 4)))
mask = ImageBuffer(w, h, "GRAY_U8", bytes(255 if 8 <= i % w < 24 else 0 for i in range(w * h)))

async def main():
    async with EngineClient(python=sys.argv[2], cwd=sys.argv[1], env={"DD_MODELS_DIR": sys.argv[3]}) as client:
        final = await client.submit(JobRequest("inpaint", Params(prompt="x", steps=2, seed=1), image=img,
                                               mask=mask)).wait()
    heavy = [m for m in ("numpy", "torch", "PIL", "diffusers") if m in sys.modules]
    patch = final.result.patches[0]
    print(type(final).__name__, patch.image.format, patch.image.width * patch.image.height, heavy)

asyncio.run(main())
"""


def test_the_editor_s_own_python_drives_the_engine_with_the_standard_library_only(tiny_root, tmp_path):
    """Krita's Python (Debian's /usr/bin/python3 here) has no numpy or torch and may differ from the
    engine's: with -S (no site-packages at all) it starts the engine's Python and gets a patch back."""
    import os
    import subprocess
    import sys

    editor_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    script = tmp_path / "editor_side.py"
    script.write_text(EDITOR_SIDE)
    out = subprocess.run([editor_python, "-S", "-E", str(script), str(ROOT), sys.executable, str(tiny_root)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Finished", "BGRA_U8", str(32 * 24), "[]"]
