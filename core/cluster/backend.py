"""The gateway's only contact with Ray: connect, deploy, put payloads, stream jobs, read the status.

Everything here is Ray's own API: ``ray.init`` joins the cluster, ``serve.run`` deploys (or updates) the
engine application with no HTTP proxy (``proxy_location="Disabled"``: the gateway is the only way in),
a ``DeploymentHandle`` with ``stream=True`` and ``multiplexed_model_id`` submits a job, ``cancel()`` on
its response generator reaches the replica, ``ray.put`` puts a job's pixels into the object store once
(a retry sends the same reference, not the bytes), and ``serve.status()`` counts the replicas.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("core.cluster.backend")
START_TIMEOUT = 600.0


class ClusterUnavailable(RuntimeError):
    """The Ray cluster cannot be reached or the deployment did not come up (one readable line)."""


class RayBackend:
    def __init__(self, cfg, handle):
        self.cfg = cfg
        self.handle = handle
        from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError, RayTaskError
        from ray.serve.exceptions import RequestCancelledError

        self._lost = (RayActorError, ActorUnavailableError, ObjectLostError)
        self._cancelled = (RequestCancelledError,)
        self._task_error = (RayTaskError,)

    @classmethod
    def connect(cls, address: str, cfg, say=print) -> RayBackend:
        """Join the Ray cluster at ``address`` and deploy the engine as ``cfg`` describes."""
        import ray
        from ray import serve

        from .replica import deployment

        say(f"joining the Ray cluster at {address} ...")
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            raise ClusterUnavailable(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0][:200]}") \
                from None
        say(f"deploying {cfg.app}: {describe(cfg)} (replicas start their engines; this takes a while) ...")
        try:
            serve.start(proxy_location="Disabled")
            handle = serve.run(deployment(cfg).bind(), name=cfg.app, route_prefix=None)
        except Exception as e:
            raise ClusterUnavailable(f"the engine deployment did not start: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
        return cls(cfg, handle)

    def put(self, payloads) -> object:
        """One object-store reference holding a job's payloads (uint8 arrays, no copy made here)."""
        import ray

        return ray.put([np.frombuffer(p, np.uint8) for p in payloads])

    def stream(self, header: dict, ref, model_id: str):
        """The response generator of one job: ``async for`` its items, ``cancel()`` to stop it."""
        opts = {"stream": True}
        if model_id:
            opts["multiplexed_model_id"] = model_id
        return self.handle.options(**opts).run.remote(header, [ref])

    async def capabilities(self) -> dict:
        return await self.handle.capabilities.remote()

    def status(self) -> dict:
        """Replicas by state, from Serve's controller (blocking: call it off the event loop)."""
        from ray import serve

        try:
            app = serve.status().applications.get(self.cfg.app)
        except Exception as e:
            return {"state": "unreachable", "message": str(e).splitlines()[0][:200] if str(e) else ""}
        if app is None:
            return {"state": "missing"}
        dep = app.deployments.get("Engine")
        if dep is None:
            return {"state": str(app.status)}
        states = {str(k).split(".")[-1].lower(): int(v) for k, v in dep.replica_states.items()}
        return {"state": str(dep.status).split(".")[-1].lower(), "running": states.get("running", 0),
                "starting": states.get("starting", 0) + states.get("updating", 0)
                + states.get("recovering", 0), "stopping": states.get("stopping", 0)}

    def kind_of(self, exc: BaseException) -> str:
        """"lost" (the replica or its node died), "cancelled", "failed" (the replica's code raised) or
        "other" for an exception raised while streaming."""
        if isinstance(exc, self._cancelled):
            return "cancelled"
        if isinstance(exc, self._lost):
            return "lost"
        if isinstance(exc, self._task_error):
            cause = getattr(exc, "cause", None)
            return "lost" if isinstance(cause, self._lost) else "failed"
        return "other"

    def close(self) -> None:
        """Leave the cluster (the deployment stays up for the next gateway)."""
        import ray

        try:
            ray.shutdown()
        except Exception:
            log.exception("leaving the Ray cluster failed")


def describe(cfg) -> str:
    r = cfg.replicas
    count = f"{r.max} replicas" if r.fixed else f"{r.min}–{r.max} replicas (autoscaling, {r.initial} at start)"
    return (f"{count}, {cfg.num_gpus:g} GPU and {cfg.num_cpus:g} CPU each, preloading "
            f"{', '.join(cfg.models) or 'nothing'}, up to {cfg.max_models_per_replica} models per replica")
