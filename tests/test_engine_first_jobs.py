"""The first jobs of a fresh engine: jobs of every kind submitted the moment the engine starts, while
its warm-up imports the heavy libraries in the background, all finish (diffusers' lazy imports are
not thread-safe: the engine imports them under one lock, before its first job runs).

Several fresh engine processes with the tiny models; ``DD_TEST_LONG=1`` starts more of them."""

import asyncio

from core.contract.events import Finished
from core.link.client import EngineClient

from .engine_helpers import LONG, ROOT, engine_env
from .test_engine import mode_request

ENGINES = 12 if LONG else 2
AT_ONCE = 2
KINDS = ("generate", "inpaint", "depth", "upscale", "restyle", "generate", "inpaint", "fill") if LONG \
    else ("generate", "inpaint", "depth", "fill")
IMPORT_FAILURES = ("Failed to import", "cannot import name", "warm-up failed", "partially initialized")


async def first_jobs(tiny_root, log_dir):
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root, DD_LOG_DIR=log_dir), heartbeat_timeout=120)
    handles = [client.submit(mode_request(kind)) for kind in KINDS]   # before the engine even started
    finals = [await h.wait() for h in handles]
    await client.stop()
    return finals


def test_first_jobs_of_every_kind_on_fresh_engines_all_finish(loop, tiny_root, tmp_path):
    async def go():
        results = []
        for start in range(0, ENGINES, AT_ONCE):
            batch = range(start, min(start + AT_ONCE, ENGINES))
            results += await asyncio.gather(*(first_jobs(tiny_root, tmp_path / f"engine-{i}") for i in batch))
        return results

    results = loop.run(go(), timeout=1800)
    failed = [(kind, final) for finals in results for kind, final in zip(KINDS, finals)
              if not isinstance(final, Finished)]
    logs = "\n".join((tmp_path / f"engine-{i}" / "engine.log").read_text() for i in range(ENGINES))
    print(f"\n{ENGINES} fresh engines, {ENGINES * len(KINDS)} first jobs: {len(failed)} failed")
    assert failed == []
    assert not [line for line in logs.splitlines() if any(s in line for s in IMPORT_FAILURES)]
    assert logs.count("libraries imported after") == ENGINES   # the warm-up ran (and raced) every time
