"""The editor's side of the engine: start, watch and talk to the engine process.  Standard library only.

The editor never runs torch.  ``EngineClient`` starts ``python -m core.engine`` from the engine's own
Python (which may differ from the editor's) and talks the wire protocol over its pipes, or connects to
a shared engine (``python -m core serve``) with a URL and its token.  It is plain asyncio, so it runs
under any asyncio loop, qasync's Qt loop included::

    client = EngineClient(python="/path/to/engine/venv/bin/python", cwd="/path/to/diffusion-dock",
                          on_status=show_status)
    handle = client.submit(request)          # starts the engine if needed
    async for event in handle.events():      # Accepted, Progress, Preview ... then one final event
        ...
    await client.stop()

Every job ends with exactly one final event (``Finished``, ``Failed`` or ``JobCancelled``).
Failures of the engine itself become ``Failed`` events with stable codes (``core.link.protocol.CLIENT_ERRORS``):
the jobs running when the engine died fail at once, the engine is restarted, and the jobs still
queued are sent to the new engine in their order.

- ``handle``: one job (``JobHandle``), owning its state transitions (``contract.events.JobState``);
- ``jobs``: the unfinished jobs and what happens to them when their engine is ready, stuck or lost;
- ``link``: one connection (pipes or TCP/TLS): framing, hello, stderr, exit reasons; ``parse_url``;
- ``supervisor``: start, watch (heartbeats, stuck jobs), restart;
- ``client``: ``EngineClient``, the public face, and the dispatch of the engine's messages.
"""

from .client import EngineClient
from .handle import JobHandle
from .link import WRITE_SLICE, EngineError, EngineLink, parse_url, widen_pipes
from .supervisor import EngineOptions

__all__ = ["WRITE_SLICE", "EngineClient", "EngineError", "EngineLink", "EngineOptions", "JobHandle", "parse_url",
           "widen_pipes"]
