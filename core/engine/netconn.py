"""One network connection of ``serve`` (``AsyncConnection``): frames read on asyncio streams within the
deadlines and budgets of ``netlimits``; messages handled by the shared ``PeerBase``."""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket

from ..link.protocol import (
    LIMITS,
    PRE_AUTH_LIMITS,
    PREFIX,
    FramingError,
    Message,
    MessageError,
    error,
    job_id_or_none,
    parse_header,
    parse_prefix,
)
from .connection import PeerBase
from .declared import check_declared
from .netlimits import Budget, Pool, ServeLimits

log = logging.getLogger("core.engine.serve")
PREVIEW_BACKLOG = 1 << 20   # drop previews while this much is waiting to be sent to a slow client
CHUNK = 1 << 20             # payloads are read a megabyte at a time


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
