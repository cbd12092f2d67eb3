"""Test driver plugin for the full Krita under Xvfb.  Waits for the main window, runs the scenario
from a timer, writes JSON results to $DD_TEST_OUT and leaves with os._exit (no save prompts).

After the registration checks it runs a real job through the dock: a tiny-model inpaint of a
selection, started from the action and Ctrl+Enter, applied with the dock's Apply button, then
undone.  The request the dock sent and the pixels Krita ends up with are written beside $DD_TEST_OUT
so that the test can run the same request in its own process and compare.  With $DD_SCREENSHOT set,
it then opens $DD_SAMPLE, fills the selection $DD_SAMPLE_MASK through the dock and grabs the window."""

import json
import os
import sys
import time
import traceback

from krita import Krita, Selection
from PyQt5.QtCore import QByteArray, QPoint, Qt, QTimer
from PyQt5.QtGui import QContextMenuEvent, QImage
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QAbstractItemView, QApplication, QDockWidget, QMenu

OUT = os.environ.get("DD_TEST_OUT", "/tmp/dd_test_driver.json")
OUT_DIR = os.path.dirname(OUT)
results = {"steps": []}


def finish(code=0):
    try:
        for doc in Krita.instance().documents():
            doc.setModified(False)
    except Exception:
        pass
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1)
    os._exit(code)


def settle(doc=None, rounds=5):
    for _ in range(rounds):
        QApplication.processEvents()
        if doc is not None:
            doc.waitForDone()


def layer_names(doc):
    return [n.name() for n in reversed(doc.rootNode().childNodes()) if not n.type().endswith("mask")]


def step(name):
    results["steps"].append(name)


def scenario():
    try:
        run()
        if os.environ.get("DD_DRIVER_REGISTRATION_ONLY"):   # a plugin imported from the release zip
            finish(0)
        if os.environ.get("DD_DRIVER_SETUP"):                # the first run from the zip: setup, then a job
            run_setup_flow()
            finish(0)
        run_dock_job()
        run_live()
        if os.environ.get("DD_SCREENSHOT"):
            run_screenshot()
        finish(0)
    except Exception:
        results["crash"] = traceback.format_exc()
        finish(2)


def spin(predicate, timeout, what):
    """Let Krita's event loop (and the dock's asyncio callbacks riding on it) run until ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.005)


def pattern(w, h):
    """The test document's pixels (BGRA U8); tests/plugin/test_krita_plugin.py makes the same."""
    out = bytearray(w * h * 4)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 4
            out[i:i + 4] = bytes(((x * 7 + y * 3) % 256, (x * 2 + y * 11) % 256, (x * y) % 256, 255))
    return bytes(out)


def dump(name, data):
    with open(os.path.join(OUT_DIR, name), "wb") as f:
        f.write(bytes(data))


def run_dock_job():
    """A tiny-model inpaint through the dock, from the action to the new layer, then undo."""
    from diffusion_dock.krita import plugin

    k = Krita.instance()
    window = k.activeWindow()
    w, h = 64, 48
    doc = k.createDocument(w, h, "ddjob", "RGBA", "U8", "", 72.0)
    window.addView(doc)
    settle(doc)
    bg = doc.rootNode().childNodes()[0]
    bg.setPixelData(QByteArray(pattern(w, h)), 0, 0, w, h)
    sel = Selection()
    sel.select(20, 12, 22, 18, 255)
    doc.setSelection(sel)
    settle(doc)
    doc.refreshProjection()
    settle(doc)
    dump("projection_before.raw", doc.pixelData(0, 0, w, h))
    panel = plugin.CONTROLLER.panel()
    session = panel.session
    spin(lambda: session.status.state == "ready" and session.capabilities is not None, 120, "the engine")
    idle = type("Idle", (), {"max_stall_ms": 0.0})()      # the event loop's own stalls, no job running
    session.meter.watch(idle)
    idle_end = time.monotonic() + 2.0
    spin(lambda: time.monotonic() > idle_end, 5, "two idle seconds")
    session.meter.unwatch(idle)
    results["idle_stall_ms"] = idle.max_stall_ms
    results["engine_text"] = panel.engine_bar.label.text()
    results["engine_device"] = session.capabilities.device
    step("engine ready")

    k.action("diffusion_dock_inpaint").trigger()
    settle()
    results["after_inpaint_action"] = {"mode": panel.mode,
                                       "prompt_focus": panel.form.prompt.window().focusWidget() is panel.form.prompt}
    panel.form.prompt.setPlainText("red scarf")
    panel.form.steps.setValue(2)
    panel.form.num_images.setValue(2)
    panel.form.seed.setText("1234")
    n = len(session.items)
    QTest.keyClick(panel.form.prompt, Qt.Key_Return, Qt.ControlModifier)
    results["ctrl_enter_submitted"] = len(session.items) == n + 1
    item = session.items[-1]
    spin(lambda: item.final and item.finished is not None, 180, "the inpaint job")
    results["job"] = {"state": item.state, "message": item.message, "code": item.code,
                      "max_stall_ms": item.max_stall_ms, "prepare_ms": item.prepare_ms}
    step("job finished")
    if item.state != "done":
        return
    req = item.prepared.request
    dump("request_image.raw", req.image.data)
    dump("request_mask.raw", req.mask.data)
    results["request"] = req.to_dict()
    rec = item.results[0]
    results["result"] = {"id": rec.id, "name": rec.name, "x": rec.x, "y": rec.y, "width": rec.width,
                         "height": rec.height, "format": rec.format,
                         "stored": session.store.get(rec.id) is not None}
    results["preview_layers"] = layer_names(doc)
    results["preview_locked"] = [n.locked() for n in doc.rootNode().childNodes() if n.name().startswith("[Preview]")]
    from diffusion_dock.krita.host import node_id

    def preview_ids():
        return [node_id(n) for n in doc.rootNode().childNodes() if n.name().startswith("[Preview]")]

    ids = [preview_ids()]
    strip = panel.results                       # browse: the other image, then back to the first
    strip.setCurrentItem(strip.item_of(item.results[1].id))      # as a click selects it
    settle(doc)
    results["browse_layers"] = layer_names(doc)
    ids.append(preview_ids())
    strip.clearSelection()                                         # through no selection
    strip.item_of(rec.id).setSelected(True)
    settle(doc)
    results["back_layers"] = layer_names(doc)
    ids.append(preview_ids())
    results["preview_node_ids"] = ids
    QTest.mouseClick(panel.apply_button, Qt.LeftButton)
    settle(doc)
    doc.refreshProjection()
    settle(doc)
    results["after_job_apply"] = layer_names(doc)
    top = [n for n in reversed(doc.rootNode().childNodes()) if not n.type().endswith("mask")][0]
    dump("new_layer.raw", top.pixelData(0, 0, w, h))
    dump("source_after.raw", bg.pixelData(0, 0, w, h))
    dump("projection_after.raw", doc.pixelData(0, 0, w, h))
    from diffusion_dock.krita.host import KritaHost

    results["provenance"] = KritaHost(doc).active_document().provenance(node_id(top))
    results["stored_state"] = session.store.get(rec.id).state
    k.action("edit_undo").trigger()
    settle(doc)
    results["after_job_undo"] = layer_names(doc)
    k.action("edit_undo").trigger()           # one more: what the preview left in the undo history
    settle(doc)
    results["after_second_undo"] = layer_names(doc)
    step("dock job checked")


def run_live():
    """Live on its own document: the first frame, a few edits (pixels written as a stroke writes them,
    then a selection), each followed by a newer frame in the one preview layer; Live off; Live again
    and Apply.  What Krita's undo action would undo at each point is recorded."""
    from diffusion_dock.krita import plugin
    from diffusion_dock.krita.host import node_id

    k = Krita.instance()
    window = k.activeWindow()
    w, h = 64, 48
    doc = k.createDocument(w, h, "ddlive", "RGBA", "U8", "", 72.0)
    window.addView(doc)
    settle(doc)
    bg = doc.rootNode().childNodes()[0]
    bg.setPixelData(QByteArray(pattern(w, h)), 0, 0, w, h)
    doc.refreshProjection()
    settle(doc)
    panel = plugin.CONTROLLER.panel()
    live = panel.live
    panel.set_mode("live")
    panel.form.prompt.setPlainText("a glass vase")
    settle()
    out = results["live"] = {"bar_visible": panel.live_bar.isVisible(), "undo_text_before": k.action("edit_undo").text(),
                             "frames": []}

    def settled():
        return live.in_flight == 0 and not live._timer.isActive() and live.shown is not None \
            and live.shown_seq == live.seq

    def spin_live(predicate, timeout, what):
        try:
            spin(predicate, timeout, what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; Live: active {live.active}, seq {live.seq}, shown {live.shown_seq}, "
                               f"in flight {live.in_flight}, counts {live.counts}, message {live.message!r}, "
                               f"layers {layer_names(doc)}") from None

    def frame(what):
        item = live.shown
        req = item.prepared.request
        region = (req.origin[0], req.origin[1], req.image.width, req.image.height)
        previews = [n for n in doc.rootNode().childNodes() if n.name().startswith("[Preview]")]
        patch = item.result.patches[0]
        shown = bytes(previews[0].pixelData(patch.x, patch.y, patch.image.width, patch.image.height)) if previews else b""
        out["frames"].append({
            "what": what, "seq": live.shown_seq, "sent": live.counts["sent"], "layers": layer_names(doc),
            "preview_ids": [node_id(n) for n in previews], "active": doc.activeNode().name() if doc.activeNode() else None,
            "request_is_layer": req.image.data == bytes(bg.pixelData(*region)), "has_mask": req.mask is not None,
            "shown_is_patch": shown == bytes(patch.image.data), "mode": req.mode})

    panel.live_bar.toggle.setChecked(True)
    spin_live(settled, 120, "the first Live frame")
    frame("first")
    for i in range(3):                                     # strokes: the layer's pixels change
        sent = live.counts["sent"]
        block = bytes([(40 * i + 9) % 256, 200, (90 * i) % 256, 255]) * 64
        bg.setPixelData(QByteArray(block), 8 + 12 * i, 10, 8, 8)
        doc.refreshProjection()
        spin_live(lambda sent=sent: live.counts["sent"] > sent and settled(), 90, f"the frame of edit {i}")
        frame(f"edit {i}")
    sent = live.counts["sent"]
    sel = Selection()
    sel.select(10, 8, 30, 20, 255)
    doc.setSelection(sel)
    spin_live(lambda: live.counts["sent"] > sent and settled(), 90, "the frame of the selection")
    frame("selection")
    out["undo_text_live"] = k.action("edit_undo").text()
    panel.live_bar.toggle.setChecked(False)
    settle(doc)
    out["off_layers"] = layer_names(doc)
    out["off_active"] = live.active
    out["undo_text_off"] = k.action("edit_undo").text()
    # Live again, then Apply: the frame becomes the layer.
    panel.live_bar.toggle.setChecked(True)
    spin_live(settled, 90, "a frame to apply")
    item = live.shown
    panel.live_bar.apply_button.click()
    settle(doc)
    out["applied_layers"] = layer_names(doc)
    out["applied_active"] = live.active
    out["applied_stored"] = [panel.session.store.get(rec.id).state for rec in item.results]
    k.action("edit_undo").trigger()
    settle(doc)
    out["after_apply_undo"] = layer_names(doc)
    step("live checked")


def run_screenshot():
    """The sample image with its mask as the selection, filled through the dock, the window grabbed."""
    from diffusion_dock.krita import plugin

    k = Krita.instance()
    window = k.activeWindow()
    for old in list(k.documents()):           # the test documents: not in the picture
        old.setModified(False)
        old.close()
    settle()
    doc = k.openDocument(os.environ["DD_SAMPLE"])
    window.addView(doc)
    settle(doc)
    qwin = window.qwindow()
    sw, sh = (int(v) for v in os.environ.get("DD_SCREEN_SIZE", "1600x1000").split("x"))
    qwin.setGeometry(0, 0, sw, sh)             # no window manager under Xvfb: size it ourselves
    ours = None
    for dock in qwin.findChildren(QDockWidget):
        if dock.objectName() == "diffusion_dock":
            ours = dock
        elif dock.objectName() != "ToolBox":
            dock.hide()
    ours.show()
    qwin.resizeDocks([ours], [440], Qt.Horizontal)
    settle()
    mask = QImage(os.environ["DD_SAMPLE_MASK"]).convertToFormat(QImage.Format_Grayscale8)
    w, h = mask.width(), mask.height()
    ptr = mask.constBits()
    ptr.setsize(mask.sizeInBytes())
    raw = bytes(ptr)
    rows = b"".join(raw[y * mask.bytesPerLine():y * mask.bytesPerLine() + w] for y in range(h))
    sel = Selection()
    sel.setPixelData(QByteArray(rows), 0, 0, w, h)
    doc.setSelection(sel)
    settle(doc)
    panel = plugin.CONTROLLER.panel()
    n = len(panel.session.items)
    k.action("diffusion_dock_fill").trigger()
    settle()
    if len(panel.session.items) == n:
        results["screenshot_error"] = panel.last_message
        return
    item = panel.session.items[-1]
    spin(lambda: item.final and item.finished is not None, 120, "the fill")
    k.action("deselect").trigger()      # the selection outline would hide the result
    settle(doc)
    panel.set_mode("inpaint")                # the full form, with the fill's result in the strip
    panel.form.prompt.setPlainText("a wooden bench in a green meadow, soft afternoon light")
    for _ in range(40):
        settle(doc)
        time.sleep(0.05)
    qwin.grab().save(os.environ["DD_SCREENSHOT"])
    results["screenshot"] = {"state": item.state, "message": item.message, "layers": layer_names(doc)}


def run():
    k = Krita.instance()
    step("start")
    results["plugin_loaded"] = "diffusion_dock" in sys.modules
    from diffusion_dock.krita import plugin
    from diffusion_dock.krita.host import KritaHost
    from diffusion_dock.panel import actions as A
    from diffusion_dock.runtime.coreapi import jobs
    from diffusion_dock.runtime.qt import BINDING

    results["binding"] = BINDING
    results["registered"] = plugin._registered
    results["generic_modules"] = sorted(m for m in ("core", "qasync", "plugin") if m in sys.modules)
    results["dockers"] = [d.objectName() for d in k.dockers()]
    window = k.activeWindow()
    qwin = window.qwindow()
    dock = qwin.findChild(QDockWidget, A.DOCK_ID)
    results["dock_found"] = dock is not None
    results["dock_panel"] = type(dock.widget()).__name__ if dock else None
    results["package_file"] = sys.modules["diffusion_dock"].__file__
    results["actions"] = {}
    for spec in A.ACTIONS:
        action = k.action(spec.id)
        results["actions"][spec.id] = None if action is None else {
            "text": action.text(), "shortcut": action.shortcut().toString()}
    tools = plugin.tools_menu(qwin)
    sub = tools.findChild(QMenu, plugin.SUBMENU_NAME) if tools else None
    results["tools_submenu"] = None if sub is None else [a.objectName() for a in sub.actions()]
    results["tools_entries"] = [a.text() for a in tools.actions()] if tools else None
    step("registration checked")

    results["enabled_without_doc"] = {spec.id: k.action(spec.id).isEnabled() for spec in A.ACTIONS}
    doc = k.createDocument(64, 48, "ddgui", "RGBA", "U8", "", 72.0)
    window.addView(doc)
    settle(doc)
    results["active_layer"] = doc.activeNode().name() if doc.activeNode() else None
    results["enabled_with_layer"] = {spec.id: k.action(spec.id).isEnabled() for spec in A.ACTIONS}

    # Actions reach the controller and the dock.
    dock.hide()
    k.action("diffusion_dock_show").trigger()
    settle()
    results["show_makes_visible"] = dock.isVisible()
    k.action("diffusion_dock_restyle").trigger()
    settle()
    ctrl = plugin.CONTROLLER
    results["after_restyle"] = {"history": ctrl.history[-1:], "mode": ctrl.panel().mode if ctrl.panel() else None}
    step("actions checked")

    # The Layers docker's right-click menu.
    box = qwin.findChild(QDockWidget, "KisLayerBox")
    view = box.findChild(QAbstractItemView, "listLayers") if box else None
    results["layer_view_found"] = view is not None
    seen = {}

    def inspect_menu():
        menu = QApplication.activePopupWidget()
        seen["menu"] = None if menu is None else [a.text() for a in menu.actions()]
        if menu is not None:
            menu.close()

    if view is not None:
        index = view.model().index(0, 0)
        pos = view.visualRect(index).center()
        QTimer.singleShot(700, inspect_menu)
        event = QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos))
        QApplication.sendEvent(view.viewport(), event)
        settle()
    hook = None
    for ext in k.extensions():
        if type(ext).__name__ == "DiffusionDockExtension":
            hook = ext.layer_menu
    results["layer_menu"] = seen.get("menu")
    results["hook"] = None if hook is None else {"installed": hook.installed, "failed": hook.failed,
                                                 "menus_extended": hook.menus_extended}
    # A menu opened afterwards elsewhere is left alone.
    other = {}

    def inspect_other():
        m = QApplication.activePopupWidget()
        other["menu"] = None if m is None else [a.text() for a in m.actions()]
        if m is not None:
            m.close()

    plain = QMenu(qwin)
    plain.addAction("only entry")
    QTimer.singleShot(500, inspect_other)
    plain.exec(QPoint(10, 10))
    results["other_menu"] = other.get("menu")
    step("layer menu checked")

    # A result layer through the host, then undo/redo with Krita's own actions.
    d = KritaHost(doc).active_document()
    src = d.active_layer()
    results["host_active_layer"] = None if src is None else src.name
    patch = jobs.Patch(5, 6, jobs.ImageBuffer(4, 3, "BGRA_U8", bytes([0, 0, 255, 255]) * 12), 7)
    prov = {"mode": "fill", "model": None, "seed": 7, "params": {"prompt": ""}, "options": {}}
    d.show_preview(src.id, patch, "preview")
    settle(doc)
    results["with_preview"] = layer_names(doc)
    d.clear_preview()
    settle(doc)
    info = d.add_result_layer(src.id, patch, jobs.result_name("fill", "", 7), prov)
    settle(doc)
    results["after_apply"] = layer_names(doc)
    k.action("edit_undo").trigger()
    settle(doc)
    results["after_undo"] = layer_names(doc)
    k.action("edit_redo").trigger()
    settle(doc)
    results["after_redo"] = layer_names(doc)
    results["provenance_after_redo"] = d.provenance(info.id)
    step("undo checked")
    check_expand_undo(k, doc, d, src)


def check_expand_undo(k, doc, d, src):
    """An expand result through the host, then Krita's own undo and redo: what they do to the canvas
    size, the layers and the old pixels' place (Krita 5 has no undo macro for scripts)."""
    from diffusion_dock.runtime.coreapi import expand, jobs

    w, h = doc.width(), doc.height()
    node = d.node(src.id)
    marker = bytes([10, 20, 30, 255]) * 4
    node.setPixelData(QByteArray(marker), 0, 0, 2, 2)       # the old top-left corner, to find after the move
    settle(doc)
    growth = expand.Growth(8, 0, 24, 0)
    nw, nh = growth.canvas((w, h))
    pixels = bytearray(bytes([0, 160, 0, 255]) * (nw * nh))
    for y in range(nh):                                       # all zero over the old canvas
        pixels[(y * nw + 8) * 4:(y * nw + 8 + w) * 4] = bytes(w * 4)
    patch = jobs.Patch(0, 0, jobs.ImageBuffer(nw, nh, "BGRA_U8", bytes(pixels)), 5)
    prov = {"mode": "expand", "model": None, "seed": 5, "params": {"prompt": "more"},
            "options": {"expand_left": 8, "expand_right": 24}}
    d.add_expanded_layer(src.id, growth, patch, "[Expand] more (seed 5)", prov)
    settle(doc)

    def state():
        return {"size": [doc.width(), doc.height()], "layers": layer_names(doc),
                "corner_at_8": bytes(d.node(src.id).pixelData(8, 0, 2, 2)) == marker,
                "corner_at_0": bytes(d.node(src.id).pixelData(0, 0, 2, 2)) == marker}

    results["expand_applied"] = state()
    seen = []
    for action in ("edit_undo", "edit_undo", "edit_redo", "edit_redo"):
        k.action(action).trigger()
        settle(doc)
        seen.append(state())
    results["expand_undo_redo"] = seen
    step("expand undo checked")


def run_setup_flow():
    """No engine yet: the dock shows its setup page; Install (into $DD_TEST_VENV) against the fake hub; then
    an inpaint of a selection with the chosen model and a LoRA, applied as a new layer."""
    from diffusion_dock.krita import plugin
    from diffusion_dock.runtime.stall import StallMeter

    t_start = time.monotonic()
    k = Krita.instance()
    k.action("diffusion_dock_show").trigger()
    settle()
    panel = plugin.CONTROLLER.panel()
    session = panel.session
    session.start_engine()
    spin(lambda: panel.pages.setup_page is not None, 30, "the setup page")
    page = panel.pages.setup_page
    results["setup_page_shown"] = panel.pages.currentIndex() != 0
    results["engine_status_code"] = session.status.code
    if os.environ.get("DD_TEST_WHEELS"):                  # the Wheel folder field, as an artist fills it
        page.wheels.setText(os.environ["DD_TEST_WHEELS"])
    page.set_location(os.environ["DD_TEST_VENV"])
    spin(lambda: page.plan_run.exit_code is not None, 60, "the setup plan")
    results["setup_plan"] = {"hardware": page.hardware.text(), "torch": page.torch.text(), "disk": page.disk.text()}

    class Watch:
        max_stall_ms = 0.0

    from diffusion_dock.session.setup_runner import SetupRun

    handler_ms = {}        # the longest the dock's code ran for one event of the installer, by handler

    def timed(name):
        f = getattr(SetupRun, name)

        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                handler_ms[name] = max(handler_ms.get(name, 0.0), round((time.perf_counter() - t) * 1000, 1))
        setattr(SetupRun, name, wrapper)

    for name in ("start", "_read", "_read_err", "_finished"):
        timed(name)
    step_times = {}        # each step's seconds, from its start event to its end event

    handle = SetupRun.handle

    def timed_steps(self, line, now):
        if line.startswith('{"ev": "step"'):
            ev = json.loads(line)
            if ev.get("state") == "start":
                step_times[ev["step"]] = -now
            elif ev["step"] in step_times and step_times[ev["step"]] < 0:
                step_times[ev["step"]] = round(now + step_times[ev["step"]], 1)
        return handle(self, line, now)
    SetupRun.handle = timed_steps
    results["setup_step_seconds"] = step_times
    results["setup_handler_ms"] = handler_ms
    meter, watch = StallMeter(), Watch()
    meter.watch(watch)
    t0 = time.monotonic()
    page.install_button.click()
    spin(lambda: page.run is not None and page.run.exit_code is not None, 600, "the setup")
    meter.unwatch(watch)
    results["setup_seconds"] = round(time.monotonic() - t0, 1)
    results["setup_stall_ms"] = round(watch.max_stall_ms, 1)
    results["setup_exit"] = page.run.exit_code
    results["setup_errors"] = page.run.errors
    results["setup_steps"] = {s: b.format() for s, b in page.step_bars.items()}
    results["setup_files"] = {n: b.format() for n, b in page._file_bars.items()}
    results["setup_commands"] = [line for line in page.run.log if line.startswith("$ ")]
    if page.run.exit_code != 0:
        results["setup_log"] = page.run.log[-40:]
        return
    step("setup done")
    spin(lambda: session.capabilities is not None and session.status.state == "ready", 180, "the engine")
    results["back_to_form"] = panel.pages.currentIndex() == 0
    w, h = 64, 48
    window = k.activeWindow()
    doc = k.createDocument(w, h, "ddfirst", "RGBA", "U8", "", 72.0)
    window.addView(doc)
    settle(doc)
    doc.rootNode().childNodes()[0].setPixelData(QByteArray(pattern(w, h)), 0, 0, w, h)
    sel = Selection()
    sel.select(20, 12, 22, 18, 255)
    doc.setSelection(sel)
    settle(doc)
    panel.canvas_changed()
    panel.set_mode("inpaint")
    form = panel.form
    form.model_box.setCurrentIndex(form.model_box.findData("sd2-inpainting"))
    results["models_offered"] = [form.model_box.itemData(i) for i in range(form.model_box.count())]
    results["loras_offered"] = list(form.loras._rows)
    box, spin_box = form.loras._rows["tiny-lora.safetensors"]
    box.setChecked(True)
    spin_box.setValue(0.8)
    form.prompt.setPlainText("red scarf")
    form.steps.setValue(2)
    form.seed.setText("77")
    item = panel.generate()
    results["generate_message"] = panel.last_message
    if item is None:
        return
    spin(lambda: item.final and item.finished is not None, 300, "the first job")
    results["job_state"] = str(item.state.value if hasattr(item.state, "value") else item.state)
    results["job_message"] = item.message
    if item.results:
        prov = item.results[0].provenance
        results["job_provenance"] = {"model": prov.get("model"), "loras": prov.get("params", {}).get("loras")}
        panel.apply_results([item.results[0]])
        settle(doc)
        results["layers_after_apply"] = layer_names(doc)
    results["driver_seconds_to_result"] = round(time.monotonic() - t_start, 1)
    step("first result applied")


def on_window():
    QTimer.singleShot(1500, scenario)


QTimer.singleShot(int(os.environ.get("DD_DRIVER_TIMEOUT_MS", "240000")), lambda: (results.__setitem__("timeout", True), finish(3)))
Krita.instance().notifier().windowCreated.connect(on_window)
