"""The start of a conversation, shared by the engine and the cluster gateway (core.engine.handshake):
routing before and after the hello, and what a hello must pass.  The connection is a recorder of what
is sent: the engine's and the gateway's real connections are exercised in test_serve_limits,
test_remote and test_cluster."""

from __future__ import annotations

import math

import pytest

from core.engine import handshake
from core.link.protocol import hello, message


class Conn:
    def __init__(self, ready=False, busy=""):
        self.ready, self.busy, self.name = ready, busy, "peer"
        self.sent, self.last = [], None
        self.heartbeat_every = 2.0

    def send(self, msg):
        self.sent.append(msg)

    def last_word(self, msg):
        self.last = msg

    def admit(self):
        return self.busy


def route(conn, msg, token_required):
    heard = []
    handlers = {"submit": lambda c, m: heard.append(("submit", m.type)) or None,
                "shutdown": lambda c, m: "bye"}
    reason = handshake.route(conn, msg, handlers, lambda c, m: heard.append(("hello", m.type)) or "greeted",
                             token_required=token_required)
    return reason, heard


def test_before_the_hello_only_a_hello_is_heard():
    conn = Conn()
    assert route(conn, message("submit"), token_required=True) == ("unauthorized", [])
    assert conn.last.get("code") == "unauthorized" and conn.last.get("fatal") is True and conn.sent == []

    conn = Conn()      # a local connection (no token owed) is told, and may still say hello
    assert route(conn, message("submit"), token_required=False) == (None, [])
    assert conn.last is None and [m.get("code") for m in conn.sent] == ["hello_required"]
    assert route(conn, hello(), token_required=False) == ("greeted", [("hello", "hello")])


def test_after_the_hello_messages_go_to_their_handlers():
    conn = Conn(ready=True)
    assert route(conn, message("submit"), token_required=True) == (None, [("submit", "submit")])
    assert route(conn, message("shutdown"), token_required=True) == ("bye", [])
    assert route(conn, message("x" * 500), token_required=True) == (None, [])
    (unknown,) = conn.sent
    assert unknown.get("code") == "unknown_message" and len(unknown.get("message")) < 100


def test_a_hello_is_checked_in_form_then_token_then_the_servers_cap():
    tokens = []

    def authenticate(token):
        tokens.append(token)
        if token != "secret":
            raise handshake.Refused("unauthorized", "wrong or missing token")
        return "ada"

    with pytest.raises(handshake.Refused) as e:
        handshake.accept_hello(Conn(), message("hello", protocol="1", token="secret"), authenticate)
    assert e.value.code == "version_mismatch" and tokens == []        # the form before the token
    with pytest.raises(handshake.Refused) as e:
        handshake.accept_hello(Conn(), hello(token="guess"), authenticate)
    assert e.value.code == "unauthorized"
    busy = Conn(busy="too many connections (8 of 8)")
    with pytest.raises(handshake.Refused) as e:
        handshake.accept_hello(busy, hello(token="secret"), authenticate)
    assert (e.value.code, str(e.value)) == ("server_busy", "too many connections (8 of 8)")
    assert e.value.close(busy) == "server_busy" and busy.last.get("fatal") is True
    assert handshake.accept_hello(Conn(), hello(token="secret"), authenticate) == "ada"


@pytest.mark.parametrize("asked, agreed", [(0.5, 0.5), (0.001, 0.05), (1e9, 60.0), (True, 2.0), (math.nan, 2.0),
                                           ("5", 2.0), (None, 2.0)])
def test_the_heartbeat_is_agreed_within_bounds(asked, agreed):
    conn = Conn()
    handshake.accept_hello(conn, hello(heartbeat=asked), lambda token: None)
    assert conn.heartbeat_every == agreed
