"""The engine as a Ray Serve deployment: one ``EngineService`` with its ``ModelManager`` per replica.

Each replica runs the single-machine engine unchanged (validation, the job queue, pipelines, progress,
previews, cancel, out-of-memory handling, results in the editor's pixel layout): a job arrives as the
editor's own ``submit`` message, its payloads read from Ray's object store, and every message the
engine would have sent the editor is yielded back as a streamed item ``{"h": header, "p": [arrays]}``
(payloads as numpy arrays, so large ones go through the object store without copies).

Serve places the replicas (``num_gpus`` each), restarts dead ones, scales them, and routes each job to a
replica that already holds its model (model multiplexing: the job's model key is its multiplexed model
id, and ``Engine.model`` is the ``@serve.multiplexed`` loader).  Cancelling the stream (``cancel()`` on
the gateway's side) raises ``CancelledError`` here, which cancels the job in the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque

import numpy as np
from ray import serve

from ..contract.catalog import CATALOG
from ..engine.connection import PeerBase
from ..link.protocol import Message, message

log = logging.getLogger("core.cluster.replica")
MAX_PREVIEWS_WAITING = 4
CANCEL_WAIT = 120.0      # how long a cancelled job may take to stop before the replica takes new work


class StreamPeer(PeerBase):
    """The engine's view of one job's stream: what it sends lands in an asyncio queue."""

    def __init__(self, service, loop, name: str):
        super().__init__(service, name)
        self.ready = True
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.previews_waiting = 0

    def send(self, msg: Message, *, droppable: bool = False) -> bool:
        if self.closed.is_set():
            return False
        if droppable:
            if self.previews_waiting >= MAX_PREVIEWS_WAITING:
                return False
            self.previews_waiting += 1
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (msg, droppable))
        except RuntimeError:   # the replica's loop is gone
            return False
        return True


def is_final(msg: Message) -> bool:
    return msg.type in ("result", "cancelled") or (msg.type == "error" and msg.get("job_id") is not None)


def to_item(msg: Message) -> dict:
    """A message as a streamed item: payloads as uint8 arrays (zero-copy through the object store)."""
    return {"h": msg.header, "p": [np.frombuffer(p, np.uint8) for p in msg.payloads]}


def torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def ray_node_id() -> str | None:
    """The Ray node this replica runs on (hostnames can repeat; Ray's node id does not)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:   # outside Ray (unit tests)
        return None


def load_for_jobs(models, key: str) -> None:
    """Load model ``key`` as the jobs that name it will use it (so the job itself finds it loaded)."""
    spec = CATALOG[key]
    if "restyle" in spec.modes:
        models.get("restyle", key, without_depth_estimator=True)
        models.get_part("restyle", key)
    else:
        models.get(spec.modes[0], key)


class ModelLease:
    """What the multiplexed loader returns: Serve calls ``__del__`` when its LRU drops the model, and the
    engine's model manager unloads it then (so Serve's view of what a replica holds stays true)."""

    def __init__(self, models, key: str):
        self.models, self.key, self.released = models, key, False

    def __del__(self):
        if self.released:
            return
        self.released = True
        try:
            self.models.unload(CATALOG[self.key].modes[0], self.key)
            log.info("unloaded %s (multiplexing)", self.key)
        except Exception:
            log.exception("unloading %s failed", self.key)


class ReplicaEngine:
    """What one replica does, without Serve's decorators (``deployment`` wraps it)."""

    def __init__(self, settings: dict):
        from pathlib import Path

        from ..engine.service import EngineService
        from ..models import env
        from ..models.device import choose_policy, probe
        from ..models.manager import ModelManager

        env.apply()
        policy = choose_policy(probe(), settings.get("device"), settings.get("dtype"))
        models_dir = settings.get("models_dir")
        self.models = ModelManager(policy, models_dir=Path(models_dir) if models_dir else None,
                                   capacity=int(settings.get("max_models", 2)) + 2)   # Serve's LRU rules
        self.service = EngineService(models=self.models, allow_shutdown=False, warm_up=False)
        self.preload = [k for k in settings.get("models", ()) if k in CATALOG]
        self.pid = os.getpid()
        self.node = socket.gethostname()
        self.node_id = ray_node_id()
        self.jobs_done = 0
        self.cancelled: deque = deque(maxlen=20)     # ids of jobs the engine here stopped on a cancel
        try:
            self.replica = serve.get_replica_context().replica_tag
        except Exception:   # outside Serve (unit tests)
            self.replica = f"local-{self.pid}"
        log.info("replica %s: engine on %s %s", self.replica, policy.device, policy.dtype)

    def loaded_models(self) -> list[str]:
        names = []
        for lm in self.models.loaded():
            name = getattr(lm.resolved, "name", None)
            if name and name not in names:
                names.append(name)
        return names

    def info(self) -> dict:
        policy = self.models.policy
        return {"replica": self.replica, "pid": self.pid, "node": self.node, "node_id": self.node_id,
                "models": self.loaded_models(),
                "device": policy.device, "dtype": policy.dtype, "jobs_done": self.jobs_done,
                "loads": self.models.loads, "cancelled": list(self.cancelled), "threads": torch_threads()}

    async def load(self, key: str):
        await asyncio.get_running_loop().run_in_executor(None, load_for_jobs, self.models, key)
        return ModelLease(self.models, key)

    async def run(self, header: dict, refs: list, load_model, model_id: str):
        """Run one ``submit`` (``header``; its payloads in ``refs[0]``); yield the engine's messages."""
        loop = asyncio.get_running_loop()
        job_id = header.get("job_id")
        yield {"started": self.info()}
        if model_id:
            if model_id not in self.loaded_models():
                yield to_item(message("progress", job_id=job_id, step=0, total=0, phase="loading"))
            try:
                await load_model(model_id)
            except Exception as e:   # a missing or broken model: the engine's own words for it
                from ..models.resolver import ModelError

                if not isinstance(e, ModelError):
                    log.exception("loading %s failed", model_id)
                code = getattr(e, "code", "model_error") if isinstance(e, ModelError) else "model_error"
                text = str(e)[:500] if isinstance(e, ModelError) else f"{model_id} could not be loaded on this GPU"
                yield to_item(message("error", job_id=job_id, code=code, message=text))
                return
        payloads = (await refs[0]) if refs else []
        peer = StreamPeer(self.service, loop, f"job-{job_id}")
        msg = Message(dict(header, type="submit"), [memoryview(a) for a in payloads])
        await loop.run_in_executor(None, peer.handle, msg)
        finished = False
        try:
            while True:
                out, droppable = await peer.queue.get()
                if droppable:
                    peer.previews_waiting -= 1
                if out.type in ("accepted", "queue"):
                    continue     # the replica's own queue: the gateway's queue is the one the editor sees
                yield to_item(out)
                if is_final(out) and out.get("job_id") == job_id:
                    finished = True
                    self.jobs_done += out.type == "result"
                    break
            yield {"ended": self.info()}
        finally:
            if not finished:    # the gateway cancelled the stream (or went away): stop the job here
                self.service.queue.cancel(peer, job_id)
                await asyncio.shield(self._wait_end(peer, job_id))
            peer.closed.set()

    async def _wait_end(self, peer: StreamPeer, job_id) -> None:
        async def until_final():
            while True:
                out, _ = await peer.queue.get()
                if is_final(out) and out.get("job_id") == job_id:
                    return out

        try:
            out = await asyncio.wait_for(until_final(), CANCEL_WAIT)
        except asyncio.TimeoutError:
            log.warning("job %s did not stop within %.0f s of its cancel", job_id, CANCEL_WAIT)
            return
        if out.type == "cancelled":
            self.cancelled.append(job_id)

    def capabilities(self) -> dict:
        from dataclasses import asdict

        caps = asdict(self.service.scan_capabilities())
        for entry in caps["models"]:
            entry["path"] = None        # server paths stay on the server
        return caps


def deployment(cfg):
    """The Serve deployment for ``cfg`` (a ``ClusterConfig``), ready to ``bind()``."""
    settings = cfg.engine_settings()
    max_models = cfg.max_models_per_replica

    @serve.deployment(name="Engine")
    class Engine:
        async def __init__(self):
            self.engine = ReplicaEngine(settings)
            for key in self.engine.preload:      # through the multiplexed loader, so Serve knows
                try:
                    await self.model(key)
                except Exception:
                    log.exception("preloading %s failed", key)

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def model(self, key: str):
            return await self.engine.load(key)

        async def run(self, header: dict, refs: list):
            async for item in self.engine.run(header, refs, self.model, serve.get_multiplexed_model_id()):
                yield item

        async def capabilities(self) -> dict:
            return await asyncio.get_running_loop().run_in_executor(None, self.engine.capabilities)

        async def info(self) -> dict:
            return self.engine.info()

    return Engine.options(**cfg.replica_options())
