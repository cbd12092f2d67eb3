"""One peer of the engine: a blocking frame reader and a queued frame writer.

``read(n)`` and ``write(chunk)`` are plain blocking callables (a pipe, a socket, a TLS socket), so the
same class serves stdio, TCP and the in-process tests.  Outgoing frames go through a queue drained by
a writer thread: a job reporting progress never blocks on a slow reader, and previews are dropped
rather than piling up when the reader falls behind.
"""

from __future__ import annotations

import logging
import queue
import threading

from ..contract.params import shown
from ..link import bulk
from ..link.protocol import (
    LIMITS,
    PRE_AUTH_LIMITS,
    FramingError,
    Message,
    MessageError,
    ProtocolError,
    encode,
    error,
    job_id_or_none,
    read_message,
)
from .declared import check_declared

log = logging.getLogger(__name__)
MAX_QUEUED_PREVIEWS = 4


def release(msg: Message) -> None:
    """Give back what was reserved for ``msg``'s payloads, unless a job took it over (``msg.hold = None``)."""
    hold, msg.hold = msg.hold, None
    if hold is not None:
        hold.release()


class PeerBase:
    """What every kind of peer shares: hello state, heartbeats, the last word, and how a read
    failure or a handled message turns into replies.  Subclasses provide ``send`` and the loop."""

    needs_token = False

    def __init__(self, service, name: str):
        self.service = service
        self.name = name
        self.ready = False                 # hello exchanged (and token checked)
        self.heartbeat_every = service.heartbeat
        self.queue_shifts = False          # its hello offered queue updates as moves (core.engine.queuenews)
        self.next_heartbeat = 0.0
        self._state = threading.Lock()     # heartbeats versus the last word
        self.closed = threading.Event()
        self.end_reason = ""

    def send(self, msg: Message, *, droppable: bool = False) -> bool:
        raise NotImplementedError

    def admit(self) -> str | None:
        """Called once the hello is accepted: why this peer cannot be served now, or None."""
        return None

    def _encode(self, msg: Message):
        """The frame's chunks, or None if the connection is closed or ``msg`` cannot be encoded (logged)."""
        if self.closed.is_set():
            return None
        try:
            return encode(msg)
        except (TypeError, ValueError) as e:
            log.error("cannot encode %s message: %s", msg.header.get("type"), e)
            return None

    def beat(self, now: float, make) -> None:
        """Send ``make()`` (a heartbeat) if one is due; never after the connection's last word."""
        with self._state:
            if not self.ready or self.closed.is_set() or now < self.next_heartbeat:
                return
            self.next_heartbeat = now + self.heartbeat_every
            self.send(make())

    def last_word(self, msg: Message) -> None:
        """Send ``msg`` as the last message of the connection (only jobs' own ends may follow)."""
        with self._state:
            self.ready = False
            self.send(msg)

    def read_failed(self, e: Exception) -> str | None:
        """Reply to a frame that could not be read; the reason to end the connection, or None to go on."""
        if isinstance(e, FramingError):
            log.warning("%s: %s", self.name, e)
            self.last_word(error(e.code, str(e), fatal=True))
            return e.code
        if self.needs_token and not self.ready:
            self.last_word(error("unauthorized", "say hello with the engine's token first", fatal=True))
            return "unauthorized"
        self.send(error(e.code, str(e), job_id=e.job_id, parameter=e.parameter))
        return None

    def handle(self, msg: Message) -> str | None:
        """Let the service handle ``msg``; the reason to end the connection, or None to go on."""
        try:
            return self.service.handle(self, msg)
        except ProtocolError as e:
            reply = error(e.code, str(e), job_id=e.job_id, parameter=e.parameter, fatal=e.fatal)
            if e.fatal:
                self.last_word(reply)
                return e.code
            self.send(reply)
        except Exception:  # a bug must not take the engine down: log it, answer plainly, carry on
            log.exception("%s: handling a %s message failed", self.name, msg.header.get("type"))
            self.send(error("internal_error", f"the engine could not handle this {shown(msg.header.get('type'))} "
                                              f"message (an internal error, described in the engine's log)",
                            job_id=job_id_or_none(msg) if msg.header.get("type") == "submit" else None))
        finally:
            release(msg)
        return None


class Connection(PeerBase):
    """``bulk_allowed``: the peer is the editor that started this engine, on the same machine (stdio),
    so large payloads may go through shared-memory files if its hello offers them (``core.link.bulk``)."""

    def __init__(self, service, read, write, *, name: str = "peer", close=None, needs_token: bool = False,
                 bulk_allowed: bool = False):
        super().__init__(service, name)
        self.needs_token = needs_token
        self.bulk_allowed = bulk_allowed
        self.bulk: str | None = None
        self.bulk_written: set[str] = set()
        self._read = read
        self._write = write
        self._close_transport = close
        self._out: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._previews_queued = 0
        self._writer = threading.Thread(target=self._write_loop, name=f"writer-{name}", daemon=True)

    # --- sending (any thread) ---------------------------------------------------------------------

    def send(self, msg: Message, *, droppable: bool = False) -> bool:
        """Queue ``msg`` for sending; False if the connection is closed (or a preview was dropped)."""
        if self.bulk and not droppable and not self.closed.is_set():   # (closed: its files would be orphans)
            msg = bulk.offload_or_pipe(msg, self.bulk, self.bulk_written, who=self.name)
        chunks = self._encode(msg)
        if chunks is None:
            return False
        if droppable:
            with self._lock:
                if self._previews_queued >= MAX_QUEUED_PREVIEWS:
                    return False
                self._previews_queued += 1
        self._out.put((chunks, droppable))
        return True

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                break
            chunks, droppable = item
            if droppable:
                with self._lock:
                    self._previews_queued -= 1
            try:
                for chunk in chunks:
                    self._write(chunk)
            except (OSError, ValueError) as e:
                log.info("%s: write failed (%s): closing", self.name, e)
                self.closed.set()
                break

    # --- reading (the connection's own thread) ----------------------------------------------------

    def serve(self) -> str:
        """Read and handle messages until the stream ends, a fatal error, or a shutdown.
        Returns why it ended: "eof", "shutdown", "protocol_error", "version_mismatch", ..."""
        self._writer.start()
        self.service.connected(self)
        reason = "eof"
        try:
            while not self.closed.is_set():
                limits = PRE_AUTH_LIMITS if self.needs_token and not self.ready else LIMITS
                try:
                    msg = read_message(self._read, limits, admit=check_declared)
                    if msg is not None and "bulk" in msg.header:
                        msg = bulk.restore(msg, self.bulk, mapped=True)
                except (FramingError, MessageError) as e:
                    outcome = self.read_failed(e)
                    if outcome:
                        reason = outcome
                        break
                    continue
                except (OSError, ValueError) as e:  # reset, timeout, closed file
                    reason = f"read failed ({type(e).__name__})"
                    break
                if msg is None:
                    break
                outcome = self.handle(msg)
                if outcome:
                    reason = outcome
                    break
        finally:
            self.end_reason = reason
            self.service.disconnected(self)
            self.close()
        return reason

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout``), then close the transport."""
        if self._writer.is_alive():
            self._out.put(None)
            self._writer.join(timeout)
        self.closed.set()
        bulk.discard(self.bulk, self.bulk_written)
        if self._close_transport is not None:
            try:
                self._close_transport()
            except OSError:
                pass
