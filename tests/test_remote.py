"""Remote mode: ``python -m core serve`` prints its token once, refuses connections without it, speaks
TLS when given a certificate, refuses a plain-text non-loopback listener unless asked (and then warns),
and runs jobs for clients that present the token."""

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from core.contract.events import Failed, Finished
from core.engine.serve import is_loopback, parse_listen, plaintext_refusal, plaintext_warning
from core.link import protocol as P
from core.link.client import EngineClient, EngineError
from core.pipelines import run_job

from .engine_helpers import ROOT, engine_env
from .helpers import inpaint_request, rect_mask, rgba_u8

HAVE_OPENSSL = shutil.which("openssl") is not None


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not HAVE_OPENSSL:
        return None
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def start_server(args, env):
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while len(lines) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert len(lines) >= 2, (lines, proc.poll())
    return proc, lines


@pytest.fixture(scope="module")
def server(tiny_root, certs):
    import os

    args = ["--listen", "127.0.0.1:0"]
    if certs:
        args += ["--cert", str(certs[0]), "--key", str(certs[1])]
    proc, lines = start_server(args, {**os.environ, **engine_env(tiny_root)})
    url = lines[0].split("serving on ")[1].strip()
    token = lines[1].split("token: ")[1].strip()
    yield {"url": url, "token": token, "cafile": str(certs[0]) if certs else None, "proc": proc, "lines": lines}
    proc.terminate()
    assert proc.wait(30) == 0
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr


def connect_raw(server):
    from core.link.client import parse_url

    host, port, ctx = parse_url(server["url"], server["cafile"])
    sock = socket.create_connection((host, port), timeout=30)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname=host)
    return sock


def exchange(server, data: bytes, until=None) -> list:
    """Send raw bytes on a new connection; the messages until the server closes it (or ``until(msg)``)."""
    sock = connect_raw(server)
    sock.sendall(data)
    f = sock.makefile("rb")
    out = []
    try:
        while (m := P.read_message(f.read)) is not None:
            out.append(m)
            if until is not None and until(m):
                break
    finally:
        sock.close()
    return out


def client_run(coro_factory):
    return asyncio.run(coro_factory())


def test_the_token_is_printed_once_and_never_logged(server, isolated_app_dirs):
    assert server["url"].startswith("tls://" if HAVE_OPENSSL else "tcp://")
    assert len(server["token"]) >= 40
    assert sum(server["token"] in line for line in server["lines"]) == 1
    log = isolated_app_dirs / "logs" / "engine-serve.log"
    assert log.is_file() and server["token"] not in log.read_text()


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_a_missing_or_wrong_token_is_refused(server, token):
    async def go():
        client = EngineClient(url=server["url"], token=token, cafile=server["cafile"])
        handle = client.submit(inpaint_request(rgba_u8(16, 16), None, steps=1))
        final = await handle.wait()
        with pytest.raises(EngineError) as e:
            await client.start()
        await client.stop()
        return final, e.value

    final, err = client_run(go)
    assert isinstance(final, Failed) and final.code == "unauthorized"
    assert err.code == "unauthorized"


def test_anything_but_a_hello_with_the_token_is_refused_at_the_connection(server):
    for data in (P.encode_bytes(P.message("capabilities")),
                 P.encode_bytes(P.submit("j", inpaint_request(rgba_u8(8, 8), None, steps=1))),
                 P.encode_bytes(P.hello(token=server["token"][:-1] + "x")),
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        replies = exchange(server, data)
        assert replies[-1].type == "error" and replies[-1].get("fatal")
        assert replies[-1].get("code") in ("unauthorized", "protocol_error")
        assert not [m for m in replies if m.type in ("hello", "capabilities", "accepted")]


def test_with_the_token_jobs_run_and_match_in_process(server, models):
    req = inpaint_request(rgba_u8(48, 64, seed=3), rect_mask(48, 64, 10, 10, 40, 30), steps=2, seed=8)

    async def go():
        async with EngineClient(url=server["url"], token=server["token"], cafile=server["cafile"]) as client:
            return await client.submit(req).wait()

    final = client_run(go)
    assert isinstance(final, Finished), final
    local = run_job(req, models)
    assert final.result.patches[0].image.data == local.patches[0].image.data


def test_a_client_cannot_stop_the_shared_engine(server):
    replies = exchange(server, P.encode_bytes(P.hello(token=server["token"])) + P.encode_bytes(P.message("shutdown")),
                       until=lambda m: m.type == "error")
    assert replies[0].type == "hello" and replies[0].get("shared") is True
    assert any(m.type == "error" and "cannot be stopped" in m.get("message", "") for m in replies)
    assert server["proc"].poll() is None
    again = exchange(server, P.encode_bytes(P.hello(token=server["token"])), until=lambda m: True)
    assert again[0].type == "hello"


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs openssl to make a certificate")
def test_tls_is_really_used_and_verified(server):
    # a plain-text hello to the TLS port gets no engine answer
    from core.link.client import parse_url

    host, port, _ = parse_url(server["url"])
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(P.encode_bytes(P.hello(token=server["token"])))
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert P.MAGIC not in data

    # a client that does not trust the self-signed certificate refuses to talk
    async def go():
        client = EngineClient(url=server["url"], token=server["token"])
        with pytest.raises(EngineError) as e:
            await client.start()
        await client.stop()
        return e.value

    err = client_run(go)
    assert err.code == "engine_start_failed" and "certificate" in str(err).lower()
    assert "SSL" not in str(err) and ".c:" not in str(err)         # our words, not the ssl module's


def test_a_server_that_is_not_there_is_said_in_words_not_in_python():
    with socket.socket() as s:      # a port that was just free on 127.0.0.1 and is closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        client = EngineClient(url=f"tcp://127.0.0.1:{port}", token="x")
        with pytest.raises(EngineError) as e:
            await client.start()
        await client.stop()
        return e.value

    err = client_run(go)
    assert err.code == "engine_start_failed"
    assert str(err) == "cannot start the engine: the connection was refused: is the server running at that " \
                       "address and port?"


def test_plain_text_on_a_non_loopback_address_is_refused_unless_asked_for():
    out = subprocess.run([sys.executable, "-m", "core", "serve", "--listen", "0.0.0.0:0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert "refusing to listen on 0.0.0.0 without TLS" in out.stderr and "clear text" in out.stderr
    assert "--cert" in out.stderr and "--insecure-plaintext" in out.stderr
    assert "Traceback" not in out.stderr



def test_insecure_plaintext_lets_a_non_loopback_address_through_with_a_warning(monkeypatch, tmp_path):
    """In this process, without listening on anything but what the test asks for: ``run`` takes the
    flag and hands the address to the listener (stood in for), which warns."""
    import argparse

    from core.engine import serve
    from core.engine.stdio import add_engine_options

    seen = {}

    async def listener(service, host, port, ctx, token, limits=None, **kw):
        seen.update(host=host, port=port, tls=ctx is not None, warning=serve.plaintext_warning(host, ctx is not None))
        return 0

    monkeypatch.setattr(serve, "_serve", listener)
    monkeypatch.setenv("DD_LOG_DIR", str(tmp_path))
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    serve.add_network_options(ap)
    add_engine_options(ap)
    assert serve.run(ap.parse_args(["--listen", "0.0.0.0:7860", "--no-warm-up"])) == 2 and not seen
    assert serve.run(ap.parse_args(["--listen", "0.0.0.0:7860", "--insecure-plaintext", "--no-warm-up"])) == 0
    assert seen["host"] == "0.0.0.0" and not seen["tls"]
    assert "WITHOUT TLS" in seen["warning"] and "--insecure-plaintext" in seen["warning"]


def test_warning_rules_and_listen_parsing():
    assert plaintext_refusal("0.0.0.0", tls=False, allowed=False) and plaintext_refusal("10.0.0.2", False, False)
    assert plaintext_refusal("0.0.0.0", tls=True, allowed=False) is None
    assert plaintext_refusal("0.0.0.0", tls=False, allowed=True) is None
    assert plaintext_refusal("127.0.0.1", tls=False, allowed=False) is None
    assert plaintext_refusal("localhost", tls=False, allowed=False) is None
    assert plaintext_warning("0.0.0.0", tls=False) and plaintext_warning("192.168.1.20", tls=False)
    assert plaintext_warning("0.0.0.0", tls=True) is None
    assert plaintext_warning("127.0.0.1", tls=False) is None and plaintext_warning("::1", tls=False) is None
    assert is_loopback("localhost")
    assert parse_listen("127.0.0.1:7860") == ("127.0.0.1", 7860)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("7860", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_no_certificate_without_a_key():
    out = subprocess.run([sys.executable, "-m", "core", "serve", "--listen", "127.0.0.1:0", "--cert", "x.pem"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--cert and --key go together" in out.stderr


def test_tls_context_needs_readable_files_and_says_so_in_our_words(tmp_path):
    from core.engine.serve import tls_context

    with pytest.raises(ValueError) as e:
        tls_context(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
    assert str(e.value) == f"--cert: cannot read {tmp_path / 'missing.pem'} (No such file or directory)"
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(ValueError) as e:
        tls_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert "must be a PEM certificate and its own private key" in str(e.value)
    assert "SSL" not in str(e.value) and "Errno" not in str(e.value) and ".c:" not in str(e.value)
    out = subprocess.run([sys.executable, "-m", "core", "serve", "--listen", "127.0.0.1:0", "--cert",
                          str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("error: --cert and --key must be a PEM certificate")
