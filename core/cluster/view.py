"""What the cluster looks like to one connection: the ``cluster`` field of heartbeats and queue messages.

An artist sees the replicas (running, starting), the models loaded and on how many replicas, how many
jobs wait in all, and their own jobs (running, queued, the best place in line).  An admin sees every
job (artist, id, state, place, model, replica), the replicas one by one, the recent dispatch order and
the recent jobs that found their model not loaded (multiplexing misses).
Old clients ignore the field (it is an extra field of messages they know).
"""

from __future__ import annotations


def cluster_view(gateway, conn) -> dict:
    artist = getattr(conn, "artist", None)
    admin = bool(getattr(artist, "admin", False))
    with gateway.lock:
        jobs = list(gateway.jobs.values())
        order = gateway.queue.positions()
        replicas = [dict(r) for r in gateway.replicas.values()]
        dispatched = list(gateway.dispatched)[-50:]
        missed = list(gateway.missed)
    status = dict(gateway.status or {})
    models: dict[str, int] = {}
    for r in replicas:
        for m in r.get("models") or ():
            models[m] = models.get(m, 0) + 1
    mine = [j for j in jobs if artist is not None and j.artist == artist.name and j.state != "done"]
    mine_queued = [order[j.key] for j in mine if j.state == "queued" and j.key in order]
    view = {
        "replicas": {"running": status.get("running", len(replicas)), "starting": status.get("starting", 0),
                     "state": status.get("state", "unknown")},
        "models": models,
        "preloaded": list(gateway.cfg.models),
        "queued": sum(1 for j in jobs if j.state == "queued"),
        "running": sum(1 for j in jobs if j.state == "running"),
        "mine": {"running": sum(1 for j in mine if j.state == "running"), "queued": len(mine_queued),
                 "next": min(mine_queued) if mine_queued else None},
        "artist": artist.name if artist is not None else None,
        "admin": admin,
    }
    if admin:
        view["jobs"] = [{"artist": j.artist, "job_id": j.job_id, "state": j.state, "model": j.model_id,
                         "position": 0 if j.state == "running" else order.get(j.key), "replica": j.replica,
                         "attempts": j.attempts} for j in jobs if j.state != "done"]
        view["replica_list"] = [{k: r.get(k) for k in ("replica", "pid", "node", "node_id", "models", "device",
                                                       "jobs_done", "loads", "cancelled", "threads")}
                                for r in replicas]
        view["dispatched"] = [list(k) for k in dispatched]
        view["routing"] = dict(gateway.routing)
        view["missed"] = [list(k) for k in missed]
    return view

