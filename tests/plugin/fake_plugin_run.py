"""The plugin's Krita registration (krita/plugin.py, krita/layer_menu.py) on the fake Krita in this
process (PyQt6): what Krita's start-up, views, selections, actions and undo do to it.  One scenario
per session; tests/plugin/test_fake_krita_plugin.py judges its observations and
tests/plugin/test_fake_krita_api.py checks the Krita calls it made against the .sip files."""

from __future__ import annotations

import time

from tests.fake_krita import load_in_process


def settle(app, rounds: int = 5) -> None:
    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.002)


def layer_names(doc) -> list[str]:
    return [n.name() for n in reversed(doc.rootNode().childNodes()) if not n.type().endswith("mask")]


def expand_undo(app, doc, d, src) -> dict:
    """An expand result through the host, then Krita's own undo and redo: the canvas size, the layers
    and where the old top-left corner is (the same scenario as the real Krita's test driver)."""
    from plugin.diffusion_dock.runtime.coreapi import expand, jobs
    from plugin.diffusion_dock.runtime.qt import QByteArray

    w, h = doc.width(), doc.height()
    marker = bytes([10, 20, 30, 255]) * 4
    d.node(src.id).setPixelData(QByteArray(marker), 0, 0, 2, 2)
    growth = expand.Growth(8, 0, 24, 0)
    nw, nh = growth.canvas((w, h))
    pixels = bytearray(bytes([0, 160, 0, 255]) * (nw * nh))
    for y in range(nh):                                       # all zero over the old canvas
        pixels[(y * nw + 8) * 4:(y * nw + 8 + w) * 4] = bytes(w * 4)
    patch = jobs.Patch(0, 0, jobs.ImageBuffer(nw, nh, "BGRA_U8", bytes(pixels)), 5)
    prov = {"mode": "expand", "model": None, "seed": 5, "params": {"prompt": "more"},
            "options": {"expand_left": 8, "expand_right": 24}}
    d.add_expanded_layer(src.id, growth, patch, "[Expand] more (seed 5)", prov)

    def state():
        return {"size": [doc.width(), doc.height()], "layers": layer_names(doc),
                "corner_at_8": bytes(d.node(src.id).pixelData(8, 0, 2, 2)) == marker,
                "corner_at_0": bytes(d.node(src.id).pixelData(0, 0, 2, 2)) == marker}

    out = {"expand_applied": state(), "expand_undo_redo": []}
    for action in ("edit_undo", "edit_undo", "edit_redo", "edit_redo"):
        app.action(action).trigger()
        out["expand_undo_redo"].append(state())
    return out


def run(qapp) -> dict:
    K = load_in_process()
    from plugin.diffusion_dock.krita import plugin as P
    from plugin.diffusion_dock.krita.host import KritaHost
    from plugin.diffusion_dock.panel import actions as A
    from plugin.diffusion_dock.runtime.coreapi import jobs
    from plugin.diffusion_dock.runtime.qt import QtWidgets
    from plugin.diffusion_dock.session import dock_session

    saved, dock_session._shared = dock_session._shared, dock_session.DockSession(autostart=False)
    K.CALLS.clear()
    out: dict = {"qt": K._qt.BINDING}
    app = K.Krita.instance()
    notifier = app.notifier()
    seen = {"activeViewChanged": 0, "viewCreated": 0, "windowCreated": 0, "canvases": []}
    notifier.viewCreated.connect(lambda v: seen.__setitem__("viewCreated", seen["viewCreated"] + 1))
    notifier.windowCreated.connect(lambda: seen.__setitem__("windowCreated", seen["windowCreated"] + 1))
    window = None
    try:
        P.register()
        P.register()                                      # once only
        out["extensions"] = [type(e).__name__ for e in app.extensions()]
        out["dock_right"] = repr(P.dock_right())
        window = K.boot()
        window.activeViewChanged.connect(lambda: seen.__setitem__("activeViewChanged", seen["activeViewChanged"] + 1))
        qwin = window.qwindow()
        dock = qwin.findChild(QtWidgets.QDockWidget, A.DOCK_ID)
        out["dock"] = None if dock is None else [type(dock).__name__, type(dock.widget()).__name__]
        original = dock.canvasChanged

        def spy(canvas):
            seen["canvases"].append(None if canvas is None else canvas.view().document().name())
            original(canvas)

        dock.canvasChanged = spy
        hook = app.extensions()[0].layer_menu
        out["hook"] = [hook.installed, hook.failed]
        out["actions"] = {a.id: app.action(a.id) is not None for a in A.ACTIONS}
        settle(qapp)
        tools = P.tools_menu(qwin)
        sub = tools.findChild(QtWidgets.QMenu, P.SUBMENU_NAME) if tools else None
        out["tools_submenu"] = None if sub is None else [a.objectName() for a in sub.actions()]
        panel = dock.panel
        qwin.show()                                       # the dock looks only while it is visible
        settle(qapp)
        out["context_without_document"] = panel.form.context.text()

        doc = app.createDocument(64, 48, "first", "RGBA", "U8", "", 72.0)
        view1 = window.addView(doc)
        settle(qapp)
        out["context_first"] = panel.form.context.text()
        out["looked_without_change"] = dock.look()
        sel = K.Selection()
        sel.select(20, 12, 22, 18, 255)
        doc.setSelection(sel)
        out["context_before_look"] = panel.form.context.text()
        out["looked_after_selection"] = dock.look()
        out["context_after_selection"] = panel.form.context.text()
        dock.watch.setInterval(10)
        app.action("deselect").trigger()
        deadline = time.monotonic() + 5
        while "selection 22" in panel.form.context.text() and time.monotonic() < deadline:
            settle(qapp, 1)
        out["context_after_deselect_by_timer"] = panel.form.context.text()
        dock.watch.setInterval(P.DiffusionDockWidget.WATCH_MS)

        doc2 = app.createDocument(32, 24, "second", "RGBA", "F32", "", 72.0)
        window.addView(doc2)
        settle(qapp)
        out["context_second"] = panel.form.context.text()
        window.showView(view1)
        settle(qapp)
        out["context_back"] = panel.form.context.text()

        # Results are undone and redone in one step each, with Krita's own actions.
        d = KritaHost().active_document()
        src = d.active_layer()
        patch = jobs.Patch(5, 6, jobs.ImageBuffer(4, 3, "BGRA_U8", bytes([0, 0, 255, 255]) * 12), 7)
        prov = {"mode": "fill", "model": None, "seed": 7, "params": {"prompt": ""}, "options": {}}
        d.show_preview(src.id, patch, "preview")
        out["with_preview"] = layer_names(doc)
        d.clear_preview()
        info = d.add_result_layer(src.id, patch, jobs.result_name("fill", "", 7), prov)
        out["after_apply"] = layer_names(doc)
        app.action("edit_undo").trigger()
        out["after_undo"] = layer_names(doc)
        app.action("edit_redo").trigger()
        out["after_redo"] = layer_names(doc)
        out["provenance_after_redo"] = d.provenance(info.id)
        out.update(expand_undo(app, doc, d, src))

        app.action("diffusion_dock_restyle").trigger()
        settle(qapp)
        out["after_restyle"] = [P.CONTROLLER.history[-1:], panel.mode]

        doc2.close()
        doc.close()
        settle(qapp)
        out["context_after_close"] = panel.form.context.text()
        out["signals"] = seen
        out["calls"] = sorted(K.CALLS)
        return out
    finally:                              # leave nothing active for the other tests of this process
        for ext in app.extensions():
            ext.layer_menu.uninstall()
        if window is not None:
            for d in window.qwindow().findChildren(P.DiffusionDockWidget):
                d.watch.stop()
            window.qwindow().hide()
        dock_session._shared = saved
