"""What a client is told when something fails inside the engine: a stable code and our words, never the
exception's text (which goes to the engine's log).  The engine's dispatcher over a socket pair, with
the job's pipeline or a message handler made to fail the way a bug would."""

import pytest

from core import pipelines
from core.engine.service import EngineService
from core.link import protocol as P

from .engine_helpers import socket_peer
from .helpers import inpaint_request, rect_mask, rgba_u8

SECRET = "boom at /home/artist/secret.safetensors"
REQ = inpaint_request(rgba_u8(32, 32), rect_mask(32, 32, 4, 4, 20, 20), steps=1, seed=1)


@pytest.fixture
def peer(models):
    svc = EngineService(models=models, warm_up=False)
    p = socket_peer(svc)
    p.send(P.hello())
    yield p
    p.close()
    svc.close()


def final_error(peer, job_id):
    peer.wait(lambda m: m.get("job_id") == job_id and m.type in ("error", "result"))
    (msg,) = [m for m in peer.messages if m is not None and m.get("job_id") == job_id
              and m.type in ("error", "result")]
    assert msg.type == "error", msg.header
    return msg


@pytest.mark.parametrize("exc, code", [(KeyError(SECRET), "job_failed"), (TypeError(SECRET), "job_failed"),
                                       (RuntimeError(f"CUDA out of memory: {SECRET}"), "out_of_memory"),
                                       (MemoryError(SECRET), "out_of_memory")])
def test_a_job_that_raises_ends_with_a_code_and_our_words(peer, monkeypatch, exc, code):
    def execute(*args, **kw):
        raise exc

    monkeypatch.setattr(pipelines, "execute", execute)
    peer.send(P.submit("j", REQ))
    err = final_error(peer, "j")
    assert err.get("code") == code
    text = err.get("message")
    assert "boom" not in text and "secret" not in text and type(exc).__name__ not in text, text
    assert ("engine's log" in text) if code == "job_failed" else ("smaller" in text)


def test_a_bug_in_a_message_handler_is_an_internal_error_in_our_words(peer, monkeypatch):
    def broken(conn, msg):
        raise AttributeError(SECRET)

    monkeypatch.setitem(peer.conn.service._handlers, "capabilities", broken)
    peer.send(P.message("capabilities"))
    peer.wait(lambda m: m.type == "error")
    (err,) = [m for m in peer.messages if m is not None and m.type == "error"]
    assert err.get("code") == "internal_error"
    assert "boom" not in err.get("message") and "AttributeError" not in err.get("message")
    peer.send(P.submit("after", REQ))                   # the connection carries on
    peer.wait(lambda m: m.get("job_id") == "after" and m.type in ("error", "result"))
    assert [m.type for m in peer.messages if m is not None and m.get("job_id") == "after"][-1] == "result"


def test_a_remote_client_names_installed_loras_and_embeddings_only(models, tmp_path):
    """A path, or a name not installed, gets one refusal that says nothing about the server's files."""
    from dataclasses import replace as swap

    from core.contract.jobs import Params

    svc = EngineService(models=models, warm_up=False, allow_shutdown=False, token="t" * 43)
    (models.models_dir / "loras").mkdir(exist_ok=True)
    peer = socket_peer(svc, needs_token=True)
    try:
        peer.send(P.hello(token="t" * 43))
        texts = set()
        for i, (field, value) in enumerate([("loras", [["/etc/x.safetensors", 1.0]]),
                                            ("loras", [["../x.safetensors", 1.0]]),
                                            ("loras", [["missing.safetensors", 1.0]]),
                                            ("embeddings", ["~/e.safetensors"]),
                                            ("embeddings", ["nope.safetensors"])]):
            params = swap(REQ.params, **{field: value}) if isinstance(REQ.params, Params) else REQ.params
            peer.send(P.submit(f"a{i}", swap(REQ, params=params)))
            err = final_error(peer, f"a{i}")
            assert err.get("code") == "invalid_parameter" and err.get("parameter") == field, err.header
            texts.add(err.get("message").split(": ", 1)[1])
        assert len(texts) == 1 and "/etc" not in texts.pop()
    finally:
        peer.close()
        svc.close()
