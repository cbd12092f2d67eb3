"""The one atomic writer (core.contract.atomic): the target is complete or untouched, the temporary
file goes away on every error, errors are one line naming the target and the system's reason."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from core.contract import atomic

from .helpers import disk_full_after, leftovers


def test_writes_bytes_and_text_and_replaces_an_old_file(tmp_path):
    p = tmp_path / "a.bin"
    atomic.write_bytes(p, b"one")
    atomic.write_bytes(p, b"two!")
    assert p.read_bytes() == b"two!"
    atomic.write_text(tmp_path / "t.txt", "é\n", newline="")
    assert (tmp_path / "t.txt").read_bytes() == "é\n".encode()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("limit", [0, 1, 4095, 4096, 10_000])
def test_a_full_disk_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, limit):
    p = tmp_path / "out.dat"
    p.write_bytes(b"old")
    budget = disk_full_after(monkeypatch, limit)
    with pytest.raises(atomic.WriteError) as e:
        with atomic.open_atomic(p) as f:
            for _ in range(4):
                f.write(b"x" * 4096)
    assert budget["failures"] == 1
    assert str(e.value) == f"cannot write {p}: No space left on device"
    assert e.value.errno == errno.ENOSPC and e.value.code == "write_failed" and e.value.path == p
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.dat"]


def test_an_error_in_the_block_leaves_no_file(tmp_path):
    p = tmp_path / "new.txt"
    with pytest.raises(ZeroDivisionError):
        with atomic.open_atomic(p, "w") as f:
            f.write("half")
            raise ZeroDivisionError
    assert os.listdir(tmp_path) == []


def test_unwritable_places_are_one_line_naming_the_target(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = {
        tmp_path / "missing" / "x.png": "No such file or directory",
        tmp_path / "file" / "x.png": "Not a directory",
        tmp_path / "folder": "Is a directory",
    }
    for path, reason in cases.items():
        with pytest.raises(atomic.WriteError) as e:
            atomic.write_bytes(path, b"data")
        assert str(e.value) == f"cannot write {path}: {reason}"
    with pytest.raises(atomic.WriteError) as e:
        atomic.write_bytes(tmp_path / "file" / "sub" / "x.png", b"d", parents=True)
    assert str(e.value) == f"cannot write {tmp_path / 'file' / 'sub' / 'x.png'}: {tmp_path / 'file'} is not a folder"
    with pytest.raises(atomic.WriteError, match="it is a folder"):
        atomic.check_writable(tmp_path / "folder")
    atomic.check_writable(tmp_path / "new" / "deeper" / "x.png")
    assert (tmp_path / "new" / "deeper").is_dir() and not os.listdir(tmp_path / "new" / "deeper")
    assert not leftovers(tmp_path)


def test_permissions_are_kept_or_set(tmp_path):
    p = tmp_path / "secret.json"
    atomic.write_text(p, "{}", permissions=0o600)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    os.chmod(p, 0o640)
    atomic.write_text(p, "{}")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_publish_moves_a_finished_file_and_names_the_target_on_failure(tmp_path):
    src = tmp_path / "part"
    src.write_bytes(b"done")
    atomic.publish(src, tmp_path / "final")
    assert (tmp_path / "final").read_bytes() == b"done" and not src.exists()
    src.write_bytes(b"again")
    with pytest.raises(atomic.WriteError) as e:
        atomic.publish(src, tmp_path / "nowhere" / "final")
    assert str(e.value) == f"cannot write {tmp_path / 'nowhere' / 'final'}: No such file or directory"
    assert src.read_bytes() == b"again"


def test_temporary_names_are_recognised_and_only_they():
    t = atomic.temp_path("/x/out.png")
    assert t.parent.as_posix() == "/x" and atomic.temp_target(t.name) == "out.png"
    assert t != atomic.temp_path("/x/out.png")
    for name in ("out.png", ".out.png.tmp", ".out.png.12-abc.tmp", ".out.png.12-0123abcd.tmp~", "out.png.1-0123abcd.tmp"):
        assert atomic.temp_target(name) is None, name
