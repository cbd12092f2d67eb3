"""Row 7: cold start.  Engine start → ready (its hello answered; ``scripts/bench_engine.py``'s
measurement), and submit → first denoising step of a 512 inpaint on a fresh engine with the model's
files in the page cache (the engine's own import, load, encode and first step)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import tempfile
from pathlib import Path

from .common import Row, ellipse_mask, fmt_s, inpaint_request, now
from .profiles import Profile

GOAL_READY = 2.0


def bench_engine():
    """``scripts/bench_engine.py`` as a module (its start-up measurement is reused, not copied)."""
    from .child import ROOT

    spec = importlib.util.spec_from_file_location("dd_bench_engine", ROOT / "scripts" / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warm_page_cache(folder: Path) -> int:
    """Read every file of a model folder once (so the kernel has it cached); returns bytes read."""
    total = 0
    buf = bytearray(8 << 20)
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    total += n
    return total


async def first_step(env: dict, req) -> dict:
    from ...contract.events import FINAL_EVENTS, Progress
    from ...link.client import EngineClient
    from .child import ROOT

    client = EngineClient(cwd=ROOT, env=env)
    t0 = now()
    await client.start()
    ready = now() - t0
    handle = client.submit(req, previews=False)
    t = now()
    phases: dict[str, float] = {}
    first = None
    async for ev in handle.events():
        if isinstance(ev, Progress):
            phases.setdefault(ev.phase, now() - t)
            if ev.phase == "denoising" and ev.step >= 1:
                first = now() - t
                handle.cancel()
        elif isinstance(ev, FINAL_EVENTS):
            break
    await client.stop()
    if first is None:
        raise RuntimeError(f"the job never reached its first step: {handle.final}")
    return {"ready_s": ready, "first_step_s": first, "phases_s": phases}


def run(profile: Profile, models_dir: Path, log) -> Row:
    logs = tempfile.mkdtemp(prefix="dd-bench-logs-")
    env = {"DD_MODELS_DIR": str(models_dir), "DD_LOG_DIR": logs}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ready, caps = asyncio.run(bench_engine().start_times(env, profile.start_repeats))
        cached = warm_page_cache(Path(models_dir) / "sd2-inpainting")
        size = profile.size
        req = inpaint_request(size, size, ellipse_mask(size, size), steps=20, seed=4)
        cold = asyncio.run(first_step(env, req))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    med = statistics.median(ready)
    log(f"row 7: ready {fmt_s(med)} (median of {len(ready)}), capabilities {fmt_s(statistics.median(caps))}, "
        f"submit → first step {fmt_s(cold['first_step_s'])}")
    row = Row(7, "Cold start", f"start → ready **{fmt_s(med)}**; submit → first denoising step "
                               f"{fmt_s(cold['first_step_s'])} ({size}² inpaint, model files in the page cache)",
              "ready ≤ 2 s; first step reported", med <= GOAL_READY,
              {"ready_s": ready, "capabilities_s": caps, "first_step": cold, "page_cache_bytes": cached})
    ph = cold["phases_s"]
    row.notes.append("after submit: " + ", ".join(f"{k} at {fmt_s(v)}" for k, v in ph.items())
                     + f", first step done at {fmt_s(cold['first_step_s'])}; start → capabilities "
                       f"(torch imported, models listed) {fmt_s(statistics.median(caps))}")
    return row
