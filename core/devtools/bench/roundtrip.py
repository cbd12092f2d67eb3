"""Row 5: the editor round trip of a whole layer, model excluded, and the dock's event-loop stalls.

A 4096² layer (BGRA U8, and RGBA F32 in linear light) goes through a whole-layer inpaint (an elliptic
selection whose box is the whole layer, so the region is the layer): the client encodes it, the pipe
carries it to a real engine process, the engine decodes and validates it, converts it to its working
format, runs the job, composites the result into a patch in the layer's own format and sends it back,
and the client decodes it.  The model is excluded: the engine reports the time it spent inside the
diffusion call (``timings["model_seconds"]``), which is subtracted; with the tiny models it is small
anyway.  The client runs under qasync's Qt event loop, as in the dock, with a 5 ms QTimer heartbeat:
its worst lateness is the largest event-loop stall during the job.

The same stages are also timed one by one in this process, to show where the time goes.
"""

from __future__ import annotations

import io
import os
import tempfile

from ...link import bulk
from .common import Row, ellipse_mask, fmt_s, inpaint_request, now
from .profiles import Profile

FORMATS = (("BGRA_U8", False), ("RGBA_F32", True))
GOALS = {"BGRA_U8": 0.300, "RGBA_F32": 1.0}
STALL_GOAL = 0.050
HEARTBEAT_MS = 5


def layer_request(side: int, fmt: str, linear: bool, steps: int = 1):
    return inpaint_request(side, side, ellipse_mask(side, side), steps=steps, fmt=fmt, linear=linear, seed=3)


class StallMeter:
    """A Qt timer that should fire every ``interval_ms``; how late it fires is how long the event loop
    was blocked.  (The dock's own stall meter measures the same way.)"""

    def __init__(self, interval_ms: int = HEARTBEAT_MS):
        from PyQt6.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.worst = 0.0
        self.ticks = 0
        self._last = None
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        t = now()
        if self._last is not None:
            self.worst = max(self.worst, t - self._last - self.interval)
        self._last = t
        self.ticks += 1

    def start(self):
        self._last = None
        self.worst = 0.0
        self.ticks = 0
        self._timer.start()

    def stop(self):
        self._timer.stop()


def through_engine(side: int, repeats: int, tiny_root, log) -> dict:
    """Round trips through a real engine process under qasync, with the stall meter running."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import asyncio

    import qasync
    from PyQt6.QtCore import QCoreApplication

    from ...contract.events import Finished
    from ...link.client import EngineClient
    from .child import ROOT

    app = QCoreApplication.instance() or QCoreApplication([])
    loop = qasync.QEventLoop(app)
    logs = tempfile.mkdtemp(prefix="dd-bench-logs-")
    env = {"DD_MODELS_DIR": str(tiny_root), "DD_LOG_DIR": logs}
    out: dict = {}

    async def go():
        meter = StallMeter()
        async with EngineClient(cwd=ROOT, env=env) as client:
            warm = await client.submit(layer_request(64, "BGRA_U8", False)).wait()  # libraries and model loaded
            assert isinstance(warm, Finished), warm
            for fmt, linear in FORMATS:
                req = layer_request(side, fmt, linear)
                runs = []
                for _ in range(max(1, repeats)):
                    await asyncio.sleep(0.05)
                    meter.start()
                    t = now()
                    final = await client.submit(req, previews=True).wait()
                    total = now() - t
                    meter.stop()
                    if not isinstance(final, Finished):
                        raise RuntimeError(f"round trip failed: {final}")
                    model = float(final.result.timings.get("model_seconds", 0.0))
                    patch = final.result.patches[0].image
                    assert (patch.width, patch.height, patch.format) == (side, side, fmt)
                    runs.append({"total_s": total, "model_s": model, "roundtrip_s": total - model,
                                 "stall_s": meter.worst, "ticks": meter.ticks})
                    log(f"row 5: {fmt}{' linear' if linear else ''} {side}²: {fmt_s(total - model)} without the "
                        f"model ({fmt_s(model)}), worst stall {meter.worst * 1000:.1f} ms")
                out[fmt] = runs
        return out

    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()


def stages(side: int, fmt: str, linear: bool, models) -> dict:
    """The round trip's stages timed one by one in this process (the model call replaced by its input),
    the way the engine's stdio channel carries them: through shared-memory files when this machine has
    them (``core.link.bulk``), else through the pipe (each frame is joined into one buffer here)."""
    from ...contract.jobs import JobResult, validate
    from ...contract.plan import plan_region_job
    from ...engine.service import in_request_layout
    from ...link import protocol as P
    from ...pipelines import regionjob
    from ...raster.pixels import results_in

    where = bulk.directory()
    names: set = set()
    req = layer_request(side, fmt, linear)
    t = {}
    a = now()
    msg = P.submit("bench", req)
    msg = bulk.offload_or_pipe(msg, where, names)
    frame = b"".join(bytes(c) for c in P.encode(msg))  # stands in for the pipe
    t["client: encode request"] = now() - a
    a = now()
    msg = P.read_message(io.BytesIO(frame).read)
    msg = bulk.restore(msg, where, mapped=True)
    got = validate(P.request_of(msg))
    t["engine: read and validate request"] = now() - a
    del frame
    a = now()
    plan = plan_region_job(got, regionjob.selection_bbox(got), 512, 1)
    work = regionjob.prepare(got, plan)
    t["engine: crop, convert, scale for the model"] = now() - a
    a = now()
    made = None if not where else (lambda shape, dtype: bulk.shared_array(where, shape, dtype, names))
    with results_in(made):
        patches = regionjob.finish(got, work, [work.model_rgb], plan.seeds, keep_layer_alpha=False)
    t["engine: scale back, feather, colour match, patch"] = now() - a
    res = JobResult("inpaint", tuple(patches), "bench", got.params, got.options)
    a = now()
    res = in_request_layout(got, res)
    msg = P.result("bench", res)
    msg = bulk.offload_or_pipe(msg, where, names)
    out = b"".join(bytes(c) for c in P.encode(msg))
    t["engine: result in the layer's layout, encode"] = now() - a
    a = now()
    msg = P.read_message(io.BytesIO(out).read)
    msg = bulk.restore(msg, where, mapped=True)
    back = P.event_of(msg)
    t["client: decode result"] = now() - a
    assert back.result.patches[0].image.format == fmt
    bulk.discard(where, names)
    return t


def transfer_rate(nbytes: int = 256 << 20) -> float:
    """Bytes/s of a plain OS pipe between two processes on this machine (the transport's ceiling)."""
    import subprocess
    import sys

    code = ("import os,sys,time\nn=int(sys.argv[1]);b=bytearray(1<<20);got=0\n"
            "while got<n:\n r=sys.stdin.buffer.readinto(b)\n if not r: break\n got+=r\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(nbytes)], stdin=subprocess.PIPE)
    chunk = b"\0" * (1 << 20)
    t = now()
    for _ in range(nbytes >> 20):
        p.stdin.write(chunk)
    p.stdin.close()
    p.wait()
    return nbytes / (now() - t)


def run(profile: Profile, tiny_root, models, log) -> Row:
    side = profile.layer
    e2e = through_engine(side, profile.layer_repeats, tiny_root, log)
    best = {fmt: min(e2e[fmt], key=lambda r: r["roundtrip_s"]) for fmt, _ in FORMATS}
    stall = max(r["stall_s"] for runs in e2e.values() for r in runs)
    breakdown = {f"{fmt}{' linear' if lin else ''}": stages(side, fmt, lin, models) for fmt, lin in FORMATS}
    ok = all(best[f]["roundtrip_s"] <= GOALS[f] for f in GOALS) and stall < STALL_GOAL
    u8, f32 = best["BGRA_U8"]["roundtrip_s"], best["RGBA_F32"]["roundtrip_s"]
    row = Row(5, f"The editor round trip is cheap ({side}² layer, model excluded)",
              f"U8 **{fmt_s(u8)}**, F32 linear **{fmt_s(f32)}**; worst dock event-loop stall "
              f"**{stall * 1000:.1f} ms**", "U8 ≤ 300 ms, F32 ≤ 1 s; stall < 50 ms", ok,
              {"side": side, "through_engine": e2e, "best": best, "worst_stall_s": stall, "stages": breakdown,
               "pipe_bytes_per_s": transfer_rate(64 << 20 if profile.tiny else 256 << 20)})
    row.notes.append("through a real engine process (tiny models; the engine's time inside the diffusion call is "
                     "subtracted) driven by the real client under qasync; stall = worst lateness of a 5 ms QTimer; "
                     + ("large payloads through shared memory (core.link.bulk)" if bulk.directory() else "through the pipe"))
    for name, parts in breakdown.items():
        row.notes.append(f"{name} stages in-process: " + ", ".join(f"{k} {fmt_s(v)}" for k, v in parts.items()))
    return row
