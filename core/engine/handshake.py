"""The start of every conversation, the same for the engine (``service``) and the cluster gateway
(``core.cluster.gateway``): nothing but a hello until one is accepted; a hello is accepted in its form
(``protocol.check_hello``), with the token the server asks for (when it asks for one) and within the
server's cap on authenticated connections (``conn.admit()``); the heartbeat is agreed on then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

from ..link.protocol import Message, MessageError, check_hello, error

log = logging.getLogger(__name__)

Who = TypeVar("Who")
Handler = Callable[[object, Message], "str | None"]
MIN_HEARTBEAT, MAX_HEARTBEAT = 0.05, 60.0


class Refused(Exception):
    """A hello turned down: ``code`` is the error's stable code; the text says why, in words a client
    may see."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code

    def close(self, conn) -> str:
        """Tell ``conn`` and end it: returns the reason to end the connection."""
        return end(conn, self.code, str(self))


def end(conn, code: str, text: str) -> str:
    """The connection's last word, a fatal error; returns its code as the reason to end it."""
    conn.last_word(error(code, text, fatal=True))
    return code


def route(conn, msg: Message, handlers: Mapping[str, Handler], on_hello: Handler, *,
          token_required: bool) -> str | None:
    """Hand one message to its handler; returns a reason to end the connection, or None to carry on.
    Before the hello is accepted only a hello is heard: anything else ends a connection that owes a
    token, and is answered ``hello_required`` on one that does not."""
    if not conn.ready:
        if msg.type == "hello":
            return on_hello(conn, msg)
        if token_required:
            return end(conn, "unauthorized", "say hello with your token first")
        conn.send(error("hello_required", f"{msg.type[:60]}: say hello first"))
        return None
    handler = handlers.get(msg.type)
    if handler is None:
        conn.send(error("unknown_message", f"unknown message type {msg.type[:60]!r}"))
        return None
    return handler(conn, msg)


def accept_hello(conn, msg: Message, authenticate: Callable[[object], Who]) -> Who:
    """Check a hello on ``conn``: its form, then ``authenticate(token)`` (what the server keeps of the
    client; it raises ``Refused``), then the server's cap; sets the heartbeat the client asked for
    (within 0.05–60 s).  Raises ``Refused``; the caller marks the connection ready and answers."""
    try:
        check_hello(msg)
    except MessageError as e:
        raise Refused(e.code, str(e)) from None
    who = authenticate(msg.get("token"))
    busy = conn.admit()
    if busy:
        log.warning("%s: refused: %s", conn.name, busy)
        raise Refused("server_busy", busy)
    conn.queue_shifts = msg.get("queue_shifts") is True   # it reads queue updates as moves (core.link.queuemoves)
    beat = msg.get("heartbeat")
    if isinstance(beat, (int, float)) and not isinstance(beat, bool) and beat == beat:
        conn.heartbeat_every = min(max(float(beat), MIN_HEARTBEAT), MAX_HEARTBEAT)
    return who
