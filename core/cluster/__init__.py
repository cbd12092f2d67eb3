"""The engine on a Ray Serve cluster: many GPUs, per-artist tokens, a fair queue (optional extra ``cluster``).

``python -m core serve --listen HOST:PORT --cluster ADDRESS|auto [--cluster-config cluster.yaml]`` runs the
*gateway*: the same TLS front as ``serve`` (``core.engine.serve``), speaking the editor's protocol, but the
jobs run on engine replicas of a Ray Serve deployment instead of in the server's own process.

- ``config``: ``cluster.yaml`` (replicas, GPUs per replica, autoscaling, models to preload, limits);
- ``tokens``: per-artist tokens, stored hashed (scrypt), ``python -m core serve tokens add|list|revoke``;
- ``fairqueue``: round robin across artists, a limit of queued jobs per artist;
- ``replica``: the Serve deployment: one engine (``EngineService`` + ``ModelManager``) per replica,
  models multiplexed by Serve, events streamed back;
- ``gateway``: authenticates editors, queues their jobs fairly, submits them through Ray handles,
  relays the streamed events, retries a job once when its replica dies;
- ``view``: what the cluster looks like to one artist (replicas, models loaded, queue), for heartbeats.

Ray provides the placement of replicas on GPUs, their restart, autoscaling, model-aware routing
(multiplexing), streaming, cancellation and the object store; nothing here schedules work on machines.
Only ``replica`` and ``gateway`` import ray, and only when the gateway runs.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = 'pip install "diffusion-dock[cluster]" (Ray Serve) on the gateway and on every node'


def have_ray() -> bool:
    """Whether Ray Serve can be imported (the optional ``cluster`` extra)."""
    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None
