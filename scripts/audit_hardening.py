"""The figures of the hardening issues (16 and 24), measured: lock-out before authentication, slow
clients, memory with a 2 GiB payload in flight, queue-update bytes, and first jobs on fresh engines.

    .venv/bin/python scripts/audit_hardening.py [--models DIR] [--only lockout,slow,memory,queue,first]
                                                [--engines N] [--artists N] [--attackers N]

Without ``--models`` it builds the tiny test models in a temporary folder (the numbers then measure the
engine's machinery, not diffusion).  Every server listens on 127.0.0.1 and is stopped at the end.
Prints Markdown tables; nothing here is a pass/fail test (the tests in tests/test_serve_limits.py,
tests/test_engine_first_jobs.py and tests/test_engine_fuzz.py assert the behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.contract.events import Finished  # noqa: E402
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params  # noqa: E402
from core.link import protocol as P  # noqa: E402
from core.link.client import EngineClient  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30


# --- requests ----------------------------------------------------------------------------------------

def image(w: int, h: int, seed: int = 0) -> ImageBuffer:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    img[..., 3] = 255
    return ImageBuffer(w, h, "BGRA_U8", img.tobytes())


def mask(w: int, h: int) -> ImageBuffer:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return ImageBuffer(w, h, "GRAY_U8", m.tobytes())


def job(mode: str, steps: int = 2) -> JobRequest:
    img, sel = image(48, 40, 1), mask(48, 40)
    return {
        "inpaint": JobRequest("inpaint", Params(prompt="a red ball", steps=steps, seed=1, strength=1.0), image=img,
                              mask=sel),
        "restyle": JobRequest("restyle", Params(prompt="stone", steps=2, seed=3, strength=0.9), image=img, mask=sel),
        "depth": JobRequest("depth", image=img, mask=sel),
        "upscale": JobRequest("upscale", Params(prompt="sharp", steps=2, seed=5), Options(tile=64),
                              image=image(24, 20, 2)),
        "generate": JobRequest("generate", Params(prompt="a lighthouse", steps=2, seed=9),
                               Options(width=64, height=64), model="sd2-1-base"),
        "fill": JobRequest("fill", options=Options(backend="opencv"), image=img, mask=sel),
    }[mode]


def frame(header: dict, sizes=()) -> bytes:
    raw = json.dumps({**header, "payloads": list(sizes)}).encode()
    return P.PREFIX.pack(P.MAGIC, len(raw), sum(sizes)) + raw


# --- a server process --------------------------------------------------------------------------------

class Server:
    """``python -m core serve --listen 127.0.0.1:0`` in a subprocess."""

    def __init__(self, env: dict, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--listen", "127.0.0.1:0",
                                      "--no-warm-up", *args], cwd=ROOT, env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().split("serving on ")[1].strip()
        self.token = self.proc.stdout.readline().split("token: ")[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def connect(self, source: str | None = None, timeout: float = 60) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)

    def hello(self, sock) -> P.Message | None:
        sock.sendall(P.encode_bytes(P.hello(token=self.token, heartbeat=60)))
        f = sock.makefile("rb")
        try:
            while (m := P.read_message(f.read)) is not None:
                if m.type in ("hello", "error"):
                    return m
        except (OSError, P.ProtocolError):
            pass
        return None

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def settled_rss(self) -> int:
        before = self.rss()
        for _ in range(20):
            time.sleep(0.5)
            now = self.rss()
            if abs(now - before) < 8 * MiB:
                return now
            before = now
        return before

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def run_job(server: Server, req: JobRequest) -> tuple[object, float]:
    async def go():
        t0 = time.perf_counter()
        async with EngineClient(url=server.url, token=server.token) as client:
            final = await client.submit(req).wait()
        return final, time.perf_counter() - t0

    return asyncio.run(go())


# --- lock-out before authentication ------------------------------------------------------------------

class Attacker:
    """Holds ``count`` connections that never say hello, from ten loopback addresses, and opens a new one
    whenever the server closes one (an attacker that keeps reconnecting)."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.sources = [f"127.0.0.{i}" for i in range(2, 12)]
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            while len(self.socks) < self.count and not self.stopped.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                                 source_address=(self.sources[self.opened % 10], 0))
                    s.setblocking(False)
                    self.socks.append(s)
                    self.opened += 1
                except OSError:
                    time.sleep(0.01)
            readable, _, _ = select.select(self.socks, [], [], 0.05) if self.socks else ([], [], [])
            for s in readable:
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


def lockout(env: dict, attackers: int, artists: int) -> list[str]:
    server = Server(env)
    try:
        attacker = Attacker(server.port, attackers)
        while len(attacker.socks) < attackers:
            time.sleep(0.05)
        admitted, times = 0, []
        for _ in range(artists):
            t0 = time.perf_counter()
            try:
                sock = server.connect()
                answer = server.hello(sock)
                sock.close()
            except OSError:
                answer = None
            times.append(time.perf_counter() - t0)
            admitted += answer is not None and answer.type == "hello"
        final, seconds = run_job(server, job("inpaint", 1))
        held, opened = len(attacker.socks), attacker.opened
        attacker.stop()
    finally:
        server.stop()
    return ["| idle unauthenticated connections held | opened by the attacker | legitimate attempts admitted "
            "| median time to hello | a job meanwhile |", "|---|---|---|---|---|",
            f"| {held} (from 10 addresses, reconnecting) | {opened} | {admitted} of {artists} | "
            f"{statistics.median(times) * 1000:.0f} ms | {type(final).__name__} in {seconds:.1f} s |"]


# --- slow clients ----------------------------------------------------------------------------------

def dropped_after(sock: socket.socket, t0: float, send=None, limit: float = 120) -> float | None:
    """Seconds from ``t0`` until the server closes ``sock`` (``send(i)`` is called every second)."""
    sock.setblocking(False)
    i = 0
    while time.perf_counter() - t0 < limit:
        if send is not None:
            try:
                send(i)
            except OSError:
                return time.perf_counter() - t0
            i += 1
        r, _, _ = select.select([sock], [], [], 1.0)
        if r:
            try:
                while data := sock.recv(65536):
                    pass
                if data == b"":
                    return time.perf_counter() - t0
            except BlockingIOError:
                continue
            except OSError:
                return time.perf_counter() - t0
    return None


def slow_clients(env: dict) -> list[str]:
    server = Server(env)
    rows = []
    try:
        cases = {}    # name -> (socket, its start, what it sends every second)
        silent = server.connect()
        cases["never says hello"] = (silent, time.perf_counter(), None)
        stalled = server.connect()
        server.hello(stalled)
        stalled.sendall(P.encode_bytes(P.message("capabilities"))[:9])
        cases["authenticated, stops inside a frame"] = (stalled, time.perf_counter(), None)
        trickle = server.connect()
        server.hello(trickle)
        data = P.encode_bytes(P.submit("t", job("inpaint")))
        cases["authenticated, sends a frame at 1 byte/s"] = (trickle, time.perf_counter(),
                                                             lambda i: trickle.send(data[i:i + 1]))
        idle = server.connect()
        server.hello(idle)
        cases["authenticated, idle between frames (60 s)"] = (idle, time.perf_counter(), None)
        results: dict[str, float | None] = {}
        threads = [threading.Thread(target=lambda k=k, s=s, t0=t0, f=f: results.__setitem__(
            k, dropped_after(s, t0, f, 60 if k.endswith("(60 s)") else 120))) for k, (s, t0, f) in cases.items()]
        for t in threads:
            t.start()
        final, seconds = run_job(server, job("inpaint"))     # another client, meanwhile
        for t in threads:
            t.join()
        for name, after in results.items():
            rows.append(f"| {name} | {'still connected' if after is None else f'dropped after {after:.1f} s'} |")
        rows.append(f"| another client's job meanwhile | {type(final).__name__} in {seconds:.1f} s |")
    finally:
        server.stop()
    return ["| client | outcome |", "|---|---|", *rows]


# --- memory with a 2 GiB payload in flight ---------------------------------------------------------

def memory(env: dict) -> list[str]:
    rows = []
    big = replace(job("inpaint"), image=ImageBuffer(16384, 16384, "BGRA_U16", b""), mask=None)   # 2 GiB
    header = {**P.submit("huge", big).header, "buffers": ["image"]}
    for cap, sent, name in ((3000, 0, "declared 2 GiB, over one connection's share: refused unread"),
                            (5000, GiB, "declared 2 GiB and accepted, 1 GiB sent, then the client closes")):
        server = Server(env, "--max-upload-mb", str(cap))
        try:
            sock = server.connect()
            server.hello(sock)
            base = server.settled_rss()
            peak, stop = [base], threading.Event()

            def sample(server=server, peak=peak, stop=stop):
                while not stop.is_set():
                    peak[0] = max(peak[0], server.rss())
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sock.sendall(frame(header, [2 * GiB]))
            zeros = bytes(MiB)
            for _ in range(sent // MiB):
                sock.sendall(zeros)
            time.sleep(0.5)
            sock.close()
            after = server.settled_rss()
            stop.set()
            sampler.join()
        finally:
            server.stop()
        rows.append(f"| {name} | {cap} MiB ({cap // 2} per connection) | {base / MiB:.0f} MiB | "
                    f"+{(peak[0] - base) / MiB:.0f} MiB | {after / MiB:.0f} MiB (+{(after - base) / MiB:.0f}) |")
    return ["| case | cap | baseline RSS | peak over baseline | RSS after the close |", "|---|---|---|---|---|", *rows]


# --- queue-update bytes ------------------------------------------------------------------------------

class Peer:
    """A client of an in-process EngineService over a socket pair, counting the bytes of each message type."""

    def __init__(self, service):
        from core.engine.connection import Connection

        self.ours, theirs = socket.socketpair()
        reader = theirs.makefile("rb")
        self.conn = Connection(service, reader.read, theirs.sendall, name="audit", close=theirs.close)
        threading.Thread(target=self.conn.serve, daemon=True).start()
        self.bytes: dict[str, int] = {}
        self.finals: set = set()
        self.accepted: set = set()
        self.progress = threading.Event()
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        f = self.ours.makefile("rb")
        while True:
            try:
                prefix = f.read(P.PREFIX.size)
                if len(prefix) < P.PREFIX.size:
                    return
                _, hl, pl = P.PREFIX.unpack(prefix)
                header = json.loads(f.read(hl))
                f.read(pl)
            except (OSError, ValueError):
                return
            with self.cond:
                kind = header["type"]
                self.bytes[kind] = self.bytes.get(kind, 0) + P.PREFIX.size + hl + pl
                if kind == "progress":
                    self.progress.set()
                if kind == "accepted":
                    self.accepted.add(header["job_id"])
                if kind in ("result", "error", "cancelled") and header.get("job_id"):
                    self.finals.add(header["job_id"])
                self.cond.notify_all()

    def send(self, msg):
        self.ours.sendall(P.encode_bytes(msg))

    def wait(self, predicate, timeout: float = 600):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "timed out"

    def close(self):
        self.ours.shutdown(socket.SHUT_WR)
        self.ours.close()


def every_change_sent(n: int, shifts: bool = True) -> int:
    """Bytes of queue messages for n queued jobs draining one by one when every change goes out (jobs
    slower than the coalescing interval): QueueNews driven directly, one send per change.  ``shifts``:
    a client that reads moves (core.link.queuemoves), else an older one (positions that moved enough)."""
    from core.engine.queuenews import QueueNews

    class Owner:
        sent = 0
        queue_shifts = shifts

        def send(self, msg):
            Owner.sent += sum(len(c) for c in P.encode(msg))

    owner = Owner()
    left = [f"j{i}" for i in range(n)]
    news = QueueNews(lambda: {id(owner): (owner, {j: i for i, j in enumerate(left)})} if left else {})
    for i, j in enumerate(left):
        news.accepted(owner, j, i + 1)
    now = 0.0
    while left:
        left.pop(0)
        news.changed()
        now += 1.0
        news.send_due(now)
    return Owner.sent


def queue_bytes(models_dir: Path, sizes=(250, 500, 1000, 2000)) -> list[str]:
    from core.engine.service import EngineService
    from core.models.device import current_policy
    from core.models.manager import ModelManager

    models = ModelManager(current_policy(), models_dir=models_dir, hub_cache=models_dir / "no-hub")
    service = EngineService(models=models, warm_up=False, allow_shutdown=False, heartbeat=600)
    before = {250: 1.2, 500: 4.8, 1000: 19.4}     # MB, whole-queue updates (the audit of 6147cdd)
    rows = []
    try:
        for n in sizes:
            peer = Peer(service)
            peer.send(P.hello(queue_shifts=True))
            peer.send(P.submit("blocker", job("inpaint", steps=512)))
            assert peer.progress.wait(600), "the long job did not start"
            tiny = job("fill")
            for i in range(n):
                peer.send(P.submit(f"j{i}", tiny))
            peer.wait(lambda n=n, peer=peer: f"j{n - 1}" in peer.accepted)
            queueing = peer.bytes.get("queue", 0)
            t0 = time.perf_counter()
            peer.send(P.message("cancel", job_id="blocker"))
            peer.wait(lambda n=n, peer=peer: len(peer.finals) >= n + 1)
            drain = time.perf_counter() - t0
            total = peer.bytes.get("queue", 0)
            worst, older = every_change_sent(n), every_change_sent(n, shifts=False)
            rows.append(f"| {n} | {before.get(n, '–')} MB | {total / 1e3:.1f} kB ({total / n:.1f} B per job; "
                        f"{queueing} B while queueing; drained in {drain:.1f} s) | {worst / 1e6:.3f} MB "
                        f"({worst / n:.0f} B per job) | {older / 1e6:.3f} MB ({older / n:.0f} B per job) | "
                        f"{peer.bytes.get('accepted', 0) / 1e6:.3f} MB |")
            peer.close()
    finally:
        service.close()
    return ["| queued jobs | queue messages before (whole queue each change) | queue messages now (tiny jobs) | "
            "now, every change sent (jobs slower than 0.25 s) | an older client, every change sent | "
            "accepted messages |", "|---|---|---|---|---|---|", *rows]


# --- first jobs on fresh engines -------------------------------------------------------------------

KINDS = ("generate", "inpaint", "depth", "upscale", "restyle", "generate", "inpaint", "fill")


def first_jobs(env: dict, engines: int, logs: Path) -> list[str]:
    async def one(i: int):
        client = EngineClient(cwd=ROOT, env={**env, "DD_LOG_DIR": str(logs / f"e{i}")}, heartbeat_timeout=120)
        handles = [client.submit(job(kind)) for kind in KINDS]    # before the engine has even started
        finals = [await h.wait() for h in handles]
        await client.stop()
        return finals

    async def go():
        out = []
        for start in range(0, engines, 2):
            out += await asyncio.gather(*(one(i) for i in range(start, min(start + 2, engines))))
        return out

    t0 = time.perf_counter()
    results = asyncio.run(go())
    seconds = time.perf_counter() - t0
    failed = [f for finals in results for f in finals if not isinstance(f, Finished)]
    text = "\n".join((logs / f"e{i}" / "engine.log").read_text() for i in range(engines))
    imports = sum(text.count(s) for s in ("Failed to import", "cannot import name", "partially initialized"))
    return ["| fresh engines | first jobs (mixed kinds, submitted before the start) | failed | import errors "
            "in the logs | time |", "|---|---|---|---|---|",
            f"| {engines} | {engines * len(KINDS)} | {len(failed)} | {imports} | {seconds:.0f} s |"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="models folder (default: tiny test models, built now)")
    ap.add_argument("--only", default="lockout,slow,memory,queue,first")
    ap.add_argument("--engines", type=int, default=10, help="fresh engines for the first-jobs figure")
    ap.add_argument("--artists", type=int, default=37, help="legitimate connection attempts during the attack")
    ap.add_argument("--attackers", type=int, default=200, help="idle unauthenticated connections held")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dd-audit-") as tmp:
        models = args.models
        if models is None:
            from core.devtools.tiny_models import build_all

            models = Path(tmp) / "models"
            build_all(models)
        env = {"DD_MODELS_DIR": str(models), "DD_LOG_DIR": str(Path(tmp) / "logs"), "PYTHONUNBUFFERED": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        sections = {
            "lockout": ("Lock-out before authentication", lambda: lockout(env, args.attackers, args.artists)),
            "slow": ("Slow clients (default limits)", lambda: slow_clients(env)),
            "memory": ("Memory with a 2 GiB payload in flight", lambda: memory(env)),
            "queue": ("Queue updates", lambda: queue_bytes(models)),
            "first": ("First jobs on fresh engines", lambda: first_jobs(env, args.engines, Path(tmp) / "first")),
        }
        for key in args.only.split(","):
            title, measure = sections[key.strip()]
            print(f"\n### {title}\n", flush=True)
            print("\n".join(measure()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
