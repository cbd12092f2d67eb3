"""``python -m core serve --listen HOST:PORT --cluster ADDRESS|auto [--cluster-config cluster.yaml]``.

The gateway joins the Ray cluster, deploys (or updates) the engine application as the config file says,
lists the models through one replica, and then serves editors exactly as ``serve`` does
(``core.engine.serve.run``: TLS, the limits of ``engine.netlimits``, plain text refused off loopback), with per-artist
tokens instead of the one printed token.
"""

from __future__ import annotations

import logging
import sys

from . import INSTALL_HINT, have_ray
from .config import ConfigError, load
from .tokens import TokenError, TokenStore

log = logging.getLogger("core.cluster")
CAPABILITIES_TIMEOUT = 600.0


def run(args) -> int:
    if not have_ray():
        print(f"error: --cluster needs Ray Serve: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        cfg = load(args.cluster_config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    address = args.cluster or cfg.address
    tokens = TokenStore(args.tokens)
    try:
        if not tokens.entries():
            print(f"warning: no tokens in {tokens.path} yet: nobody can connect until "
                  f"`python -m core serve tokens add NAME`", file=sys.stderr)
    except TokenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from ..engine.serve import run as serve_run

    return serve_run(args, make_service=lambda a: make_gateway(cfg, address, tokens, heartbeat=a.heartbeat))


def make_gateway(cfg, address: str, tokens, *, heartbeat: float = 1.0):
    from .backend import ClusterUnavailable, RayBackend
    from .gateway import Gateway

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        log.info("%s", text)

    try:
        backend = RayBackend.connect(address, cfg, say=say)
    except ClusterUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    say("asking a replica for its models ...")
    try:
        caps = backend.handle.capabilities.remote().result(timeout_s=CAPABILITIES_TIMEOUT)
    except Exception as e:
        print(f"error: the replicas did not list their models: {type(e).__name__}", file=sys.stderr)
        backend.close()
        return None
    gateway = Gateway(cfg, backend, tokens, capabilities=caps)
    gateway.heartbeat = heartbeat
    return gateway
