"""Benchmark of the cluster gateway (issue 20) on a local Ray cluster on 127.0.0.1, with the tiny models.

    .venv/bin/python scripts/bench_cluster.py [--jobs 16] [--latency-jobs 8] [--steps 8]

Rows: the time of one tiny job through a plain ``serve`` and through the gateway (one replica), the
difference being the gateway's added latency; the throughput of a batch of tiny jobs with 1 and with 2
replicas, and their ratio; model multiplexing: jobs alternating between two models on two replicas that
hold one model each, counted as hits (the replica held the job's model) and misses (it had to load it).
Every process gets one CPU thread (``OMP_NUM_THREADS=1``), as a replica does.  Prints a Markdown table
and the machine's load; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cluster.tokens import TokenStore  # noqa: E402
from core.contract.events import Finished, Progress  # noqa: E402
from core.contract.jobs import JobRequest, Options, Params  # noqa: E402
from core.link.client import EngineClient  # noqa: E402
from tests.cluster_support import Gateway, RayHead, cluster_yaml  # noqa: E402
from tests.helpers import inpaint_request, rect_mask, rgba_u8  # noqa: E402

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def job(seed: int, steps: int) -> JobRequest:
    return inpaint_request(rgba_u8(48, 64, seed=seed), rect_mask(48, 64, 10, 10, 40, 30), steps=steps, seed=seed)


def fill_job(seed: int, size: int) -> JobRequest:
    """Fill (OpenCV) of a 64 px square: next to no work, so its time is the way there and back."""
    c = size // 2
    req = inpaint_request(rgba_u8(size, size, seed=seed), rect_mask(size, size, c - 32, c - 32, c + 32, c + 32),
                          options=Options(backend="opencv"))
    return dataclasses.replace(req, mode="fill")


def other_model_job(seed: int) -> JobRequest:
    return JobRequest("generate", Params(prompt="a lighthouse", steps=2, seed=seed), Options(width=64, height=64),
                      model="sd2-1-base")


async def run_one(client: EngineClient, req: JobRequest, job_id: str, spans: list | None = None) -> float:
    """Seconds from submit to the result; ``spans`` gets (first step, end) of the job's run on an engine."""
    t0 = time.perf_counter()
    handle = client.submit(req, job_id=job_id)
    first = None
    async for ev in handle.events():
        if first is None and isinstance(ev, Progress) and ev.phase == "denoising":
            first = time.perf_counter()
    end = time.perf_counter()
    if not isinstance(handle.final, Finished):
        raise RuntimeError(f"job {job_id} ended {handle.final}")
    if spans is not None and first is not None:
        spans.append((first, end))
    return end - t0


async def paired(plain: EngineClient, gateway: EngineClient, n: int, make) -> tuple[list, list]:
    """The same jobs through a plain ``serve`` and the gateway, alternately (the machine's load drifts)."""
    tag = str(time.monotonic_ns())
    await run_one(plain, make(0), f"pw{tag}")
    await run_one(gateway, make(0), f"gw{tag}")
    a, b = [], []
    for i in range(n):
        a.append(await run_one(plain, make(i), f"p{i}-{tag}"))
        b.append(await run_one(gateway, make(i), f"g{i}-{tag}"))
    return a, b


async def latency_rows(plain: EngineClient, gateway: EngineClient, n: int, steps: int) -> dict:
    return {"inpaint": await paired(plain, gateway, n, lambda i: job(i, steps)),
            "fill64": await paired(plain, gateway, n, lambda i: fill_job(i, 64)),
            "fill2048": await paired(plain, gateway, n, lambda i: fill_job(i, 2048))}


async def throughput(client: EngineClient, n: int, steps: int, tag: str) -> tuple[float, float]:
    """(jobs per second, jobs denoising at once on average) for ``n`` jobs submitted together."""
    spans: list = []
    t0 = time.perf_counter()
    await asyncio.gather(*(run_one(client, job(i, steps), f"{tag}-{i}", spans) for i in range(n)))
    wall = time.perf_counter() - t0
    return n / wall, sum(e - s for s, e in spans) / wall


async def with_client(url: str, token: str, cafile, fn):
    client = EngineClient(url=url, token=token, cafile=cafile, heartbeat_interval=0.2)
    await client.start()
    try:
        return await fn(client)
    finally:
        await client.stop()


def plain_serve(env: dict):
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--listen", "127.0.0.1:0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, lines[0].split("serving on ")[1].strip(), lines[1].split("token: ")[1].strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=16, help="jobs in each throughput batch")
    ap.add_argument("--latency-jobs", type=int, default=8, help="jobs one after the other for the latency rows")
    ap.add_argument("--steps", type=int, default=8, help="denoising steps per tiny job")
    args = ap.parse_args(argv)
    from core.devtools.tiny_models import build_all

    work = Path(tempfile.mkdtemp(prefix="dd-bench-cluster-"))
    tiny = work / "models"
    build_all(tiny)
    env = {**os.environ, **THREADS, "DD_MODELS_DIR": str(tiny), "DD_CONFIG_DIR": str(work / "config"),
           "DD_LOG_DIR": str(work / "logs"), "PYTHONPATH": str(ROOT)}
    load_start = os.getloadavg()
    rows = []
    store = TokenStore(work / "tokens.json")
    admin = store.add("bench", admin=True)
    proc, url, token = plain_serve(env)
    head = RayHead(num_cpus=4, env=THREADS)
    found: dict = {}
    try:
        head.wait_ready()
        for replicas in (1, 2):
            cfg = cluster_yaml(work / f"cluster{replicas}.yaml", tiny, replicas=replicas, max_models=1,
                               max_queued=args.jobs + 2, app="bench", extra_env=THREADS)
            t0 = time.perf_counter()
            gw = Gateway(head.address, cfg, work / "tokens.json", env=env)
            found[f"start{replicas}"] = time.perf_counter() - t0
            try:
                if replicas == 1:
                    found["latency"] = asyncio.run(with_client(
                        url, token, None, lambda p, u=gw.url: with_client(
                            u, admin, None, lambda g: latency_rows(p, g, args.latency_jobs, args.steps))))
                asyncio.run(with_client(gw.url, admin, None,
                                        lambda c, r=replicas: throughput(c, 2, args.steps, f"w{r}")))
                found[f"tp{replicas}"] = asyncio.run(with_client(
                    gw.url, admin, None, lambda c, r=replicas: throughput(c, args.jobs, args.steps, f"t{r}")))
                if replicas == 2:
                    found["routing"] = asyncio.run(with_client(gw.url, admin, None, multiplexing))
            finally:
                gw.stop()
    finally:
        head.stop()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    what = {"inpaint": f"tiny inpaint, {args.steps} steps, 64×48", "fill64": "Fill (OpenCV), 64×48 layer",
            "fill2048": "Fill (OpenCV), 2048² layer (16 MiB in)"}
    for key, (plain, gateway) in found["latency"].items():
        diff = statistics.median(g - p for p, g in zip(plain, gateway))
        rows.append((f"{what[key]}: plain `serve` / gateway + 1 replica (medians of {len(plain)}, alternating)",
                     f"{statistics.median(plain) * 1000:.0f} ms / {statistics.median(gateway) * 1000:.0f} ms; "
                     f"added by the gateway **{diff * 1000:+.0f} ms**"))
    (tp1, par1), (tp2, par2) = found["tp1"], found["tp2"]
    rows.append((f"throughput, {args.jobs} jobs at once, 1 replica", f"{tp1 * 60:.1f} jobs/min "
                                                                      f"({par1:.2f} jobs denoising at once)"))
    rows.append((f"throughput, {args.jobs} jobs at once, 2 replicas", f"{tp2 * 60:.1f} jobs/min "
                                                                       f"({par2:.2f} jobs denoising at once)"))
    rows.append(("throughput ratio 2 : 1 replicas", f"**{tp2 / tp1:.2f}×**"))
    r = found["routing"]
    rows.append((f"multiplexing: {r['jobs']} jobs alternating 2 models, 2 replicas of 1 model each",
                 f"**{r['hits']} hits, {r['misses']} misses** (missed: {', '.join(r['missed']) or 'none'}, "
                 f"of m0..m{r['jobs'] - 1}); models on replicas: {r['models']}"))
    rows.append(("torch threads in each replica", ", ".join(str(t) for t in r["threads"])))
    rows.append(("gateway start (deploy, replicas load their model): 1 / 2 replicas",
                 f"{found['start1']:.0f} s / {found['start2']:.0f} s"))
    print(f"\nCluster benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{args.steps} steps per 64×48 tiny inpaint; load average {tuple(round(x, 2) for x in load_start)} at the "
          f"start, {tuple(round(x, 2) for x in os.getloadavg())} at the end\n")
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


async def multiplexing(client: EngineClient) -> dict:
    """Jobs alternating between two models; the admin's view counts where each found its model."""
    async def view():
        for _ in range(100):
            if client.cluster and "routing" in client.cluster:
                return client.cluster
            await asyncio.sleep(0.1)
        raise RuntimeError("no cluster view from the gateway")

    before = dict((await view())["routing"])
    n = 8
    for i in range(n):
        await run_one(client, other_model_job(i) if i % 2 == 0 else job(i, 2), f"m{i}")
    await asyncio.sleep(0.5)
    after = (await view())
    misses = after["routing"]["misses"] - before["misses"]
    missed = [job_id for _, job_id in after.get("missed", ())]      # the recent misses, oldest first
    return {"jobs": n, "hits": after["routing"]["hits"] - before["hits"], "misses": misses,
            "models": after["models"], "missed": missed[len(missed) - misses:] if misses else [],
            "threads": [r.get("threads") for r in after.get("replica_list", ())]}


if __name__ == "__main__":
    sys.exit(main())
