"""Benchmark of the engine process and its client: start-up, job round trips, pixel upload, crash detection.

    .venv/bin/python scripts/bench_engine.py [--models DIR] [--repeat N]

Without ``--models`` it builds the tiny test models in a temporary folder (the numbers then measure
the machinery, not diffusion).  Prints a Markdown table; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.contract.events import Progress  # noqa: E402
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params  # noqa: E402
from core.link.client import EngineClient  # noqa: E402


def request(w=80, h=64, steps=3, model=None, fmt="BGRA_U8"):
    import numpy as np

    from core.raster.pixels import convert_buffer

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    img[..., 3] = 255
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    image = convert_buffer(ImageBuffer(w, h, "BGRA_U8", img.tobytes()), fmt, fmt == "RGBA_F32")
    return JobRequest("inpaint", Params(prompt="a red ball", steps=steps, seed=1, strength=1.0), Options(),
                      model=model, image=image, mask=ImageBuffer(w, h, "GRAY_U8", mask.tobytes()))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def start_times(env, repeat):
    ready, caps = [], []
    for _ in range(repeat):
        got = asyncio.Event()
        client = EngineClient(cwd=ROOT, env=env, on_capabilities=lambda c, got=got: got.set())
        t0 = time.perf_counter()
        await client.start()
        ready.append(time.perf_counter() - t0)
        await got.wait()
        caps.append(time.perf_counter() - t0)
        await client.stop()
    return ready, caps


async def job_times(env, repeat):
    client = EngineClient(cwd=ROOT, env=env)
    t0 = time.perf_counter()
    first = await client.submit(request()).wait()
    cold = time.perf_counter() - t0
    assert type(first).__name__ == "Finished", first
    warm, overhead = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        final = await client.submit(request()).wait()
        warm.append(time.perf_counter() - t0)
        overhead.append(warm[-1] - final.result.timings["seconds"])
    uploads = {}
    for side in (64, 64, 2048):
        req = request(side, side, model="/nonexistent", fmt="RGBA_F32")
        t0 = time.perf_counter()
        final = await client.submit(req).wait()
        uploads[side] = time.perf_counter() - t0
        assert final.code == "model_missing", final
    await client.stop()
    return cold, warm, overhead, uploads


def in_process_times(models_dir, repeat):
    from core.models.manager import ModelManager
    from core.pipelines import run_job

    m = ModelManager(models_dir=models_dir)
    run_job(request(), m)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run_job(request(), m)
        out.append(time.perf_counter() - t0)
    return out


async def kill_latency(env, repeat):
    out = []
    client = EngineClient(cwd=ROOT, env=env)
    for _ in range(repeat):
        handle = client.submit(request(steps=500))
        async for ev in handle.events():
            if isinstance(ev, Progress) and ev.phase == "denoising":
                os.kill(client.engine_pid, signal.SIGKILL)
                t0 = time.perf_counter()
                break
        final = await handle.wait()
        out.append(time.perf_counter() - t0)
        assert final.code == "engine_died", final
    await client.stop()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models folder (default: build the tiny models)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    tmp = None
    models = args.models
    if models is None:
        from core.devtools.tiny_models import build_all

        tmp = tempfile.TemporaryDirectory(prefix="dd-bench-")
        models = Path(tmp.name) / "models"
        print("building tiny models ...", file=sys.stderr)
        build_all(models)
    logs = tempfile.mkdtemp(prefix="dd-bench-logs-")
    env = {"DD_MODELS_DIR": str(models), "DD_LOG_DIR": logs}
    os.environ.update(env)
    ready, caps = asyncio.run(start_times(env, args.repeat))
    cold, warm, overhead, uploads = asyncio.run(job_times(env, args.repeat))
    local = in_process_times(models, args.repeat)
    kills = asyncio.run(kill_latency(env, max(2, args.repeat // 2)))
    med = statistics.median
    upload_mb = 2048 * 2048 * 16 / 1e6
    rows = [
        ("engine start → ready (hello answered)", f"{ms(med(ready))} (min {ms(min(ready))}, max {ms(max(ready))})"),
        ("engine start → capabilities (torch imported, device probed, models listed)", ms(med(caps))),
        ("first job, cold engine (libraries + model load + job)", ms(cold)),
        ("tiny inpaint job (80×64, 3 steps) over the protocol, warm", ms(med(warm))),
        ("same job in-process", ms(med(local))),
        ("client-observed time minus the engine's own job time", f"{med(overhead) * 1000:.1f} ms"),
        ("round trip of a refused request (submit → Failed, 64² RGBA F32)", ms(uploads[64])),
        (f"2048² RGBA F32 request ({upload_mb:.0f} MB) to the engine and back", f"{ms(uploads[2048])} "
         f"({upload_mb / max(uploads[2048] - uploads[64], 1e-9):.0f} MB/s)"),
        ("kill -9 → Failed(engine_died) event", f"{ms(med(kills))} (max {ms(max(kills))}, n={len(kills)})"),
    ]
    print(f"\n| measure ({sys.platform}, {os.cpu_count()} CPUs, models: {'tiny' if tmp else models}) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
