"""Test driver plugin for the full Krita under Xvfb.  Waits for the main window, runs the scenario
from a timer, writes JSON results to $DD_TEST_OUT and leaves with os._exit (no save prompts)."""

import json
import os
import sys
import traceback

from krita import Krita
from PyQt5.QtCore import QPoint, QTimer
from PyQt5.QtGui import QContextMenuEvent
from PyQt5.QtWidgets import QAbstractItemView, QApplication, QDockWidget, QMenu

OUT = os.environ.get("DD_TEST_OUT", "/tmp/dd_test_driver.json")
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
        finish(0)
    except Exception:
        results["crash"] = traceback.format_exc()
        finish(2)


def run():
    k = Krita.instance()
    step("start")
    results["plugin_loaded"] = "diffusion_dock" in sys.modules
    from diffusion_dock import actions as A
    from diffusion_dock import krita_plugin
    from diffusion_dock.coreapi import jobs
    from diffusion_dock.krita_host import KritaHost
    from diffusion_dock.qt import BINDING

    results["binding"] = BINDING
    results["registered"] = krita_plugin._registered
    results["generic_modules"] = sorted(m for m in ("core", "qasync", "plugin") if m in sys.modules)
    results["dockers"] = [d.objectName() for d in k.dockers()]
    window = k.activeWindow()
    qwin = window.qwindow()
    dock = qwin.findChild(QDockWidget, A.DOCK_ID)
    results["dock_found"] = dock is not None
    results["dock_panel"] = type(dock.widget()).__name__ if dock else None
    results["actions"] = {}
    for spec in A.ACTIONS:
        action = k.action(spec.id)
        results["actions"][spec.id] = None if action is None else {
            "text": action.text(), "shortcut": action.shortcut().toString()}
    tools = krita_plugin.tools_menu(qwin)
    sub = tools.findChild(QMenu, krita_plugin.SUBMENU_NAME) if tools else None
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
    ctrl = krita_plugin.CONTROLLER
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
    info = d.add_result_layer(src.id, patch, jobs.layer_name("fill", "", 7), prov)
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


def on_window():
    QTimer.singleShot(1500, scenario)


QTimer.singleShot(90000, lambda: (results.__setitem__("timeout", True), finish(3)))
Krita.instance().notifier().windowCreated.connect(on_window)
