"""Queue updates as moves (issue 24.2): every position a client holds is exact after every update, and
the bytes of a draining queue's updates grow linearly with its length.

The engine's side is the real ``QueueNews`` over a first-in-first-out queue model (the positions
``JobQueue.positions_by_owner`` gives: running jobs 0, queued ones 1, 2, … in order); the client's side
is the real ``EngineClient`` reading the messages after a trip through the wire format.
"""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract.jobs import JobRequest
from core.engine.queuenews import QueueNews
from core.link import protocol as P
from core.link import queuemoves
from core.link.client import EngineClient, JobHandle


def wire(msg: P.Message) -> P.Message:
    """The message as the other side reads it."""
    return P.read_message(io.BytesIO(P.encode_bytes(msg)).read)


class Owner:
    """One client's connection on the engine's side: counts and keeps what it is sent."""

    def __init__(self, shifts: bool = True):
        self.queue_shifts = shifts
        self.inbox: list[P.Message] = []
        self.queue_bytes = 0

    def send(self, msg: P.Message, **_) -> bool:
        data = P.encode_bytes(msg)
        if msg.type == "queue":
            self.queue_bytes += len(data)
        self.inbox.append(wire(msg))
        return True


class Fifo:
    """First in, first out, one job at a time per device, as ``JobQueue`` numbers it."""

    def __init__(self, devices: int = 1):
        self.queued: list[tuple[Owner, str]] = []
        self.running: dict[int, tuple[Owner, str]] = {}
        self.devices = devices
        self.news = QueueNews(self.positions_by_owner)
        self.now = 0.0

    def positions_by_owner(self):
        out: dict[int, tuple[Owner, dict[str, int]]] = {}
        for owner, j in self.running.values():
            out.setdefault(id(owner), (owner, {}))[1][j] = 0
        for i, (owner, j) in enumerate(self.queued, start=1):
            out.setdefault(id(owner), (owner, {}))[1][j] = i
        return out

    def submit(self, owner: Owner, job_id: str) -> None:
        self.queued.append((owner, job_id))
        position = max(0, len(self.queued) - (self.devices - len(self.running)))
        self.news.accepted(owner, job_id, position)
        owner.send(P.message("accepted", job_id=job_id, position=position))
        if position == 0:       # "starts now": an idle worker takes it (with the jobs ahead, if any)
            self.start()
        self.news.changed()

    def start(self) -> None:
        for d in range(self.devices):
            if d not in self.running and self.queued:
                self.running[d] = self.queued.pop(0)
        self.news.changed()

    def finish(self, device: int) -> tuple[Owner, str] | None:
        job = self.running.pop(device, None)
        self.news.changed()
        return job

    def cancel(self, index: int) -> tuple[Owner, str] | None:
        job = self.queued.pop(index) if self.queued else None
        self.news.changed()
        return job

    def send(self) -> None:
        self.now += 1.0
        self.news.send_due(self.now)

    def truth(self, owner: Owner) -> dict[str, int]:
        return self.positions_by_owner().get(id(owner), (owner, {}))[1]


# --- the bytes of a draining queue ---------------------------------------------------------------------

def drain_bytes(n: int, clients: int = 1, shifts: bool = True) -> int:
    """Bytes of queue messages while n queued jobs (of ``clients`` clients, interleaved) behind a running
    one drain one by one, every change sent (jobs slower than the coalescing interval)."""
    fifo = Fifo()
    owners = [Owner(shifts) for _ in range(clients)]
    fifo.submit(owners[0], "blocker")
    fifo.start()
    for i in range(n):
        fifo.submit(owners[i % clients], f"j{i}")
    fifo.send()
    while fifo.running or fifo.queued:
        fifo.finish(0)
        fifo.start()
        fifo.send()
    return sum(o.queue_bytes for o in owners)


@pytest.mark.parametrize("clients", [1, 3])
def test_queue_update_bytes_grow_linearly_with_the_queue(clients):
    sizes = (250, 500, 1000, 2000)
    measured = {n: drain_bytes(n, clients) for n in sizes}
    table = " / ".join(f"{n}: {b / 1e6:.3f} MB ({b / n:.0f} B per job)" for n, b in measured.items())
    assert measured[1000] / measured[250] <= 4.4, table
    assert measured[2000] / measured[1000] <= 2.2, table
    assert all(b <= 80 * n * clients for n, b in measured.items()), table


def test_an_older_client_still_gets_exact_near_positions_and_fewer_far_ones():
    """A client whose hello did not offer ``queue_shifts`` gets positions that moved enough (n log n)."""
    fifo = Fifo()
    old = Owner(shifts=False)
    fifo.submit(old, "blocker")
    fifo.start()
    for i in range(100):
        fifo.submit(old, f"j{i}")
    fifo.finish(0)
    fifo.start()
    fifo.send()
    queue = [m for m in old.inbox if m.type == "queue"]
    assert [m.get("shifts") for m in queue] == [None]
    positions = queue[0].get("positions")
    assert positions["j0"] == 0 and positions["j15"] == 15 and "j50" not in positions


# --- exact positions after every update: random accepts, starts, completions, cancels --------------------

OPS = st.lists(st.tuples(st.sampled_from(["submit", "submit", "start", "finish", "cancel", "send", "deliver"]),
                         st.integers(0, 2), st.integers(0, 40)), max_size=80)


class Reader:
    """The real client's reading of one owner's messages, final events held back until ``deliver`` (a
    job's queue update may overtake its final event)."""

    def __init__(self, owner: Owner):
        self.owner = owner
        self.client = EngineClient(python="python")
        self.link = SimpleNamespace(told={}, running_ids=set(), fatal="")
        self.finals: list[P.Message] = []

    def take(self, job_id: str) -> None:
        h = JobHandle(job_id, JobRequest("fill"), previews=False)
        h.mark_sent(self.link)
        self.client._jobs.add(h)

    def read(self) -> None:
        inbox, self.owner.inbox = self.owner.inbox, []
        for msg in inbox:
            if msg.type == "accepted" and self.client._jobs.get(msg.get("job_id")) is None:
                self.take(msg.get("job_id"))
            self.client._dispatch(self.link, msg)

    def deliver(self) -> None:
        for msg in self.finals:
            self.client._dispatch(self.link, msg)
        self.finals = []

    def positions(self) -> dict[str, int]:
        return {h.job_id: h.position for h in self.client.jobs() if not h.done}


def replay(ops, devices: int) -> list[str]:
    async def go():
        fifo = Fifo(devices)
        owners = [Owner() for _ in range(3)]
        readers = {id(o): Reader(o) for o in owners}
        count = 0
        for op, who, arg in ops:
            if op == "submit":
                fifo.submit(owners[who], f"c{who}-{count}")
                count += 1
            elif op == "start":
                fifo.start()
            elif op in ("finish", "cancel"):
                job = fifo.finish(arg % devices) if op == "finish" else fifo.cancel(arg % max(1, len(fifo.queued)))
                if job is not None:
                    readers[id(job[0])].finals.append(wire(P.message("cancelled", job_id=job[1])))
            elif op == "deliver":
                readers[id(owners[who])].deliver()
            for r in readers.values():
                r.read()
            if op == "send":
                fifo.send()
                for o in owners:
                    r = readers[id(o)]
                    r.read()
                    truth = fifo.truth(o)
                    held = r.positions()
                    assert {j: held.get(j) for j in truth} == truth, (truth, held)
                    assert {j: r.link.told.get(j) for j in truth} == truth
        return [m for r in readers.values() for m in r.finals]

    return asyncio.run(go())


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(1, 2))
def test_every_position_a_client_holds_is_exact_after_every_update(ops, devices):
    replay(ops, devices)


def test_a_long_random_run_stays_exact():
    import random

    rng = random.Random(24)
    names = ["submit", "submit", "submit", "start", "finish", "cancel", "send", "deliver"]
    replay([(rng.choice(names), rng.randrange(3), rng.randrange(60)) for _ in range(3000)], 2)


# --- the encoding itself -------------------------------------------------------------------------------

def test_a_fifo_drain_is_one_run_per_departure_and_the_front_is_exact():
    told = {f"j{i}": i for i in range(1, 101)}
    now = {f"j{i}": i - 3 for i in range(4, 101)}       # three jobs ahead left (j1–j3, all this client's)
    explicit, shifts = queuemoves.changes(told, now)
    assert explicit == {} and shifts == [[4, 100, 3]]
    assert queuemoves.applied(told, explicit, shifts) == {**{f"j{i}": i for i in range(1, 4)}, **now}
    told = {"a": 1, "b": 5, "c": 9}
    now = {"a": 0, "b": 3, "c": 6, "d": 10}               # a departure ahead of each, and a new job
    explicit, shifts = queuemoves.changes(told, now)
    assert explicit == {"d": 10} and shifts == [[1, 1, 1], [5, 5, 2], [9, 9, 3]]


def test_runs_never_cover_a_job_that_left_or_jobs_told_the_same_place_that_moved_apart():
    told = {"a": 2, "gone": 3, "b": 4, "x": 6, "y": 6, "c": 8}
    now = {"a": 1, "b": 3, "x": 5, "y": 4, "c": 7}
    explicit, shifts = queuemoves.changes(told, now)
    assert shifts == [[2, 2, 1], [4, 4, 1], [8, 8, 1]]
    assert explicit == {"x": 5, "y": 4}
    after = queuemoves.applied(told, explicit, shifts)
    assert {j: after[j] for j in now} == now and after["gone"] == 3
    assert queuemoves.changes({"a": 1, "b": 2}, {"a": 1, "b": 2}) == ({}, [])


@pytest.mark.parametrize("shifts", [
    {"nope": 1}, [[1, 2]], [[1, 2, "3"]], [[3, 2, 1]], [[1, 4, 1], [4, 6, 2]], [[5, 6, 1], [1, 2, 1]],
    [[1, 2, True]],
])
def test_a_queue_message_with_bad_shifts_is_refused_naming_the_field(shifts):
    with pytest.raises(P.MessageError) as e:
        queuemoves.queue_update_of(wire(P.message("queue", positions={}, shifts=shifts)))
    assert e.value.parameter == "shifts"


def test_a_queue_message_with_bad_positions_is_refused_naming_the_field():
    for positions in ([1], {"j": -1}, {"j": "1"}, {"j": 1.0}):
        with pytest.raises(P.MessageError) as e:
            queuemoves.queue_update_of(wire(P.message("queue", positions=positions)))
        assert e.value.parameter == "positions"


# --- the real client applying them ---------------------------------------------------------------------

def test_the_client_moves_its_jobs_by_the_shifts_then_takes_explicit_positions():
    async def go():
        reader = Reader(Owner())
        for j, pos in (("a", 1), ("b", 4), ("c", 7)):
            reader.owner.send(P.message("accepted", job_id=j, position=pos))
        reader.read()
        seen = [[(h.job_id, h.position) for h in reader.client.jobs()]]
        reader.owner.send(queuemoves.queue_update({"c": 2}, [[1, 1, 1], [4, 7, 3]]))
        reader.read()
        seen.append([(h.job_id, h.position, h.state.value) for h in reader.client.jobs()])
        a = reader.client._jobs.get("a")
        events = []
        while not a._queue.empty():
            events.append(a._queue.get_nowait())
        reader.owner.send(P.message("cancelled", job_id="b"))
        reader.owner.send(queuemoves.queue_update({}, [[2, 2, 1]]))   # b ended: the engine no longer counts it
        reader.read()
        seen.append([(h.job_id, h.position) for h in reader.client.jobs()])
        return seen, events, reader.link.told

    seen, events, told = asyncio.run(go())
    assert seen[0] == [("a", 1), ("b", 4), ("c", 7)]
    assert seen[1] == [("a", 0, "running"), ("b", 1, "queued"), ("c", 2, "queued")]
    assert [e.position for e in events] == [1, 0]
    assert seen[2] == [("a", 0), ("c", 1)] and told == {"a": 0, "c": 1}


def test_a_bad_queue_message_changes_nothing_and_a_gateways_positions_only_message_still_works():
    async def go():
        reader = Reader(Owner())
        reader.owner.send(P.message("accepted", job_id="a", position=3))
        reader.read()
        bad = wire(P.message("queue", positions={"a": 1}, shifts=[[3, 3]]))
        with pytest.raises(P.ProtocolError):       # the client's read loop logs it and reads on
            reader.client._dispatch(reader.link, bad)
        held = reader.client._jobs.get("a").position
        reader.owner.send(P.message("queue", positions={"a": 2}, cluster={"replicas": 1}))
        reader.read()
        return held, reader.client._jobs.get("a").position, reader.client.cluster

    assert asyncio.run(go()) == (3, 2, {"replicas": 1})
