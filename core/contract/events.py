"""What a job reports while it is queued and running.  Standard library only.

The engine process sends these over the wire protocol; the client library hands them to the
editor.  Every job ends with exactly one final event: ``Finished``, ``Failed`` or ``JobCancelled``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .jobs import JobResult


@dataclass(frozen=True)
class Accepted:
    """The engine queued the job.  Sent again whenever its place in the queue changes (and after an
    engine restart), so the last one tells where the job stands."""

    job_id: str
    position: int            # 0 = running now, n = n-th in line


@dataclass(frozen=True)
class Progress:
    job_id: str
    step: int
    total: int
    phase: str               # one of core.contract.jobcontrol.PHASES


@dataclass(frozen=True)
class Preview:
    job_id: str
    width: int
    height: int
    data: bytes = field(repr=False)   # RGB U8, rows top to bottom, at latent resolution


@dataclass(frozen=True)
class Finished:
    job_id: str
    result: JobResult


@dataclass(frozen=True)
class Failed:
    job_id: str
    code: str                # stable machine code, e.g. "invalid_parameter", "model_missing", "engine_died"
    message: str             # one readable line for the artist
    parameter: str | None = None  # for "invalid_parameter": which one


@dataclass(frozen=True)
class JobCancelled:
    job_id: str


FINAL_EVENTS = (Finished, Failed, JobCancelled)


class JobState(str, Enum):
    """Where a job stands, for the client that sent it and the dock that shows it (one set of names).
    A job is ``queued`` until the engine runs it (whether or not it was sent yet), then ``running``,
    and ends in exactly one of the three final states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def of_final(cls, event) -> JobState:
        """The final state a final event puts a job in."""
        return {Finished: cls.DONE, Failed: cls.FAILED, JobCancelled: cls.CANCELLED}[type(event)]
Event = Accepted | Progress | Preview | Finished | Failed | JobCancelled


@dataclass(frozen=True)
class Capabilities:
    """What the engine says in its hello: protocol version, device and the models it found."""

    protocol: int
    engine_version: str
    device: str
    dtype: str
    device_reason: str = ""
    models: tuple[dict, ...] = ()   # {"key", "found": bool, "path", "source", "hint"} per catalogue model
    modes: tuple[str, ...] = ()     # modes that can run now


ENGINE_STATES = ("stopped", "starting", "ready", "restarting", "dead")


@dataclass(frozen=True)
class EngineStatus:
    """Where the engine process (or the remote engine's connection) stands, as the client sees it."""

    state: str               # one of ENGINE_STATES
    reason: str = ""         # one readable line: why it is restarting or dead
    code: str = ""           # stable code of the cause, e.g. "engine_died", "engine_start_timeout"


@dataclass(frozen=True)
class ModelStatus:
    """A model being loaded or unloaded by the engine's cache."""

    model: str
    state: str               # loading | loaded | unloaded | failed | compiling | compile_paused | compiled |
    #                          compile_failed | compile_skipped
    path: str = ""
    shared: tuple[str, ...] = ()   # components reused from another loaded model
    seconds: float | None = None
    message: str = ""
