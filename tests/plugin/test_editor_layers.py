"""Layer operations of the standalone editor (document and layer panel), with undo and redo."""

from __future__ import annotations

import numpy as np

from plugin.diffusion_dock.runtime.qt import Qt, QtGui

from .editor_util import layer_array


def names(doc):
    return [layer.name for layer in doc.layers]


def state(doc):
    return [(layer.id, layer.name, layer.visible) for layer in doc.layers]


def test_add_hide_delete_reorder_rename_and_undo_all_of_it(editor_doc):
    doc = editor_doc
    assert names(doc) == ["Background"] and not doc.modified
    states = [state(doc)]
    a = doc.add_layer("A")
    b = doc.add_layer("B")                                  # above the active one (A)
    assert names(doc) == ["B", "A", "Background"] and doc.active_layer() is b
    states.append(state(doc))
    doc.set_visible(a.id, False)
    assert [layer.visible for layer in doc.layers] == [True, False, True]
    doc.lower_layer(b.id)
    assert names(doc) == ["A", "B", "Background"]
    doc.move_layer(doc.layers[2].id, 0)
    assert names(doc) == ["Background", "A", "B"]
    doc.rename_layer(a.id, "Sky")
    assert names(doc) == ["Background", "Sky", "B"]
    doc.remove_layer(b.id)
    assert names(doc) == ["Background", "Sky"]
    final = state(doc)
    assert doc.modified
    while doc.undo_stack.canUndo():
        doc.undo_stack.undo()
    assert state(doc) == states[0] and not doc.modified
    while doc.undo_stack.canRedo():
        doc.undo_stack.redo()
    assert state(doc) == final


def test_hidden_layers_leave_the_composite(editor_doc):
    doc = editor_doc
    top = doc.add_layer("red")
    top.image.fill(QtGui.QColor(255, 0, 0, 255))
    px = doc.composite().pixelColor(5, 5)
    assert (px.red(), px.green(), px.blue()) == (255, 0, 0)
    doc.set_visible(top.id, False)
    px = doc.composite().pixelColor(5, 5)
    assert (px.red(), px.green(), px.blue()) == (255, 255, 255)
    doc.undo_stack.undo()
    assert doc.composite().pixelColor(5, 5).green() == 0


def test_deleting_restores_pixels_and_position_on_undo(editor_doc):
    doc = editor_doc
    a = doc.add_layer("A")
    a.image.fill(QtGui.QColor(10, 20, 30, 40))
    before = layer_array(a.image).copy()
    doc.add_layer("B")
    doc.remove_layer(a.id)
    assert "A" not in names(doc)
    doc.undo_stack.undo()
    assert names(doc) == ["B", "A", "Background"]
    assert np.array_equal(layer_array(doc.layer(a.id).image), before)


def test_layer_panel_drives_the_document(qtbot, editor_window):
    doc = editor_window.document
    panel = editor_window.layers_panel
    panel.add_action.trigger()
    panel.add_action.trigger()
    assert names(doc) == ["Layer 3", "Layer 2", "Background"]
    assert [panel.list.item(i).text() for i in range(panel.list.count())] == names(doc)
    panel.list.setCurrentRow(2)                                   # Background
    assert doc.active_layer().name == "Background"
    panel.raise_action.trigger()
    assert names(doc) == ["Layer 3", "Background", "Layer 2"]
    item = panel.list.item(0)
    item.setCheckState(Qt.CheckState.Unchecked)                   # the visibility checkbox
    assert doc.layers[0].visible is False
    panel.list.item(2).setText("Sketch")                          # rename in place
    assert names(doc) == ["Layer 3", "Background", "Sketch"]
    panel.list.setCurrentRow(0)
    panel.delete_action.trigger()
    assert names(doc) == ["Background", "Sketch"]
    editor_window.undo_action.trigger()
    assert names(doc) == ["Layer 3", "Background", "Sketch"] and doc.layers[0].visible is False
    editor_window.undo_action.trigger()
    editor_window.undo_action.trigger()
    assert doc.layers[0].visible is True and names(doc)[2] == "Layer 2"
    editor_window.redo_action.trigger()
    assert doc.layers[0].visible is False and names(doc)[2] == "Layer 2"
    editor_window.redo_action.trigger()
    assert names(doc)[2] == "Sketch"


def test_last_layer_cannot_be_deleted(qtbot, editor_window):
    panel = editor_window.layers_panel
    assert not panel.delete_action.isEnabled()
    panel.delete_layer()
    assert names(editor_window.document) == ["Background"]


def test_window_title_marks_unsaved_changes(qtbot, editor_window):
    assert "*" not in editor_window.windowTitle()
    editor_window.document.add_layer()
    assert "*" in editor_window.windowTitle()
    editor_window.document.undo_stack.undo()
    assert "*" not in editor_window.windowTitle()


def test_content_bounds_follow_pixel_changes():
    from plugin.diffusion_dock.editor import pixels
    from plugin.diffusion_dock.editor.document import Layer

    layer = Layer("x", pixels.new_layer_image(64, 64))
    assert layer.content_bounds() is None
    pixels.write_rect(layer.image, 3, 4, 2, 2, b"\x01" * 16)
    assert layer.content_bounds().as_tuple() == (3, 4, 2, 2)
    p = QtGui.QPainter(layer.image)
    p.fillRect(50, 50, 3, 3, QtGui.QColor(0, 0, 0, 255))
    p.end()
    assert layer.content_bounds().as_tuple() == (3, 4, 50, 49)
