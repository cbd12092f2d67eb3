"""What a client can make a shared engine (``python -m core serve``) hold, and for how long:

- connections that never authenticate cannot lock artists out (their own budget, per address and in all,
  the oldest pushed out; a short deadline to say hello);
- a frame in flight must keep coming (idle and progress deadlines), while an authenticated client may
  stay idle between frames;
- declared payload sizes are checked against the job's own dimensions before anything is read, and held
  against a memory budget; the server's memory stays under its cap and goes back down afterwards;
- queue updates are changes, coalesced: their bytes grow linearly with the queue;
- a remote client names models, never server paths;
- SIGTERM and SIGINT stop the server without a traceback.

The timing limits are shortened for the in-process server (``ServeLimits``); nothing asserts a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import socket
import threading
import time
from dataclasses import replace

import pytest

from core.contract.events import Finished
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params
from core.engine.serve import Budget, Pool, ServeLimits, _serve, address_key
from core.engine.service import EngineService
from core.link import protocol as P
from core.link.client import EngineClient

from .engine_helpers import LONG, ServeProcess, engine_env, socket_peer
from .helpers import inpaint_request, rect_mask, rgba_u8

MiB, GiB = 1 << 20, 1 << 30
SMALL = inpaint_request(rgba_u8(32, 32, seed=1), rect_mask(32, 32, 4, 4, 20, 20), steps=1, seed=1)


def frame(header: dict, payload_sizes=()) -> bytes:
    raw = json.dumps({**header, "payloads": list(payload_sizes)}).encode()
    return P.PREFIX.pack(P.MAGIC, len(raw), sum(payload_sizes)) + raw


def read_until(sock, predicate, timeout: float = 120):
    """Messages from ``sock`` until ``predicate(msg)`` (that one included) or the end of the stream."""
    sock.settimeout(timeout)
    f = sock.makefile("rb", buffering=0)   # unbuffered: a later read gets what this one did not use
    out = []
    try:
        while (m := P.read_message(f.read)) is not None:
            out.append(m)
            if predicate(m):
                break
    except (ConnectionResetError, P.FramingError):
        pass
    return out


def closed_by_peer(sock, timeout: float = 120) -> bool:
    """Whether the server closes ``sock`` (reading and dropping what it sends) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# --- the pool and the budget on their own ----------------------------------------------------------

class Fake:
    def __init__(self, key):
        self.key = key
        self.name = key


def test_the_waiting_pool_pushes_out_the_oldest_of_the_busiest_address():
    pool = Pool(ServeLimits(pre_auth=6, pre_auth_per_address=3, connections=2))
    attacker = [Fake("10.0.0.9") for _ in range(3)]
    assert [pool.arrive(c) for c in attacker] == [[], [], []]
    assert pool.arrive(Fake("10.0.0.9")) == [attacker[0]]           # per address: its own oldest goes
    others = [Fake(f"10.0.1.{i}") for i in range(3)]
    assert [pool.arrive(c) for c in others] == [[], [], []]          # the pool is full now (6)
    artist = Fake("192.168.1.5")
    assert pool.arrive(artist) == [attacker[1]]                      # the busiest address pays
    assert pool.authenticate(artist) is None and artist in pool.ready and artist not in pool.waiting
    assert pool.authenticate(others[0]) is None
    assert "2 connections" in pool.authenticate(others[1])          # the authenticated cap
    assert pool.evicted == 2


def test_ipv6_addresses_count_per_64_network():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::7") == "2001:db8:1:2::/64"
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3" and address_key("10.1.2.3") == "10.1.2.3"


def test_the_budget_refuses_what_does_not_fit_and_gives_back_what_jobs_held():
    b = Budget(total=100, per_connection=60)
    one, two = object(), object()
    with pytest.raises(P.MessageError) as e:
        b.reserve(one, 61, "j")
    assert e.value.code == "payload_too_large" and e.value.job_id == "j" and "one connection" in str(e.value)
    h1 = b.reserve(one, 50, "a")
    with pytest.raises(P.MessageError) as e:
        b.reserve(one, 20, "b")                                       # this connection's share
    assert e.value.code == "server_busy"
    h2 = b.reserve(two, 50, "c")
    with pytest.raises(P.MessageError) as e:
        b.reserve(two, 1, "d")                                        # the server's total
    assert e.value.code == "server_busy" and "try again" in str(e.value)
    h1.release()
    h1.release()                                                      # idempotent
    b.reserve(two, 10, "e")
    h2.release()
    assert b.used == 10 and b.peak == 100


# --- an in-process server with short time limits ---------------------------------------------------

class InProcessServer:
    """``_serve`` in a thread, on a real EngineService with the tiny models."""

    def __init__(self, models, limits: ServeLimits):
        self.service = EngineService(models=models, warm_up=False, allow_shutdown=False)
        self.service.token = "t" * 43
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(limits,), daemon=True)
        self.thread.start()
        assert self.started.wait(60)

    def _run(self, limits):
        async def main():
            self.stop = asyncio.Event()
            return await _serve(self.service, "127.0.0.1", 0, None, self.service.token, limits,
                                ready=self._ready, stop=self.stop, signals=False)

        self.result = self.loop.run_until_complete(main())

    def _ready(self, url):
        self.port = int(url.rsplit(":", 1)[1])
        self.started.set()

    def connect(self, hello: bool = True):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        if hello:
            sock.sendall(P.encode_bytes(P.hello(token=self.service.token, heartbeat=60)))
            (answer,) = read_until(sock, lambda m: m.type in ("hello", "error"))[-1:]
            assert answer.type == "hello", answer.header
        return sock

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        self.service.close()
        assert self.result == 0


FAST = ServeLimits(hello_timeout=1.5, frame_idle=1.0, frame_grace=2.0, min_rate=64 << 10, pre_auth=16,
                   pre_auth_per_address=4, upload_bytes=64 * MiB, connection_upload_bytes=32 * MiB)


@pytest.fixture(scope="module")
def fast_server(models):
    srv = InProcessServer(models, FAST)
    yield srv
    srv.close()


def test_a_connection_that_never_says_hello_is_closed(fast_server):
    sock = fast_server.connect(hello=False)
    replies = read_until(sock, lambda m: False)
    assert replies[-1].get("code") == "unauthorized" and replies[-1].get("fatal")
    assert "no hello" in replies[-1].get("message")


def test_a_frame_trickling_in_a_byte_at_a_time_is_dropped_and_others_are_not_hurt(fast_server):
    slow = fast_server.connect()
    data = P.encode_bytes(P.message("capabilities"))
    dropped = False
    try:
        for i in range(len(data)):       # one byte every half second: never idle for a second, but slow
            slow.sendall(data[i:i + 1])
            time.sleep(0.5)
            r, _, _ = select.select([slow], [], [], 0)
            if r:
                break
    except (BrokenPipeError, ConnectionResetError):
        dropped = True
    replies = read_until(slow, lambda m: m.type == "error" and m.get("fatal"))
    assert dropped or replies[-1].get("code") == "too_slow", [m.header for m in replies]
    if replies:
        assert "too slowly" in replies[-1].get("message")
    other = fast_server.connect()                     # a well-behaved client is served as ever
    other.sendall(P.encode_bytes(P.submit("ok", SMALL)))
    final = read_until(other, lambda m: m.get("job_id") == "ok" and m.type in ("result", "error"))[-1]
    assert final.type == "result", final.header


def test_a_frame_that_stops_midway_is_dropped(fast_server):
    sock = fast_server.connect()
    sock.sendall(P.encode_bytes(P.message("capabilities"))[:9])
    replies = read_until(sock, lambda m: m.type == "error" and m.get("fatal"))
    assert replies[-1].get("code") == "too_slow"
    assert closed_by_peer(sock)


def test_an_authenticated_client_may_stay_idle_between_frames(fast_server):
    sock = fast_server.connect()
    time.sleep(FAST.frame_idle + FAST.frame_grace + 1)   # longer than any frame may take
    sock.sendall(P.encode_bytes(P.message("capabilities")))
    assert read_until(sock, lambda m: m.type == "capabilities")[-1].type == "capabilities"


def test_a_declared_payload_is_checked_before_it_is_read(fast_server):
    sock = fast_server.connect()
    req = replace(SMALL, image=ImageBuffer(64, 64, "BGRA_U8", b""), mask=None)
    header = P.submit("liar", req).header
    sock.sendall(frame({**header, "buffers": ["image"]}, [2 * GiB]))   # 64x64 BGRA_U8 is 16384 bytes
    refusal = read_until(sock, lambda m: m.type == "error")[-1]       # before a single payload byte was sent
    assert refusal.get("code") == "invalid_parameter" and refusal.get("job_id") == "liar"
    assert refusal.get("parameter") == "image" and "16384 bytes" in refusal.get("message")
    # (the frame is still owed its 2 GiB: a new connection for the next case)
    sock.close()
    sock = fast_server.connect()
    # within the declared size but beyond what one connection may send: refused, also before reading
    big = replace(req, image=ImageBuffer(4096, 4096, "BGRA_U8", b""))
    sock.sendall(frame({**P.submit("big", big).header, "buffers": ["image"]}, [4096 * 4096 * 4]))
    refusal = read_until(sock, lambda m: m.type == "error")[-1]
    assert refusal.get("code") == "payload_too_large" and refusal.get("job_id") == "big"
    assert "one connection" in refusal.get("message")


# --- a server process: lock-out, memory, model names, stopping -------------------------------------

ATTACKERS = 200
ARTISTS = 100 if LONG else 10


class Attacker:
    """Holds ``count`` connections that never authenticate, from other loopback addresses, and opens a
    new one whenever the server closes one (a reconnecting attacker)."""

    def __init__(self, port: int, count: int, sources=tuple(f"127.0.0.{i}" for i in range(2, 12))):
        self.port, self.count, self.sources = port, count, sources
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self):
        src = self.sources[self.opened % len(self.sources)]
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(src, 0))
            s.setblocking(False)
            self.socks.append(s)
            self.opened += 1
        except OSError:
            time.sleep(0.01)

    def _run(self):
        while not self.stopped.is_set():
            while len(self.socks) < self.count and not self.stopped.is_set():
                self._open()
            readable, _, _ = select.select(self.socks, [], [], 0.05)
            for s in readable:          # the server closed it (or said something): open another
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.socks.remove(s)
                    s.close()

    def stop(self):
        self.stopped.set()
        self.thread.join(30)
        for s in self.socks:
            s.close()


@pytest.fixture(scope="module")
def models_root(tiny_root, tmp_path_factory):
    """A models folder with the tiny models and one model installed under a name of its own."""
    root = tmp_path_factory.mktemp("served-models")
    for d in tiny_root.iterdir():
        if d.is_dir():
            os.symlink(d, root / d.name)
    shutil.copytree(tiny_root / "sd2-inpainting", root / "my-inpainting")
    return root


@pytest.fixture(scope="module")
def server(models_root, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve-logs")
    srv = ServeProcess(["--no-warm-up"], env=engine_env(models_root, DD_LOG_DIR=logs))
    srv.logs = logs
    yield srv
    assert srv.stop() == 0
    assert "Traceback" not in srv.stderr, srv.stderr[-2000:]


def test_idle_unauthenticated_connections_do_not_lock_artists_out(server, loop):
    attacker = Attacker(server.port, ATTACKERS)
    try:
        while len(attacker.socks) < ATTACKERS:
            time.sleep(0.05)
        got_in = 0
        for _ in range(ARTISTS):                 # artists connect while the attack goes on
            sock = server.connect(timeout=60)
            try:
                answer = server.hello(sock)
            finally:
                sock.close()
            got_in += answer is not None and answer.type == "hello"

        async def job():
            async with EngineClient(url=server.url, token=server.token) as client:
                return await client.submit(SMALL).wait()

        final = loop.run(job())
        held, opened = len(attacker.socks), attacker.opened
    finally:
        attacker.stop()
    print(f"\nlock-out: {held} unauthenticated connections held ({opened} opened by the attacker); "
          f"{got_in} of {ARTISTS} artists got in; a job: {type(final).__name__}")
    assert got_in == ARTISTS
    assert isinstance(final, Finished), final


def rss(server) -> int:
    return server.memory()["VmRSS"]


def settled_rss(server, seconds: float = 2.0) -> int:
    """The server's resident memory once it stopped moving (no timing is asserted)."""
    before = rss(server)
    for _ in range(20):
        time.sleep(seconds / 4)
        now = rss(server)
        if abs(now - before) < 8 * MiB:
            return now
        before = now
    return before


class Sampler:
    def __init__(self, server):
        self.server, self.peak, self.stopped = server, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, rss(self.server))
            except OSError:
                return
            time.sleep(0.01)

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join(10)
        return self.peak


def stream(sock, header: dict, sizes, send_bytes: int):
    """A frame declaring ``sizes`` whose first ``send_bytes`` payload bytes are sent (zeros)."""
    sock.sendall(frame(header, sizes))
    zeros = bytes(MiB)
    sent = 0
    while sent < send_bytes:
        n = min(MiB, send_bytes - sent)
        sock.sendall(zeros[:n])
        sent += n


def test_memory_stays_under_the_cap_with_a_2_gib_payload_in_flight(models_root, tmp_path):
    cap_mb = 3000     # one connection may hold half: 1500 MiB
    srv = ServeProcess(["--no-warm-up", "--max-upload-mb", str(cap_mb)],
                       env=engine_env(models_root, DD_LOG_DIR=tmp_path))
    rows = []
    try:
        sock = srv.connect()
        assert srv.hello(sock).type == "hello"
        read_until(sock, lambda m: m.type == "capabilities")
        base = settled_rss(srv)
        img16k = replace(SMALL, image=ImageBuffer(16384, 16384, "BGRA_U16", b""), mask=None)  # 2 GiB of pixels
        header = {**P.submit("huge", img16k).header, "buffers": ["image"]}

        # 1. 2 GiB declared, more than one connection may send: refused before a byte of it is read
        sampler = Sampler(srv)
        sock.sendall(frame(header, [2 * GiB]))
        refusal = read_until(sock, lambda m: m.type == "error")[-1]
        stream(sock, {"type": "capabilities"}, [], 0)
        peak = sampler.stop()
        assert refusal.get("code") == "payload_too_large" and refusal.get("job_id") == "huge"
        rows.append(("2 GiB declared, over the connection's share: refused unread", base, peak, rss(srv)))
        sock.close()

        # 2. the same 2 GiB with a server whose share allows it, streamed half-way, then the client vanishes
        srv2 = ServeProcess(["--no-warm-up", "--max-upload-mb", "5000"], env=engine_env(models_root,
                                                                                         DD_LOG_DIR=tmp_path / "b"))
        try:
            s2 = srv2.connect()
            assert srv2.hello(s2).type == "hello"
            read_until(s2, lambda m: m.type == "capabilities")
            base2 = settled_rss(srv2)
            sampler = Sampler(srv2)
            stream(s2, header, [2 * GiB], GiB)
            time.sleep(0.5)
            during = rss(srv2)
            s2.close()
            after = settled_rss(srv2)
            peak2 = sampler.stop()
            rows.append(("2 GiB declared and accepted, 1 GiB in flight, then closed", base2, peak2, after))
            assert peak2 - base2 < 2500 * MiB              # under its cap (one connection: 2500 MiB)
            assert during - base2 > 512 * MiB              # (the bytes really were held while in flight)
            assert after - base2 < 96 * MiB                # and given back when the connection closed
        finally:
            srv2.stop()
    finally:
        srv.stop()
    print("\n| case | baseline RSS | peak RSS | RSS after | cap |")
    print("|---|---|---|---|---|")
    for name, b, p, a in rows:
        print(f"| {name} | {b / MiB:.0f} MiB | {p / MiB:.0f} MiB (+{(p - b) / MiB:.0f}) | {a / MiB:.0f} MiB | "
              f"{cap_mb if 'refused' in name else 5000} MiB, half per connection |")
    assert rows[0][2] - rows[0][1] < 64 * MiB                # nothing of the refused payload was held


PATHS = ["/etc", "~/.bashrc", "../../etc/passwd", "/proc/self/environ", "/nonexistent/model", "sd2-inpainting/..",
         "stabilityai/stable-diffusion-2-inpainting", "my-inpainting/unet", ".", "..", "C:\\Windows", "\\\\host\\x"]


def test_a_remote_client_names_models_never_server_paths(server, models_root):
    paths = [*PATHS, str(models_root / "my-inpainting"), str(models_root / "sd2-inpainting")]  # real models too
    sock = server.connect()
    assert server.hello(sock).type == "hello"
    messages = set()
    for i, model in enumerate(paths):
        sock.sendall(P.encode_bytes(P.submit(f"p{i}", replace(SMALL, model=model))))
        reply = read_until(sock, lambda m, i=i: m.get("job_id") == f"p{i}" and m.type in ("error", "accepted"))[-1]
        assert reply.type == "error" and reply.get("code") == "invalid_parameter", (model, reply.header)
        assert reply.get("parameter") == "model"
        messages.add(reply.get("message"))
    assert len(messages) == 1                             # one message, whatever exists on the server
    (text,) = messages
    assert "/" not in text.replace("files or folders", "") and str(models_root) not in text
    for i, model in enumerate(["sd2-inpainting", "my-inpainting", None]):   # installed names work
        sock.sendall(P.encode_bytes(P.submit(f"ok{i}", replace(SMALL, model=model))))
        final = read_until(sock, lambda m, i=i: m.get("job_id") == f"ok{i}" and m.type in ("error", "result"))[-1]
        assert final.type == "result", (model, final.header)
    sock.sendall(P.encode_bytes(P.message("capabilities")))
    caps = read_until(sock, lambda m: m.type == "capabilities")[-1].get("capabilities")
    assert all(m["path"] is None for m in caps["models"])
    assert str(models_root) not in json.dumps(caps)
    sock.close()


def raw_frame(header: dict, payloads=()) -> bytes:
    """A frame made by hand (JSON escapes for what UTF-8 cannot carry, like a lone surrogate)."""
    payloads = [bytes(p) for p in payloads]
    return frame(header, [len(p) for p in payloads]) + b"".join(payloads)


def test_a_job_id_or_a_prompt_that_is_not_valid_unicode_is_refused_and_logs_stay_one_line(server):
    sock = server.connect()
    assert server.hello(sock).type == "hello"
    good = P.submit("u1", SMALL)
    header = json.loads(json.dumps(good.header))
    header["request"]["params"]["prompt"] = "a \ud800 b"
    sock.sendall(raw_frame(header, good.payloads))
    reply = read_until(sock, lambda m: m.type == "error")[-1]
    assert reply.get("job_id") == "u1" and reply.get("code") == "invalid_parameter"
    assert reply.get("parameter") == "prompt" and "lone surrogate" in reply.get("message")
    forged = "2026-01-01 00:00:00,000 1 MainThread INFO core.engine.service: forged"
    for job_id in ("a\ud800", f"x\n{forged}", "x" * 129, "a b", ""):
        sock.sendall(raw_frame({"type": "cancel", "job_id": job_id}))
        sock.sendall(raw_frame({**good.header, "job_id": job_id}, good.payloads))
        for _ in range(2):
            err = read_until(sock, lambda m: m.type == "error")[-1]
            assert err.get("code") == "bad_message" and err.get("job_id") is None
            assert err.get("parameter") == "job_id" and "letters, digits" in err.get("message")
    sock.sendall(raw_frame({"type": f"bogus\n{forged}", "job_id": "x"}))
    assert read_until(sock, lambda m: m.type == "error")[-1].get("code") == "unknown_message"
    sock.close()
    lines = (server.logs / "engine-serve.log").read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith(forged[:23])]
    assert all(line[:2] == "20" or line.startswith("  | ") for line in lines), lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_server_stops_cleanly_with_clients_connected(models_root, tmp_path, sig):
    srv = ServeProcess([], env=engine_env(models_root, DD_LOG_DIR=tmp_path))
    busy = srv.connect()
    assert srv.hello(busy).type == "hello"
    busy.sendall(P.encode_bytes(P.submit("long", inpaint_request(rgba_u8(64, 64), rect_mask(64, 64, 8, 8, 40, 40),
                                                                 steps=400))))
    read_until(busy, lambda m: m.type == "progress")
    idle = srv.connect()
    assert srv.hello(idle).type == "hello"
    waiting = srv.connect()                                   # never says hello
    half = srv.connect()
    half.sendall(P.encode_bytes(P.hello(token=srv.token))[:7])  # stopped inside its hello
    code = srv.stop(sig)
    ends = read_until(busy, lambda m: False)
    for s in (busy, idle, waiting, half):
        s.close()
    log = (tmp_path / "engine-serve.log").read_text()
    assert code == 0
    assert "Traceback" not in srv.stderr and "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, [line for line in log.splitlines() if " ERROR " in line]
    last = [m for m in ends if m.type == "error" and m.get("fatal")]
    assert [m.get("code") for m in last] == ["engine_shutting_down"], [m.header for m in ends]


# --- queue updates ---------------------------------------------------------------------------------

QUEUE_SIZES = (250, 500, 1000) if LONG else (125, 250, 500)


def test_queue_updates_grow_linearly_not_n_squared(models):
    """One client queues n jobs behind a long one, which is then cancelled: the queue drains, every job
    moving up n times.  The bytes of queue messages the client receives grow linearly with n (moves:
    core.link.queuemoves; whole-queue updates on every change grew like n²: 1.2/4.8/19.4 MB for
    250/500/1000 jobs, positions that moved enough like n log n)."""
    svc = EngineService(models=models, warm_up=False, allow_shutdown=False, heartbeat=60)
    rows = []
    tiny = JobRequest("fill", Params(), Options(backend="opencv"), image=SMALL.image, mask=SMALL.mask)
    try:
        for n in QUEUE_SIZES:
            peer = socket_peer(svc)
            peer.send(P.hello(queue_shifts=True))
            blocker = inpaint_request(rgba_u8(64, 64), rect_mask(64, 64, 8, 8, 40, 40), steps=500, seed=1)
            peer.send(P.submit("blocker", blocker))
            peer.wait(lambda m: m.type == "progress")
            for i in range(n):
                peer.send(P.submit(f"j{i}", tiny))
            last = f"j{n - 1}"
            peer.wait(lambda m, last=last: m.type == "accepted" and m.get("job_id") == last)
            queued = peer.bytes_of("queue")
            peer.send(P.message("cancel", job_id="blocker"))
            peer.wait(lambda m, peer=peer, n=n: len(peer.finals) >= n + 1)
            results = sum(1 for m in peer.messages if m is not None and m.type == "result")
            rows.append((n, peer.bytes_of("accepted"), queued, peer.bytes_of("queue"), results))
            peer.close()
    finally:
        svc.close()
    print("\n| queued jobs | accepted bytes | queue bytes while queueing | queue bytes, queueing and draining |")
    print("|---|---|---|---|")
    for n, acc, q1, q, _ in rows:
        print(f"| {n} | {acc} | {q1} | {q} ({q / n:.0f} per job) |")
    for n, _acc, q1, q, results in rows:
        assert results == n
        assert q1 <= 50 * n                  # queueing: what the accepted messages said is not repeated
        # draining: updates of ~70 bytes, at most one per job that left (whole-queue updates: ~20 n² bytes
        # in all; positions that moved enough: ~330–530 bytes per job, growing like n log n)
        assert q <= 80 * n, (n, q)
