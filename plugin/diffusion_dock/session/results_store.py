"""Finished results on disk, written BEFORE the dock shows or applies them, so that a crash of the
editor or of the engine never loses one; the dock's results strip reloads them after a restart.
Standard library only.

One result = three files in the results folder (``paths.results_dir()``), named by its id:

- ``<id>.raw``: the patch's pixels, exactly as the engine sent them (the layer's own layout);
- ``<id>.png``: a small thumbnail for the strip (optional; made by the caller with Qt);
- ``<id>.json``: everything else: where the patch goes, its layout, how it was made (provenance),
  its state (``new``, ``applied``).

Each file is written to a temporary name, flushed to disk and renamed; the JSON comes last, so a
result exists exactly when its JSON does, and a result whose pixels are missing or short is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..runtime.coreapi import jobs

log = logging.getLogger(__name__)

STATES = ("new", "applied")
TARGETS = ("layer", "document")   # a new layer above the source, or a new document (e.g. upscale x4)
FORMAT_VERSION = 1


@dataclass
class StoredResult:
    id: str
    job_id: str
    index: int                     # which image of the job
    mode: str
    name: str                      # the layer name it gets, e.g. "[Inpaint] red scarf (seed 1234)"
    x: int
    y: int
    width: int
    height: int
    format: str
    linear: bool = False
    seed: int | None = None
    model: str | None = None
    provenance: dict = field(default_factory=dict)   # JobResult.provenance(index)
    document: str = ""             # the document the job ran on (its name)
    canvas: tuple[int, int] = (0, 0)
    source_layer: dict = field(default_factory=dict)  # {"id", "name"}
    target: str = "layer"
    warnings: list = field(default_factory=list)
    created: float = 0.0
    state: str = "new"
    applied_to: str = ""           # where it went ("layer <name>" or "document <name>")
    stats: dict = field(default_factory=dict)   # the job's figures: seconds, prepare_ms, max_stall_ms

    @property
    def nbytes(self) -> int:
        return jobs.ImageBuffer(self.width, self.height, self.format, b"").expected_nbytes()

    def to_json(self) -> dict:
        d = asdict(self)
        d["canvas"] = list(self.canvas)
        d["version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict) -> StoredResult:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["canvas"] = tuple(kw.get("canvas") or (0, 0))
        rec = cls(**kw)
        if rec.format not in jobs.PIXEL_FORMATS or rec.width <= 0 or rec.height <= 0:
            raise ValueError(f"bad layout {rec.width}x{rec.height} {rec.format}")
        return rec


def new_id(job_id: str, index: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{int(now * 1000) % 1000:03d}-{job_id[:8]}-{index}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class ResultStore:
    """The results folder.  Thread-safe: the dock saves from a worker thread."""

    def __init__(self, folder: str | os.PathLike, keep: int = 200, max_bytes: int = 8 << 30):
        self.folder = Path(folder)
        self.keep = keep
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def _path(self, rid: str, suffix: str) -> Path:
        if not rid or "/" in rid or "\\" in rid or rid.startswith("."):
            raise ValueError(f"bad result id {rid!r}")
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
            _write_atomic(self._path(rec.id, ".raw"), data)
            if thumbnail_png:
                _write_atomic(self._path(rec.id, ".png"), thumbnail_png)
            self._write_json(rec)
        return rec

    def _write_json(self, rec: StoredResult) -> None:
        _write_atomic(self._path(rec.id, ".json"),
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
            for suffix in (".json", ".raw", ".png"):
                try:
                    self._path(rid, suffix).unlink()
                except FileNotFoundError:
                    pass

    # -- reading
    def _read(self, rid: str) -> StoredResult | None:
        try:
            rec = StoredResult.from_json(json.loads(self._path(rid, ".json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("unreadable result %s: %s", rid, e)
            return None
        try:
            size = self._path(rid, ".raw").stat().st_size
        except OSError:
            return None
        return rec if size == rec.nbytes else None

    def get(self, rid: str) -> StoredResult | None:
        with self._lock:
            return self._read(rid)

    def load_all(self, limit: int | None = None) -> list[StoredResult]:
        """Complete results, newest first."""
        if not self.folder.is_dir():
            return []
        with self._lock:
            ids = [p.name[:-5] for p in self.folder.glob("*.json") if not p.name.startswith(".")]
            recs = [r for r in (self._read(i) for i in ids) if r is not None]
        recs.sort(key=lambda r: (r.created, r.id), reverse=True)
        return recs[:limit] if limit else recs

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
    def prune(self) -> list[str]:
        """Delete the oldest results beyond ``keep`` results or ``max_bytes``; returns their ids.
        The newest result is always kept.  Leftover temporary files are removed too."""
        recs = self.load_all()
        removed, total = [], 0
        for i, rec in enumerate(recs):
            total += rec.nbytes
            if i > 0 and (i >= self.keep or total > self.max_bytes):
                self.delete(rec.id)
                removed.append(rec.id)
        if self.folder.is_dir():
            cutoff = time.time() - 3600
            for tmp in self.folder.glob(".*.tmp"):
                try:
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
                except OSError:
                    pass
        return removed
