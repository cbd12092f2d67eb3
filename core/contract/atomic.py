"""Files that are complete or absent: the one writer of the project.  Standard library only.

Every file the project writes for keeps (the command line's images, the results store, the editor's
Save and Export, the installer's final files, the demo's and the benchmark's reports, settings) goes
through here: the bytes go to a temporary file beside the target, are flushed and fsynced, and the
temporary file is renamed over the target (``os.replace``, atomic on one file system), then the folder
is fsynced.  A crash, a full disk or any write error leaves the target as it was (absent, or its old
content) and removes the temporary file; only a kill between the creation of the temporary file and
the rename can leave it behind, and its name says whose it is:

    .<target name>.<pid>-<8 hex>.tmp      e.g. ``.out.png.4242-9f1c03ab.tmp``

``temp_target(name)`` recognises such a name, so that a clean-up can remove exactly the temporary
files this writer made for the files it owns and nothing else (``results_store`` does).

Errors come as ``WriteError`` (an ``OSError``): ``str()`` is one line, ``cannot write <path>: <reason>``,
where the reason is the operating system's (``No space left on device``), never Python's text.

    with open_atomic(path) as f:          # a file object (binary by default)
        image.save(f, format="PNG")
    write_bytes(path, data)
    write_text(path, text)
    publish(done_file, path)              # a file written elsewhere (a finished download)
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import secrets
import stat
from pathlib import Path

CODE = "write_failed"
TEMP_SUFFIX = ".tmp"
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\.tmp$")

# The writer opens its temporary files through this (tests put a full disk in between).
_fdopen = os.fdopen


class WriteError(OSError):
    """A file could not be written.  ``path`` is the target, ``reason`` what went wrong (one line)."""

    code = CODE

    def __init__(self, path, reason: str, errno: int | None = None):
        message = f"cannot write {path}: {reason}"
        super().__init__(message)
        self.message = message
        self.path = Path(path)
        self.reason = reason
        self.errno = errno

    def __str__(self) -> str:
        return self.message


def reason_of(e: BaseException) -> str:
    """The operating system's words for an OSError (``No space left on device``), else a plain phrase."""
    if isinstance(e, WriteError):
        return e.reason
    code = getattr(e, "errno", None)
    if isinstance(code, int) and code:
        return os.strerror(code)
    return "the data could not be written"


def temp_path(path) -> Path:
    """A fresh temporary name beside ``path`` (hidden; it names the target, the process and a token)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def temp_target(name: str) -> str | None:
    """The target's file name when ``name`` is a temporary file of this writer, else None."""
    m = _TEMP_RE.match(name)
    return m.group("target") if m else None


def fsync_folder(folder) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_parents(path) -> None:
    """Create the folder of ``path``; WriteError naming ``path`` when that is impossible."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = path.parent
        while not blocker.exists() and blocker.parent != blocker:
            blocker = blocker.parent
        if blocker.exists() and not blocker.is_dir():
            raise WriteError(path, f"{blocker} is not a folder", _errno.ENOTDIR) from None
        raise WriteError(path, reason_of(e), e.errno) from None


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:
        pass


@contextlib.contextmanager
def open_atomic(path, mode: str = "wb", *, encoding: str | None = None, errors: str | None = None,
                newline: str | None = None, permissions: int | None = None, parents: bool = False):
    """A new file object for ``path`` (mode ``"wb"`` or ``"w"``); the target gets it on a clean exit.

    ``permissions``: the new file's mode bits (e.g. 0o600 for a file holding a secret); by default an
    existing target's are kept, else the usual ``0o666`` less the umask.  Any exception in the block
    removes the temporary file; an OSError becomes a WriteError naming ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError("open_atomic writes whole files: mode 'wb' or 'w'")
    path = Path(path)
    if parents:
        make_parents(path)
    if permissions is None:
        try:
            permissions = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666 if permissions is None else permissions)
    except OSError as e:
        raise WriteError(path, reason_of(e), e.errno) from None
    try:
        try:
            f = _fdopen(fd, mode, encoding=encoding, errors=errors, newline=newline) if mode == "w" \
                else _fdopen(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if permissions is not None and os.name == "posix":
            os.chmod(tmp, permissions)      # an existing target's bits, which the umask may have narrowed
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        if isinstance(e, WriteError):
            raise
        raise WriteError(path, reason_of(e), e.errno) from None
    except BaseException:
        _discard(tmp)
        raise
    fsync_folder(path.parent)


def write_bytes(path, data: bytes, **kw) -> Path:
    """Write ``data`` to ``path`` atomically (see ``open_atomic`` for the keywords)."""
    with open_atomic(path, "wb", **kw) as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8", **kw) -> Path:
    """Write ``text`` to ``path`` atomically (see ``open_atomic`` for the keywords)."""
    with open_atomic(path, "w", encoding=encoding, **kw) as f:
        f.write(text)
    return Path(path)


def publish(src, path) -> Path:
    """Put a complete file written elsewhere (e.g. a verified download) at ``path``: fsync it, rename it
    over ``path`` and fsync the folder.  ``src`` must be on the same file system.  WriteError names
    ``path``; ``src`` stays where it was when the rename fails."""
    path = Path(path)
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(src, path)
    except OSError as e:
        raise WriteError(path, reason_of(e), e.errno) from None
    fsync_folder(path.parent)
    return path


def check_writable(path, *, parents: bool = True) -> None:
    """Raise WriteError unless a file can be created at ``path``: the folder exists (or is made, with
    ``parents``), is a folder, and takes a new file; ``path`` itself is not a folder.  Nothing is left
    behind.  A job checks this before it spends minutes on a result it could not save."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(path, "it is a folder; give a file name", _errno.EISDIR)
    if parents:
        make_parents(path)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise WriteError(path, reason_of(e), e.errno) from None
    os.close(fd)
    _discard(tmp)
