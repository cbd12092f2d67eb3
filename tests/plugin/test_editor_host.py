"""The host interface on the standalone editor: reading layers and selections in BGRA U8, a result
layer above the source at the patch offset (one undo step), provenance, preview, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.editor import pixels
from plugin.diffusion_dock.editor.document import EditorDocument
from plugin.diffusion_dock.editor.host import EditorHostDocument
from plugin.diffusion_dock.runtime.coreapi import jobs

from .editor_util import layer_array, mask_array


@pytest.fixture
def setup(editor_window):
    rng = np.random.default_rng(11)
    doc = editor_window.document
    src_arr = rng.integers(0, 256, (90, 120, 4), dtype=np.uint8)
    pixels.write_rect(doc.layers[0].image, 0, 0, 120, 90, src_arr.tobytes())
    top = doc.add_layer("top")
    doc.set_active(doc.layers[1].id)
    hdoc = editor_window.host.active_document()
    return editor_window, doc, hdoc, src_arr, top


def patch_of(rng, x, y, w, h, fmt="BGRA_U8", data=None, linear=False):
    arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    return jobs.Patch(x, y, jobs.ImageBuffer(w, h, fmt, arr.tobytes() if data is None else data, linear), 99), arr


def test_describes_document_layers_and_colour(setup):
    window, doc, hdoc, _, top = setup
    assert window.host.name == "Diffusion Dock editor"
    assert hdoc.size == (120, 90) and hdoc.name == "test" and not hdoc.closed
    assert hdoc.color.pixel_format == "BGRA_U8" and hdoc.color.linear is False
    infos = hdoc.layers()
    assert [i.name for i in infos] == ["top", "Background"]
    assert infos[1].bounds.as_tuple() == (0, 0, 120, 90) and infos[0].bounds.as_tuple() == (0, 0, 0, 0)
    assert hdoc.active_layer().name == "Background"
    assert hdoc.layer(top.id).kind == "paint"


def test_reads_pixels_and_soft_selection(setup):
    _, doc, hdoc, src_arr, _ = setup
    bg = doc.layers[1].id
    buf = hdoc.read_pixels(bg, H.Rect(10, 20, 30, 15))
    assert (buf.format, buf.width, buf.height, buf.linear) == ("BGRA_U8", 30, 15, False)
    assert buf.data == src_arr[20:35, 10:40].tobytes()
    edge = np.frombuffer(hdoc.read_pixels(bg, H.Rect(110, 85, 20, 10)).data, np.uint8).reshape(10, 20, 4)
    assert np.array_equal(edge[:5, :10], src_arr[85:, 110:]) and not edge[5:].any() and not edge[:, 10:].any()
    assert hdoc.selection_bounds() is None and hdoc.read_selection() is None
    mask = pixels.new_mask(120, 90)
    ramp = np.tile(np.arange(1, 41, dtype=np.uint8) * 6, (12, 1))
    pixels.write_rect(mask, 30, 40, 40, 12, ramp.tobytes())
    doc.set_selection(mask)
    assert hdoc.selection_bounds().as_tuple() == (30, 40, 40, 12)
    sel = hdoc.read_selection()
    assert sel.format == "GRAY_U8" and sel.data == ramp.tobytes()
    full = hdoc.read_selection(H.Rect(0, 0, 120, 90))
    assert np.array_equal(np.frombuffer(full.data, np.uint8).reshape(90, 120), mask_array(mask))


def test_result_layer_goes_directly_above_source_at_patch_offset_and_undoes_in_one_step(setup):
    window, doc, hdoc, src_arr, _ = setup
    rng = np.random.default_rng(1)
    bg = doc.layers[1].id
    patch, arr = patch_of(rng, 17, 23, 30, 20)
    prov = {"mode": "inpaint", "model": "tiny", "seed": 99, "params": {"prompt": "red scarf"}, "options": {}}
    name = jobs.result_name("inpaint", "red scarf", 99)
    steps = doc.undo_stack.count()
    info = hdoc.add_result_layer(bg, patch, name, prov)
    assert [la.name for la in doc.layers] == ["top", "[Inpaint] red scarf (seed 99)", "Background"]
    assert info.bounds.as_tuple() == (17, 23, 30, 20)
    expected = np.zeros((90, 120, 4), np.uint8)
    expected[23:43, 17:47] = arr
    assert np.array_equal(layer_array(doc.layer(info.id).image), expected)
    assert np.array_equal(layer_array(doc.layer(bg).image), src_arr)          # source untouched
    record = hdoc.provenance(info.id)
    assert record["seed"] == 99 and record["source_layer"] == {"id": bg, "name": "Background"}
    assert record["patch"] == {"x": 17, "y": 23, "width": 30, "height": 20, "format": "BGRA_U8", "linear": False}
    assert hdoc.provenance(bg) is None
    assert doc.undo_stack.count() == steps + 1
    window.undo_action.trigger()                                              # Ctrl+Z
    assert [la.name for la in doc.layers] == ["top", "Background"]
    window.redo_action.trigger()
    assert hdoc.provenance(info.id)["seed"] == 99


def test_bad_patches_are_refused_and_nothing_changes(setup):
    _, doc, hdoc, _, _ = setup
    rng = np.random.default_rng(2)
    bg = doc.layers[1].id
    before = doc.undo_stack.count()
    bad = [patch_of(rng, 0, 0, 4, 4, fmt="RGBA_F32", data=bytes(4 * 4 * 16))[0],
           patch_of(rng, 0, 0, 4, 4, data=bytes(4 * 4 * 4 - 1))[0],
           patch_of(rng, 0, 0, 4, 4, linear=True)[0],
           patch_of(rng, 118, 0, 4, 4)[0]]
    for p in bad:
        with pytest.raises(H.HostError):
            hdoc.add_result_layer(bg, p, "x", {})
        with pytest.raises(H.HostError):
            hdoc.show_preview(bg, p)
    with pytest.raises(H.LayerNotFound):
        hdoc.read_pixels("nope", H.Rect(0, 0, 2, 2))
    with pytest.raises(H.HostError, match="1–16384"):
        hdoc.read_pixels(bg, H.Rect(0, 0, 0, 5))
    assert doc.undo_stack.count() == before and len(doc.layers) == 2


def test_preview_is_shown_above_source_outside_the_undo_history(setup):
    _, doc, hdoc, _, _ = setup
    rng = np.random.default_rng(4)
    bg = doc.layers[1].id
    patch, arr = patch_of(rng, 5, 6, 10, 8)
    steps = doc.undo_stack.count()
    info = hdoc.show_preview(bg, patch, "red scarf")
    assert info.preview and info.locked and info.name == "[Preview] red scarf"
    assert [i.name for i in hdoc.layers()] == ["top", "[Preview] red scarf", "Background"]
    comp = layer_array(doc.composite().convertToFormat(pixels.LAYER_FORMAT))
    opaque = arr[..., 3] == 255
    assert np.array_equal(comp[6:14, 5:15][opaque], arr[opaque])               # drawn on the canvas
    hdoc.show_preview(bg, patch, "again")                                    # replaces
    assert [i.name for i in hdoc.layers() if i.preview] == ["[Preview] again"]
    hdoc.clear_preview()
    assert [i.name for i in hdoc.layers()] == ["top", "Background"]
    assert doc.undo_stack.count() == steps


def test_closed_document_and_converted_copy(setup):
    window, doc, hdoc, _, _ = setup
    assert window.host.open_converted_copy(hdoc) is hdoc        # already RGBA U8: nothing to convert
    window.set_document(EditorDocument.new(10, 10))
    assert hdoc.closed
    with pytest.raises(H.DocumentClosed):
        hdoc.layers()
    assert window.host.active_document().size == (10, 10)


def test_host_document_needs_no_window():
    doc = EditorDocument.new(8, 8)
    hdoc = EditorHostDocument(doc)
    assert hdoc.read_pixels(doc.layers[0].id, H.Rect(0, 0, 1, 1)).data == b"\xff\xff\xff\xff"


def test_an_expanded_layer_grows_the_canvas_and_one_undo_step_restores_it(setup):
    """Every layer and the selection keep their bytes, shifted by the left and top growth; the result
    layer comes above the source; ONE undo step (a macro) restores the old canvas, redo grows it again."""
    from plugin.diffusion_dock.runtime.coreapi import expand

    window, doc, hdoc, src_arr, top = setup
    pixels.write_rect(top.image, 0, 0, 4, 1, bytes([1, 2, 3, 4]) * 4)
    mask = pixels.new_mask(120, 90)
    pixels.write_rect(mask, 100, 70, 20, 20, bytes([200]) * 400)          # touching the right and bottom edges
    doc.set_selection(mask)
    steps = doc.undo_stack.count()
    growth = expand.Growth(10, 4, 30, 0)
    rng = np.random.default_rng(5)
    patch, arr = patch_of(rng, 0, 0, 160, 94)
    bad, _ = patch_of(rng, 1, 0, 160, 94)
    with pytest.raises(H.HostError, match="does not fit the canvas"):
        hdoc.add_expanded_layer(doc.layers[1].id, growth, bad, "x", {"mode": "expand"})
    assert doc.size == (120, 90) and doc.undo_stack.count() == steps      # nothing changed
    info = hdoc.add_expanded_layer(doc.layers[1].id, growth, patch, "[Expand] more", {"mode": "expand", "seed": 3})
    assert doc.size == (160, 94) and hdoc.size == (160, 94)
    assert [la.name for la in doc.layers] == ["top", "[Expand] more", "Background"]
    bg = layer_array(doc.layers[2].image)
    assert bg[4:, 10:130].tobytes() == src_arr.tobytes() and not bg[:4].any() and not bg[:, 130:].any()
    assert layer_array(doc.layers[0].image)[4, 10:14].tobytes() == bytes([1, 2, 3, 4]) * 4
    assert np.array_equal(layer_array(doc.layers[1].image), arr)
    sel = mask_array(doc.selection)
    assert hdoc.selection_bounds().as_tuple() == (110, 74, 20, 20) and (sel[74:, 110:130] == 200).all()
    assert hdoc.provenance(info.id)["seed"] == 3
    assert doc.undo_stack.count() == steps + 1
    doc.undo_stack.undo()
    assert doc.size == (120, 90) and [la.name for la in doc.layers] == ["top", "Background"]
    assert layer_array(doc.layers[1].image).tobytes() == src_arr.tobytes()
    assert hdoc.selection_bounds().as_tuple() == (100, 70, 20, 20)
    doc.undo_stack.redo()
    assert doc.size == (160, 94) and [la.name for la in doc.layers] == ["top", "[Expand] more", "Background"]
    assert layer_array(doc.layers[2].image)[4:, 10:130].tobytes() == src_arr.tobytes()
    assert window.canvas.composite().size().width() == 160
