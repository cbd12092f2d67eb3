"""One stored result's record (``<id>.json`` in the results folder) and its validation.  Standard
library only.

A record read from disk is checked field by field before anything uses it: a file that is not a JSON
object, a missing required field or a field of the wrong type raises ``BadEntry`` naming the field and
what was expected (code ``bad_result_entry``), so that the store can skip that one file, report it and
go on with the others.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, fields

from ..runtime.coreapi import jobs

STATES = ("new", "applied")
TARGETS = ("layer", "document")   # a new layer above the source, or a new document (e.g. upscale x4)
FORMAT_VERSION = 1
BAD_ENTRY = "bad_result_entry"

# A result id: when it was made, the first characters of its job's id (letters, digits, _ and - only)
# and the image's index; e.g. 20250101-120000-123-0f3a9c2e-0.  The store owns exactly the files named so.
ID_PATTERN = r"\d{8}-\d{6}-\d{3}-[A-Za-z0-9_-]{0,8}-\d+"
ID_RE = re.compile(ID_PATTERN)


class BadEntry(ValueError):
    """A result's record is unusable; ``field`` names what is wrong (``""`` for the whole record)."""

    code = BAD_ENTRY

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


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
    source_layer: dict = field(default_factory=dict)  # {"id", "name", "color": [model, depth, profile]}
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
    def from_json(cls, d) -> StoredResult:
        """A record from its JSON; BadEntry when it is not one (see ``check_entry``)."""
        check_entry(d)
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["canvas"] = tuple(kw.get("canvas") or (0, 0))
        return cls(**kw)


def new_id(job_id: str, index: int, now: float | None = None) -> str:
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    job = re.sub(r"[^A-Za-z0-9_-]", "_", str(job_id)[:8])
    return f"{stamp}-{int(now * 1000) % 1000:03d}-{job}-{index}"


# --- validation ------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _canvas(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= 0 for x in v)


def _source_layer(v) -> bool:
    if not isinstance(v, dict):
        return False
    if any(k in v and not isinstance(v[k], str) for k in ("id", "name")):
        return False
    return "color" not in v or (isinstance(v["color"], list) and len(v["color"]) == 3
                                and all(isinstance(x, str) for x in v["color"]))


def _stats(v) -> bool:
    return isinstance(v, dict) and all(_is_number(v[k]) for k in ("seconds", "prepare_ms", "max_stall_ms") if k in v)


# name: (required, test, what is expected)
_FIELDS = {
    "id": (True, lambda v: isinstance(v, str) and ID_RE.fullmatch(v) is not None, "a result id (text)"),
    "job_id": (True, lambda v: isinstance(v, str), "text"),
    "index": (True, lambda v: _is_int(v) and v >= 0, "a whole number ≥ 0"),
    "mode": (True, lambda v: isinstance(v, str) and v != "", "a mode name (text)"),
    "name": (True, lambda v: isinstance(v, str), "text"),
    "x": (True, _is_int, "a whole number"),
    "y": (True, _is_int, "a whole number"),
    "width": (True, lambda v: _is_int(v) and 1 <= v <= jobs.MAX_SIDE, f"a whole number in 1–{jobs.MAX_SIDE}"),
    "height": (True, lambda v: _is_int(v) and 1 <= v <= jobs.MAX_SIDE, f"a whole number in 1–{jobs.MAX_SIDE}"),
    "format": (True, lambda v: v in jobs.PIXEL_FORMATS if isinstance(v, str) else False,
               "one of " + ", ".join(jobs.PIXEL_FORMATS)),
    "linear": (False, lambda v: isinstance(v, bool), "true or false"),
    "seed": (False, lambda v: v is None or (_is_int(v) and v >= 0), "a whole number ≥ 0 or null"),
    "model": (False, lambda v: v is None or isinstance(v, str), "text or null"),
    "provenance": (False, lambda v: isinstance(v, dict), "an object"),
    "document": (False, lambda v: isinstance(v, str), "text"),
    "canvas": (False, _canvas, "[width, height], two whole numbers ≥ 0"),
    "source_layer": (False, _source_layer, 'an object with text "id" and "name" and "color" [model, depth, profile]'),
    "target": (False, lambda v: v in TARGETS if isinstance(v, str) else False, "one of " + ", ".join(TARGETS)),
    "warnings": (False, _is_str_list, "a list of texts"),
    "created": (False, _is_number, "a number (seconds since 1970)"),
    "state": (False, lambda v: v in STATES if isinstance(v, str) else False, "one of " + ", ".join(STATES)),
    "applied_to": (False, lambda v: isinstance(v, str), "text"),
    "stats": (False, _stats, "an object of numbers"),
    "version": (False, lambda v: _is_int(v) and 1 <= v <= FORMAT_VERSION,
                f"a format version this plugin reads (1–{FORMAT_VERSION})"),
}
REQUIRED = tuple(k for k, (req, _, _) in _FIELDS.items() if req)
OPTIONAL = tuple(k for k, (req, _, _) in _FIELDS.items() if not req)


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "text"
    if isinstance(v, (int, float)):
        return "a number" if math.isfinite(v) else "a non-finite number"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def check_entry(d) -> None:
    """Raise BadEntry unless ``d`` is a result record: a JSON object with every required field and every
    field of the expected type."""
    if not isinstance(d, dict):
        raise BadEntry("", f"the file holds {_kind(d)}, not a result record (a JSON object)")
    for name, (required, test, expected) in _FIELDS.items():
        if name not in d:
            if required:
                raise BadEntry(name, f"'{name}' is missing; expected {expected}")
            continue
        if not test(d[name]):
            v = d[name]
            got = f"{v!r}" if isinstance(v, (int, float, bool)) or v is None else _kind(v)
            if isinstance(v, str) and len(v) <= 40:
                got = f"text {v!r}"
            raise BadEntry(name, f"'{name}' must be {expected}, got {got}")
