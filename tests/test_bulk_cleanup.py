"""Shared-memory payload files after a kill -9 (issue 24.7): the editor's client removes the files of an
engine that died, and an engine whose editor died removes the editor's files, each only files of our
naming written by that very process; another process's files are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from core.link import bulk
from core.link.client import EngineClient

from .engine_helpers import ROOT, engine_env

pytestmark = pytest.mark.skipif(bulk.directory() is None, reason="no shared-memory folder (/dev/shm) here")


def bulk_file(pid: int) -> str:
    """A payload file as ``pid`` would have written it (our naming), 1 MiB."""
    name = f"dd-{pid}-{uuid.uuid4().hex}.bulk"
    with open(os.path.join(bulk.directory(), name), "wb") as f:
        f.write(bytes(1 << 20))
    return name


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(bulk.directory(), name))


def running(pid: int) -> bool:
    """The process runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_client_removes_the_files_of_an_engine_killed_mid_job(loop, tiny_root):
    client = EngineClient(cwd=ROOT, env=engine_env(tiny_root))
    try:
        for _ in range(3):
            loop.run(client.start())
            assert client.link.bulk == bulk.directory()
            pid = client.engine_pid
            theirs, stranger = bulk_file(pid), bulk_file(os.getpid())   # the engine's file; a live other writer's
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: client.link is None, 30, "the client to notice")
            wait_for(lambda theirs=theirs: not exists(theirs), 10, "the engine's file to go")
            assert exists(stranger)                   # not the dead engine's: not ours to remove
            os.unlink(os.path.join(bulk.directory(), stranger))
    finally:
        loop.run(client.stop())


EDITOR = textwrap.dedent("""
    import asyncio, os, sys, uuid
    sys.path.insert(0, {root!r})
    from core.link import bulk
    from core.link.client import EngineClient

    async def main():
        client = EngineClient(cwd={root!r}, env={env!r})
        await client.start()
        name = f"dd-{{os.getpid()}}-{{uuid.uuid4().hex}}.bulk"          # a payload file this editor wrote
        with open(os.path.join(bulk.directory(), name), "wb") as f:
            f.write(bytes(1 << 20))
        print(client.engine_pid, name, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


def test_an_engine_whose_editor_was_killed_removes_the_editors_files(tiny_root):
    for _ in range(3):
        editor = subprocess.Popen([sys.executable, "-c", EDITOR.format(root=str(ROOT), env=engine_env(tiny_root))],
                                  stdout=subprocess.PIPE, text=True)
        try:
            engine_pid, name = editor.stdout.readline().split()
            engine_pid = int(engine_pid)
            # another live writer's file (this test's): an engine's sweep at start would remove a dead
            # stranger's file by design, and other engines may start meanwhile
            stranger = bulk_file(os.getpid())
            assert exists(name)
            editor.kill()
            editor.wait()
            wait_for(lambda pid=engine_pid: not running(pid), 60, "the engine to stop")
            assert not exists(name)
            assert exists(stranger)
            os.unlink(os.path.join(bulk.directory(), stranger))
        finally:
            if editor.poll() is None:
                editor.kill()
