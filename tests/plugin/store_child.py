"""A process that saves results into a ``ResultStore`` until it is killed (the kill loop of
tests/plugin/test_results_store.py).

    python -m tests.plugin.store_child FOLDER RUN STAGE

It saves result after result and prints ``ack <id>`` once ``save`` has returned (a result the dock
would show).  With a STAGE other than ``free`` it stops inside its second save at that point and prints
``paused <stage>``, so that the test's SIGKILL lands exactly there:

- ``<file>-write``: half of the bytes of ``<id>.<file>`` are in its temporary file;
- ``<file>-renamed``: ``<id>.<file>`` has just been renamed into place (the next file is not written).

``<file>`` is ``raw``, ``png`` or ``json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time

from plugin.diffusion_dock.runtime.coreapi import atomic
from plugin.diffusion_dock.session.results_store import ResultStore, StoredResult, new_id

WIDTH, HEIGHT = 256, 128              # BGRA_U8: 128 KiB of pixels a result
PAUSE_AT_SAVE = 2


def pixels(rid: str, n: int) -> bytes:
    """The pixels of a result, derived from its id (the test checks them)."""
    block = hashlib.sha256(rid.encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def thumbnail(rid: str) -> bytes:
    return b"\x89PNG fake thumbnail of " + rid.encode()


def record(run: int, n: int) -> StoredResult:
    rid = new_id(f"{run:04x}{n:04x}", 0)
    return StoredResult(id=rid, job_id=f"{run:04x}{n:04x}", index=0, mode="inpaint", name=f"result {run}/{n}",
                        x=0, y=0, width=WIDTH, height=HEIGHT, format="BGRA_U8", seed=n,
                        provenance={"prompt": "kill loop"}, document="kill.kra", canvas=(WIDTH, HEIGHT),
                        source_layer={"id": "l1", "name": "Paint"}, created=time.time())


def pause(stage: str) -> None:
    print(f"paused {stage}", flush=True)
    time.sleep(600)                    # the test kills this process now
    sys.exit("not killed")


class HalfThenPause:
    """A file whose first write stops half-way (the rest never comes)."""

    def __init__(self, f, stage: str):
        self._f, self._stage = f, stage

    def write(self, data):
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        pause(self._stage)

    def __getattr__(self, name):
        return getattr(self._f, name)


def install_pause(stage: str, state: dict) -> None:
    file, when = stage.split("-")
    real = atomic.open_atomic

    @contextlib.contextmanager
    def hooked(path, *args, **kw):
        armed = state["save"] == PAUSE_AT_SAVE and str(path).endswith("." + file)
        with real(path, *args, **kw) as f:
            yield HalfThenPause(f, stage) if armed and when == "write" else f
        if armed and when == "renamed":
            pause(stage)

    atomic.open_atomic = hooked


def main(folder: str, run: int, stage: str) -> None:
    store = ResultStore(folder, keep=1_000_000)       # prune as the dock does, but never a result
    state = {"save": 0}
    if stage != "free":
        install_pause(stage, state)
    n = 0
    while True:
        n += 1
        state["save"] = n
        rec = record(run, n)
        store.save(rec, pixels(rec.id, rec.nbytes), thumbnail(rec.id))
        print(f"ack {rec.id}", flush=True)
        store.prune()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
