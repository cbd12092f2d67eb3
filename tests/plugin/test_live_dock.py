"""Live in the dock.

First against a scripted session and the memory host, where the order in which frames finish is the
test's to choose: only the newest counts (sending a frame cancels the older ones still running), and a
frame older than the one on the canvas is never shown, whatever order they finish in.

Then in the standalone editor through the REAL engine on the tiny models (SD-Turbo and TAESD): a burst
of 20 edits sends at most a few jobs and the frame left on the canvas is the newest; a change of the
prompt sends a frame; turning Live off leaves no layer and no undo entry; Apply makes the frame a new
layer in one undo step, saved in the history as applied.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.editor import pixels
from plugin.diffusion_dock.runtime.coreapi import events, jobs
from plugin.diffusion_dock.runtime.qt import QObject, Qt, Signal
from plugin.diffusion_dock.session.job_builder import JobSpec
from plugin.diffusion_dock.session.live import LiveSession
from plugin.diffusion_dock.session.results import ResultActions

from .dock_util import close_session, make_session, spin_until
from .editor_util import layer_array, open_window
from .memory_host import MemoryDocument, MemoryHost

U8 = H.ColorInfo("RGBA", "U8", H.SRGB_PROFILE)


# --- the rules, against a scripted session -------------------------------------------------------------

class Item:
    ids = itertools.count(1)

    def __init__(self, prepared, spec):
        self.id, self.prepared, self.spec = f"job{next(self.ids)}", prepared, spec
        self.state, self.result, self.results, self.message, self.code = events.JobState.QUEUED, None, [], "", ""
        self.submitted, self.finished = 0.0, None

    @property
    def final(self):
        return self.state.final


class ScriptedSession(QObject):
    """What LiveSession asks of the dock session; the test finishes the jobs, in any order."""

    job_finished = Signal(object)

    def __init__(self):
        super().__init__()
        self.items, self.cancelled, self.kept = [], [], []

    def submit(self, prepared, spec, prepare_ms=0.0, *, keep=True, previews=True):
        assert keep is False and previews is False        # frames are not saved, and make no step previews
        item = Item(prepared, spec)
        self.items.append(item)
        return item

    def cancel(self, item):
        if item.final:
            return False
        self.cancelled.append(item.id)
        return True

    def finish(self, item, value: int, state=events.JobState.DONE):
        """The job ends; a frame is a patch of 8×6 px at (4, 5) filled with ``value``."""
        item.state = state
        if state is events.JobState.DONE:
            img = jobs.ImageBuffer(8, 6, "BGRA_U8", bytes([value]) * (8 * 6 * 4))
            item.result = jobs.JobResult("live", (jobs.Patch(4, 5, img, 7),), "sd-turbo",
                                         jobs.Params(prompt="cat", seed=7))
        self.job_finished.emit(item)

    def keep_result(self, item):
        self.kept.append(item.id)
        return []

    def mark_applied(self, rec, where):
        raise AssertionError("no records")


@pytest.fixture
def scripted(qapp):
    doc = MemoryDocument(32, 24, "art")
    base = np.zeros((24, 32, 4), np.uint8)
    base[..., 3] = 255
    doc.add("Paint", base, U8)
    host = MemoryHost(doc)
    session = ScriptedSession()
    spec = {"prompt": "cat"}
    live = LiveSession(session, ResultActions(session, host), host,
                       lambda: JobSpec("live", jobs.Params(prompt=spec["prompt"], steps=1, strength=0.5)),
                       debounce_ms=0, settings_debounce_ms=0)
    yield live, session, doc, spec
    live.stop()


def paint(doc, value):
    doc.stack[-1].pixels[2:8, 2:8, :3] = value


def preview_value(doc):
    [layer] = [la for la in doc.stack if la.preview]
    return int(layer.pixels[5, 4, 0])


def test_only_the_newest_frame_counts_whatever_order_they_finish_in(qtbot, scripted):
    live, session, doc, _spec = scripted
    assert live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    first = session.items[0]
    assert first.prepared.request.mode == "live" and first.prepared.request.params.seed is not None
    paint(doc, 50)
    live.check()
    qtbot.waitUntil(lambda: len(session.items) == 2)
    paint(doc, 60)
    live.check()
    qtbot.waitUntil(lambda: len(session.items) == 3)
    a, b, c = session.items
    assert session.cancelled == [a.id, a.id, b.id] or session.cancelled == [a.id, b.id]   # older ones cancelled
    # The newest finishes first and is shown; the older ones finish later (the cancel came too late)
    # and are never shown.
    session.finish(c, 30)
    assert live.shown is c and preview_value(doc) == 30
    session.finish(a, 10)
    session.finish(b, 20)
    assert live.shown is c and preview_value(doc) == 30 and live.counts["stale"] == 2
    # One preview layer, above the source; every frame used the same seed (no flicker between frames).
    assert [la.name for la in doc.stack] == ["[Preview] [Live] cat (seed 7)", "Paint"]
    assert len({i.prepared.request.params.seed for i in session.items}) == 1


def test_a_newer_frame_replaces_an_older_one_and_nothing_repeats_without_a_change(qtbot, scripted):
    live, session, doc, spec = scripted
    live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 10)
    live.check()                                     # nothing changed (its own preview does not count)
    qtbot.wait(30)
    assert len(session.items) == 1
    spec["prompt"] = "dog"
    live.settings_changed()                          # the prompt changed: a new frame
    qtbot.waitUntil(lambda: len(session.items) == 2)
    assert session.items[1].prepared.request.params.prompt == "dog"
    session.finish(session.items[1], 40)
    assert preview_value(doc) == 40 and live.counts["shown"] == 2


def test_a_host_that_polls_gets_its_frame_one_debounce_after_the_change(qtbot, scripted):
    """Krita has no pixel signal: the host calls ``check`` every few hundred ms with the same unsent
    change, which must not keep pushing the frame back."""
    live, session, doc, _spec = scripted
    live.debounce_ms = 300
    live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 10)
    paint(doc, 70)
    t = time.monotonic()
    while len(session.items) == 1 and time.monotonic() - t < 5:
        live.check()                                 # a poll, more often than the debounce
        qtbot.wait(50)
    assert len(session.items) == 2
    assert time.monotonic() - t >= 0.25                # a debounce later (Qt coarse timers: ±5%)


class ActivatingDocument(MemoryDocument):
    """Like Krita: the layer a script inserts becomes the active one."""

    def show_preview(self, source_id, patch, name=""):
        info = super().show_preview(source_id, patch, name)
        self.active_id = info.id
        return info


def test_the_artist_stays_on_the_source_layer_when_the_editor_activates_the_preview(qtbot, qapp):
    doc = ActivatingDocument(32, 24, "art")
    base = np.zeros((24, 32, 4), np.uint8)
    base[..., 3] = 255
    source = doc.add("Paint", base, U8)
    session = ScriptedSession()
    host = MemoryHost(doc)
    live = LiveSession(session, ResultActions(session, host), host,
                       lambda: JobSpec("live", jobs.Params(prompt="cat", steps=1, strength=0.5)),
                       debounce_ms=0, settings_debounce_ms=0)
    live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 10)
    assert [la.name for la in doc.stack] == ["[Preview] [Live] cat (seed 7)", "Paint"]
    assert doc.active_id == source.id                 # not the locked preview layer
    doc.active_id = doc.stack[0].id                   # the editor activates it again later
    live.check()
    assert doc.active_id == source.id
    doc.active_id = doc.stack[0].id
    live.stop()                                       # Live off: the preview goes, the source stays active
    assert [la.name for la in doc.stack] == ["Paint"] and doc.active_id == source.id
    assert live.start() and live.active
    qtbot.waitUntil(lambda: len(session.items) == 2)   # Live again on the same layer, no "pick a layer"
    assert session.items[1].prepared.source.id == source.id and live.message == ""
    live.stop()


def test_a_frame_finishing_after_live_is_off_is_not_shown_and_off_leaves_nothing(qtbot, scripted):
    live, session, doc, _spec = scripted
    live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 10)
    paint(doc, 90)
    live.check()
    qtbot.waitUntil(lambda: len(session.items) == 2)
    live.stop()
    assert session.items[1].id in session.cancelled
    assert [la.name for la in doc.stack] == ["Paint"] and doc.undo == []
    session.finish(session.items[1], 20)             # the cancel came too late: still not shown
    assert [la.name for la in doc.stack] == ["Paint"] and live.shown is None


def test_apply_makes_the_frame_a_new_layer_and_stops_live(qtbot, scripted):
    live, session, doc, _spec = scripted
    assert live.apply() is None and "No Live frame" in live.message
    live.start()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 77)
    info = live.apply()
    assert info.name == "[Live] cat (seed 7)" and not live.active
    assert [la.name for la in doc.stack] == ["[Live] cat (seed 7)", "Paint"] and doc.undo == [("add", doc.stack[0])]
    assert doc.stack[0].pixels[5, 4, 0] == 77 and session.kept == [session.items[0].id]


def test_errors_are_said_and_live_goes_on(qtbot, scripted):
    live, session, doc, _spec = scripted
    doc.stack[-1].pixels[...] = 0                   # an empty layer: nothing to repaint
    live.start()
    qtbot.waitUntil(lambda: "empty" in live.message)
    assert session.items == [] and live.active
    paint(doc, 10)
    doc.stack[-1].pixels[2:8, 2:8, 3] = 255
    live.check()
    qtbot.waitUntil(lambda: len(session.items) == 1)
    session.finish(session.items[0], 0, events.JobState.FAILED)
    assert live.counts["failed"] == 1 and live.active


# --- through the real engine in the standalone editor --------------------------------------------------

W, H_ = 96, 64


@pytest.fixture(scope="module")
def session(qapp, tiny_root, tmp_path_factory):
    s = make_session(tiny_root, tmp_path_factory.mktemp("results"))
    yield s
    close_session(s)


@pytest.fixture
def window(qtbot, session):
    win, _ = open_window(qtbot, session, W, H_, 5, "live-test")
    win.panel.set_mode("live")
    win.panel.form.prompt.setPlainText("a glass vase")
    yield win
    win.panel.live.stop()


def edit(doc, i: int) -> None:
    """An artist's stroke: a few pixels of the layer change (the editor says so with its signal)."""
    rng = np.random.default_rng(100 + i)
    block = rng.integers(0, 256, (6, 6, 4), dtype=np.uint8)
    block[..., 3] = 255
    x, y = 10 + (i * 7) % 70, 8 + (i * 5) % 44
    pixels.write_rect(doc.layers[0].image, x, y, 6, 6, block.tobytes())
    doc.pixels_changed.emit(doc.canvas_rect)


def settled(live) -> bool:
    return live.in_flight == 0 and not live._timer.isActive()


def test_a_burst_of_edits_sends_a_few_jobs_and_the_newest_frame_stays(qtbot, window):
    doc, panel = window.document, window.panel
    live = panel.live
    shown_seqs = []
    live.changed.connect(lambda: shown_seqs.append(live.shown_seq) if live.shown is not None else None)
    assert panel.live_bar.isVisible()
    qtbot.mouseClick(panel.live_bar.toggle, Qt.MouseButton.LeftButton)
    assert live.active
    spin_until(lambda: live.shown is not None and settled(live), 300, "the first Live frame")
    assert doc.preview is not None and doc.preview.layer.name.startswith("[Preview] [Live] a glass vase")
    sent = live.counts["sent"]
    times = []
    for i in range(20):                              # a burst: every edit within the debounce of the last
        edit(doc, i)
        times.append(time.monotonic())
        qtbot.wait(15)
    spin_until(lambda: settled(live) and live.shown_seq == live.seq, 300, "the burst's frame")
    burst_jobs = live.counts["sent"] - sent
    # A pause longer than the debounce (a stalled event loop on a busy machine) rightly sends a frame.
    pauses = sum(b - a > live.debounce_ms / 1000 for a, b in zip(times, times[1:]))
    assert 1 <= burst_jobs <= 3 + pauses, (live.counts, pauses)
    # The frame on the canvas is the newest: made from the layer as the last edit left it.
    request = live.shown.prepared.request
    region = H.Rect(request.origin[0], request.origin[1], request.image.width, request.image.height)
    now = window.host.active_document().read_pixels(doc.layers[0].id, region)
    assert request.image.data == now.data
    assert shown_seqs == sorted(shown_seqs)           # never an older frame after a newer one
    # And the frame on the canvas is exactly what the engine sent for it.
    patch = live.shown.result.patches[0]
    preview = layer_array(doc.preview.layer.image)
    got = preview[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width]
    assert got.tobytes() == patch.image.data


def test_edits_while_a_frame_runs_cancel_it_and_only_newer_frames_show(qtbot, window):
    live = window.panel.live
    live.debounce_ms = 0                              # every edit sends a frame at once
    shown_seqs = []
    live.changed.connect(lambda: shown_seqs.append(live.shown_seq) if live.shown is not None else None)
    live.start()
    spin_until(lambda: live.shown is not None and settled(live), 300, "the first Live frame")
    for i in range(5):
        edit(window.document, 50 + i)
        qtbot.wait(5)
    spin_until(lambda: settled(live), 300, "the frames")
    assert live.counts["sent"] >= 5 and live.counts["cancelled"] + live.counts["stale"] >= 1, live.counts
    assert live.shown_seq == live.seq and shown_seqs == sorted(shown_seqs)


def test_a_new_prompt_sends_a_frame(qtbot, window):
    live, form = window.panel.live, window.panel.form
    live.start()
    spin_until(lambda: live.shown is not None and settled(live), 300, "the first Live frame")
    sent = live.counts["sent"]
    form.prompt.setPlainText("a stone vase")
    spin_until(lambda: live.counts["sent"] > sent and settled(live), 300, "the new prompt's frame")
    assert live.shown.prepared.request.params.prompt == "a stone vase"
    assert window.document.preview.layer.name.startswith("[Preview] [Live] a stone vase")


def test_live_off_leaves_no_layer_and_no_undo_entry(qtbot, window):
    doc, panel = window.document, window.panel
    names, undo = [la.name for la in doc.layers], doc.undo_stack.count()
    panel.live_bar.toggle.setChecked(True)
    spin_until(lambda: panel.live.shown is not None and settled(panel.live), 300, "a Live frame")
    edit(doc, 99)
    spin_until(lambda: panel.live.in_flight == 1, 60, "a frame under way")
    panel.live_bar.toggle.setChecked(False)
    assert not panel.live.active and panel.live.in_flight == 0
    assert doc.preview is None and [la.name for la in doc.layers] == names
    assert doc.undo_stack.count() == undo == 0
    qtbot.wait(500)                                   # the cancelled frame may still end: it shows nothing
    assert doc.preview is None
    # Another mode turns Live off too.
    panel.live_bar.toggle.setChecked(True)
    panel.set_mode("inpaint")
    assert not panel.live.active and not panel.live_bar.isVisible()


def test_apply_makes_the_frame_a_layer_in_one_undo_step(qtbot, window, session):
    doc, panel = window.document, window.panel
    panel.live_bar.toggle.setChecked(True)
    spin_until(lambda: panel.live.shown is not None and settled(panel.live), 300, "a Live frame")
    item = panel.live.shown
    patch = item.result.patches[0]
    qtbot.mouseClick(panel.live_bar.apply_button, Qt.MouseButton.LeftButton)
    assert not panel.live.active and doc.preview is None
    name = f"[Live] a glass vase (seed {patch.seed})"
    assert [la.name for la in doc.layers] == [name, "Background"]
    new = layer_array(doc.layers[0].image)
    assert new[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width].tobytes() == patch.image.data
    assert doc.undo_stack.count() == 1 and doc.layers[0].provenance["mode"] == "live"
    [rec] = item.results
    assert session.store.get(rec.id).state == "applied" and panel.results.item_of(rec.id) is not None
    doc.undo_stack.undo()
    assert [la.name for la in doc.layers] == ["Background"]
