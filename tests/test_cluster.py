"""The gateway on a local Ray cluster (127.0.0.1, two CPU replicas, the tiny models): artists, the fair
queue, model multiplexing, replicas killed mid-job, tokens revoked and expired while connected.

One Ray head and one gateway serve the whole module (starting them is most of its time)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from core.cluster import have_ray
from core.cluster.tokens import TokenStore
from core.contract.events import Failed, Finished, JobCancelled, Preview, Progress
from core.contract.jobs import JobRequest, Options, Params
from core.link import protocol as P
from core.link.client import EngineClient, EngineError
from core.pipelines import run_job

from .cluster_support import Gateway, RayHead, cluster_yaml
from .conftest import require
from .engine_helpers import LoopThread
from .helpers import inpaint_request, rect_mask, rgba_u8

pytestmark = pytest.mark.cluster
ARTISTS = ("ann", "ben", "cat", "dan", "eve")


@dataclass
class Cluster:
    head: RayHead
    gateway: Gateway
    store: TokenStore
    tokens: dict
    loop: LoopThread


@pytest.fixture(scope="module")
def cluster(tiny_root, tmp_path_factory, isolated_app_dirs):
    require(have_ray(), 'Ray Serve is not installed (pip install -e ".[cluster]")')
    d = tmp_path_factory.mktemp("cluster")
    certs = None
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                        "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        certs = (d / "cert.pem", d / "key.pem")
    store = TokenStore(d / "tokens.json")
    tokens = {name: store.add(name) for name in ARTISTS}
    tokens["boss"] = store.add("boss", admin=True)
    head = RayHead(num_cpus=4)
    try:
        head.wait_ready()
        gateway = Gateway(head.address, cluster_yaml(d / "cluster.yaml", tiny_root), d / "tokens.json",
                          env={"DD_CONFIG_DIR": str(d / "config"), "DD_LOG_DIR": str(d / "logs")}, certs=certs)
    except BaseException:
        head.stop()
        raise
    lt = LoopThread()
    yield Cluster(head, gateway, store, tokens, lt)
    lt.close()
    code = gateway.stop()
    head.stop()
    assert code == 0, "".join(gateway.errors)[-3000:]
    log = (d / "logs" / "engine-serve.log").read_text()
    assert not any(t in log for t in tokens.values()), "a token reached the gateway's log"


def connect(c: Cluster, name: str, token: str | None = None) -> EngineClient:
    client = EngineClient(url=c.gateway.url, token=token or c.tokens[name], cafile=c.gateway.cafile,
                          heartbeat_interval=0.2)
    c.loop.run(client.start(), timeout=60)
    return client


def submit(c: Cluster, client: EngineClient, req: JobRequest, job_id: str):
    return c.loop.call(lambda: client.submit(req, job_id=job_id))


def wait_until(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(c: Cluster, *clients) -> None:
    for client in clients:
        c.loop.run(client.stop(), timeout=60)


def small(seed: int, steps: int = 2) -> JobRequest:
    return inpaint_request(rgba_u8(48, 64, seed=seed), rect_mask(48, 64, 10, 10, 40, 30), steps=steps, seed=seed)


def long(seed: int) -> JobRequest:
    """A job that runs for minutes unless cancelled (512 steps of 4 images)."""
    return inpaint_request(rgba_u8(48, 64, seed=seed), rect_mask(48, 64, 10, 10, 40, 30), steps=512, seed=seed,
                           num_images=4)


def generate(seed: int) -> JobRequest:
    return JobRequest("generate", Params(prompt="a lighthouse", steps=1, seed=seed), Options(width=64, height=64),
                      model="sd2-1-base")


def reference(req: JobRequest, models):
    """The single-engine result, computed as a replica does (one CPU thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_job(req, models)
    finally:
        torch.set_num_threads(threads)


def test_three_artists_share_two_replicas_fairly_and_privately(cluster, models):
    c = cluster
    ann, ben, cat, dan, boss = (connect(c, n) for n in ("ann", "ben", "cat", "dan", "boss"))
    # dan's two long jobs hold both replicas while the others queue, so the order is the queue's alone
    blockers = {job_id: submit(c, dan, long(900 + i), job_id) for i, job_id in enumerate(("d1", "d2"))}
    for h in blockers.values():
        watch(c, h)
    wait_until(lambda: all(any(isinstance(e, Progress) and e.phase == "denoising" for e in h.seen)
                           for h in blockers.values()), what="both replicas busy")
    reqs = {f"a{i}": small(100 + i) for i in range(1, 7)} | {"b1": small(201), "b2": small(202), "c1": small(301)}
    handles = {}
    for job_id in ("a1", "a2", "a3", "a4", "a5", "a6"):     # the limit is 5 waiting: a6 is refused
        handles[job_id] = submit(c, ann, reqs[job_id], job_id)
        wait_until(lambda h=handles[job_id]: h.position is not None or h.done, what=f"{job_id} accepted")
    for client, job_ids in ((ben, ("b1", "b2")), (cat, ("c1",))):
        for job_id in job_ids:
            handles[job_id] = submit(c, client, reqs[job_id], job_id)
            wait_until(lambda h=handles[job_id]: h.position is not None, what=f"{job_id} accepted")
    assert handles["c1"].position == 3                     # a1 b1 c1 a2 b2 a3 a4 a5
    assert not any(h.done for h in blockers.values())
    wait_until(lambda: handles["a5"].position == 8, what="ann's last job told its new place")

    # One artist sees only their own jobs and cannot cancel another's; the admin sees everyone's.
    c.loop.call(lambda: ben.link.send(P.message("cancel", job_id="a3")))
    c.loop.call(lambda: ben.link.send(P.message("cancel", job_id="a4", artist="ann")))
    seen = wait_until(lambda: boss.cluster and {j["artist"] for j in boss.cluster.get("jobs", ())}
                      >= {"ann", "ben", "cat", "dan"} and boss.cluster, what="the admin's view of every artist")
    assert {j["job_id"] for j in seen["jobs"]} >= {"a3", "b1", "c1", "d1"}
    view = wait_until(lambda: ben.cluster and ben.cluster["mine"]["queued"] == 2 and ben.cluster,
                      what="ben's view")
    assert "jobs" not in view and "dispatched" not in view and view["artist"] == "ben" and not view["admin"]
    assert view["mine"] == {"running": 0, "queued": 2, "next": 2} and view["queued"] == 8

    for job_id in blockers:
        c.loop.call(lambda j=job_id: dan.cancel(j))
    finals = {job_id: c.loop.run(h.wait(), timeout=600) for job_id, h in handles.items()}
    assert all(isinstance(c.loop.run(h.wait(), timeout=120), JobCancelled) for h in blockers.values())
    assert isinstance(finals["a6"], Failed) and finals["a6"].code == "queue_full", finals["a6"]
    assert "limit is 5" in finals["a6"].message
    done = {job_id: f for job_id, f in finals.items() if job_id != "a6"}
    assert all(isinstance(f, Finished) for f in done.values()), done
    for job_id, final in done.items():         # the same pixels as one engine for the same seeds
        want = reference(reqs[job_id], models)
        assert [p.image.data for p in final.result.patches] == [p.image.data for p in want.patches], job_id

    time.sleep(0.6)
    order = [tuple(k) for k in boss.cluster["dispatched"] if k[1] in done]
    assert order == [("ann", "a1"), ("ben", "b1"), ("cat", "c1"), ("ann", "a2"), ("ben", "b2"),
                     ("ann", "a3"), ("ann", "a4"), ("ann", "a5")], order
    stop(c, ann, ben, cat, dan, boss)


def test_jobs_go_to_the_replica_that_holds_their_model(cluster):
    """One model per replica (max_models_per_replica: 1), jobs alternating between two models: Serve's
    multiplexing sends each to the replica holding its model; only the first of the second model loads."""
    c = cluster
    dan, boss = connect(c, "dan"), connect(c, "boss")
    before = dict(wait_until(lambda: boss.cluster and boss.cluster.get("routing"), what="routing figures"))
    for i in range(6):
        req = generate(i) if i % 2 == 0 else small(400 + i)
        final = c.loop.run(submit(c, dan, req, f"m{i}").wait(), timeout=300)
        assert isinstance(final, Finished), final
    time.sleep(0.6)
    after = boss.cluster["routing"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    assert (hits, misses) == (5, 1), after
    assert boss.cluster["missed"][-1:] == [["dan", "m0"]], boss.cluster["missed"]   # the first job: a cold load
    assert boss.cluster["models"] == {"sd2-1-base": 1, "sd2-inpainting": 1}, boss.cluster["models"]
    stop(c, dan, boss)


def replica_pid(boss: EngineClient, job_id: str, not_replica: str | None = None):
    """(replica id, pid) running ``job_id``, from the admin's view."""
    def find():
        view = boss.cluster or {}
        job = next((j for j in view.get("jobs", ()) if j["job_id"] == job_id), None)
        if job is None or not job.get("replica") or job["replica"] == not_replica:
            return None
        rep = next((r for r in view.get("replica_list", ()) if r["replica"] == job["replica"]), None)
        return (job["replica"], rep["pid"]) if rep else None

    return wait_until(find, timeout=120, what=f"the replica of {job_id}")


def kill_when_denoising(c: Cluster, handle, boss, job_id: str, not_replica=None):
    wait_until(lambda: any(isinstance(e, Progress) and e.phase == "denoising" and e.step >= 1 and e.job_id == job_id
                           for e in handle_events(handle)), what=f"{job_id} denoising")
    replica, pid = replica_pid(boss, job_id, not_replica)
    os.kill(pid, signal.SIGKILL)
    return replica


def handle_events(handle):
    return list(getattr(handle, "seen", ()))


def watch(c: Cluster, handle):
    """Record a job's events in ``handle.seen`` as they come."""
    handle.seen = []

    async def go():
        async for ev in handle.events():
            handle.seen.append(ev)

    import asyncio

    return asyncio.run_coroutine_threadsafe(go(), c.loop.loop)


def test_a_job_whose_replica_is_killed_runs_again_and_a_second_loss_fails_clearly(cluster):
    c = cluster
    eve, boss, cat = connect(c, "eve"), connect(c, "boss"), connect(c, "cat")
    h = submit(c, eve, small(501, steps=200), "k1")
    done = watch(c, h)
    kill_when_denoising(c, h, boss, "k1")
    done.result(600)
    assert isinstance(h.final, Finished), h.final
    phases = [e.phase for e in h.seen if isinstance(e, Progress)]
    assert phases.count("retrying") == 1 and phases.index("retrying") < len(phases) - 1

    h2 = submit(c, eve, small(502, steps=200), "k2")
    done2 = watch(c, h2)
    first = kill_when_denoising(c, h2, boss, "k2")
    wait_until(lambda: any(isinstance(e, Progress) and e.phase == "retrying" for e in h2.seen), what="retrying")
    h2.seen = [e for e in h2.seen if not (isinstance(e, Progress) and e.phase == "denoising")]
    kill_when_denoising(c, h2, boss, "k2", not_replica=first)
    done2.result(600)
    assert isinstance(h2.final, Failed) and h2.final.code == "worker_lost", h2.final
    assert "lost 2 times" in h2.final.message and "Traceback" not in h2.final.message

    # The gateway and the other artists carry on (once Serve has replaced the replicas).
    final = c.loop.run(submit(c, cat, small(503), "after").wait(), timeout=600)
    assert isinstance(final, Finished), final
    stop(c, eve, boss, cat)


def test_cancel_reaches_the_replica(cluster):
    c = cluster
    ann, boss = connect(c, "ann"), connect(c, "boss")
    h = submit(c, ann, small(601, steps=200), "long")
    done = watch(c, h)
    wait_until(lambda: any(isinstance(e, Progress) and e.phase == "denoising" and e.step >= 1 for e in h.seen),
               what="denoising")
    c.loop.call(lambda: ann.cancel("long"))
    done.result(120)
    assert isinstance(h.final, JobCancelled)
    steps = [e.step for e in h.seen if isinstance(e, Progress) and e.phase == "denoising"]
    assert max(steps) < 200
    assert any(isinstance(e, Preview) and e.width > 0 for e in h.seen)    # previews streamed while it ran
    # The engine in the replica stopped the job (it says so in its report, which comes with its next job:
    # two jobs at once reach both replicas), and the replica is free again.
    nxt = [submit(c, ann, small(602 + i), f"next{i}") for i in range(2)]
    assert all(isinstance(c.loop.run(h.wait(), timeout=300), Finished) for h in nxt)
    wait_until(lambda: any("long" in (r.get("cancelled") or ()) for r in boss.cluster.get("replica_list", ())),
               what="the replica's engine to report the cancelled job")
    stop(c, ann, boss)


def test_tokens_wrong_revoked_expired_and_added_while_running(cluster):
    c = cluster

    async def refused(token):
        client = EngineClient(url=c.gateway.url, token=token, cafile=c.gateway.cafile)
        try:
            await client.start()
        except EngineError as e:
            return e.code
        finally:
            await client.stop()
        return "accepted"

    assert c.loop.run(refused(c.tokens["ann"][:-2] + "xx")) == "unauthorized"
    assert c.loop.run(refused("dd1_nothing_here")) == "unauthorized"
    assert c.loop.run(refused(None)) == "unauthorized"

    new = c.store.add("fay")                           # no restart: the gateway reads the file again
    fay = connect(c, "fay", new)
    assert fay.engine_info.get("artist") == "fay"
    h = submit(c, fay, small(701, steps=200), "f1")
    wait_until(lambda: h.position is not None, what="f1 accepted")
    assert c.store.revoke("fay")
    final = c.loop.run(h.wait(), timeout=120)          # the connection is closed: its job ends
    assert isinstance(final, (Failed, JobCancelled)), final
    assert c.loop.run(refused(new)) == "unauthorized"

    soon = TokenStore(c.store.path)
    expiring = soon.add("gus", expires=time.time() + 3)
    gus = connect(c, "gus", expiring)
    assert gus.status.state == "ready"
    wait_until(lambda: gus.status.state != "ready", timeout=30, what="the expired connection to close")
    assert c.loop.run(refused(expiring)) == "unauthorized"
    stop(c, fay, gus)
