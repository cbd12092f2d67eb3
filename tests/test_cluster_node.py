"""A node of the Ray cluster is lost mid-job (issue 20): two Ray nodes on 127.0.0.1 (``ray.cluster_utils.Cluster``,
one logical CPU each, so Serve places one CPU replica on each), the gateway in front, and the second node
removed with everything on it killed (no graceful shutdown: as when a machine loses power) while its
replica runs a job.

The job is run again from the start on the surviving replica (the editor sees *retrying* once) and ends with
the single-engine pixels for its seed; the other artist's running job and a job still waiting in the gateway's
queue carry on; nothing runs twice to completion."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from core.cluster import have_ray
from core.cluster.tokens import TokenStore
from core.contract.events import Finished, Progress

from .cluster_support import Gateway, RayHead, RayNode, cluster_yaml
from .conftest import require
from .engine_helpers import LoopThread
from .test_cluster import connect, reference, small, stop, submit, wait_until, watch

pytestmark = pytest.mark.cluster
STEPS = 200      # long enough (several seconds) to be running when the node is lost


@dataclass
class TwoNodes:
    head: RayHead
    second: RayNode        # the node the test loses
    gateway: Gateway
    store: TokenStore
    tokens: dict
    loop: LoopThread


@pytest.fixture(scope="module")
def two_nodes(tiny_root, tmp_path_factory, isolated_app_dirs):
    require(have_ray(), 'Ray Serve is not installed (pip install -e ".[cluster]")')
    d = tmp_path_factory.mktemp("cluster-node")
    store = TokenStore(d / "tokens.json")
    tokens = {name: store.add(name) for name in ("ann", "ben", "cat")}
    tokens["boss"] = store.add("boss", admin=True)
    head = RayHead(num_cpus=1)          # one logical CPU per node: Serve places one 1-CPU replica on each
    second = None
    try:
        head.wait_ready()
        second = RayNode(head, num_cpus=1)
        second.wait_ready()
        gateway = Gateway(head.address, cluster_yaml(d / "cluster.yaml", tiny_root, app="dd-node-test"),
                          d / "tokens.json", env={"DD_CONFIG_DIR": str(d / "config"), "DD_LOG_DIR": str(d / "logs")})
    except BaseException:
        if second is not None:
            second.stop()
        head.stop()
        raise
    lt = LoopThread()
    try:
        yield TwoNodes(head, second, gateway, store, tokens, lt)
    finally:
        lt.close()
        code = gateway.stop()
        second.stop()
        head.stop()
    assert code == 0, "".join(gateway.errors)[-3000:]


def replica_of(boss, job_id: str) -> dict:
    """The admin's view of the replica running ``job_id``."""
    def find():
        view = boss.cluster or {}
        job = next((j for j in view.get("jobs", ()) if j["job_id"] == job_id), None)
        return job and next((r for r in view.get("replica_list", ()) if r["replica"] == job.get("replica")), None)

    return wait_until(find, timeout=60, what=f"the replica of {job_id}")


def denoising(handle, at_least: int = 1) -> bool:
    return any(isinstance(e, Progress) and e.phase == "denoising" and e.step >= at_least for e in handle.seen)


def test_a_job_on_a_lost_node_runs_again_on_the_surviving_replica(two_nodes, models):
    c = two_nodes
    ann, ben, cat, boss = (connect(c, n) for n in ("ann", "ben", "cat", "boss"))
    reqs = {"a1": small(801, steps=STEPS), "b1": small(802, steps=STEPS), "c1": small(803)}
    h = {"a1": submit(c, ann, reqs["a1"], "a1"), "b1": submit(c, ben, reqs["b1"], "b1")}
    done = {job_id: watch(c, handle) for job_id, handle in h.items()}
    wait_until(lambda: all(denoising(x) for x in h.values()), timeout=180, what="both replicas denoising")
    h["c1"] = submit(c, cat, reqs["c1"], "c1")          # both replicas busy: c1 waits in the gateway's queue
    done["c1"] = watch(c, h["c1"])
    wait_until(lambda: h["c1"].position is not None, what="c1 queued")
    where = {job_id: replica_of(boss, job_id) for job_id in ("a1", "b1")}
    on_second = [job_id for job_id, r in where.items() if c.second.holds(r["pid"])]
    assert len(on_second) == 1 and where["a1"]["node_id"] != where["b1"]["node_id"], where   # one on each node
    victim, other = on_second[0], next(job_id for job_id in where if job_id not in on_second)

    removed = time.monotonic()
    c.second.lose()
    wait_until(lambda: any(isinstance(e, Progress) and e.phase == "retrying" for e in h[victim].seen),
               timeout=120, what=f"{victim} retrying")
    retry_after = time.monotonic() - removed
    for fut in done.values():
        fut.result(300)
    finals = {job_id: x.final for job_id, x in h.items()}
    assert all(isinstance(f, Finished) for f in finals.values()), finals
    for job_id, final in finals.items():     # the same pixels as one engine for the same seed
        want = reference(reqs[job_id], models)
        assert [p.image.data for p in final.result.patches] == [p.image.data for p in want.patches], job_id

    phases = [e.phase for e in h[victim].seen if isinstance(e, Progress)]
    assert phases.count("retrying") == 1
    steps = [(e.phase, e.step) for e in h[victim].seen if isinstance(e, Progress)]
    again = [s for p, s in steps[phases.index("retrying"):] if p == "denoising"]
    full = max(e.step for e in h[other].seen if isinstance(e, Progress) and e.phase == "denoising")
    assert min(again) <= 1 and max(again) == full, again      # run again from the start, to the end
    assert all(p != "retrying" for x in (h[other], h["c1"]) for p in (e.phase for e in x.seen
                                                                       if isinstance(e, Progress)))
    # Nothing ran twice to completion: the surviving replica finished each job once, the lost one none.
    time.sleep(0.6)
    view = boss.cluster
    assert [r["replica"] for r in view["replica_list"]] == [where[other]["replica"]], view["replica_list"]
    assert view["replica_list"][0]["jobs_done"] == 3, view["replica_list"]
    log = "".join(c.gateway.errors)
    print(f"retrying seen {retry_after:.1f} s after the node was lost")
    assert "Traceback" not in log, log[-3000:]
    stop(c, ann, ben, cat)     # boss stays connected: the gateway stops with an artist on it, and exits 0
