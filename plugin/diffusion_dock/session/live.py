"""Live: while it is on, every change of the layer or the selection (debounced), and every change of
the prompt or the settings, sends a Live job (SD-Turbo, 1–4 steps); its frame appears in place, in the
host's reusable preview layer, and Apply makes the frame on the canvas a new layer.

Only the newest counts.  Each frame has a sequence number; sending one cancels every older frame still
queued or running, and a frame that finishes anyway is shown only if it is newer than the frame on the
canvas (a frame older than the one shown is never shown).  Frames are not saved to the results history
(hundreds would pass through it); the one applied is.

How changes are noticed: the host's ``watch`` (a poll in Krita, the document's signals in the
standalone editor) calls ``check``, which compares a token of what a Live job would read
(``HostDocument.change_token`` over the Live region, with the layer's id) with the token of the last
frame sent.  A change starts (or restarts) the debounce timer; the frame is built and sent when it
runs out.  Live's own preview layer never counts as a change: it is not the source layer.

Turning Live off cancels its jobs and removes the preview layer: no layer is left, and in the
standalone editor no undo entry either (its preview is outside the undo history; Krita's layer
insertion and removal are undo steps there, see ``krita.host``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from .. import host as H
from ..runtime.coreapi import events, jobs, params
from ..runtime.qt import QObject, QTimer, Signal
from .job_builder import DockError, JobSpec, build, image_region
from .results import ResultActions

log = logging.getLogger(__name__)

LIVE_MODE = "live"
DEBOUNCE_MS = 300          # after the last change of the layer or the selection
SETTINGS_DEBOUNCE_MS = 500  # after the last keystroke in the prompt or change of a setting


class LiveSession(QObject):
    """``form_spec()`` is the dock form's JobSpec (raises DockError); ``changed`` says that the state,
    the counters, the message or the frame on the canvas changed."""

    changed = Signal()

    def __init__(self, session, actions: ResultActions, host: H.Host | None, form_spec: Callable[[], JobSpec],
                 parent=None, *, debounce_ms: int = DEBOUNCE_MS, settings_debounce_ms: int = SETTINGS_DEBOUNCE_MS):
        super().__init__(parent)
        self.session, self.actions, self.host, self.form_spec = session, actions, host, form_spec
        self.debounce_ms, self.settings_debounce_ms = debounce_ms, settings_debounce_ms
        self.active = False
        self.message = ""
        self.seq = 0                        # sequence number of the newest frame sent
        self.shown = None                   # the JobItem whose frame is on the canvas
        self.shown_seq = 0
        self.counts = {"sent": 0, "shown": 0, "stale": 0, "cancelled": 0, "failed": 0}
        self.last_latency = 0.0             # seconds from sending the shown frame to showing it
        self._in_flight: dict[str, tuple[int, object]] = {}   # job id → (sequence number, JobItem)
        self._sent_token: object = None     # what the last frame sent (or tried to send) read
        self._seen_token: object = None     # what the last check saw
        self._force = False
        self._seed: int | None = None
        self._source_id: str | None = None
        self._watch = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)
        session.job_finished.connect(self._on_finished)

    # --- on and off ----------------------------------------------------------------------------------

    def start(self) -> bool:
        """Turn Live on; the first frame goes at once.  False (with ``message``) when it cannot run."""
        if self.active:
            return True
        if self.host is None:
            self._say("This dock is not attached to an editor.")
            return False
        self.active, self.message = True, ""
        self.counts = dict.fromkeys(self.counts, 0)
        self._sent_token, self._seen_token, self._force = None, None, True
        self._seed = self._source_id = None
        self._watch = self.host.watch(self.check)
        self._timer.start(0)
        self.changed.emit()
        return True

    def stop(self) -> None:
        """Turn Live off: its jobs are cancelled and its preview layer goes."""
        was = self.active
        self.active = False
        self._timer.stop()
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        for _seq, item in list(self._in_flight.values()):
            if self.session.cancel(item):
                self.counts["cancelled"] += 1
        self._in_flight.clear()
        shown, self.shown, self.shown_seq = self.shown, None, 0
        if shown is not None and self.actions.previewing is not None and self.actions.previewing[1] == shown.id:
            self._keep_source_active(shown.prepared.document)   # not left on a layer about to go
            self.actions.clear_preview()
        if was:
            self.changed.emit()

    # --- changes -------------------------------------------------------------------------------------

    def check(self) -> None:
        """The host says something may have changed: a frame follows when what Live reads did."""
        if not self.active:
            return
        self._keep_source_active()
        try:
            token = self._token()
        except (H.HostError, ValueError) as e:
            log.debug("live: no token: %s", e)
            return
        if token == self._sent_token:
            return
        # The debounce restarts only on a NEW change: a host that polls calls this every few hundred ms
        # with the same unsent change, which must not keep pushing the frame back.
        if token != self._seen_token or not self._timer.isActive():
            self._seen_token = token
            self._timer.start(self.debounce_ms)

    def settings_changed(self) -> None:
        """The prompt or a setting changed: a new frame, once the typing pauses."""
        if self.active:
            self._force = True
            self._timer.start(self.settings_debounce_ms)

    def _source(self, doc: H.HostDocument) -> H.LayerInfo | None:
        """The layer Live repaints: the active one; when the active one is the preview (an editor may
        activate a layer it inserts), the layer of the last frame, while it exists."""
        layer = doc.active_layer()
        if layer is not None and layer.preview and self._source_id is not None:
            try:
                layer = doc.layer(self._source_id)
            except H.LayerNotFound:
                return None
        return None if layer is None or layer.preview else layer

    def _keep_source_active(self, doc: H.HostDocument | None = None) -> None:
        """When the editor made Live's preview layer the active one (Krita activates a layer a script
        inserts), the source layer becomes active again: the artist keeps painting on it."""
        if self._source_id is None:
            return
        try:
            doc = doc or (self.host.active_document() if self.host is not None else None)
            layer = doc.active_layer() if doc is not None else None
            if layer is not None and layer.preview:
                doc.activate_layer(self._source_id)
        except H.HostError as e:
            log.debug("live: source layer not activated: %s", e)

    def _token(self):
        doc = self.host.active_document() if self.host is not None else None
        layer = self._source(doc) if doc is not None else None
        if doc is None or layer is None:
            return None
        rect = image_region(doc, layer, self._spec())
        return layer.id, doc.change_token(layer.id, rect)

    def _spec(self) -> JobSpec:
        spec = self.form_spec()
        p = spec.params
        if p.seed is None:            # one seed for the whole Live session: frames do not flicker
            if self._seed is None:
                self._seed = secrets.randbelow(params.SEED_MAX + 1)
            p = replace(p, seed=self._seed)
        return replace(spec, mode=LIVE_MODE, params=replace(p, num_images=1))

    # --- sending -------------------------------------------------------------------------------------

    def _fire(self) -> None:
        if not self.active or self.host is None:
            return
        t0 = time.perf_counter()
        token = None
        try:
            token = self._token()
            if token == self._sent_token and not self._force:
                return
            spec = self._spec()
            doc = self.host.document()
            layer = self._source(doc)
            prepared = build(doc, None if layer is None else layer.id, spec)
        except (DockError, H.HostError) as e:
            # Said once; the next change (or setting) tries again.
            self._sent_token, self._force = token, False
            self._say(str(e))
            return
        self._force = False
        self._sent_token = token
        self._source_id = prepared.source.id
        self.seq += 1
        for _seq, old in list(self._in_flight.values()):     # only the newest counts
            if self.session.cancel(old):
                self.counts["cancelled"] += 1
        item = self.session.submit(prepared, spec, (time.perf_counter() - t0) * 1000, keep=False, previews=False)
        self.counts["sent"] += 1
        if item.final:                   # no engine: failed at once
            self._say(item.message or item.code)
            return
        self._in_flight[item.id] = (self.seq, item)
        self.message = ""
        self.changed.emit()

    # --- frames --------------------------------------------------------------------------------------

    def _on_finished(self, item) -> None:
        entry = self._in_flight.pop(item.id, None)
        if entry is None or not self.active:
            return
        seq = entry[0]
        if item.state is events.JobState.DONE and item.result is not None and item.result.patches:
            if seq <= self.shown_seq:
                self.counts["stale"] += 1         # older than the frame on the canvas: never shown
            else:
                self._show(item, seq)
        elif item.state is events.JobState.FAILED:
            self.counts["failed"] += 1
            self._say(item.message or item.code)
        self.changed.emit()

    def _show(self, item, seq: int) -> None:
        result, prepared = item.result, item.prepared
        patch = result.patches[0]
        name = jobs.result_name(result.mode, result.params.prompt, patch.seed, result.model)
        problem = self.actions.show_patch(prepared.document, prepared.source.id, patch, name, item.id)
        if problem:
            self._say(problem)
            return
        self.shown, self.shown_seq = item, seq
        self._keep_source_active(prepared.document)
        self.counts["shown"] += 1
        self.last_latency = (item.finished or time.monotonic()) - item.submitted
        self.message = "; ".join(result.warnings)

    def apply(self) -> H.LayerInfo | None:
        """The frame on the canvas becomes a NEW layer above its source (and a saved result), and Live
        stops.  None (with ``message``) when there is no frame or the editor refused."""
        item = self.shown
        if item is None or item.result is None:
            self._say("No Live frame on the canvas yet.")
            return None
        result, prepared = item.result, item.prepared
        patch = result.patches[0]
        name = jobs.result_name(result.mode, result.params.prompt, patch.seed, result.model)
        try:
            info = self.actions.commit_patch(prepared.document, prepared.source.id, patch, name,
                                             result.provenance(0), item.id)
        except H.HostError as e:
            self._say(f"Could not apply {name}: {e}")
            return None
        self.shown = None
        for rec in self.session.keep_result(item):
            self.session.mark_applied(rec, f'layer "{info.name}" in "{prepared.document.name}"')
        self.stop()
        return info

    # --- state ---------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _say(self, text: str) -> None:
        self.message = text
        self.changed.emit()

    def status_text(self) -> str:
        if not self.active:
            return "Live is off." if not self.message else self.message
        c = self.counts
        parts = [f"Live · {c['shown']} frame{'s' if c['shown'] != 1 else ''} shown"]
        if self.shown is not None:
            parts.append(f"last {self.last_latency:.1f} s")
        if self._in_flight:
            parts.append("working…")
        if c["stale"] or c["cancelled"]:
            parts.append(f"{c['cancelled'] + c['stale']} outdated skipped")
        text = " · ".join(parts)
        return f"{text}\n{self.message}" if self.message else text
