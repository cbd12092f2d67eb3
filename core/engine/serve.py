"""``python -m core serve --listen HOST:PORT [--cert C --key K]``: one engine shared over the network.

The server prints a generated token once; a connection must present it in its hello, else it is refused.
With a certificate and key the connection is TLS.  A non-loopback address without TLS is refused unless
``--insecure-plaintext`` says the network is trusted (the token and the pixels would travel in clear).

What a client can make the server hold is bounded (``ServeLimits``):

- **Before authentication** a connection may only say hello, within ``hello_timeout`` seconds of being
  accepted (TLS handshake included).  Connections still waiting to authenticate have their own small
  budget, per address (``pre_auth_per_address``) and overall (``pre_auth``); a new one beyond it pushes
  out the oldest waiting connection of the address that holds the most.  Idle or reconnecting
  connections that never authenticate therefore cannot take the room of an artist, who authenticates
  in milliseconds; authenticated connections have their own cap (``connections``).
- **A frame in flight** must keep coming: no more than ``frame_idle`` seconds without a byte, and the
  whole frame within ``frame_grace`` seconds plus its size at ``min_rate`` bytes per second.  Between
  frames an authenticated client may stay idle (TCP keepalive notices a vanished one).
- **Pixels**: a frame's declared payload sizes are checked against the job's own description (width ×
  height × bytes per pixel of the format) before anything is read, then reserved from a memory budget:
  per connection (``connection_upload_bytes``) and for the whole server (``upload_bytes``), held until
  the job ends.  A job that does not fit is refused (``payload_too_large`` or ``server_busy``) and its
  bytes are skipped unread.  Large payloads are read into anonymous memory maps, which go back to the
  system as soon as the job is done.

Sockets are accepted and served by one asyncio loop (TLS objects are never touched by two threads): an
accepted socket takes its place in the pool before the TLS handshake, so a handshake that never ends
counts against the pre-authentication budget too.  Messages are handled in worker threads, and jobs
share the engine's single queue with every other client.  SIGINT and SIGTERM stop the server cleanly:
every connection is told, closed and waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys

from ..link.protocol import error
from .netconn import AsyncConnection
from .netlimits import Budget, Pool, ServeLimits, address_key

log = logging.getLogger("core.engine.serve")


# --- the command line ----------------------------------------------------------------------------

def add_network_options(ap: argparse.ArgumentParser) -> None:
    """The options only a network server has (``python -m core serve``)."""
    ap.add_argument("--insecure-plaintext", action="store_true",
                    help="allow a non-loopback --listen address without TLS (the token and the images then "
                         "cross the network in clear text: only on a network you trust)")
    ap.add_argument("--max-upload-mb", type=int, default=None, metavar="MB",
                    help="memory for the pixels of jobs received and waiting, all clients together (default: a "
                         "quarter of the RAM, 1–8 GiB); one connection may use half of it")
    ap.add_argument("--max-connections", type=int, default=None, metavar="N",
                    help=f"authenticated connections at once (default {ServeLimits.connections})")


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


def plaintext_refusal(host: str, tls: bool, allowed: bool) -> str | None:
    """Why a listener on ``host`` without TLS is refused (None when it is not)."""
    if tls or allowed or is_loopback(host):
        return None
    return (f"refusing to listen on {host} without TLS: the token and every image would cross the network in "
            f"clear text, and anyone on the way could read them and use this engine. Give --cert and --key, or "
            f"listen on 127.0.0.1 and reach it through an SSH tunnel (ssh -L 7860:127.0.0.1:7860 server); "
            f"--insecure-plaintext allows it on a network you trust")


def plaintext_warning(host: str, tls: bool) -> str | None:
    """The loud warning for a non-loopback listener without TLS (None when there is nothing to warn about)."""
    if tls or is_loopback(host):
        return None
    bar = "!" * 78
    return (f"{bar}\n"
            f"WARNING: listening on {host} WITHOUT TLS (--insecure-plaintext). The token and every image travel\n"
            f"in clear text: anyone on the network path can read them and use this engine. Give --cert and\n"
            f"--key, or listen on 127.0.0.1 and reach it through an SSH tunnel.\n"
            f"{bar}")


def tls_context(cert: str, key: str):
    """The server's TLS context, or ValueError in our words."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for flag, path in (("--cert", cert), ("--key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ValueError(f"{flag}: cannot read {path} ({e.strerror or 'not readable'})") from None
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError):     # (before logging is set up: the ssl module's words are dropped)
        raise ValueError(f"--cert and --key must be a PEM certificate and its own private key (unencrypted); "
                         f"{cert} and {key} are not") from None
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
        refusal = plaintext_refusal(host, bool(args.cert), getattr(args, "insecure_plaintext", False))
        if refusal:
            raise ValueError(refusal)
        for opt in ("max_upload_mb", "max_connections"):
            value = getattr(args, opt, None)
            if value is not None and value < 1:
                raise ValueError(f"--{opt.replace('_', '-')} must be at least 1, got {value}")
        ctx = tls_context(args.cert, args.key) if args.cert else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    limits = ServeLimits.for_machine(getattr(args, "max_upload_mb", None), getattr(args, "max_connections", None))
    env.apply()
    logs.setup("engine-serve", getattr(logging, args.log_level))
    token: str | None = None
    if make_service is not None:
        service = make_service(args)
        if service is None:
            return 2
    else:
        from .service import EngineService

        service = EngineService(allow_shutdown=False, **service_kwargs(args))
        token = secrets.token_urlsafe(32)
        service.token = token
    try:
        return asyncio.run(_serve(service, host, port, ctx, token, limits))
    except KeyboardInterrupt:   # before the signal handlers were installed
        return 0
    finally:
        service.close(timeout=3.0)


def _raise_fd_limit() -> None:
    """Let the process use as many file descriptors as it may (the connection budgets bound them)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def _listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` stands for (one port for all)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, addr in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
            if socks and port == 0:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(256)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _serve(service, host: str, port: int, ctx, token: str | None, limits: ServeLimits | None = None,
                 ready=None, stop: asyncio.Event | None = None, signals: bool = True) -> int:
    """Serve until ``stop`` is set (SIGINT/SIGTERM set it, with ``signals``).  ``ready(url)`` is called
    once listening (tests run the server in-process, in a thread: ``signals=False``)."""
    signals = signals and sys.platform != "win32"
    limits = limits or ServeLimits()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    pool = Pool(limits)
    budget = Budget(limits.upload_bytes, limits.connection_upload_bytes)
    service.pool, service.budget = pool, budget     # (for tests and the log)
    tasks: set = set()

    async def serve_one(conn: AsyncConnection) -> None:
        try:
            await conn.serve()
        except asyncio.CancelledError:   # the loop is shutting down: nothing to report
            pass
        except Exception:
            log.exception("%s: serving the connection failed", conn.name)

    def admit(sock: socket.socket, peer) -> None:
        """A socket was accepted: it takes a place in the pool at once (pushing out the oldest waiting
        connection of the busiest address when the pool is full), before anything is read from it."""
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if stop.is_set():
            sock.close()
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a client that vanished (sleep, network gone) is noticed within minutes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        conn = AsyncConnection(service, None, None, loop, name, sock=sock,
                               key=address_key(peer[0]) if isinstance(peer, tuple) else name, pool=pool,
                               budget=budget, limits=limits, tls=ctx)
        for old in pool.arrive(conn):
            log.info("%s: pushed out (still not authenticated; %d waiting)", old.name, len(pool.waiting))
            old.kick(error("server_busy", "too many connections are waiting to authenticate: connect again",
                           fatal=True), "pushed out")
        log.debug("%s: connected", name)
        task = loop.create_task(serve_one(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def accept(listener: socket.socket) -> None:
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                return
            except OSError as e:   # out of file descriptors, a connection reset before accept, ...
                log.warning("accepting a connection failed: %s", e.strerror or type(e).__name__)
                await asyncio.sleep(0.1)
                continue
            try:
                admit(sock, peer)
            except OSError:
                sock.close()
            # sock_accept does not yield while connections are waiting: a flood of them would starve
            # every connection already accepted (and those pushed out would never be closed)
            await asyncio.sleep(0)

    if signals:   # before the address is announced: a stop right after it is clean
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    _raise_fd_limit()
    try:
        listeners = _listeners(host, port)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2
    bound = listeners[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'tls' if ctx else 'tcp'}://{shown}:{bound}"
    print(f"Diffusion Dock engine serving on {url}", flush=True)
    if token is not None:
        print(f"token: {token}", flush=True)
        print("Give the URL and the token to the dock. The token is shown only this once.", flush=True)
    else:
        print("clients: per-artist tokens (python -m core serve tokens add NAME)", flush=True)
    log.info("serving on %s (TLS %s; limits %s)", url, "on" if ctx else "off", limits)
    warning = plaintext_warning(host, ctx is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
        log.warning("listening on %s without TLS", host)
    acceptors = [loop.create_task(accept(sock)) for sock in listeners]
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for task in acceptors:
            task.cancel()
        await asyncio.gather(*acceptors, return_exceptions=True)
        for sock in listeners:
            sock.close()
        service.closing = True
        # the engine's job queue (a cluster gateway's fair queue has none: it cancels in ``disconnected``)
        cancel_owner = getattr(getattr(service, "queue", None), "cancel_owner", None)
        for conn in pool.all():
            if cancel_owner is not None:
                cancel_owner(conn)               # queued jobs end now, told; a running one at its next step
            conn.kick(error("engine_shutting_down", "the server is stopping", fatal=True), "server stopping")
        if tasks:
            await asyncio.wait(list(tasks), timeout=10)
        if signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    log.info("stopped (%d connections pushed out before authenticating)", pool.evicted)
    return 0
