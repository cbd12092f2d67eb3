"""Finished results on disk, written BEFORE the dock shows or applies them, so that a crash of the
editor or of the engine never loses one; the dock's results strip reloads them after a restart.
Standard library only.

One result = three files in the results folder (``paths.results_dir()``), named by its id
(``result_entry.ID_PATTERN``):

- ``<id>.raw``: the patch's pixels, exactly as the engine sent them (the layer's own layout);
- ``<id>.png``: a small thumbnail for the strip (optional; made by the caller with Qt);
- ``<id>.json``: everything else: where the patch goes, its layout, how it was made (provenance),
  its state (``new``, ``applied``).

Each file is written by the project's one atomic writer (``contract.atomic``: a temporary file beside
it, fsync, rename); the JSON comes last, so a result exists exactly when its JSON does.

Reading never fails because of one file: a JSON that is not a valid record (``result_entry``), or
whose pixels are missing or short, is skipped, logged and listed in ``broken`` (file name → why), which
the dock shows.  A kill in the middle of a save can leave a temporary file or pixels without their
JSON; ``cleanup()`` (run at the first load and by ``prune``) removes those, and only those: files named
as this store names them (a result id, or the atomic writer's temporary name for one) that are older
than ``grace`` seconds, so that a save under way in another process is never disturbed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..runtime.coreapi import atomic, jobs
from .result_entry import (
    BAD_ENTRY,
    FORMAT_VERSION,
    ID_PATTERN,
    ID_RE,
    STATES,
    TARGETS,
    BadEntry,
    StoredResult,
    new_id,
)

__all__ = ["BAD_ENTRY", "FORMAT_VERSION", "STATES", "TARGETS", "BadEntry", "CleanupReport", "ResultStore",
           "StoredResult", "new_id"]

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".raw", ".png")
GRACE_S = 300.0                     # leftovers younger than this may belong to a save under way
MAX_ENTRY_BYTES = 4 << 20           # a record is a few kB; a larger .json is not one of ours
_OWN_FILE_RE = re.compile(rf"^(?P<id>{ID_PATTERN})(?P<suffix>\.json|\.raw|\.png)$")
# Temporary files of earlier versions of this store: .<id><suffix>.<pid>.<thread id>.tmp
_LEGACY_TEMP_RE = re.compile(rf"^\.(?P<target>{ID_PATTERN}(?:\.json|\.raw|\.png))\.\d+\.\d+\.tmp$")


@dataclass
class CleanupReport:
    """What ``cleanup`` removed: temporary files and orphans (pixels or thumbnails without a JSON)."""

    temp_files: int = 0
    orphans: int = 0
    bytes: int = 0

    @property
    def files(self) -> int:
        return self.temp_files + self.orphans


def own_temp_target(name: str) -> str | None:
    """The result file a temporary file of this store was for, or None when it is not one of ours."""
    target = atomic.temp_target(name)
    if target is None:
        m = _LEGACY_TEMP_RE.match(name)
        target = m.group("target") if m else None
    return target if target is not None and _OWN_FILE_RE.match(target) else None


class ResultStore:
    """The results folder.  Thread-safe: the dock saves from a worker thread."""

    def __init__(self, folder: str | os.PathLike, keep: int = 200, max_bytes: int = 8 << 30,
                 grace: float = GRACE_S):
        self.folder = Path(folder)
        self.keep = keep
        self.max_bytes = max_bytes
        self.grace = grace
        self.broken: dict[str, str] = {}     # file name → why it was skipped (the last load)
        self.last_cleanup = CleanupReport()
        self._cleaned = False
        self._lock = threading.Lock()

    def _path(self, rid: str, suffix: str) -> Path:
        if not isinstance(rid, str) or not ID_RE.fullmatch(rid):
            raise ValueError(f"bad result id {rid!r}: expected a result id such as 20250101-120000-123-0f3a9c2e-0")
        return self.folder / f"{rid}{suffix}"

    # -- writing
    def save(self, rec: StoredResult, data: bytes, thumbnail_png: bytes | None = None) -> StoredResult:
        """Write one result (pixels, thumbnail, then its JSON); returns it."""
        if len(data) != rec.nbytes:
            raise ValueError(f"result {rec.id}: {rec.width}x{rec.height} {rec.format} needs {rec.nbytes} bytes, "
                             f"got {len(data)}")
        rec.created = rec.created or time.time()
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(self._path(rec.id, ".raw"), data)
            if thumbnail_png:
                atomic.write_bytes(self._path(rec.id, ".png"), thumbnail_png)
            self._write_json(rec)
        return rec

    def _write_json(self, rec: StoredResult) -> None:
        atomic.write_bytes(self._path(rec.id, ".json"),
                           json.dumps(rec.to_json(), ensure_ascii=False, indent=1).encode("utf-8"))

    def set_state(self, rid: str, state: str, applied_to: str = "") -> StoredResult:
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        with self._lock:
            rec = self._read(rid)
            if rec is None:
                raise KeyError(rid)
            rec.state = state
            rec.applied_to = applied_to or rec.applied_to
            self._write_json(rec)
            return rec

    def delete(self, rid: str) -> None:
        """Remove a result (JSON first, so that it never half-exists)."""
        with self._lock:
            for suffix in SUFFIXES:
                try:
                    self._path(rid, suffix).unlink()
                except FileNotFoundError:
                    pass
            self.broken.pop(f"{rid}.json", None)

    # -- reading
    def _check(self, rid: str) -> StoredResult | None:
        """The record of ``rid``: None when it has no JSON; BadEntry when the JSON or the pixels are bad."""
        path = self._path(rid, ".json")
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                raise BadEntry("", f"the file is larger than {MAX_ENTRY_BYTES >> 20} MB: not a result record")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise BadEntry("", "the file is not UTF-8 text") from None
        try:
            d = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEntry("", "the file is not valid JSON (empty, truncated or damaged)") from None
        rec = StoredResult.from_json(d)
        if rec.id != rid:
            raise BadEntry("id", f"'id' must be the file's own name {rid!r}, got {rec.id!r}")
        try:
            size = self._path(rid, ".raw").stat().st_size
        except FileNotFoundError:
            raise BadEntry("pixels", f"its pixel file {rid}.raw is missing") from None
        if size != rec.nbytes:
            raise BadEntry("pixels", f"its pixel file {rid}.raw has {size} bytes; a {rec.width}x{rec.height} "
                                     f"{rec.format} result needs {rec.nbytes}")
        return rec

    def _read(self, rid: str) -> StoredResult | None:
        """The record of ``rid``, or None (no such result, or a broken one: reported in ``broken``)."""
        name = f"{rid}.json"
        try:
            rec = self._check(rid)
        except BadEntry as e:
            if self.broken.get(name) != str(e):
                log.warning("results folder %s: skipped %s [%s]: %s", self.folder, name, e.code, e)
            self.broken[name] = str(e)
            return None
        except OSError as e:
            why = f"cannot read it: {atomic.reason_of(e)}"
            if self.broken.get(name) != why:
                log.warning("results folder %s: skipped %s: %s", self.folder, name, why)
            self.broken[name] = why
            return None
        self.broken.pop(name, None)
        return rec

    def get(self, rid: str) -> StoredResult | None:
        with self._lock:
            return self._read(rid)

    def _ids(self) -> list[str]:
        return [m.group("id") for m in map(_OWN_FILE_RE.match, os.listdir(self.folder))
                if m and m.group("suffix") == ".json"]

    def load_all(self, limit: int | None = None) -> list[StoredResult]:
        """Complete results, newest first.  Broken ones are skipped and listed in ``broken``.  The first
        call also runs ``cleanup`` (the store's start)."""
        if not self.folder.is_dir():
            return []
        if not self._cleaned:
            self.cleanup()
        with self._lock:
            ids = self._ids()
            recs = [r for r in (self._read(i) for i in ids) if r is not None]
            present = {f"{i}.json" for i in ids}
            for gone in set(self.broken) - present:
                del self.broken[gone]
        recs.sort(key=lambda r: (r.created, r.id), reverse=True)
        return recs[:limit] if limit else recs

    def broken_summary(self) -> str:
        """One line for the dock: how many result files were skipped and which ("" when none)."""
        if not self.broken:
            return ""
        names = sorted(self.broken)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        n = len(names)
        return (f"{n} saved result{'s' if n != 1 else ''} could not be read and {'were' if n != 1 else 'was'} "
                f"skipped ({shown}); the log says why")

    def pixels(self, rid: str) -> bytes:
        rec = self.get(rid)
        if rec is None:
            raise KeyError(rid)
        data = self._path(rid, ".raw").read_bytes()
        if len(data) != rec.nbytes:
            raise ValueError(f"result {rid}: its pixel file is {len(data)} bytes, expected {rec.nbytes}")
        return data

    def patch(self, rec: StoredResult) -> jobs.Patch:
        image = jobs.ImageBuffer(rec.width, rec.height, rec.format, self.pixels(rec.id), rec.linear)
        return jobs.Patch(rec.x, rec.y, image, rec.seed)

    def thumbnail_path(self, rid: str) -> Path | None:
        p = self._path(rid, ".png")
        return p if p.is_file() else None

    # -- housekeeping
    def cleanup(self, now: float | None = None) -> CleanupReport:
        """Remove what interrupted saves and deletions left: this store's temporary files, and pixel or
        thumbnail files whose JSON does not exist, when older than ``grace`` seconds.  A file that is not
        named as this store names its files is never touched.  The count and bytes go to the log."""
        report = CleanupReport()
        self._cleaned = True
        if not self.folder.is_dir():
            self.last_cleanup = report
            return report
        cutoff = (time.time() if now is None else now) - self.grace
        with self._lock:
            names = os.listdir(self.folder)
            jsons = {n for n in names if n.endswith(".json")}
            for name in names:
                own = _OWN_FILE_RE.match(name)
                if own is not None:
                    if own.group("suffix") == ".json" or f"{own.group('id')}.json" in jsons:
                        continue
                    kind = "orphans"
                elif own_temp_target(name) is not None:
                    kind = "temp_files"
                else:
                    continue
                path = self.folder / name
                try:
                    st = path.lstat()
                    if st.st_mtime >= cutoff or not stat.S_ISREG(st.st_mode):
                        continue
                    path.unlink()
                except OSError:
                    continue
                setattr(report, kind, getattr(report, kind) + 1)
                report.bytes += st.st_size
        if report.files:
            log.info("results folder %s: removed %d leftover files of interrupted saves (%d temporary, "
                     "%d pixel or thumbnail files without their result), %d bytes", self.folder, report.files,
                     report.temp_files, report.orphans, report.bytes)
        self.last_cleanup = report
        return report

    def prune(self) -> list[str]:
        """Delete the oldest results beyond ``keep`` results or ``max_bytes``; returns their ids.
        The newest result is always kept.  Leftovers of interrupted saves are removed too (``cleanup``)."""
        recs = self.load_all()
        removed, total = [], 0
        for i, rec in enumerate(recs):
            total += rec.nbytes
            if i > 0 and (i >= self.keep or total > self.max_bytes):
                self.delete(rec.id)
                removed.append(rec.id)
        self.cleanup()
        return removed
