"""``python -m core serve --listen HOST:PORT [--cert C --key K]``: one engine shared over the network.

The server prints a generated token once; a connection must present it in its hello within
``HELLO_TIMEOUT`` seconds (before that only a small hello frame is accepted), else it is refused.
With a certificate and key the connection is TLS.  Listening on a non-loopback address without TLS
prints a loud warning: the token and the pixels would travel in clear text.

Sockets are served by one asyncio loop (TLS objects are never touched by two threads); messages are
handled in worker threads, and jobs share the engine's single queue with every other client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import signal
import socket
import sys

from ..link.protocol import LIMITS, PRE_AUTH_LIMITS, FramingError, Message, MessageError, error
from ..link.protocol import read_message_async as read_message
from .connection import PeerBase

log = logging.getLogger("core.engine.serve")
HELLO_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
PREVIEW_BACKLOG = 1 << 20   # drop previews while this much is waiting to be sent to a slow client


class AsyncConnection(PeerBase):
    """A network peer: the same interface as ``Connection`` (``send`` from any thread), on asyncio streams."""

    needs_token = True

    def __init__(self, service, reader, writer, loop, name: str):
        super().__init__(service, name)
        self.reader, self.writer, self.loop = reader, writer, loop

    def send(self, msg: Message, *, droppable: bool = False) -> bool:
        chunks = self._encode(msg)
        if chunks is None:
            return False
        try:
            self.loop.call_soon_threadsafe(self._write, chunks, droppable)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _write(self, chunks, droppable: bool) -> None:
        if self.writer.is_closing():
            return
        if droppable and self.writer.transport.get_write_buffer_size() > PREVIEW_BACKLOG:
            return
        for chunk in chunks:
            self.writer.write(chunk)

    async def serve(self) -> str:
        self.service.connected(self)
        reason = "eof"
        try:
            while True:
                limits = LIMITS if self.ready else PRE_AUTH_LIMITS
                try:
                    if self.ready:
                        msg = await read_message(self.reader, limits)
                    else:
                        msg = await asyncio.wait_for(read_message(self.reader, limits), HELLO_TIMEOUT)
                except asyncio.TimeoutError:
                    self.last_word(error("unauthorized", f"no hello within {HELLO_TIMEOUT:g} s", fatal=True))
                    reason = "unauthorized"
                    break
                except (FramingError, MessageError) as e:
                    outcome = self.read_failed(e)
                    if outcome:
                        reason = outcome
                        break
                    continue
                except (ConnectionError, OSError) as e:
                    reason = f"read failed: {e}"
                    break
                if msg is None:
                    break
                outcome = await self.loop.run_in_executor(None, self.handle, msg)
                if outcome:
                    reason = outcome
                    break
        finally:
            self.end_reason = reason
            self.service.disconnected(self)
            await asyncio.sleep(0)  # let the writes scheduled by handlers run
            self.closed.set()
            try:
                await asyncio.wait_for(self.writer.drain(), 5.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 5.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
            log.info("%s: closed (%s)", self.name, reason)
        return reason


def parse_listen(text: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" or "[v6]:PORT"."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:7860), got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def plaintext_warning(host: str, tls: bool) -> str | None:
    """The loud warning for a non-loopback listener without TLS (None when there is nothing to warn about)."""
    if tls or is_loopback(host):
        return None
    bar = "!" * 78
    return (f"{bar}\n"
            f"WARNING: listening on {host} WITHOUT TLS. The token and every image travel in clear text:\n"
            f"anyone on the network path can read them and use this engine. Give --cert and --key,\n"
            f"or listen on 127.0.0.1 and reach it through an SSH tunnel.\n"
            f"{bar}")


def tls_context(cert: str, key: str):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def run(args, make_service=None) -> int:
    """Entry point of ``python -m core serve``.  ``make_service(args)``: another service behind the same
    front, which authenticates its clients itself (``core.cluster``: a Ray Serve cluster, per-artist
    tokens); None when it could not start (it said why)."""
    from ..models import env
    from . import logs
    from .stdio import service_kwargs

    try:
        host, port = parse_listen(args.listen)
        if bool(args.cert) != bool(args.key):
            raise ValueError("--cert and --key go together")
        ctx = tls_context(args.cert, args.key) if args.cert else None
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env.apply()
    logs.setup("engine-serve", getattr(logging, args.log_level))
    if make_service is not None:
        service, token = make_service(args), None
        if service is None:
            return 2
    else:
        from .service import EngineService

        service = EngineService(allow_shutdown=False, **service_kwargs(args))
        token = secrets.token_urlsafe(32)
        service.token = token
    try:
        return asyncio.run(_serve(service, host, port, ctx, token))
    except KeyboardInterrupt:
        return 0
    finally:
        service.close(timeout=3.0)


async def _serve(service, host: str, port: int, ctx, token: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    active: set = set()

    async def on_client(reader, writer):
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(active) >= MAX_CONNECTIONS:
            log.warning("%s: refused: %d connections already", name, len(active))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a client that vanished (sleep, network gone) is noticed within minutes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        conn = AsyncConnection(service, reader, writer, loop, name)
        active.add(conn)
        log.info("%s: connected", name)
        try:
            await conn.serve()
        finally:
            active.discard(conn)

    if sys.platform != "win32":   # before the address is announced: a stop right after it is clean
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        server = await asyncio.start_server(on_client, host, port, ssl=ctx, limit=1 << 20,
                                            ssl_handshake_timeout=HELLO_TIMEOUT if ctx else None)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 2
    bound = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'tls' if ctx else 'tcp'}://{shown}:{bound}"
    print(f"Diffusion Dock engine serving on {url}", flush=True)
    if token is not None:
        print(f"token: {token}", flush=True)
        print("Give the URL and the token to the dock. The token is shown only this once.", flush=True)
    else:
        print("clients: per-artist tokens (python -m core serve tokens add NAME)", flush=True)
    log.info("serving on %s (TLS %s)", url, "on" if ctx else "off")
    warning = plaintext_warning(host, ctx is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
        log.warning("listening on %s without TLS", host)
    async with server:
        await stop.wait()
    log.info("stopping")
    return 0
