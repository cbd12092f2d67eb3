"""The results store on disk: every record is validated (a bad file is skipped and reported, never a
crash), leftovers of interrupted saves are removed (only the store's own files), a full disk leaves no
half-written result, and a process killed mid-save, again and again, leaves exactly the results it
acknowledged.  The dock opens on a folder with broken files, shows every good result and says which
files it skipped."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.contract import atomic
from plugin.diffusion_dock.session import result_entry
from plugin.diffusion_dock.session.results_store import GRACE_S, ResultStore, StoredResult, new_id

from ..helpers import disk_full_after, leftovers
from . import store_child

ROOT = Path(__file__).resolve().parents[2]
# Kills of the saving process: 40 here; DD_TEST_LONG=1 runs 200, as the outside audit did.
KILLS = 200 if os.environ.get("DD_TEST_LONG") == "1" else 40


def make_record(n: int, *, width: int = 4, height: int = 3, fmt: str = "BGRA_U8", created: float | None = None):
    rid = new_id(f"job{n:05d}", 0, now=1_700_000_000 + n)
    return StoredResult(id=rid, job_id=f"job{n:05d}", index=0, mode="inpaint", name=f"result {n}", x=1, y=2,
                        width=width, height=height, format=fmt, seed=n, model="sd2-inpainting",
                        provenance={"prompt": "p"}, document="doc", canvas=(64, 48),
                        source_layer={"id": "l1", "name": "Paint", "color": ["RGBA", "U8", "sRGB"]},
                        warnings=["w"], created=created if created is not None else 1_700_000_000 + n,
                        stats={"seconds": 1.5, "prepare_ms": 2.0, "max_stall_ms": 3.0})


def save(store: ResultStore, n: int, thumb: bool = True) -> StoredResult:
    rec = make_record(n)
    store.save(rec, bytes(range(rec.nbytes)) if rec.nbytes <= 256 else bytes(rec.nbytes), b"png" if thumb else None)
    return rec


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- every field of a record, wrong or missing ------------------------------------------------------

WRONG = {   # field: values of a wrong type or out of range
    "id": [None, 7, "", "../x", "not-an-id"],
    "job_id": [None, 7, ["j"]],
    "index": [None, "0", -1, 1.5, True],
    "mode": [None, 3, ""],
    "name": [None, 3, {"a": 1}],
    "x": [None, "1", 1.5, True],
    "y": [None, "2", [2]],
    "width": [None, "4", 0, -4, 4.0, 10**9],
    "height": [None, "3", 0, True],
    "format": [None, "RGB_U9", 4, ["BGRA_U8"]],
    "linear": ["no", 0, None],
    "seed": ["1", -1, 1.5, True],
    "model": [3, ["m"]],
    "provenance": ["p", [], None],
    "document": [None, 3],
    "canvas": ["64x48", [64], [64, "48"], [64, -1], None],
    "source_layer": ["Paint", [], {"id": 3}, {"name": None}, {"color": "RGBA"}, {"color": ["RGBA", "U8"]}],
    "target": ["elsewhere", None, 1],
    "warnings": ["w", [1], None],
    "created": ["yesterday", None, [1], True, float("nan"), float("inf")],
    "state": ["done", None, 1],
    "applied_to": [None, 1],
    "stats": ["fast", [], {"seconds": "1"}, {"max_stall_ms": None}],
    "version": ["1", 0, 99, None],
}
FIELD_ROWS = [(name, value) for name, values in WRONG.items() for value in values]


def test_the_table_covers_every_field_of_a_record():
    fields = {f for f in make_record(0).to_json()}
    assert set(WRONG) == fields == set(result_entry.REQUIRED) | set(result_entry.OPTIONAL)


def write_entry(store: ResultStore, rec: StoredResult, entry) -> Path:
    """A result whose JSON is ``entry`` (its pixels and thumbnail are fine)."""
    store.save(rec, bytes(rec.nbytes), b"png")
    path = store.folder / f"{rec.id}.json"
    path.write_text(json.dumps(entry) if not isinstance(entry, str) else entry, encoding="utf-8")
    return path


def check_skipped_and_reported(store: ResultStore, bad: Path, good: list[StoredResult], needle: str) -> None:
    assert [r.id for r in store.load_all()] == [r.id for r in reversed(good)]
    assert list(store.broken) == [bad.name]
    assert needle in store.broken[bad.name], store.broken
    assert bad.name in store.broken_summary() and "1 saved result could not be read" in store.broken_summary()
    assert store.prune() == []                      # prune reads the same records: no crash, nothing lost
    assert [r.id for r in store.load_all()] == [r.id for r in reversed(good)]
    assert bad.exists()                            # reported, not deleted
    assert store.get(bad.name[:-5]) is None


@pytest.mark.parametrize("name,value", FIELD_ROWS, ids=[f"{n}={v!r}"[:40] for n, v in FIELD_ROWS])
def test_a_field_of_the_wrong_type_skips_that_result_and_reports_it(tmp_path, name, value):
    store = ResultStore(tmp_path)
    good = [save(store, 1), save(store, 2)]
    rec = make_record(3)
    entry = rec.to_json()
    entry[name] = value
    bad = write_entry(store, rec, entry)
    check_skipped_and_reported(store, bad, good, f"'{name}'")


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_missing_field_skips_the_result_when_required_else_takes_its_default(tmp_path, name):
    store = ResultStore(tmp_path)
    good = [save(store, 1), save(store, 2)]
    rec = make_record(3)
    entry = rec.to_json()
    del entry[name]
    path = write_entry(store, rec, entry)
    if name in result_entry.REQUIRED:
        check_skipped_and_reported(store, path, good, f"'{name}' is missing")
    else:
        loaded = store.load_all()
        assert len(loaded) == 3 and not store.broken
        default = StoredResult(**{k: getattr(rec, k) for k in result_entry.REQUIRED})
        got = store.get(rec.id)
        if name != "version":
            assert getattr(got, name) == getattr(default, name)


WHOLE_FILE = [
    ("[]", "holds a list, not a result record"),
    ("null", "holds null"),
    ('"text"', "holds text"),
    ("42", "holds a number"),
    ("", "not valid JSON"),
    ('{"id": "2023', "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    (b"\xff\xfe garbage \x00", "not UTF-8"),
]


@pytest.mark.parametrize("content,needle", WHOLE_FILE, ids=["list", "null", "text", "number", "empty", "truncated",
                                                            "deep", "binary"])
def test_a_file_that_is_no_record_at_all_is_skipped_and_reported(tmp_path, content, needle):
    store = ResultStore(tmp_path)
    good = [save(store, 1), save(store, 2)]
    rec = make_record(3)
    store.save(rec, bytes(rec.nbytes))
    bad = tmp_path / f"{rec.id}.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    check_skipped_and_reported(store, bad, good, needle)


def test_missing_or_short_pixels_and_a_foreign_id_are_reported(tmp_path):
    store = ResultStore(tmp_path)
    good = [save(store, 1)]
    a, b, c = make_record(2), make_record(3), make_record(4)
    for rec in (a, b, c):
        store.save(rec, bytes(rec.nbytes))
    (tmp_path / f"{a.id}.raw").unlink()
    (tmp_path / f"{b.id}.raw").write_bytes(b"short")
    entry = c.to_json()
    entry["id"] = good[0].id
    (tmp_path / f"{c.id}.json").write_text(json.dumps(entry))
    assert [r.id for r in store.load_all()] == [good[0].id]
    assert "is missing" in store.broken[f"{a.id}.json"]
    assert "has 5 bytes" in store.broken[f"{b.id}.json"]
    assert "'id' must be the file's own name" in store.broken[f"{c.id}.json"]
    assert "3 saved results could not be read" in store.broken_summary()
    store.delete(a.id)                              # a deleted broken result is no longer reported
    assert f"{a.id}.json" not in store.broken and len(store.load_all()) == 1 and len(store.broken) == 2


def test_a_record_round_trips_and_a_bad_one_names_the_field_and_code():
    rec = make_record(5)
    assert StoredResult.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    with pytest.raises(result_entry.BadEntry) as e:
        StoredResult.from_json({**rec.to_json(), "created": "yesterday"})
    assert e.value.field == "created" and e.value.code == "bad_result_entry"
    assert str(e.value) == "'created' must be a number (seconds since 1970), got text 'yesterday'"


# --- leftovers ------------------------------------------------------------------------------------------

def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_cleanup_removes_old_leftovers_of_its_own_and_nothing_else(tmp_path, caplog):
    store = ResultStore(tmp_path)
    kept = save(store, 1)
    orphan = make_record(2)
    own = {   # name: bytes; every one is a leftover of this store
        f".{kept.id}.json.{os.getpid()}-0123abcd.tmp": 100,          # an interrupted state change
        f".{orphan.id}.raw.4242-89abcdef.tmp": 5000,                 # an interrupted save
        f".{orphan.id}.png.1-00000000.tmp": 70,
        f".{orphan.id}.raw.4242.139872.tmp": 3000,                   # the previous version's temporary name
        f"{orphan.id}.raw": orphan.nbytes,                             # pixels whose JSON never came
        f"{make_record(3).id}.png": 40,                                # a thumbnail left by a deletion
    }
    foreign = {
        "notes.txt": 10, "result.raw": 10, "x.png": 10, ".hidden.tmp": 10, ".out.png.4242-89abcdef.tmp": 10,
        f".{orphan.id}.raw.tmp": 10, f"{orphan.id}.raw.bak": 10, f"{orphan.id}.RAW": 10,
        f".{orphan.id}.raw.4242-89abcdef.tmp~": 10,
    }
    for name, size in {**own, **foreign}.items():
        (tmp_path / name).write_bytes(b"x" * size)
        age(tmp_path / name, GRACE_S + 60)
    os.mkdir(tmp_path / f"{make_record(4).id}.raw")                    # not a file: left alone
    young = tmp_path / f"{make_record(5).id}.raw"                       # a save under way elsewhere
    young.write_bytes(b"y" * 10)

    with caplog.at_level(logging.INFO, logger="plugin.diffusion_dock.session.results_store"):
        report = ResultStore(tmp_path).cleanup()
    assert (report.temp_files, report.orphans, report.bytes) == (4, 2, sum(own.values()))
    assert files(tmp_path) == ({f"{kept.id}{s}" for s in (".json", ".raw", ".png")} | set(foreign)
                               | {young.name, f"{make_record(4).id}.raw"})
    assert f"removed 6 leftover files of interrupted saves (4 temporary, 2 pixel or thumbnail files without " \
           f"their result), {sum(own.values())} bytes" in caplog.text
    # Once the save under way is old, it is a leftover too; the results stay.
    age(young, GRACE_S + 1)
    assert ResultStore(tmp_path).prune() == [] and not young.exists()
    assert [r.id for r in ResultStore(tmp_path).load_all()] == [kept.id]


def test_the_first_load_cleans_up(tmp_path):
    store = ResultStore(tmp_path)
    rec = save(store, 1)
    stray = tmp_path / f".{rec.id}.raw.99-0123abcd.tmp"
    stray.write_bytes(b"z" * 1000)
    age(stray, GRACE_S + 1)
    fresh = ResultStore(tmp_path)
    assert [r.id for r in fresh.load_all()] == [rec.id]
    assert not stray.exists() and fresh.last_cleanup.bytes == 1000


# --- a full disk ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [0, 1, 6, 12, 50, 60, 200])
def test_a_full_disk_leaves_no_half_result(tmp_path, monkeypatch, limit):
    """Pixels (48 bytes), thumbnail (3 bytes) and JSON: the disk fills up within each of them."""
    store = ResultStore(tmp_path)
    first = save(store, 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    budget = disk_full_after(monkeypatch, limit)
    rec = make_record(2)
    with pytest.raises(atomic.WriteError) as e:
        store.save(rec, bytes(rec.nbytes), b"png")
    assert budget["failures"] == 1
    assert str(e.value).startswith(f"cannot write {tmp_path / rec.id}.") and "No space left on device" in str(e.value)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(rec.id)}
    assert after == before and not leftovers(tmp_path)
    assert [r.id for r in store.load_all()] == [first.id] and not store.broken
    with pytest.raises(atomic.WriteError):                            # a state change on a full disk
        disk_full_after(monkeypatch, 5)
        store.set_state(first.id, "applied", "layer x")
    monkeypatch.undo()
    assert store.get(first.id).state == "new" and not leftovers(tmp_path)


# --- kill -9 mid-save, many times ----------------------------------------------------------------------

STAGES = ["free", "raw-write", "raw-renamed", "png-write", "png-renamed", "json-write", "json-renamed"]


def kill_mid_save(folder: Path, run: int, stage: str, rng: random.Random) -> list[str]:
    """Start a saving process and SIGKILL it at ``stage`` (a free run: after a random number of results);
    returns the ids it acknowledged (every ``ack`` it printed before it died)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.plugin.store_child", str(folder), str(run), stage],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    wanted = rng.randint(1, 4)
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if lines[-1].startswith("paused") or (stage == "free" and len(lines) >= wanted):
                break
        else:
            pytest.fail(f"run {run} ({stage}) ended by itself: {proc.stderr.read()}")
    finally:
        proc.kill()
        proc.wait()
    lines += [line.strip() for line in proc.stdout]      # what it printed before the kill took effect
    proc.stdout.close()
    proc.stderr.close()
    if stage != "free":
        assert lines[-1] == f"paused {stage}", lines
    return [line.split(" ", 1)[1] for line in lines if line.startswith("ack ")]


def test_kill_9_mid_save_again_and_again_keeps_exactly_the_acknowledged_results(tmp_path, qtbot):
    folder = tmp_path / "results"
    rng = random.Random(1234)
    acked: list[str] = []
    next_jobs: list[str] = []            # the job part of the id of the save each process died in
    for run in range(KILLS):
        got = kill_mid_save(folder, run, STAGES[run % len(STAGES)], rng)
        acked += got
        next_jobs.append(f"{run:04x}{len(got) + 1:04x}")
    # Restart: every acknowledged result loads, with its pixels; nothing is broken.
    store = ResultStore(folder)
    loaded = {r.id: r for r in store.load_all()}
    assert not store.broken, store.broken
    assert set(acked) <= set(loaded)
    extra = set(loaded) - set(acked)     # a save killed after its JSON was in place, before its "ack"
    assert all(rid.split("-")[3] in next_jobs for rid in extra), extra
    for rid in loaded:
        assert store.pixels(rid) == store_child.pixels(rid, loaded[rid].nbytes)
    # What the kills left: young, so this first start keeps them (a save under way elsewhere is safe).
    results_files = {f"{rid}{s}" for rid in loaded for s in (".json", ".raw", ".png")}
    left = sorted(files(folder) - results_files)
    left_bytes = sum((folder / n).stat().st_size for n in left)
    assert store.last_cleanup.files == 0 and left
    # Minutes later they are removed, and the folder holds exactly the results.
    for name in files(folder):
        age(folder / name, GRACE_S + 1)
    later = ResultStore(folder)
    assert len(later.load_all()) == len(loaded)
    assert files(folder) == results_files
    assert (later.last_cleanup.files, later.last_cleanup.bytes) == (len(left), left_bytes)
    print(f"\nkill loop: {KILLS} kills, {len(acked)} acknowledged results, {len(extra)} completed but not yet "
          f"acknowledged, {len(left)} leftover files ({left_bytes} bytes) removed by the cleanup, 0 lost")
    # The dock opens on that folder with the newest results (its history shows up to 60), none broken.
    panel = open_dock(qtbot, folder)
    newest = {r.id for r in later.load_all(limit=60)}
    assert set(panel.results.records) == newest and len(newest) == min(60, len(loaded))
    assert panel.last_message == ("", "")


# --- the dock -----------------------------------------------------------------------------------------

def open_dock(qtbot, folder: Path):
    from plugin.diffusion_dock import host as H
    from plugin.diffusion_dock.panel.dock import DockPanel
    from plugin.diffusion_dock.session.dock_session import DockSession
    from plugin.diffusion_dock.session.settings import Settings

    from .memory_host import MemoryDocument, MemoryHost

    doc = MemoryDocument(64, 48, "store")
    doc.add("Paint", np.zeros((48, 64, 4), np.uint8), H.ColorInfo("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc"))
    panel = DockPanel(host=MemoryHost(doc), session=DockSession(Settings(), ResultStore(folder)))
    qtbot.addWidget(panel)
    return panel


def test_the_dock_opens_with_every_good_result_and_reports_the_broken_files(tmp_path, qtbot, monkeypatch):
    monkeypatch.setenv("DD_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "results"
    store = ResultStore(folder)
    good = [save(store, n) for n in range(1, 6)]
    broken = []
    for n, content in ((10, "[]"), (11, "null"), (12, None), (13, "")):
        rec = make_record(n)
        entry = content if content is not None else json.dumps({**rec.to_json(), "created": "yesterday"})
        broken.append(write_entry(store, rec, entry).name)
    panel = open_dock(qtbot, folder)
    assert set(panel.results.records) == {r.id for r in good}
    kind, text = panel.last_message
    assert kind == "warning" and text.startswith("4 saved results could not be read and were skipped (")
    assert all(name in text for name in sorted(broken)[:3]) and "and 1 more" in text
    assert panel.message.isVisibleTo(panel)
