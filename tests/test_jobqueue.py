"""The engine's job queue: FIFO, one job at a time per device, cancel queued and running jobs, and
exactly one final outcome per job (no torch: the work is a plain function)."""

import random
import threading
import time

import pytest

from core.contract.jobcontrol import Cancelled
from core.engine.jobqueue import DuplicateJob, Job, JobQueue, Outcome, QueueClosed


class Recorder:
    def __init__(self, work_seconds=0.0, block=None):
        self.lock = threading.Lock()
        self.started, self.finals = [], []
        self.active = {}
        self.max_parallel = {}
        self.work_seconds = work_seconds
        self.block = block  # job ids that run until cancelled

    def execute(self, job, device):
        with self.lock:
            self.started.append(job.id)
            self.active[device] = self.active.get(device, 0) + 1
            self.max_parallel[device] = max(self.max_parallel.get(device, 0), self.active[device])
        try:
            deadline = time.monotonic() + (60 if self.block and job.id in self.block else self.work_seconds)
            while time.monotonic() < deadline:
                job.control.check()
                time.sleep(0.002)
            job.control.check()
            return Outcome("result", f"done {job.id}")
        except Cancelled:
            return Outcome.cancelled()
        finally:
            with self.lock:
                self.active[device] -= 1

    def on_final(self, job, outcome):
        with self.lock:
            self.finals.append((job.id, outcome.kind))

    def wait_finals(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.finals) >= n:
                    return list(self.finals)
            time.sleep(0.005)
        raise AssertionError(f"only {len(self.finals)} of {n} jobs ended")


def make(rec, devices=("cpu",)):
    return JobQueue(rec.execute, devices=devices, on_final=rec.on_final)


def test_jobs_run_first_in_first_out_one_at_a_time():
    rec = Recorder(work_seconds=0.005)
    q = make(rec)
    owner = object()
    positions = [q.submit(Job(f"j{i}", None, owner)) for i in range(20)]
    assert positions[0] == 0 and positions[-1] >= 1
    rec.wait_finals(20)
    assert rec.started == [f"j{i}" for i in range(20)]
    assert rec.finals == [(f"j{i}", "result") for i in range(20)]
    assert rec.max_parallel == {"cpu": 1}
    q.close()


def test_one_worker_per_device_runs_in_parallel():
    rec = Recorder(work_seconds=0.05)
    q = make(rec, devices=("cuda:0", "cuda:1"))
    for i in range(8):
        q.submit(Job(f"j{i}", None, object()))
    rec.wait_finals(8)
    assert rec.max_parallel == {"cuda:0": 1, "cuda:1": 1}
    q.close()


def test_cancel_a_queued_job_ends_it_at_once_and_it_never_starts():
    rec = Recorder(block={"first"})
    q = make(rec)
    owner = object()
    q.submit(Job("first", None, owner))
    q.submit(Job("second", None, owner))
    q.submit(Job("third", None, owner))
    while "first" not in rec.started:
        time.sleep(0.001)
    assert q.positions(owner) == {"first": 0, "second": 1, "third": 2}
    assert q.cancel(owner, "second")
    assert rec.wait_finals(1) == [("second", "cancelled")]
    assert q.positions(owner)["third"] == 1
    q.cancel(owner, "first")  # the running one: ends at its next check
    finals = rec.wait_finals(3)
    assert finals == [("second", "cancelled"), ("first", "cancelled"), ("third", "result")]
    assert "second" not in rec.started
    assert not q.cancel(owner, "second")  # already ended: nothing happens
    q.close()


def test_announce_comes_before_the_job_can_start():
    rec = Recorder()
    q = make(rec)
    seen = []
    q.submit(Job("a", None, object()), announce=lambda pos: seen.append((pos, list(rec.started))))
    rec.wait_finals(1)
    assert seen == [(0, [])]
    q.close()


def test_job_ids_are_per_owner_and_duplicates_refused():
    rec = Recorder(block={"x"})
    q = make(rec)
    a, b = object(), object()
    q.submit(Job("x", None, a))
    q.submit(Job("x", None, b))  # same id, other client: fine
    with pytest.raises(DuplicateJob):
        q.submit(Job("x", None, a))
    assert q.cancel_owner(a) == 1
    # b's job does not block forever either
    q.cancel_owner(b)
    finals = rec.wait_finals(2)
    assert sorted(finals) == [("x", "cancelled"), ("x", "cancelled")]
    q.close()


def test_a_job_cancelled_after_its_last_check_reports_cancelled_not_a_late_result():
    release = threading.Event()

    def execute(job, device):
        release.wait(5)
        return Outcome("result", "late")

    finals = []
    q = JobQueue(execute, on_final=lambda job, o: finals.append(o.kind))
    owner = object()
    q.submit(Job("a", None, owner))
    time.sleep(0.05)
    q.cancel(owner, "a")
    release.set()
    deadline = time.monotonic() + 5
    while not finals and time.monotonic() < deadline:
        time.sleep(0.01)
    assert finals == ["cancelled"]
    q.close()


def test_a_crashing_job_ends_with_an_error_and_the_worker_survives():
    def execute(job, device):
        if job.id == "bad":
            raise KeyError("boom")
        return Outcome("result", 1)

    finals, texts = [], []

    def on_final(job, o):
        finals.append((job.id, o.kind, o.code))
        texts.append(o.message)

    q = JobQueue(execute, on_final=on_final)
    q.submit(Job("bad", None, object()))
    q.submit(Job("good", None, object()))
    deadline = time.monotonic() + 5
    while len(finals) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert finals == [("bad", "error", "job_failed"), ("good", "result", "")]
    assert "boom" not in texts[0] and "KeyError" not in texts[0] and "engine's log" in texts[0]
    q.close()


def test_racing_cancels_give_exactly_one_final_per_job():
    rec = Recorder(work_seconds=0.001)
    q = make(rec, devices=("a", "b"))
    owners = [object(), object()]
    rng = random.Random(4)
    ids = []
    for i in range(300):
        owner = owners[i % 2]
        q.submit(Job(f"j{i}", None, owner))
        ids.append((owner, f"j{i}"))
        if rng.random() < 0.5:
            o, j = rng.choice(ids)
            q.cancel(o, j)  # queued, running or already finished: all fine
    finals = rec.wait_finals(300)
    time.sleep(0.05)
    assert len(rec.finals) == 300
    assert sorted(j for j, _ in finals) == sorted(f"j{i}" for i in range(300))
    assert len(q) == 0
    q.close()


def test_close_cancels_everything_and_refuses_new_jobs():
    rec = Recorder(block={"run"})
    q = make(rec)
    owner = object()
    for j in ("run", "q1", "q2"):
        q.submit(Job(j, None, owner))
    time.sleep(0.05)
    assert q.close(timeout=5)
    assert sorted(rec.finals) == [("q1", "cancelled"), ("q2", "cancelled"), ("run", "cancelled")]
    with pytest.raises(QueueClosed):
        q.submit(Job("late", None, owner))
