"""The compiled UNet as the artist meets it (issue 22.2): a real engine process with compilation on (its
default), full-size SD2 inpainting with random weights, a 512² inpaint of a few steps:

1. the first job on a cold inductor cache (runs eagerly; the shape compiles once the engine is idle);
2. the second job, once the engine said *compiled*;
3. after a restart of the engine with the same (now warm) inductor cache: the first job, then the time
   until *compiled* (read from the cache), then the second job;
4. the baseline: an engine with compilation off, its first and second job (the second job of each
   engine also finds the model loaded and the same prompt and pixels in the job caches).

    .venv/bin/python scripts/bench_first_jobs.py [--models DIR] [--steps 4] [--size 512] [--sessions cold,warm,off]

``--models``: a models folder holding ``sd2-inpainting`` (``python -m core.bench`` builds one with random
weights in its cache folder).  Prints a Markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def engine_session(env: dict, req, jobs: int, wait_compiled: float, log) -> dict:
    """Start an engine, run ``jobs`` jobs one after another; before each job after the first, wait (up to
    ``wait_compiled`` s) for the UNet's shape to be compiled.  Returns the timings."""
    from core.contract.events import FINAL_EVENTS, Finished
    from core.link.client import EngineClient

    states: list[tuple[float, str, str]] = []
    t_start = time.perf_counter()
    client = EngineClient(cwd=ROOT, env=env,
                          on_model_status=lambda s: states.append((time.perf_counter() - t_start, s.state, s.message)))
    await client.start()
    out: dict = {"ready_s": time.perf_counter() - t_start, "jobs_s": [], "states": states}
    for i in range(jobs):
        if i:
            t = time.perf_counter()
            while not any(s == "compiled" for _, s, _ in states) and time.perf_counter() - t < wait_compiled:
                if any(s in ("compile_failed", "compile_skipped") for _, s, _ in states):
                    break
                await asyncio.sleep(0.2)
            out["waited_for_compiled_s"] = time.perf_counter() - t
        t = time.perf_counter()
        handle = client.submit(req, previews=False)
        final = None
        async for ev in handle.events():
            if isinstance(ev, FINAL_EVENTS):
                final = ev
                break
        seconds = time.perf_counter() - t
        if not isinstance(final, Finished):
            raise SystemExit(f"job {i + 1} did not finish: {final}")
        out["jobs_s"].append(seconds)
        log(f"job {i + 1}: {seconds:.1f} s; model states so far: {[s for _, s, _ in states]}")
    compiled = [(t, m) for t, s, m in states if s == "compiled"]
    out["compiled_at_s"] = compiled[0][0] if compiled else None
    out["compiled_message"] = compiled[0][1] if compiled else ""
    await client.stop()
    return out


def main(argv=None) -> int:
    from core.devtools.bench.common import ellipse_mask, inpaint_request

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "dd-samplers" / "bench-sd2")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait for 'compiled' at most")
    ap.add_argument("--sessions", default="cold,warm,off",
                    help="which engines to run, in this order: cold, warm (needs cold before it), off")
    args = ap.parse_args(argv)
    if not (args.models / "sd2-inpainting").is_dir():
        raise SystemExit(f"--models: {args.models} holds no sd2-inpainting folder (python -m core.bench builds one)")

    def log(text):
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="dd-first-jobs-"))
    env = {**os.environ, "DD_MODELS_DIR": str(args.models), "DD_LOG_DIR": str(work / "logs"),
           "DD_CACHE_DIR": str(work / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"), "DD_COMPILE": "1"}
    req = inpaint_request(args.size, args.size, ellipse_mask(args.size, args.size), steps=args.steps, seed=4)
    sessions = [s.strip() for s in args.sessions.split(",") if s.strip()]
    if not sessions or set(sessions) - {"cold", "warm", "off"} or ("warm" in sessions and "cold" not in sessions):
        raise SystemExit(f"--sessions: expected some of cold, warm, off (warm after cold), got {args.sessions!r}")
    load = os.getloadavg()
    runs = []
    for name in sessions:
        if name == "cold":
            log(f"cold inductor cache at {work / 'inductor'}")
            runs.append(("cold inductor cache", asyncio.run(engine_session(env, req, 2, args.wait, log))))
        elif name == "warm":
            log("restart with the same inductor cache")
            runs.append(("restarted, warm cache", asyncio.run(engine_session(env, req, 2, args.wait, log))))
        else:
            log("an engine with compilation off")
            runs.append(("compilation off", asyncio.run(engine_session({**env, "DD_COMPILE": "0"}, req, 2, 0, log))))
    print(f"\n{args.size}² inpaint, {args.steps} steps, guidance 7.5, the sd2-inpainting of {args.models}; "
          f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| engine | first job | compiled after (from start) | second job |")
    print("|---|---|---|---|")
    for name, s in runs:
        at = f"{s['compiled_at_s']:.1f} s ({s['compiled_message']})" if s["compiled_at_s"] is not None else "not compiled"
        print(f"| {name} | {s['jobs_s'][0]:.1f} s | {at} | {s['jobs_s'][1]:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
