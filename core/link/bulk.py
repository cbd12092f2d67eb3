"""Large payloads through shared-memory files, between the editor and the engine it started.

A 4096² F32 layer is 268 MB.  Through a pipe it is copied four or five times on the way (into the
pipe, out of it, into the stream's buffer, out of that, into the payload) and takes about 0.4 s each
way; written once to a file in /dev/shm (tmpfs: memory) and read or mapped from there, it takes a
fraction of that.  So on the private stdio channel, and only there, both sides may move a large
payload to such a file: the frame keeps its shape, with that payload sent as 0 bytes, and the
header's ``bulk`` list names the file.  The receiver takes the file (reads or maps it, then deletes
it).  Both sides offer the directory in their hellos; a remote engine never sees this.

Files are named ``dd-<pid of the writer>-<random>.bulk``, created exclusively with mode 0600, and a
receiver accepts only such names, only regular files of its own user, only of the announced size.
The sender deletes what was never taken when its connection closes; an engine deletes, at start,
files left by processes that no longer exist.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import stat
import threading
import uuid

from .protocol import LIMITS, Message, MessageError

DIRECTORY = "/dev/shm"
MIN_BYTES = 4 << 20              # smaller payloads go through the pipe: a file is not worth it
NAME = re.compile(r"dd-(\d{1,10})-[0-9a-f]{32}\.bulk\Z")
log = logging.getLogger(__name__)


def directory() -> str | None:
    """The shared-memory directory this machine offers, or None (not Linux, or DD_BULK=0)."""
    if os.environ.get("DD_BULK", "1") == "0":
        return None
    if os.name != "posix" or not os.path.isdir(DIRECTORY) or not os.access(DIRECTORY, os.W_OK | os.X_OK):
        return None
    return DIRECTORY


def offload(msg: Message, where: str, written: set | None = None) -> Message:
    """``msg`` with every payload of at least ``MIN_BYTES`` moved to a file in ``where`` (the names
    are added to ``written``, so that the sender can delete files nobody took)."""
    big = [i for i, p in enumerate(msg.payloads) if memoryview(p).nbytes >= MIN_BYTES]
    if not big:
        return msg
    payloads, refs = list(msg.payloads), []
    for i in big:
        name = _shared_file(payloads[i], where) or _write(where, payloads[i])
        if written is not None:
            written.add(name)
        refs.append({"index": i, "name": name, "size": memoryview(payloads[i]).nbytes})
        payloads[i] = b""
    return Message({**msg.header, "bulk": refs}, payloads)


def offload_or_pipe(msg: Message, where: str | None, written: set | None = None, *, who: str = "") -> Message:
    """``offload`` when a shared-memory directory was agreed (``where``); when it fails (shared memory
    full, ...) the message goes whole through the pipe, which still works, with a warning."""
    if not where:
        return msg
    try:
        return offload(msg, where, written)
    except OSError as e:
        log.warning("%sshared memory unavailable (%s): sending through the pipe", f"{who}: " if who else "", e)
        return msg


def _write(where: str, data) -> str:
    name = f"dd-{os.getpid()}-{uuid.uuid4().hex}.bulk"
    fd = os.open(os.path.join(where, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(where, name)
        raise
    os.close(fd)
    return name


def restore(msg: Message, where: str | None, *, mapped: bool) -> Message:
    """``msg`` with its ``bulk`` payloads taken back from their files (deleted once read): as
    read-only memory maps (``mapped``: no copy) or as bytes.  MessageError for anything amiss."""
    refs = msg.header.get("bulk")
    if refs is None:
        return msg
    job_id = msg.header.get("job_id") if isinstance(msg.header.get("job_id"), str) else None
    try:
        return _restore(msg, refs, where, mapped)
    except MessageError as e:
        e.job_id = e.job_id or job_id
        raise


def _restore(msg: Message, refs, where: str | None, mapped: bool) -> Message:
    if where is None:
        raise MessageError("bad_message", "bulk payloads were not agreed on this connection")
    if not isinstance(refs, list) or len(refs) > len(msg.payloads):
        raise MessageError("bad_message", "'bulk' must list the payloads moved to files")
    payloads = list(msg.payloads)
    names = [r.get("name") if isinstance(r, dict) else None for r in refs]
    try:
        for ref in refs:
            i, name, size = (ref.get("index"), ref.get("name"), ref.get("size")) if isinstance(ref, dict) else (None,) * 3
            if (type(i) is not int or not 0 <= i < len(payloads) or len(payloads[i]) != 0
                    or type(size) is not int or not 0 < size <= LIMITS.max_payload
                    or not isinstance(name, str) or not NAME.match(name)):
                raise MessageError("bad_message", f"bad bulk reference {str(ref)[:200]}")
            payloads[i] = _read(where, name, size, mapped)
    finally:
        for name in names:
            if isinstance(name, str) and NAME.match(name):
                _unlink(where, name)
    header = {k: v for k, v in msg.header.items() if k != "bulk"}
    return Message(header, payloads)


def _read(where: str, name: str, size: int, mapped: bool):
    try:
        fd = os.open(os.path.join(where, name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise MessageError("bad_message", f"bulk payload {name} cannot be opened: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size != size:
            raise MessageError("bad_message", f"bulk payload {name} is not the announced {size}-byte file")
        if mapped:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)   # fault the pages in at once
            return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
        parts, got = [], 0
        while got < size:
            part = os.read(fd, size - got)   # one copy, into memory nobody had to zero first
            if not part:
                raise MessageError("bad_message", f"bulk payload {name} ended early")
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _unlink(where: str, name: str) -> None:
    try:
        os.unlink(os.path.join(where, name))
    except OSError:
        pass


def discard(where: str | None, names: set) -> None:
    """Delete the files in ``names`` that are still there (written but never taken)."""
    if where is None:
        return
    for name in list(names):
        _unlink(where, name)
    names.clear()


def sweep(where: str | None) -> int:
    """Delete bulk files whose writer process is gone; returns how many."""
    return _remove_dead(where, None)


def sweep_writer(where: str | None, pid: int | None) -> int:
    """Delete the bulk files ``pid`` wrote, once it is gone (the other side of a connection that died):
    only files of our naming, only that process's, never while it lives.  Returns how many."""
    return _remove_dead(where, int(pid)) if pid else 0


def _remove_dead(where: str | None, writer: int | None) -> int:
    """Delete the bulk files of dead writers (only ``writer``'s when given); returns how many."""
    if where is None:
        return 0
    removed = 0
    try:
        entries = os.listdir(where)
    except OSError:
        return 0
    for name in entries:
        m = NAME.match(name)
        if m and (writer is None or int(m.group(1)) == writer) and not _alive(int(m.group(1))):
            _unlink(where, name)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


# --- results written straight into shared memory (no copy when they are sent) --------------------

_shared: dict[int, tuple[str, str, object]] = {}   # id(mmap) -> (directory, name, mmap), until sent or released
_shared_lock = threading.Lock()


def shared_array(where: str, shape: tuple, dtype, names: set):
    """A new array backed by a new bulk file in ``where`` (its name added to ``names``): ``offload``
    then sends the file itself instead of copying the array into one.  Small arrays are plain memory.
    (Engine side only: numpy is imported here, so the module stays standard-library for the editor.)"""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    name = f"dd-{os.getpid()}-{uuid.uuid4().hex}.bulk"
    fd = os.open(os.path.join(where, name), os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        # Reserve the pages now: writing through a map into a full tmpfs would be a SIGBUS, not an error.
        os.posix_fallocate(fd, 0, nbytes)
        mm = mmap.mmap(fd, nbytes)
    except OSError:                       # no room in shared memory: plain memory (sent through a copy)
        os.close(fd)
        _unlink(where, name)
        return np.empty(shape, dtype)
    except BaseException:
        os.close(fd)
        _unlink(where, name)
        raise
    os.close(fd)
    names.add(name)
    with _shared_lock:
        _shared[id(mm)] = (where, name, mm)
    return np.frombuffer(mm, dtype).reshape(shape)


def _shared_file(payload, where: str) -> str | None:
    """The bulk file ``payload`` is exactly the memory of, if it came from ``shared_array`` (taken off
    the list: the receiver owns it now)."""
    view = memoryview(payload)
    obj = view.obj
    while obj is not None and not isinstance(obj, mmap.mmap):
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    if obj is None:
        return None
    with _shared_lock:
        entry = _shared.get(id(obj))
        if entry is None or entry[2] is not obj or entry[0] != where or view.nbytes != len(obj):
            return None
        del _shared[id(obj)]
    return entry[1]


def release(names: set) -> None:
    """Delete the files of the shared arrays named in ``names`` that were never sent (a job that
    failed or was cancelled after making them); the ones sent belong to their receiver."""
    with _shared_lock:
        unsent = [(key, where, name) for key, (where, name, _) in _shared.items() if name in names]
        for key, _, _ in unsent:
            del _shared[key]
    for _, where, name in unsent:
        _unlink(where, name)
