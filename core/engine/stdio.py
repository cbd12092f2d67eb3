"""``python -m core.engine``: the engine on its stdin/stdout pipes (the editor's private channel).

At start the real stdin and stdout are duplicated for the protocol, fd 0 is pointed at /dev/null and
fd 1 at stderr: whatever a library prints lands on stderr (which the client keeps a tail of), never in
the protocol stream.  No socket is opened.  The engine exits when its stdin ends (the editor is gone),
after a ``shutdown`` message, or after a framing error it cannot recover from (exit status 2).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
import time

log = logging.getLogger("core.engine")
EXIT_OK, EXIT_PROTOCOL = 0, 2


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.engine",
                                 description="Diffusion Dock engine on stdin/stdout (started by the editor's client).")
    add_engine_options(ap)
    return ap


def add_engine_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=("cuda", "mps", "cpu"), help="override the device choice")
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="override the dtype choice")
    compile_ = ap.add_mutually_exclusive_group()
    compile_.add_argument("--compile", dest="compile", action="store_true", default=None,
                          help="compile the UNet with torch.compile once per input shape, while no job runs "
                               "(the default where a compiler is found; DD_COMPILE=0 turns it off)")
    compile_.add_argument("--no-compile", dest="compile", action="store_false",
                          help="never compile the UNet (also DD_COMPILE=0)")
    ap.add_argument("--models-dir", help="the app's models folder (default: platformdirs or DD_MODELS_DIR)")
    ap.add_argument("--capacity", type=int, default=2, help="pipelines kept loaded (default 2)")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default 1)")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="do not import torch/diffusers in the background before the first job")
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def service_kwargs(args) -> dict:
    from pathlib import Path

    return dict(device=args.device, dtype=args.dtype, compile=args.compile, capacity=max(1, args.capacity), heartbeat=args.heartbeat,
                models_dir=Path(args.models_dir) if args.models_dir else None, warm_up=not args.no_warm_up)


def take_stdio() -> tuple[int, int]:
    """(protocol input fd, protocol output fd); fd 0 becomes /dev/null and fd 1 a copy of stderr."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    if sys.platform == "win32":
        import msvcrt

        for fd in (proto_in, proto_out):
            msvcrt.setmode(fd, os.O_BINARY)
    return proto_in, proto_out


def writer_for(fd: int):
    def write(chunk) -> None:
        view = memoryview(chunk).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]

    return write


def main(argv=None) -> int:
    t0 = time.perf_counter()
    editor_pid = os.getppid()     # the editor's client started us (before it can die and leave us to init)
    args = build_parser().parse_args(argv)
    proto_in, proto_out = take_stdio()
    from ..models import env
    from . import logs

    env.apply()
    faulthandler.enable(sys.stderr)
    path = logs.setup("engine", getattr(logging, args.log_level))
    log.info("engine %d starting on stdio (log %s)", os.getpid(), path)
    from .connection import Connection
    from .service import EngineService

    service = EngineService(allow_shutdown=True, log_path=path, **service_kwargs(args))
    reader = open(proto_in, "rb", buffering=1 << 16, closefd=False)
    from ..link import bulk

    swept = bulk.sweep(bulk.directory())
    if swept:
        log.info("removed %d shared-memory files left by processes that are gone", swept)
    conn = Connection(service, reader.read, writer_for(proto_out), name="stdio", bulk_allowed=True)
    log.info("ready to read after %.3f s", time.perf_counter() - t0)
    try:
        reason = conn.serve()
    except KeyboardInterrupt:
        reason = "interrupted"
    stopped = service.close(timeout=3.0)
    log.info("engine stops: %s%s", reason, "" if stopped else " (a job was still running)")
    if conn.bulk:      # the editor that started us is gone: the payload files it left behind go too
        left = bulk.sweep_writer(conn.bulk, editor_pid)
        if left:
            log.info("removed %d shared-memory files of the editor (pid %d), which is gone", left, editor_pid)
    logging.shutdown()
    # os._exit: a job stuck inside a C call must not keep the process alive.
    os._exit(EXIT_OK if reason in ("eof", "shutdown", "interrupted") else EXIT_PROTOCOL)


if __name__ == "__main__":
    sys.exit(main())
