"""Large payloads through shared-memory files (core.link.bulk): round trips, what a receiver refuses, clean-up,
and a real engine process that agrees to it in the hello, or is not offered it and never uses it."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from core.link import bulk
from core.link import protocol as P

from .engine_helpers import RawEngine

pytestmark = pytest.mark.skipif(bulk.directory() is None, reason="no shared-memory directory on this machine")
BIG = bulk.MIN_BYTES


def ours(where) -> set[str]:
    return {n for n in os.listdir(where) if bulk.NAME.match(n)}


@pytest.fixture
def where(tmp_path):
    return str(tmp_path)     # the same code on any directory; the engine tests below use /dev/shm


@pytest.mark.parametrize("mapped", [True, False])
def test_large_payloads_go_to_files_and_come_back_identical(where, mapped):
    big = np.random.default_rng(0).integers(0, 256, BIG + 13, dtype=np.uint8).tobytes()
    small = b"x" * 100
    msg = P.message("result", [small, memoryview(big), b""], job_id="j1", result={"a": 1})
    written: set = set()
    sent = bulk.offload(msg, where, written)
    assert [len(p) for p in sent.payloads] == [100, 0, 0]          # only the large one moved
    assert sent.header["bulk"] == [{"index": 1, "name": next(iter(written)), "size": BIG + 13}]
    assert ours(where) == written
    frame = P.encode_bytes(sent)                                    # the frame itself stays small
    assert len(frame) < 1000
    got = bulk.restore(P.read_message(io.BytesIO(frame).read), where, mapped=mapped)
    assert "bulk" not in got.header and got.header["job_id"] == "j1"
    assert got.payloads[0] == small and bytes(got.payloads[1]) == big and got.payloads[2] == b""
    assert ours(where) == set()                                     # taken, so deleted
    assert bulk.offload(P.message("x", [small]), where).header.get("bulk") is None


def test_a_mapped_payload_is_read_only(where):
    msg = bulk.restore(bulk.offload(P.message("x", [bytes(BIG)], job_id="j"), where), where, mapped=True)
    arr = np.frombuffer(msg.payloads[0], np.uint8)
    assert not arr.flags.writeable and arr.size == BIG


def bad(refs, payloads=(b"",)):
    return P.message("submit", list(payloads), job_id="job-7", bulk=refs)


@pytest.mark.parametrize("refs", [
    "nope",
    [{"index": 0, "name": "../../etc/passwd", "size": BIG}],
    [{"index": 0, "name": "dd-1-" + "0" * 32 + ".bulk/../x", "size": BIG}],
    [{"index": 3, "name": "dd-1-" + "0" * 32 + ".bulk", "size": BIG}],
    [{"index": 0, "name": "dd-1-" + "0" * 32 + ".bulk", "size": -1}],
    [{"index": 0, "name": "dd-1-" + "0" * 32 + ".bulk", "size": BIG}],     # no such file
    [7],
])
def test_bad_references_are_refused_naming_the_job(where, refs):
    with pytest.raises(P.MessageError) as e:
        bulk.restore(bad(refs), where, mapped=True)
    assert e.value.job_id == "job-7" and e.value.code == "bad_message"


def test_a_reference_is_refused_unless_agreed_or_when_the_file_is_not_what_was_announced(where, tmp_path):
    sent = bulk.offload(P.message("x", [bytes(BIG)], job_id="j"), where)
    with pytest.raises(P.MessageError, match="not agreed"):
        bulk.restore(sent, None, mapped=True)
    wrong = P.Message({**sent.header, "bulk": [{**sent.header["bulk"][0], "size": BIG - 1}]}, sent.payloads)
    with pytest.raises(P.MessageError, match="not the announced"):
        bulk.restore(wrong, where, mapped=False)
    assert ours(where) == set()                    # a refused file is deleted all the same
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(BIG))
    name = "dd-1-" + "a" * 32 + ".bulk"
    os.symlink(secret, os.path.join(where, name))  # a link is never followed
    with pytest.raises(P.MessageError, match="cannot be opened"):
        bulk.restore(bad([{"index": 0, "name": name, "size": BIG}]), where, mapped=False)
    assert secret.exists()


def test_files_nobody_took_are_deleted_by_their_writer_or_by_the_next_engine(where):
    written: set = set()
    bulk.offload(P.message("x", [bytes(BIG)]), where, written)
    bulk.discard(where, written)
    assert ours(where) == set() and written == set()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = f"dd-{dead_pid}-{'b' * 32}.bulk"
    live = f"dd-{os.getpid()}-{'c' * 32}.bulk"
    for name in (stale, live, "unrelated.bulk"):
        open(os.path.join(where, name), "wb").close()
    assert bulk.sweep(where) == 1
    assert sorted(os.listdir(where)) == sorted([live, "unrelated.bulk"])


def test_the_directory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("DD_BULK", "0")
    assert bulk.directory() is None


def test_the_engine_refuses_unagreed_or_bad_references_and_carries_on():
    eng = RawEngine()
    try:
        eng.send(P.hello(heartbeat=30))                            # no bulk_dir offered
        hello, _ = eng.until(lambda m: m.type == "hello")
        assert hello.get("bulk_dir") is None
        eng.send(bad([{"index": 0, "name": "dd-1-" + "0" * 32 + ".bulk", "size": BIG}]))
        err, _ = eng.until(lambda m: m.type == "error")
        assert err.get("job_id") == "job-7" and "not agreed" in err.get("message")
        eng.send(P.message("capabilities"))
        eng.until(lambda m: m.type == "capabilities")              # still serving
    finally:
        eng.proc.kill()
        eng.proc.wait()


def test_the_engine_agrees_to_the_directory_it_also_sees():
    eng = RawEngine()
    try:
        eng.send(P.hello(heartbeat=30, bulk_dir=bulk.directory()))
        hello, _ = eng.until(lambda m: m.type == "hello")
        assert hello.get("bulk_dir") == bulk.directory()
        eng.send(bad([{"index": 0, "name": "../x", "size": BIG}]))
        err, _ = eng.until(lambda m: m.type == "error")
        assert err.get("job_id") == "job-7" and "bad bulk reference" in err.get("message")
    finally:
        eng.proc.kill()
        eng.proc.wait()
    eng = RawEngine()
    try:
        eng.send(P.hello(heartbeat=30, bulk_dir="/somewhere/else"))
        hello, _ = eng.until(lambda m: m.type == "hello")
        assert hello.get("bulk_dir") is None
    finally:
        eng.proc.kill()
        eng.proc.wait()


def test_patches_made_in_shared_memory_are_sent_as_their_own_files(where, models, monkeypatch):
    """Inside ``results_in`` a job's patch is made in a bulk file, and sending it moves no bytes."""
    from core.pipelines import run_job
    from core.raster.pixels import results_in

    from .helpers import inpaint_request, rect_mask, rgba_u8

    side = 1024
    req = inpaint_request(rgba_u8(side, side, seed=2), rect_mask(side, side, 30, 40, side - 30, side - 20),
                          steps=1, seed=4)
    names: set = set()
    with results_in(lambda shape, dtype: bulk.shared_array(where, shape, dtype, names)):
        res = run_job(req, models)
    plain = run_job(req, models)
    assert len(names) == 1 and ours(where) == names
    assert bytes(res.patches[0].image.data) == bytes(plain.patches[0].image.data)

    def no_copy(*a):
        raise AssertionError("the patch was copied into a new file")

    monkeypatch.setattr(bulk, "_write", no_copy)
    sent = bulk.offload(P.result("job", res), where)
    assert [r["name"] for r in sent.header["bulk"]] == sorted(names)
    bulk.release(names)                                   # sent: no longer ours to delete
    assert ours(where) == names
    got = bulk.restore(sent, where, mapped=False)
    assert got.payloads[0] == bytes(plain.patches[0].image.data) and ours(where) == set()


def test_shared_arrays_never_sent_are_deleted_with_their_job(where):
    names: set = set()
    a = bulk.shared_array(where, (1024, 1024, 4), np.uint8, names)
    small = bulk.shared_array(where, (4, 4), np.float32, names)     # small: plain memory, no file
    a[...] = 7
    assert len(names) == 1 and ours(where) == names and small.shape == (4, 4)
    other = np.zeros(BIG, np.uint8)                                # not shared: copied into a file
    sent = bulk.offload(P.message("x", [other]), where)
    assert sent.header["bulk"][0]["name"] not in names
    bulk.release(names)
    assert ours(where) == {sent.header["bulk"][0]["name"]}
    assert int(a[5, 5, 0]) == 7                                    # the array itself stays valid


def test_result_arrays_come_from_the_threads_maker_only_inside_results_in():
    import threading

    from core.raster.pixels import result_array, results_in

    made = []

    def maker(shape, dtype):
        made.append(shape)
        return np.full(shape, 3, dtype)

    with results_in(maker):
        assert result_array((2, 2), np.uint8)[0, 0] == 3
        seen = []
        t = threading.Thread(target=lambda: seen.append(result_array((1,), np.uint8)))
        t.start()
        t.join()
        with results_in(None):
            result_array((5,), np.uint8)
        result_array((3,), np.uint8)
    result_array((4,), np.uint8)
    assert made == [(2, 2), (3,)]


def test_a_full_shared_memory_gives_plain_arrays_and_the_pipe(where, monkeypatch, caplog):
    """No room in /dev/shm (a container's 64 MB, say): nothing crashes, nothing is left behind."""
    import errno

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    names: set = set()
    arr = bulk.shared_array(where, (1024, 1024, 4), np.uint8, names)
    arr[...] = 1
    assert names == set() and ours(where) == set()
    monkeypatch.setattr(os, "write", full)
    msg = P.message("x", [bytes(BIG)])
    with pytest.raises(OSError):
        bulk.offload(msg, where)
    assert ours(where) == set()
    with caplog.at_level("WARNING", logger="core.link.bulk"):      # what the senders call: the pipe, warned
        assert bulk.offload_or_pipe(msg, where, who="engine") is msg
    assert "engine: shared memory unavailable" in caplog.text and ours(where) == set()
    assert bulk.offload_or_pipe(msg, None) is msg              # no shared memory agreed: the pipe
