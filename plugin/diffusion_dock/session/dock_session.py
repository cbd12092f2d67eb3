"""The dock's connection to the engine and its jobs: one ``DockSession`` per application, shared by the
dock panels of every window.

It owns the ``EngineClient`` (the engine's own Python in a child process, or a remote engine), turns
its callbacks and each job's events into Qt signals, saves every finished result to disk
(``ResultStore``) before anything shows it, and measures how long the event loop stalls while jobs
run.  Nothing here waits synchronously: jobs are followed by coroutines on qasync's loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import host as H
from ..runtime import aio, qimages
from ..runtime.coreapi import events, jobs, load, modes, paths
from ..runtime.qt import QObject, QtGui, Signal
from ..runtime.stall import StallMeter
from .job_builder import JobSpec, PreparedJob, mode_label, with_control_layers
from .results_store import ResultStore, StoredResult, new_id
from .settings import EngineNotFound, Settings, find_local_engine

if TYPE_CHECKING:
    from ..runtime.coreapi import JobHandle

log = logging.getLogger(__name__)

def phase_label(mode: str, phase: str) -> str:
    """What the dock calls a job's phase (a mode may rename some: ``ModeSpec.phase_labels``)."""
    known = modes.MODE_SPECS.get(mode)
    return known.phase_label(phase) if known else modes.PHASE_LABELS.get(phase, phase.capitalize())


@dataclass(eq=False)
class JobItem:
    """One job as the dock shows it."""

    id: str
    spec: JobSpec
    prepared: PreparedJob
    handle: JobHandle | None = None
    state: events.JobState = events.JobState.QUEUED
    position: int | None = None   # place in the engine's queue (0 = running)
    step: int = 0
    total: int = 0
    phase: str = "queued"
    message: str = ""             # failure message, or the result's warnings
    code: str = ""
    parameter: str | None = None
    results: list = field(default_factory=list)   # StoredResult
    preview: QtGui.QImage | None = None
    keep: bool = True             # a finished result is saved to the results store (Live frames are not)
    result: jobs.JobResult | None = None   # the result of a job that is not kept (until it is)
    max_stall_ms: float = 0.0     # largest event-loop stall while the job was followed
    prepare_ms: float = 0.0       # time spent reading the pixels before submitting
    submitted: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def summary(self) -> str:
        return self.prepared.summary

    @property
    def final(self) -> bool:
        return self.state.final

    @property
    def phase_text(self) -> str:
        return phase_label(self.mode, self.phase)

    def stats(self) -> dict:
        """The job's figures as the dock measured them (recorded with each result)."""
        end = self.finished if self.finished is not None else time.monotonic()
        return {"seconds": round(end - self.submitted, 3), "prepare_ms": round(self.prepare_ms, 1),
                "max_stall_ms": round(self.max_stall_ms, 1)}

    def stats_text(self) -> str:
        s = self.stats()
        return (f"{s['seconds']:.1f} s; reading the layer took {s['prepare_ms']:.0f} ms; largest event-loop "
                f"stall while it ran {s['max_stall_ms']:.0f} ms")

    def status_text(self) -> str:
        if self.state is events.JobState.QUEUED:
            return f"queued ({self.position})" if self.position else "queued"
        if self.state is events.JobState.RUNNING:
            step = f" {self.step}/{self.total}" if self.total else ""
            return f"{self.phase_text}{step}"
        if self.state is events.JobState.DONE:
            if not self.keep and not self.results:
                return "done: frame"
            n = len(self.results)
            return f"done: {n} result{'s' if n != 1 else ''}"
        if self.state is events.JobState.CANCELLED:
            return "cancelled"
        return f"failed: {self.message}"


class DockSession(QObject):
    """Signals carry the JobItem (or StoredResult) that changed."""

    job_added = Signal(object)
    job_changed = Signal(object)
    job_preview = Signal(object)
    job_finished = Signal(object)
    results_added = Signal(object)      # list of StoredResult, newest first
    result_changed = Signal(object)     # a StoredResult whose state changed (applied) or None (deleted)
    engine_changed = Signal()           # status, capabilities or a model's state

    def __init__(self, settings: Settings | None = None, store: ResultStore | None = None, *,
                 env: dict | None = None, client_options: dict | None = None, autostart: bool = False,
                 parent=None):
        super().__init__(parent)
        self.settings = settings if settings is not None else Settings.load()
        self.store = store if store is not None else ResultStore(paths.results_dir())
        self.env = env
        self.client_options = dict(client_options or {})
        self.autostart = autostart
        self.meter = StallMeter(parent=self)
        self.client = None
        self.status = events.EngineStatus("stopped")
        self.capabilities = None
        self.cluster: dict | None = None   # a cluster gateway's view (replicas, models, queue), else None
        self.model_states: dict[str, events.ModelStatus] = {}
        self.setup_error = ""              # why no engine could be set up (EngineNotFound)
        self.items: list[JobItem] = []     # newest last; finished ones are kept (the queue view trims)
        self.last_seed: int | None = None
        self._patches: collections.OrderedDict[str, jobs.Patch] = collections.OrderedDict()
        self._documents: dict[str, H.HostDocument] = {}   # job id → the document it ran on
        self._starting: asyncio.Task | None = None
        self.setup_options: dict = {}      # SetupPage keywords (tests: python, env, venv, models)

    # --- the engine -------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        if self.settings.engine == "remote":
            return self.settings.url or "remote engine"
        return "local engine"

    def _make_client(self):
        client_mod = load("link.client")
        common = dict(on_status=self._on_status, on_capabilities=self._on_capabilities,
                      on_model_status=self._on_model_status, on_cluster=self._on_cluster, **self.client_options)
        s = self.settings
        if s.engine == "remote":
            if not s.url:
                raise EngineNotFound("remote engine: no URL set (Engine settings)")
            return client_mod.EngineClient(url=s.url, token=s.token or None, cafile=s.cafile or None, **common)
        local = find_local_engine(s)
        args = (["--device", s.device] if s.device else []) + ([] if s.compile_unet else ["--no-compile"])
        return client_mod.EngineClient(python=local.python, cwd=local.root, engine_args=args, env=self.env,
                                       **common)

    def ensure_client(self):
        """The client, made on first use; None (with ``setup_error``) when no engine can be found."""
        if self.client is None:
            try:
                self.client = self._make_client()
                self.setup_error = ""
            except EngineNotFound as e:
                self.setup_error = str(e)
                self.status = events.EngineStatus("dead", str(e), "engine_not_found")
                self.engine_changed.emit()
                return None
        return self.client

    def start_engine(self) -> None:
        """Start (or connect to) the engine in the background."""
        client = self.ensure_client()
        if client is None or self.status.state in ("starting", "ready", "restarting"):
            return
        if self._starting is not None and not self._starting.done():
            return
        self._starting = aio.spawn(self._start(client), "starting the engine")

    async def _start(self, client) -> None:
        try:
            await client.start()
        except Exception as e:          # EngineError: the status callback already said why
            log.info("engine start failed: %s", e)
            self.status = client.status
            self.engine_changed.emit()

    async def restart_engine(self) -> None:
        """Stop the engine (jobs end cancelled) and start a fresh one (with the current settings)."""
        old = self.client
        self.client = None
        self.capabilities = None
        self.cluster = None
        self.model_states.clear()
        if old is not None:
            await old.stop()
        self.status = events.EngineStatus("stopped")
        self.engine_changed.emit()
        self.start_engine()

    def reconfigure(self, settings: Settings) -> None:
        """New engine settings: saved, and the engine is restarted with them."""
        self.settings = settings
        try:
            settings.save()
        except OSError as e:
            log.warning("cannot save the settings: %s", e)
        aio.spawn(self.restart_engine(), "restarting the engine")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()

    def kill_engine_now(self) -> None:
        """At exit, without a loop to wait on: end a local engine process at once."""
        client = self.client
        pid = getattr(client, "engine_pid", None) if client is not None and not client.remote else None
        if pid:
            try:
                import signal

                os.kill(pid, signal.SIGTERM)
            except (OSError, AttributeError):
                pass

    def _on_status(self, status) -> None:
        self.status = status
        self.engine_changed.emit()

    def _on_capabilities(self, caps) -> None:
        self.capabilities = caps
        self.engine_changed.emit()

    def _on_cluster(self, view) -> None:
        self.cluster = view
        self.engine_changed.emit()

    def _on_model_status(self, status) -> None:
        self.model_states[status.model] = status
        self.engine_changed.emit()

    def missing_models(self, mode: str) -> list[dict]:
        """Catalogue entries a mode needs that the engine did not find (empty while unknown).  A mode
        served by any of several models (generate) lacks only when none is there.  Optional ones
        (LaMa for Fill) are listed with ``optional`` set."""
        if self.capabilities is None:
            return []
        entries = [m for m in self.capabilities.models if mode in (m.get("modes") or ())]
        required = [m for m in entries if not m.get("optional")]
        missing = [] if any(m.get("found") for m in required) else required[:1]
        return missing + [m for m in entries if m.get("optional") and not m.get("found")]

    def loading_models(self) -> list[str]:
        return [m for m, s in self.model_states.items() if s.state == "loading"]

    def compile_outcomes(self, states: tuple[str, ...]) -> list[tuple[str, str, str]]:
        """(model, state, message) of the models whose UNet compilation last reported one of ``states``."""
        return [(m, s.state, s.message) for m, s in self.model_states.items() if s.state in states]

    # --- jobs ---------------------------------------------------------------------------------------

    def active_items(self) -> list[JobItem]:
        return [i for i in self.items if not i.final]

    def submit(self, prepared: PreparedJob, spec: JobSpec, prepare_ms: float = 0.0, *, keep: bool = True,
               previews: bool = True) -> JobItem:
        """Send a job; ``keep=False``: its result stays in ``item.result`` instead of being saved and
        listed (Live frames: ``keep_result`` saves the one that is applied)."""
        client = self.ensure_client()
        item = JobItem(id="", spec=spec, prepared=prepared, prepare_ms=prepare_ms, keep=keep)
        if client is None:
            item.id = f"local-{len(self.items)}"
            item.state, item.code, item.message = events.JobState.FAILED, "engine_not_found", self.setup_error
            item.finished = time.monotonic()
            self.items.append(item)
            self.job_added.emit(item)
            self.job_finished.emit(item)
            return item
        self.meter.watch(item)
        item.handle = client.submit(prepared.request, validated=True, previews=previews)   # job_builder validated it
        item.id = item.handle.job_id
        self._documents[item.id] = prepared.document
        self.items.append(item)
        self._trim()
        self.job_added.emit(item)
        aio.spawn(self._follow(item), f"job {item.id}")
        return item

    def cancel(self, item: JobItem) -> bool:
        if item.final or item.handle is None:
            return False
        return bool(item.handle.cancel())

    def cancel_all(self) -> int:
        return sum(1 for i in self.active_items() if self.cancel(i))

    def document_of(self, job_id: str) -> H.HostDocument | None:
        doc = self._documents.get(job_id)
        return None if doc is None or doc.closed else doc

    def _trim(self, keep: int = 30) -> None:
        done = [i for i in self.items if i.final]
        for old in done[:-keep] if len(done) > keep else []:
            self.items.remove(old)
            self._documents.pop(old.id, None)

    async def _follow(self, item: JobItem) -> None:
        try:
            async for ev in item.handle.events():
                if isinstance(ev, events.Accepted):
                    item.position = ev.position
                    item.state = item.handle.state
                elif isinstance(ev, events.Progress):
                    item.state, item.step, item.total, item.phase = item.handle.state, ev.step, ev.total, ev.phase
                elif isinstance(ev, events.Preview):
                    item.preview = qimages.qimage(ev.width, ev.height, "RGB_U8", ev.data)
                    self.job_preview.emit(item)
                    continue
                elif isinstance(ev, events.Finished):
                    if item.keep:
                        await self._finished(item, ev.result)
                    else:
                        item.result, item.state = ev.result, events.JobState.DONE
                        item.message = "; ".join(ev.result.warnings)
                elif isinstance(ev, events.Failed):
                    item.state, item.code, item.message, item.parameter = item.handle.state, ev.code, ev.message, \
                        ev.parameter
                elif isinstance(ev, events.JobCancelled):
                    item.state = item.handle.state
                self.job_changed.emit(item)
        except Exception:     # never leave a job hanging in the dock
            log.exception("following job %s failed", item.id)
            item.state, item.code = events.JobState.FAILED, "dock_error"
            item.message = "The dock could not follow this job; its log has the details."
            self.job_changed.emit(item)
        finally:
            item.finished = time.monotonic()
            self.meter.unwatch(item)
            self.job_finished.emit(item)

    async def _finished(self, item: JobItem, result) -> None:
        """Save every patch (pixels, thumbnail, provenance) to disk, then announce them."""
        saved = await aio.loop().run_in_executor(None, self._write, self._records(item, result), item.preview)
        for rec, patch in zip(saved, result.patches):
            self._remember(rec.id, patch)
        item.results = saved
        item.state = events.JobState.DONE
        item.message = "; ".join(result.warnings)
        seeds = [p.seed for p in result.patches if p.seed is not None]
        if seeds:
            self.last_seed = seeds[0]
        self.results_added.emit(list(reversed(saved)))

    def keep_result(self, item: JobItem) -> list[StoredResult]:
        """Save the result of a job sent with ``keep=False`` (a Live frame being applied), as any result
        is saved, and list it; returns its records (already saved: the same ones)."""
        if item.results or item.result is None:
            return list(item.results)
        item.results = self._save(item, item.result)
        for rec, patch in zip(item.results, item.result.patches):
            self._remember(rec.id, patch)
        self.results_added.emit(list(reversed(item.results)))
        return list(item.results)

    def _save(self, item: JobItem, result) -> list[StoredResult]:
        return self._write(self._records(item, result), item.preview)

    def _records(self, item: JobItem, result) -> list:
        """(record, patch) of each patch of ``result`` (reads the document: on the Qt thread)."""
        prepared = item.prepared
        records = []
        now = time.time()
        for i, patch in enumerate(result.patches):
            prov = with_control_layers(result.provenance(i), prepared.control_layers)
            name = jobs.result_name(result.mode, result.params.prompt, patch.seed, result.model)
            rec = StoredResult(
                id=new_id(item.id, i, now), job_id=item.id, index=i, mode=result.mode, name=name,
                x=patch.x, y=patch.y, width=patch.image.width, height=patch.image.height,
                format=patch.image.format, linear=patch.image.linear, seed=patch.seed, model=result.model,
                provenance=prov, document=prepared.document.name, canvas=prepared.request.canvas_size,
                source_layer={"id": prepared.source.id, "name": prepared.source.name,
                              "color": [prepared.source.color.model, prepared.source.color.depth,
                                        prepared.source.color.profile]},
                target=prepared.target,
                warnings=list(result.warnings), created=now + i * 1e-3, stats=item.stats())
            records.append((rec, patch))
        return records

    def _write(self, records: list, fallback) -> list[StoredResult]:
        """Pixels, thumbnail and record of each result to disk (any thread)."""
        out = []
        for rec, patch in records:
            thumb = qimages.thumbnail(patch.image)
            if thumb is None and fallback is not None:
                thumb = qimages.scaled(fallback, 160)
            self.store.save(rec, patch.image.data, qimages.png_bytes(thumb) if thumb is not None else None)
            out.append(rec)
        self.store.prune()
        return out

    # --- results ----------------------------------------------------------------------------------

    def _remember(self, rid: str, patch: jobs.Patch, keep: int = 8) -> None:
        self._patches[rid] = patch
        self._patches.move_to_end(rid)
        while len(self._patches) > keep:
            self._patches.popitem(last=False)

    def patch(self, rec: StoredResult) -> jobs.Patch:
        """A result's pixels (from memory when recent, else from disk)."""
        patch = self._patches.get(rec.id)
        if patch is None:
            patch = self.store.patch(rec)
            self._remember(rec.id, patch)
        return patch

    def history(self, limit: int = 60) -> list[StoredResult]:
        return self.store.load_all(limit)

    def mark_applied(self, rec: StoredResult, where: str) -> StoredResult:
        updated = self.store.set_state(rec.id, "applied", where)
        self.result_changed.emit(updated)
        return updated

    def discard(self, rec: StoredResult) -> None:
        self.store.delete(rec.id)
        self._patches.pop(rec.id, None)
        self.result_changed.emit(None)

    def mode_label(self, mode: str) -> str:
        return mode_label(mode)


_shared: DockSession | None = None


def shared_session(**kw) -> DockSession:
    """The application's session (Krita: every window's dock shares it)."""
    global _shared
    if _shared is None:
        _shared = DockSession(**kw)
    return _shared
