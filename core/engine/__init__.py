"""The engine process: the only place torch runs.

``python -m core.engine`` talks the wire protocol (``core.link.protocol``) over its stdin/stdout pipes with
the editor's client (``core.link.client``); ``python -m core serve --listen HOST:PORT`` offers the same
service over TCP (optionally TLS) to clients that present its token.

- ``jobqueue``: first in, first out, one worker thread per device, cancel queued or running jobs;
- ``service``: the message dispatcher, job execution through ``core.pipelines.run_job``, heartbeats,
  model status, capabilities;
- ``connection``: one peer: reads frames, writes frames from a queue so a slow reader never blocks a job;
- ``stdio`` and ``serve``: the two ways in;
- ``logs``: the log file in the app's log folder.

Nothing here imports torch at module level, so the engine answers its hello within a fraction of a
second and loads the heavy libraries in the background.
"""
