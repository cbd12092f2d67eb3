"""The dock in the standalone editor, through the REAL engine process on the tiny models (one engine for
the module): from the Generate button to a new layer, cancelling, an engine crash during a job,
validation messages, the layer actions, upscale into a new window, results surviving a restart."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from core.pipelines import run_job
from plugin.diffusion_dock.editor import pixels
from plugin.diffusion_dock.editor.document import EditorDocument
from plugin.diffusion_dock.editor.window import EditorWindow
from plugin.diffusion_dock.runtime.qt import Qt

from .dock_util import close_session, make_session, spin_until, wait_job
from .editor_util import layer_array, open_window

W, H = 96, 64


@pytest.fixture(scope="module")
def session(qapp, tiny_root, tmp_path_factory):
    s = make_session(tiny_root, tmp_path_factory.mktemp("results"))
    yield s
    close_session(s)


@pytest.fixture
def window(qtbot, session):
    win, win.source = open_window(qtbot, session, W, H, 3, "dock-test")
    yield win
    for w in list(EditorWindow.windows):
        if w is not win:
            w.confirm_close = False
            w.close()


def select_rect(doc, x, y, w, h, value=255):
    mask = pixels.new_mask(doc.width, doc.height)
    pixels.write_rect(mask, x, y, w, h, bytes([value]) * (w * h))
    doc.set_selection(mask)


def fill_form(panel, mode="inpaint", prompt="red scarf", steps=2, seed="1234"):
    panel.set_mode(mode)
    panel.form.prompt.setPlainText(prompt)
    panel.form.steps.setValue(steps)
    panel.form.seed.setText(seed)


def watch_panel(panel, session):
    """What the panel showed while a job ran: engine status lines, progress texts, live previews."""
    seen = {"engine": [], "progress": [], "previews": []}

    def on_engine():
        seen["engine"].append(panel.engine_bar.label.text())

    def on_job(_item):
        if panel.progress.isVisible():
            seen["progress"].append(panel.progress.format())

    def on_preview(_item):
        pm = panel.preview.pixmap()
        seen["previews"].append((panel.preview.isVisible(), pm is not None and not pm.isNull()))

    session.engine_changed.connect(on_engine)
    session.job_changed.connect(on_job)
    session.job_preview.connect(on_preview)
    return seen


def test_inpaint_from_the_button_to_a_new_layer(qtbot, window, session, models):
    doc, panel = window.document, window.panel
    seen = watch_panel(panel, session)       # the module's first job: the engine starts and loads a model
    select_rect(doc, 30, 20, 24, 18)
    fill_form(panel)
    qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    item = wait_job(session.items[-1])
    assert item.state == "done", item.message
    # The engine's status went through starting, loading the model, and ready on the CPU.
    assert seen["engine"][0] == "Starting the engine…", seen["engine"]
    assert any(t.startswith("Loading sd2-inpainting") for t in seen["engine"]), seen["engine"]
    assert panel.engine_bar.label.text().startswith("Ready · cpu")
    # Progress with phase and step; a live preview of the steps.
    assert seen["progress"][0] == "Queued" and "Loading the model" in seen["progress"], seen["progress"]
    assert "Denoising 1/2" in seen["progress"] and "Denoising 2/2" in seen["progress"], seen["progress"]  # steps run
    assert seen["previews"] and all(shown and pixmap for shown, pixmap in seen["previews"]), seen["previews"]
    assert not panel.progress.isVisible() and not panel.preview.isVisible()      # hidden once done
    [rec] = item.results
    # Saved to disk before anything showed it: pixels, thumbnail and record.
    stored = session.store.get(rec.id)
    assert stored is not None and stored.state == "new" and session.store.thumbnail_path(rec.id)
    local = run_job(item.prepared.request, models).patches[0]      # the same request, in this process
    assert session.store.pixels(rec.id) == local.image.data
    assert (rec.x, rec.y, rec.width, rec.height) == (local.x, local.y, local.image.width, local.image.height)
    # The result is previewed on the canvas (not committed) and listed in the strip.
    assert doc.preview is not None and panel.results.item_of(rec.id) is not None
    assert not doc.undo_stack.canUndo() or doc.undo_stack.count() == 1      # only the selection so far
    steps_before = doc.undo_stack.count()

    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert doc.preview is None
    assert [la.name for la in doc.layers] == ["[Inpaint] red scarf (seed 1234)", "Background"]
    new = layer_array(doc.layers[0].image)
    expected = np.zeros_like(new)
    patch = np.frombuffer(local.image.data, np.uint8).reshape(local.image.height, local.image.width, 4)
    expected[local.y:local.y + patch.shape[0], local.x:local.x + patch.shape[1]] = patch
    assert np.array_equal(new, expected)
    outside = np.ones((H, W), bool)
    outside[20:38, 30:54] = False
    assert not new[outside].any()                      # alpha 0 (all zero) outside the selection
    assert new[20:38, 30:54, 3].any()
    assert np.array_equal(layer_array(doc.layers[1].image), window.source)      # the source is untouched
    prov = window.host.active_document().provenance(doc.layers[0].id)
    assert prov["seed"] == 1234 and prov["params"]["prompt"] == "red scarf" and prov["mode"] == "inpaint"
    assert session.store.get(rec.id).state == "applied"
    # One undo step removes it.
    assert doc.undo_stack.count() == steps_before + 1
    doc.undo_stack.undo()
    assert [la.name for la in doc.layers] == ["Background"]
    # The largest event-loop stall while the job ran was measured and recorded with the result.
    assert item.max_stall_ms > 0 and item.stats()["max_stall_ms"] == round(item.max_stall_ms, 1)
    assert stored.stats["max_stall_ms"] > 0 and stored.stats["seconds"] > 0
    assert "largest UI stall" in panel.results.item_of(rec.id).toolTip()
    print(f"\ninpaint through the dock: {stored.stats}")


def test_random_seed_reuse_apply_all_and_discard(qtbot, window, session):
    doc, panel = window.document, window.panel
    select_rect(doc, 8, 8, 20, 16)
    fill_form(panel, seed="")
    panel.form.num_images.setValue(2)
    item = wait_job(panel.generate())
    assert item.state == "done", item.message
    first, second = sorted(item.results, key=lambda r: r.index)
    assert first.seed is not None and second.seed == first.seed + 1          # random, reported, image i = seed + i
    assert first.name == f"[Inpaint] red scarf (seed {first.seed})"
    assert panel.form.seed.text() == ""                                           # still random for the next job
    qtbot.mouseClick(panel.form.reuse_seed, Qt.MouseButton.LeftButton)
    assert panel.form.seed.text() == str(first.seed)
    # The first result is selected and previewed on the canvas; selecting the other previews that one.
    assert panel.results.selected_records() == [first] and doc.preview is not None
    panel.results.clearSelection()
    panel.results.item_of(second.id).setSelected(True)
    assert doc.preview is not None and doc.preview.layer.name.endswith(second.name)
    steps = doc.undo_stack.count()
    qtbot.mouseClick(panel.apply_all_button, Qt.MouseButton.LeftButton)
    assert doc.preview is None
    assert sorted(la.name for la in doc.layers[:2]) == sorted([first.name, second.name])
    assert doc.layers[2].name == "Background" and doc.undo_stack.count() == steps + 2
    assert {session.store.get(r.id).state for r in (first, second)} == {"applied"}
    # Apply all again: nothing left to apply in that job.
    assert panel.apply_all() == []
    # Discard removes a result from the strip and from disk.
    panel.results.clearSelection()
    panel.results.item_of(first.id).setSelected(True)
    qtbot.mouseClick(panel.discard_button, Qt.MouseButton.LeftButton)
    assert panel.results.item_of(first.id) is None and session.store.get(first.id) is None
    assert not list(session.store.folder.glob(f"{first.id}.*"))
    assert [la.name for la in doc.layers][-1] == "Background" and len(doc.layers) == 3   # applied layers stay


def test_ctrl_enter_queue_and_cancel(qtbot, window, session):
    doc, panel = window.document, window.panel
    select_rect(doc, 10, 10, 20, 20)
    fill_form(panel, steps=400, seed="7")
    panel.form.prompt.setFocus()
    qtbot.keyClick(panel.form.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert panel.form.prompt.toPlainText() == "red scarf"            # Ctrl+Enter ran the job, added no line
    long = session.items[-1]
    panel.form.steps.setValue(2)
    second = panel.generate()
    assert second is not None and second is session.items[-1] and second is not long
    spin_until(lambda: long.state == "running" and long.step >= 1, 120, "the long job to run")
    rows = [panel.queue.item(i).text() for i in range(panel.queue.count())]
    assert any("queued" in r for r in rows) and any("Denoising" in r for r in rows), rows
    assert panel.progress.isVisible() and "Denoising" in panel.progress.format()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_job(long)
    wait_job(second)
    assert long.state == "cancelled" and not long.results
    assert second.state == "done"
    assert long.max_stall_ms > 0


def test_engine_crash_during_a_job_is_reported_and_the_next_job_works(qtbot, window, session):
    doc, panel = window.document, window.panel
    select_rect(doc, 40, 10, 30, 30)
    fill_form(panel, steps=400, seed="5")
    item = panel.generate()
    spin_until(lambda: item.state == "running" and item.step >= 1, 120, "the job to run")
    pid = session.client.engine_pid
    os.kill(pid, signal.SIGKILL)
    wait_job(item)
    assert item.state == "failed" and item.code == "engine_died"
    kind, text = panel.last_message
    assert kind == "error" and "engine stopped" in text.lower()
    assert window.isVisible()
    spin_until(lambda: session.status.state in ("dead", "restarting", "ready"), 30, "the status")
    panel.form.steps.setValue(2)
    again = wait_job(panel.generate())
    assert again.state == "done", again.message
    assert session.client.engine_pid != pid


def test_restart_button_starts_a_fresh_engine(qtbot, window, session):
    panel = window.panel
    spin_until(lambda: session.status.state == "ready" and session.client is not None, 60, "the engine")
    pid = session.client.engine_pid
    texts = []
    session.engine_changed.connect(lambda: texts.append(panel.engine_bar.label.text()))
    qtbot.mouseClick(panel.engine_bar.restart, Qt.MouseButton.LeftButton)
    spin_until(lambda: session.status.state == "ready" and session.client is not None
               and session.client.engine_pid not in (None, pid), 60, "the new engine")
    assert "Starting the engine…" in texts and panel.engine_bar.label.text().startswith("Ready")


def test_validation_messages(qtbot, window, session):
    from core.contract.params import RANGES

    doc, panel = window.document, window.panel
    # The widgets enforce the engine's ranges.
    for name, box in (("steps", panel.form.steps), ("num_images", panel.form.num_images), ("guidance", panel.form.guidance),
                      ("strength", panel.form.strength), ("grow", panel.form.grow), ("noise_level", panel.form.noise_level)):
        assert (box.minimum(), box.maximum()) == (RANGES[name].low, RANGES[name].high), name
    panel.form.steps.setValue(10_000)
    assert panel.form.steps.value() == 512
    n = len(session.items)
    # Inpainting without a selection.
    fill_form(panel)
    assert panel.generate() is None and len(session.items) == n
    assert "select the area to repaint" in panel.last_message[1]
    # A seed out of range, named with its range (any strength × steps is valid: the steps are the ones that run).
    select_rect(doc, 10, 10, 20, 20)
    panel.form.strength.setValue(0.01)
    panel.form.seed.setText("9999999999")
    assert panel.generate() is None and "seed must be in 0–4294967295" in panel.last_message[1]
    assert panel.invalid_widgets() == [panel.form.seed]
    # The engine's own refusal: a flat depth layer for restyle.
    panel.form.seed.setText("1")
    flat = doc.add_layer("flat depth")
    pixels.write_rect(flat.image, 0, 0, W, H, bytes([128, 128, 128, 255]) * (W * H))
    doc.set_active(doc.layers[1].id)
    fill_form(panel, mode="restyle", steps=2, seed="1")
    panel.form.depth_source.select_layer(flat.id)
    item = wait_job(panel.generate())
    assert item.state == "failed" and item.code == "invalid_parameter" and item.parameter == "depth"
    assert "flat" in panel.last_message[1] and panel.invalid_widgets() == [panel.form.depth_source]


def test_fill_from_the_layer_action_and_the_results_survive_a_restart(qtbot, window, session, tmp_path):
    doc, panel = window.document, window.panel
    select_rect(doc, 20, 20, 16, 12)
    n = len(session.items)
    window.controller.trigger("diffusion_dock_fill", "layer_menu")
    assert panel.mode == "fill" and len(session.items) == n + 1      # ran at once, no prompt
    item = wait_job(session.items[-1])
    assert item.state == "done", item.message
    [rec] = item.results
    assert rec.name == "[Fill] Patches" and rec.seed is None
    # A new session on the same results folder (the editor restarted) lists it and can apply it.
    from plugin.diffusion_dock.session.dock_session import DockSession

    fresh = DockSession(session.settings, type(session.store)(session.store.folder))
    other = EditorWindow(EditorDocument.new(W, H, "reopened"), session=fresh)
    other.confirm_close = False
    qtbot.addWidget(other)
    strip = other.panel.results
    assert strip.item_of(rec.id) is not None
    strip.item_of(rec.id).setSelected(True)
    [info] = other.panel.apply_results(strip.selected_records())
    assert info.name == "[Fill] Patches"
    assert other.document.layers[0].name == "[Fill] Patches"
    arr = layer_array(other.document.layers[0].image)
    assert arr[20:32, 20:36, 3].all() and not arr[:18].any()
    assert "gone" in other.panel.last_message[1]          # its source layer is not in this document


def test_upscale_opens_a_new_window_with_the_4x_result(qtbot, window, session):
    doc, panel = window.document, window.panel
    fill_form(panel, mode="upscale", prompt="", steps=2, seed="3")
    panel.form.tile.setValue(64)
    item = wait_job(panel.generate())
    assert item.state == "done", item.message
    [rec] = item.results
    assert (rec.width, rec.height, rec.target) == (4 * W, 4 * H, "document")
    before = list(EditorWindow.windows)
    [created] = panel.apply_results([rec])
    [new_window] = [w for w in EditorWindow.windows if w not in before]
    assert new_window.document.size == (4 * W, 4 * H)
    assert [la.name for la in new_window.document.layers] == ["[Upscale x4] (seed 3)"]
    assert [la.name for la in doc.layers] == ["Background"]        # the source document is untouched
    assert created.name.startswith("dock-test")


def test_expand_from_the_layer_action_to_a_grown_canvas_undone_in_one_step(qtbot, window, session, models):
    """The Expand action opens the mode (it waits for the prompt); the job paints the new border in
    several passes; Apply grows the canvas (the old pixels shifted bit for bit) and adds the layer; one
    undo step restores the old canvas; the preview waits for the grown canvas."""
    doc, panel = window.document, window.panel
    select_rect(doc, 80, 40, 16, 24)                       # touching two edges: Expand does not use it
    window.controller.trigger("diffusion_dock_expand", "layer_menu")
    assert panel.mode == "expand" and panel.form.prompt.hasFocus()
    for name, value in (("expand_left", 0), ("expand_top", 20), ("expand_right", 60), ("expand_bottom", 0)):
        panel.form.expand_boxes[name].setValue(value)
    fill_form(panel, mode="expand", prompt="more city", steps=1, seed="8")
    panel.form.num_images.setValue(2)
    item = wait_job(panel.generate())
    assert item.state == "done", item.message
    req = item.prepared.request
    assert req.mask is None and req.canvas == (W, H)
    first, second = sorted(item.results, key=lambda r: r.index)
    assert (first.x, first.y, first.width, first.height) == (0, 0, W + 60, H + 20)
    assert doc.preview is None and "Apply grows the canvas to 156×84" in panel.result_info.text()
    local = run_job(req, models)
    assert local.timings["passes"] > 1
    assert session.store.pixels(first.id) == local.patches[0].image.data
    steps = doc.undo_stack.count()
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert doc.size == (W + 60, H + 20)
    assert [la.name for la in doc.layers] == ["[Expand] more city (seed 8)", "Background"]
    assert layer_array(doc.layers[1].image)[20:, :W].tobytes() == window.source.tobytes()
    assert np.array_equal(layer_array(doc.layers[0].image),
                          np.frombuffer(local.patches[0].image.data, np.uint8).reshape(H + 20, W + 60, 4))
    assert doc.undo_stack.count() == steps + 1
    # The other image of the job previews on the grown canvas and goes on it without growing it again.
    panel.results.clearSelection()
    panel.results.item_of(second.id).setSelected(True)
    assert doc.preview is not None
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert doc.size == (W + 60, H + 20) and len(doc.layers) == 3 and doc.undo_stack.count() == steps + 2
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    assert doc.size == (W, H) and [la.name for la in doc.layers] == ["Background"]
    assert np.array_equal(layer_array(doc.layers[0].image), window.source)
    doc.undo_stack.redo()
    assert doc.size == (W + 60, H + 20) and len(doc.layers) == 2
