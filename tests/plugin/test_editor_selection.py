"""Selection tools of the standalone editor, driven with real mouse events on the canvas."""

from __future__ import annotations

import math

import numpy as np

from plugin.diffusion_dock.editor.canvas import Tool
from plugin.diffusion_dock.editor.pixels import new_mask
from plugin.diffusion_dock.editor.selection import SoftBrush
from plugin.diffusion_dock.runtime.qt import QPointF, Qt

from .editor_util import drag, mask_array

SHIFT = Qt.KeyboardModifier.ShiftModifier
ALT = Qt.KeyboardModifier.AltModifier


def rect_expected(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def test_rectangle_selects_exactly_the_dragged_pixels(qtbot, canvas):
    canvas.tool = Tool.RECT
    drag(qtbot, canvas, [(10, 20), (25, 30), (40, 50)])
    m = mask_array(canvas.doc.selection)
    assert np.array_equal(m, rect_expected(90, 120, 10, 20, 40, 50))
    assert canvas.doc.selection_bounds().as_tuple() == (10, 20, 30, 30)


def test_rectangle_dragged_backwards_and_clipped_to_the_canvas(qtbot, canvas):
    drag(qtbot, canvas, [(110, 80), (100, 10)])
    assert np.array_equal(mask_array(canvas.doc.selection), rect_expected(90, 120, 100, 10, 110, 80))
    drag(qtbot, canvas, [(100, 70), (150, 120)])            # past the bottom-right corner
    assert canvas.doc.selection_bounds().as_tuple() == (100, 70, 20, 20)


def test_ellipse_is_inscribed_and_antialiased(qtbot, canvas):
    canvas.tool = Tool.ELLIPSE
    drag(qtbot, canvas, [(10, 10), (60, 40)])              # centre (35, 25), radii 25 x 15
    m = mask_array(canvas.doc.selection).astype(float) / 255
    assert math.isclose(m.sum(), math.pi * 25 * 15, rel_tol=0.02)
    assert m[25, 35] == 1.0 and m[25, 12] == 1.0 and m[12, 35] == 1.0
    assert m[10, 10] == 0 and m[39, 59] == 0 and m[25, 61] == 0
    assert ((m > 0) & (m < 1)).sum() > 20                   # a soft edge
    # Symmetric about its centre.
    box = m[10:40, 10:60]
    assert np.abs(box - box[::-1, ::-1]).max() < 0.02


def test_freehand_lasso_fills_the_outline(qtbot, canvas):
    canvas.tool = Tool.LASSO
    pts = [(10, 10)] + [(10 + i * 5, 10) for i in range(1, 11)] + [(60 - i * 5, 10 + i * 5) for i in range(1, 11)]
    drag(qtbot, canvas, pts)                                # right triangle, legs 50
    m = mask_array(canvas.doc.selection).astype(float) / 255
    assert math.isclose(m.sum(), 50 * 50 / 2, rel_tol=0.03)
    assert m[15, 15] == 1.0 and m[20, 45] == 1.0
    assert m[50, 50] == 0 and m[5, 30] == 0 and m[30, 5] == 0


def test_soft_brush_paints_a_soft_round_dab():
    mask = new_mask(100, 80)
    brush = SoftBrush(mask, radius=10, hardness=0.5)
    brush.stroke_to(QPointF(50, 40))
    m = mask_array(mask)
    assert m[40, 50] == 255 and m[40, 53] == 255                  # solid core (half the radius)
    profile = [int(m[40, 50 + d]) for d in range(0, 12)]
    assert all(a >= b for a, b in zip(profile, profile[1:]))      # falls off outward
    assert 0 < m[40, 58] < 255                                    # soft edge
    assert m[40, 61] == 0 and m[40, 39] == 0                      # nothing past the radius
    assert abs(int(m[47, 50]) - int(m[40, 57])) <= 2              # round


def test_brush_tool_strokes_add_and_alt_erases(qtbot, canvas):
    canvas.tool = Tool.BRUSH
    canvas.brush_radius, canvas.brush_hardness = 6, 0.8
    drag(qtbot, canvas, [(20, 40), (40, 40), (60, 40), (80, 40)])
    m = mask_array(canvas.doc.selection)
    assert (m[40, 20:81] == 255).all()                          # a continuous stroke
    assert m[40, 10] == 0 and m[30, 50] == 0
    assert 0 < m[45, 50] < 255                                  # soft sides
    drag(qtbot, canvas, [(50, 40), (50, 41)], modifiers=ALT)
    m2 = mask_array(canvas.doc.selection)
    assert m2[40, 50] == 0 and m2[40, 20] == 255
    canvas.doc.undo_stack.undo()
    assert np.array_equal(mask_array(canvas.doc.selection), m)


def test_shift_adds_alt_subtracts_shift_alt_intersects(qtbot, canvas):
    doc = canvas.doc
    drag(qtbot, canvas, [(10, 10), (50, 50)])
    drag(qtbot, canvas, [(30, 30), (70, 70)], modifiers=SHIFT)
    union = rect_expected(90, 120, 10, 10, 50, 50) | rect_expected(90, 120, 30, 30, 70, 70)
    assert np.array_equal(mask_array(doc.selection), union)
    drag(qtbot, canvas, [(40, 0), (120, 90)], modifiers=ALT)
    assert np.array_equal(mask_array(doc.selection), union & ~rect_expected(90, 120, 40, 0, 120, 90))
    drag(qtbot, canvas, [(0, 20), (120, 35)], modifiers=SHIFT | ALT)
    expected = union & ~rect_expected(90, 120, 40, 0, 120, 90) & rect_expected(90, 120, 0, 20, 120, 35)
    assert np.array_equal(mask_array(doc.selection), expected)


def test_click_deselects_and_selection_changes_undo_and_redo(qtbot, canvas):
    doc = canvas.doc
    drag(qtbot, canvas, [(10, 10), (30, 30)])
    first = mask_array(doc.selection)
    drag(qtbot, canvas, [(50, 50), (50, 50)])               # a click
    assert doc.selection is None and doc.selection_bounds() is None
    doc.undo_stack.undo()
    assert np.array_equal(mask_array(doc.selection), first)
    doc.undo_stack.undo()
    assert doc.selection is None
    doc.undo_stack.redo()
    assert np.array_equal(mask_array(doc.selection), first)


def test_select_all_invert_and_deselect(editor_doc):
    doc = editor_doc
    doc.select_all()
    assert (mask_array(doc.selection) == 255).all()
    doc.deselect()
    assert doc.selection is None
    doc.invert_selection()                                  # nothing selected → everything
    assert doc.selection_bounds().as_tuple() == (0, 0, 120, 90)
    from plugin.diffusion_dock.editor.selection import Combine, rect_mask
    from plugin.diffusion_dock.runtime.qt import QRectF

    doc.apply_selection(rect_mask(doc.size, QRectF(0, 0, 60, 90)), Combine.SUBTRACT)
    doc.invert_selection()
    assert np.array_equal(mask_array(doc.selection), rect_expected(90, 120, 0, 0, 60, 90))


def test_pan_tool_does_not_select(qtbot, canvas):
    canvas.tool = Tool.PAN
    before = canvas.offset
    drag(qtbot, canvas, [(10, 10), (30, 20)])
    assert canvas.doc.selection is None
    assert canvas.offset != before
