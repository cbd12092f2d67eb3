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
import mmap
import os
import secrets
import signal
import socket
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..link.protocol import (
    LIMITS,
    PRE_AUTH_LIMITS,
    PREFIX,
    FramingError,
    Message,
    MessageError,
    check_declared,
    error,
    job_id_or_none,
    parse_header,
    parse_prefix,
)
from .connection import PeerBase

log = logging.getLogger("core.engine.serve")
GiB, MiB = 1 << 30, 1 << 20
PREVIEW_BACKLOG = 1 << 20   # drop previews while this much is waiting to be sent to a slow client
CHUNK = 1 << 20             # payloads are read a megabyte at a time


def default_upload_bytes() -> int:
    """A quarter of the machine's memory, between 1 and 8 GiB (4 GiB when it cannot be read)."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * GiB
    return max(GiB, min(8 * GiB, ram // 4))


@dataclass(frozen=True)
class ServeLimits:
    connections: int = 32                 # authenticated connections
    pre_auth: int = 64                    # connections still to authenticate, all addresses
    pre_auth_per_address: int = 8         # ... from one address (an IPv6 /64 counts as one)
    hello_timeout: float = 5.0            # accept → hello with the token (TLS handshake included)
    frame_idle: float = 30.0              # most seconds without a byte inside a frame
    frame_grace: float = 30.0             # a frame may take this long, plus its size at min_rate
    min_rate: int = 64 << 10              # bytes per second
    upload_bytes: int = 4 * GiB           # pixels held for jobs, all connections (received, queued, running)
    connection_upload_bytes: int = 2 * GiB  # ... one connection

    @classmethod
    def for_machine(cls, upload_mb: int | None = None, connections: int | None = None) -> ServeLimits:
        total = upload_mb * MiB if upload_mb else default_upload_bytes()
        limits = cls(upload_bytes=total, connection_upload_bytes=max(total // 2, MiB))
        return replace(limits, connections=connections) if connections else limits


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


# --- the memory budget for pixels ------------------------------------------------------------------

class Budget:
    """Bytes of payload the server holds for jobs, per connection and in all.  Thread-safe: holds are
    taken in the event loop and released by whichever thread ends the job."""

    def __init__(self, total: int, per_connection: int):
        self.total, self.per_connection = total, per_connection
        self.used = 0
        self.peak = 0
        self._by_owner: dict[int, int] = {}
        self._lock = threading.Lock()

    def reserve(self, owner, n: int, job_id: str | None) -> Hold:
        """A hold on ``n`` bytes for ``owner``, or MessageError (the payload is then skipped unread)."""
        if n > self.per_connection:
            raise MessageError("payload_too_large",
                               f"this job's pixels are {_size(n)}, more than this server takes from one connection "
                               f"({_size(self.per_connection)}): send a smaller image or selection, or ask the "
                               f"server's administrator to raise serve --max-upload-mb", job_id=job_id,
                               parameter="image")
        with self._lock:
            mine = self._by_owner.get(id(owner), 0)
            if mine + n > self.per_connection:
                raise MessageError("server_busy",
                                   f"this connection's queued jobs already hold {_size(mine)} of pixels; this job's "
                                   f"{_size(n)} would pass its {_size(self.per_connection)}: submit it when some of "
                                   f"them have finished", job_id=job_id, parameter="image")
            if self.used + n > self.total:
                raise MessageError("server_busy",
                                   f"the server holds {_size(self.used)} of other jobs' pixels and has no room for "
                                   f"this job's {_size(n)} now: try again when jobs have finished", job_id=job_id,
                                   parameter="image")
            self.used += n
            self.peak = max(self.peak, self.used)
            self._by_owner[id(owner)] = mine + n
        return Hold(self, owner, n)

    def _release(self, owner, n: int) -> None:
        with self._lock:
            self.used -= n
            left = self._by_owner.get(id(owner), 0) - n
            if left > 0:
                self._by_owner[id(owner)] = left
            else:
                self._by_owner.pop(id(owner), None)


class Hold:
    def __init__(self, budget: Budget, owner, n: int):
        self._budget, self._owner, self.bytes = budget, owner, n
        self._done = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._budget._release(self._owner, self.bytes)


# --- who may connect -------------------------------------------------------------------------------

def address_key(host: str) -> str:
    """What counts as one address: an IPv4 address, or the /64 network of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Pool:
    """Connections waiting to authenticate (oldest first, by address) and authenticated ones."""

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self.waiting: OrderedDict = OrderedDict()    # connection -> address key
        self.ready: set = set()
        self.evicted = 0
        self._lock = threading.Lock()

    def arrive(self, conn) -> list:
        """Admit a new connection to the waiting pool; returns the connections it pushes out."""
        out = []
        with self._lock:
            same = [c for c, k in self.waiting.items() if k == conn.key]
            if len(same) >= self.limits.pre_auth_per_address:
                out.append(same[0])
            elif len(self.waiting) >= self.limits.pre_auth:
                counts: dict[str, int] = {}
                for k in self.waiting.values():
                    counts[k] = counts.get(k, 0) + 1
                busiest = max(counts, key=lambda k: counts[k])   # ties: the first seen, i.e. the oldest
                out.append(next(c for c, k in self.waiting.items() if k == busiest))
            for c in out:
                del self.waiting[c]
            self.waiting[conn] = conn.key
            self.evicted += len(out)
        return out

    def authenticate(self, conn) -> str | None:
        """Move ``conn`` to the authenticated connections; the reason it cannot, or None."""
        with self._lock:
            if len(self.ready) >= self.limits.connections:
                return (f"the server already has {self.limits.connections} connections: try again when one has "
                        f"closed")
            self.waiting.pop(conn, None)
            self.ready.add(conn)
        return None

    def leave(self, conn) -> None:
        with self._lock:
            self.waiting.pop(conn, None)
            self.ready.discard(conn)

    def all(self) -> list:
        with self._lock:
            return [*self.waiting, *self.ready]


class _TooSlow(Exception):
    pass


class _Ended(Exception):
    """The connection must end (the reason is the argument)."""


SKIPPED = Message({"type": "(skipped)"})   # a frame refused before its payload was read


class AsyncConnection(PeerBase):
    """A network peer: the same interface as ``Connection`` (``send`` from any thread), on asyncio streams.

    Made from an accepted socket as soon as it is accepted (``sock``): it takes its place in the pool
    before any byte is read, and ``serve`` then wraps it in streams (the TLS handshake included, within
    the hello deadline).  Or made from ready streams (``reader``/``writer``: tests)."""

    needs_token = True

    def __init__(self, service, reader, writer, loop, name: str, *, sock=None, key: str = "",
                 pool: Pool | None = None, budget: Budget | None = None, limits: ServeLimits | None = None,
                 tls=None):
        super().__init__(service, name)
        self.reader, self.writer, self.loop, self.sock = reader, writer, loop, sock
        self.key = key or name
        self.limits = limits or ServeLimits()
        self.pool = pool or Pool(self.limits)
        self.budget = budget or Budget(self.limits.upload_bytes, self.limits.connection_upload_bytes)
        self.tls = tls                        # an SSL context for the handshake, or None
        self.accepted_at = loop.time()
        self._kicked: str | None = None

    @property
    def handshaken(self) -> bool:
        return self.writer is not None

    # --- sending (any thread) ---------------------------------------------------------------------

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

    def admit(self) -> str | None:
        return self.pool.authenticate(self)

    def kick(self, msg: Message | None, why: str) -> None:
        """End the connection from the event loop's thread: ``msg`` as its last word (if it can still be
        sent), then close; its reader sees the end of the stream."""
        if self._kicked:
            return
        self._kicked = why
        if msg is not None and self.handshaken:
            self.last_word(msg)
            self.loop.call_soon(self._close_transport)   # after the last word's write
        elif self.writer is not None:
            self.writer.transport.abort()
        elif self.sock is not None:      # still in its TLS handshake: the handshake ends at once
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_transport(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass

    async def _open(self) -> None:
        """Streams on the accepted socket; TLS is negotiated here, within the hello deadline."""
        reader = asyncio.StreamReader(limit=1 << 20, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self.loop)
        left = self.accepted_at + self.limits.hello_timeout - self.loop.time()
        if left <= 0:
            raise _TooSlow("no time left for the handshake")
        kw = dict(ssl=self.tls, ssl_handshake_timeout=left) if self.tls is not None else {}
        try:
            transport, _ = await asyncio.wait_for(
                self.loop.connect_accepted_socket(lambda: protocol, self.sock, **kw), left + 1)
        except asyncio.TimeoutError:
            raise _TooSlow("handshake timed out") from None
        self.reader, self.writer = reader, asyncio.StreamWriter(transport, protocol, reader, self.loop)

    # --- reading ----------------------------------------------------------------------------------

    async def serve(self) -> str:
        self.service.connected(self)
        reason = "eof"
        try:
            if self.writer is None:
                try:
                    await self._open()
                except _TooSlow:
                    return (reason := "handshake timed out")
                except (OSError, EOFError) as e:   # ssl.SSLError is an OSError
                    if self.sock is not None:
                        self.sock.close()
                    return (reason := f"handshake failed: {type(e).__name__}")
            while True:
                try:
                    msg = await self._read_frame()
                except _TooSlow as e:
                    if self.ready:
                        self.last_word(error("too_slow", str(e), fatal=True))
                        reason = "too_slow"
                    else:
                        self.last_word(error("unauthorized", f"no hello with the token within "
                                                             f"{self.limits.hello_timeout:g} s", fatal=True))
                        reason = "unauthorized"
                    break
                except (FramingError, MessageError) as e:
                    outcome = self.read_failed(e)
                    if outcome:
                        reason = outcome
                        break
                    continue
                except _Ended as e:
                    reason = str(e)
                    break
                except (ConnectionError, OSError, EOFError, asyncio.IncompleteReadError) as e:
                    reason = f"read failed: {type(e).__name__}"
                    break
                if msg is None:
                    break
                if msg is SKIPPED:
                    continue
                outcome = await self.loop.run_in_executor(None, self.handle, msg)
                if outcome:
                    reason = outcome
                    break
        finally:
            if self._kicked:
                reason = self._kicked
            self.end_reason = reason
            self.pool.leave(self)
            self.service.disconnected(self)
            await asyncio.sleep(0)  # let the writes scheduled by handlers run
            self.closed.set()
            if self.writer is not None:
                try:
                    await asyncio.wait_for(self.writer.drain(), 5.0)
                except (asyncio.TimeoutError, ConnectionError, OSError):
                    pass
            self._close_transport()
            if self.handshaken:
                try:
                    await asyncio.wait_for(self.writer.wait_closed(), 5.0)
                except (asyncio.TimeoutError, ConnectionError, OSError):
                    pass
            log.info("%s: closed (%s)", self.name, reason)
        return reason

    async def _within(self, awaitable, deadline: float):
        """``awaitable`` within ``deadline`` (loop time) and, once authenticated, within ``frame_idle``."""
        left = deadline - self.loop.time()
        if self.ready:
            left = min(left, self.limits.frame_idle)
        if left <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _TooSlow(self._slow_text())
        try:
            return await asyncio.wait_for(awaitable, left)
        except asyncio.TimeoutError:
            raise _TooSlow(self._slow_text()) from None

    def _slow_text(self) -> str:
        lim = self.limits
        return (f"a frame stalled or arrived too slowly: this server needs a byte at least every "
                f"{lim.frame_idle:g} s and a frame within {lim.frame_grace:g} s plus its size at "
                f"{lim.min_rate // 1024} KiB/s")

    async def _exactly(self, n: int, deadline: float) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = await self._within(self.reader.read(min(n - got, CHUNK)), deadline)
            if not chunk:
                raise FramingError(f"stream ended inside a frame ({got} of {n} bytes)")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def _payload(self, n: int, deadline: float):
        """``n`` bytes: small ones as bytes, large ones in an anonymous memory map (given back to the
        system whole when the job drops it; a heap buffer grown chunk by chunk may never be)."""
        if n <= CHUNK:
            return await self._exactly(n, deadline)
        buf = mmap.mmap(-1, n)
        pos = 0
        while pos < n:
            chunk = await self._within(self.reader.read(min(n - pos, CHUNK)), deadline)
            if not chunk:
                buf.close()
                raise FramingError(f"stream ended inside a frame's payload ({pos} of {n} bytes)")
            buf[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        return buf

    async def _skip(self, n: int, deadline: float) -> None:
        while n > 0:
            chunk = await self._within(self.reader.read(min(n, CHUNK)), deadline)
            if not chunk:
                raise FramingError("stream ended inside a frame's payload")
            n -= len(chunk)

    async def _read_frame(self) -> Message | None:
        lim = self.limits
        if self.ready:
            first = await self.reader.read(1)    # between frames an authenticated client may be idle
            start = self.loop.time()
            deadline = start + lim.frame_grace + PREFIX.size / lim.min_rate
        else:
            deadline = self.accepted_at + lim.hello_timeout
            first = await self._within(self.reader.read(1), deadline)
        if not first:
            return None
        try:
            prefix = first + await self._exactly(PREFIX.size - 1, deadline)
        except FramingError:
            raise FramingError("stream ended inside a frame prefix") from None
        limits = LIMITS if self.ready else PRE_AUTH_LIMITS
        header_len, payload_len = parse_prefix(prefix, limits)
        if self.ready:
            deadline = start + lim.frame_grace + (PREFIX.size + header_len + payload_len) / lim.min_rate
        raw = await self._exactly(header_len, deadline)
        hold = None
        try:
            header, sizes = parse_header(raw, payload_len, limits)
            check_declared(header, sizes)
            if payload_len:
                hold = self.budget.reserve(self, payload_len, job_id_or_none(header))
        except MessageError as e:
            outcome = self.read_failed(e)      # the refusal goes out before the payload is skipped unread
            if outcome:
                raise _Ended(outcome) from None
            await self._skip(payload_len, deadline)
            return SKIPPED
        try:
            payloads = [await self._payload(n, deadline) for n in sizes]
        except BaseException:
            if hold is not None:
                hold.release()
            raise
        return Message(header, payloads, hold=hold)


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
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def run(args) -> int:
    """Entry point of ``python -m core serve``."""
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
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    limits = ServeLimits.for_machine(getattr(args, "max_upload_mb", None), getattr(args, "max_connections", None))
    env.apply()
    logs.setup("engine-serve", getattr(logging, args.log_level))
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


async def _serve(service, host: str, port: int, ctx, token: str, limits: ServeLimits | None = None,
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
    print(f"token: {token}", flush=True)
    print("Give the URL and the token to the dock. The token is shown only this once.", flush=True)
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
        for conn in pool.all():
            service.queue.cancel_owner(conn)     # queued jobs end now, told; a running one at its next step
            conn.kick(error("engine_shutting_down", "the server is stopping", fatal=True), "server stopping")
        if tasks:
            await asyncio.wait(list(tasks), timeout=10)
        if signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    log.info("stopped (%d connections pushed out before authenticating)", pool.evicted)
    return 0
