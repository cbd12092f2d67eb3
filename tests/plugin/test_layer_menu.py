"""The Layers-docker menu hook on a widget tree shaped like Krita's (a dock ``KisLayerBox`` holding
a view ``listLayers`` that builds a local QMenu and runs it on a context-menu request)."""

from __future__ import annotations

import pytest

from plugin.diffusion_dock.krita.layer_menu import LayerMenuHook, is_layer_view_viewport
from plugin.diffusion_dock.runtime.qt import QAction, QPoint, QtCore, QtGui, QTimer, QtWidgets


class FakeLayerView(QtWidgets.QListView):
    """Like Krita's NodeView + KisLayerBox: a context menu event builds a menu and exec()s it."""

    def __init__(self, name):
        super().__init__()
        self.setObjectName(name)
        self.setModel(QtCore.QStringListModel(["Layer 1", "Background"]))
        self.seen = None

    def contextMenuEvent(self, event):
        menu = QtWidgets.QMenu(self)
        menu.addAction("Properties...")
        menu.addAction("Remove Layer")
        QTimer.singleShot(50, lambda: self._inspect(menu))
        menu.exec(event.globalPos())

    def _inspect(self, menu):
        self.seen = [a.text() for a in menu.actions()]
        menu.close()


@pytest.fixture
def layer_box(qtbot):
    box = QtWidgets.QDockWidget("Layers")
    box.setObjectName("KisLayerBox")
    view = FakeLayerView("listLayers")
    box.setWidget(view)
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    return box, view


@pytest.fixture
def entries(qtbot):
    return [QAction(text) for text in ("Inpaint selection…", "Restyle layer…")]


@pytest.fixture
def hook(entries):
    h = LayerMenuHook(lambda: entries)
    assert h.install()
    yield h
    h.uninstall()


def right_click(view):
    pos = view.visualRect(view.model().index(0, 0)).center()
    event = QtGui.QContextMenuEvent(QtGui.QContextMenuEvent.Reason.Mouse, pos, view.viewport().mapToGlobal(pos))
    QtWidgets.QApplication.sendEvent(view.viewport(), event)


def test_entries_are_appended_to_the_layer_menu(qtbot, layer_box, hook):
    _, view = layer_box
    right_click(view)
    assert view.seen == ["Properties...", "Remove Layer", "", "Inpaint selection…", "Restyle layer…"]
    assert hook.menus_extended == 1 and hook.failed is None


def test_other_menus_and_other_views_are_left_alone(qtbot, layer_box, hook):
    other = FakeLayerView("someOtherList")
    qtbot.addWidget(other)
    other.show()
    qtbot.waitExposed(other)
    right_click(other)
    assert other.seen == ["Properties...", "Remove Layer"]
    # A menu opened later, not from a layer-view request, is untouched (the hook disarmed itself).
    _, view = layer_box
    right_click(view)
    qtbot.wait(10)
    menu = QtWidgets.QMenu()
    menu.addAction("only")
    QTimer.singleShot(30, menu.close)
    menu.exec(QPoint(0, 0))
    assert [a.text() for a in menu.actions()] == ["only"]


def test_a_failing_hook_uninstalls_itself_and_the_menu_still_works(qtbot, layer_box):
    def broken():
        raise RuntimeError("Krita changed")

    h = LayerMenuHook(broken)
    h.install()
    _, view = layer_box
    right_click(view)
    assert view.seen == ["Properties...", "Remove Layer"]
    assert h.failed == "RuntimeError: Krita changed" and not h.installed


def test_recognises_the_layer_view_and_its_viewport(layer_box):
    box, view = layer_box
    assert is_layer_view_viewport(view.viewport()) and is_layer_view_viewport(view)
    assert not is_layer_view_viewport(box) and not is_layer_view_viewport(None)
