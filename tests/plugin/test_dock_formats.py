"""The dock panel on its own, over a host holding Krita's pixel layouts (U16, F16, linear F32) and
non-RGB layers, through the REAL engine process on the tiny models: results come back in the layer's
own layout (text-to-image included), a depth layer feeds restyle, results too big for the canvas
open as new documents, and a CMYK layer gets the converted-copy offer with the document untouched."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine.service import in_request_layout
from core.pipelines import run_job
from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.panel.dock import DockPanel
from plugin.diffusion_dock.runtime.qt import Qt

from .dock_util import close_session, make_session, spin_until, wait_job
from .memory_host import DTYPES, MemoryDocument, MemoryHost

W, H_ = 48, 40
F32_LINEAR = H.ColorInfo("RGBA", "F32", "sRGB-elle-V2-g10.icc")
U16 = H.ColorInfo("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc")
F16 = H.ColorInfo("RGBA", "F16", "sRGB-elle-V2-g10.icc")


@pytest.fixture(scope="module")
def session(qapp, tiny_root, tmp_path_factory):
    s = make_session(tiny_root, tmp_path_factory.mktemp("results"))
    yield s
    close_session(s)


def layer_pixels(color: H.ColorInfo, seed: int = 1, size=(W, H_)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = DTYPES[color.depth]
    w, h = size
    if dtype.kind == "f":
        arr = rng.random((h, w, 4)).astype(dtype)
        arr[..., 3] = 1
    else:
        top = np.iinfo(dtype).max
        arr = rng.integers(0, top, (h, w, 4), dtype=dtype, endpoint=True)
        arr[..., 3] = top
    return arr


def panel_on(qtbot, session, color, select=(12, 10, 20, 16), size=(W, H_)):
    doc = MemoryDocument(*size, "formats")
    layer = doc.add("Paint", layer_pixels(color, size=size), color)
    if select is not None:
        mask = np.zeros((H_, W), np.uint8)
        x, y, w, h = select
        mask[y:y + h, x:x + w] = 255
        doc.select(mask)
    host = MemoryHost(doc)
    panel = DockPanel(host=host, session=session)
    qtbot.addWidget(panel)
    return panel, doc, layer


def run_panel(panel, mode, **form):
    panel.set_mode(mode)
    panel.form.prompt.setPlainText(form.pop("prompt", "a red ball"))
    panel.form.steps.setValue(form.pop("steps", 2))
    panel.form.seed.setText(str(form.pop("seed", 11)))
    item = panel.generate()
    assert item is not None, panel.last_message
    return wait_job(item)


def as_array(patch, color):
    img = patch.image
    return np.frombuffer(img.data, DTYPES[color.depth]).reshape(img.height, img.width, 4)


def test_linear_f32_inpaint_comes_back_linear_f32_and_lands_above_the_source(qtbot, session, models):
    panel, doc, layer = panel_on(qtbot, session, F32_LINEAR)
    item = run_panel(panel, "inpaint")
    assert item.state == "done", item.message
    req = item.prepared.request
    assert (req.image.format, req.image.linear) == ("RGBA_F32", True)        # passed through as Krita has it
    [rec] = item.results
    assert (rec.format, rec.linear) == ("RGBA_F32", True)
    local = run_job(req, models).patches[0]
    assert session.store.pixels(rec.id) == local.image.data
    [info] = panel.apply_results([rec])
    assert [la.name for la in doc.stack] == ["[Inpaint] a red ball (seed 11)", "Paint"]
    new = doc.stack[0].pixels
    expected = np.zeros_like(new)
    expected[local.y:local.y + local.image.height, local.x:local.x + local.image.width] = as_array(local, F32_LINEAR)
    assert np.array_equal(new, expected)
    assert np.array_equal(doc.stack[1].pixels, layer_pixels(F32_LINEAR))       # the source untouched
    assert doc.provenance(info.id)["patch"]["format"] == "RGBA_F32"
    doc.undo_last()
    assert [la.name for la in doc.stack] == ["Paint"]


def test_text_to_image_on_a_16_bit_layer_comes_back_16_bit(qtbot, session, models):
    panel, doc, _ = panel_on(qtbot, session, U16, select=None, size=(84, 72))
    panel.set_mode("generate")
    qtbot.mouseClick(panel.form.canvas_size_button, Qt.MouseButton.LeftButton)
    assert (panel.form.width_box.value(), panel.form.height_box.value()) == (80, 72)    # multiples of 8 inside the canvas
    item = run_panel(panel, "generate", prompt="a lighthouse")
    assert item.state == "done", item.message
    req = item.prepared.request
    assert req.image is None and (req.options.width, req.options.height) == (80, 72)
    assert req.options.output_format == "BGRA_U16"
    [rec] = item.results
    assert (rec.format, rec.x, rec.y, rec.width, rec.height, rec.target) == ("BGRA_U16", 0, 0, 80, 72, "layer")
    local = in_request_layout(req, run_job(req, models)).patches[0]
    assert local.image.format == "BGRA_U16" and session.store.pixels(rec.id) == local.image.data
    panel.apply_results([rec])
    assert doc.stack[0].name == "[Generate] a lighthouse (seed 11)" and doc.stack[0].pixels.dtype == np.uint16


def test_restyle_with_a_depth_layer_in_the_layer_layout(qtbot, session, models):
    panel, doc, paint = panel_on(qtbot, session, F16, select=None)
    ramp = np.repeat(np.linspace(0, 1, W, dtype=np.float16)[None, :, None], H_, axis=0)
    depth = doc.add("Depth", np.concatenate([ramp, ramp, ramp, np.ones_like(ramp)], axis=-1), F16)
    doc.active_id = paint.id
    panel.set_mode("restyle")
    panel.form.depth_source.select_layer(depth.id)
    item = run_panel(panel, "restyle")
    assert item.state == "done", item.message
    req = item.prepared.request
    assert req.options.depth_source == "given" and req.depth.format == "RGBA_F16" and req.depth.linear
    local = run_job(req, models).patches[0]
    assert session.store.pixels(item.results[0].id) == local.image.data
    # Restyling the depth layer with itself as depth is refused before anything is sent.
    doc.active_id = depth.id
    panel.form.depth_source.select_layer(depth.id)
    assert panel.generate() is None and "another layer" in panel.last_message[1]


def test_a_result_larger_than_the_canvas_opens_as_a_new_document(qtbot, session):
    panel, doc, _ = panel_on(qtbot, session, U16, select=None)
    panel.set_mode("generate")
    panel.form.width_box.setValue(64)
    panel.form.height_box.setValue(64)
    item = run_panel(panel, "generate", prompt="tall")
    assert item.state == "done", item.message
    [rec] = item.results
    assert (rec.width, rec.height, rec.target) == (64, 64, "document")
    [new_doc] = panel.apply_results([rec])
    assert new_doc.size == (64, 64) and new_doc.stack[0].color == U16
    assert [la.name for la in doc.stack] == ["Paint"]           # the canvas it was made on is untouched


def test_upscale_of_a_linear_layer_opens_a_4x_document_in_its_colour_space(qtbot, session):
    panel, doc, _ = panel_on(qtbot, session, F32_LINEAR, select=None)
    panel.set_mode("upscale")
    panel.form.tile.setValue(64)
    item = run_panel(panel, "upscale", prompt="")
    assert item.state == "done", item.message
    [rec] = item.results
    assert (rec.width, rec.height, rec.format, rec.linear) == (4 * W, 4 * H_, "RGBA_F32", True)
    [new_doc] = panel.apply_results([rec])
    assert new_doc.size == (4 * W, 4 * H_) and new_doc.stack[0].color == F32_LINEAR
    assert new_doc.stack[0].name == "[Upscale x4] (seed 11)"


def test_a_cmyk_layer_gets_the_converted_copy_offer_and_stays_untouched(qtbot, session):
    doc = MemoryDocument(W, H_, "print")
    cmyk = H.ColorInfo("CMYKA", "U8", "Chemical proof")
    original = np.arange(W * H_ * 4, dtype=np.uint8).reshape(H_, W, 4)
    doc.add("Ink", original.copy(), cmyk)
    mask = np.zeros((H_, W), np.uint8)
    mask[5:20, 5:20] = 255
    doc.select(mask)
    host = MemoryHost(doc)
    panel = DockPanel(host=host, session=session)
    qtbot.addWidget(panel)
    panel.show()
    n = len(session.items)
    panel.set_mode("inpaint")
    assert panel.generate() is None and len(session.items) == n
    assert panel.last_offer is not None and "CMYK" in panel.last_message[1] and "copy" in panel.last_message[1]
    box = panel.offer_box
    spin_until(box.isVisible, 5, "the offer")
    convert = [b for b in box.buttons() if b.text() == "Work on an RGB copy"][0]
    qtbot.mouseClick(convert, Qt.MouseButton.LeftButton)
    assert host.active is not doc and host.active.converted_from is doc
    assert host.active.stack[0].color.model == "RGBA"
    assert np.array_equal(doc.stack[0].pixels, original) and doc.stack[0].color == cmyk   # never touched
    assert "RGB copy" in panel.last_message[1]


def test_expand_of_a_linear_f32_layer_grows_the_canvas_and_ignores_a_selection_at_the_edge(qtbot, session, models):
    """Through the dock and the engine on a host with Krita's layouts: the request holds the strip beside
    the grown side and no mask, whatever is selected (here a selection touching two canvas edges); the
    result comes back linear F32 in the grown canvas's coordinates; applying grows the canvas with every
    old pixel shifted bit for bit, and undo goes as in Krita: the layer, then the canvas."""
    panel, doc, layer = panel_on(qtbot, session, F32_LINEAR, select=(30, 22, 18, 18))
    panel.set_mode("expand")
    for name, value in (("expand_left", 8), ("expand_top", 0), ("expand_right", 0), ("expand_bottom", 24)):
        panel.form.expand_boxes[name].setValue(value)
    assert "canvas 48×40 → 56×64" in panel.form.context.text() and "selection is not used" in panel.form.context.text()
    item = run_panel(panel, "expand", prompt="more sky", steps=1)
    assert item.state == "done", item.message
    req = item.prepared.request
    assert req.mask is None and (req.image.format, req.image.linear) == ("RGBA_F32", True)
    assert (req.origin, req.image.width, req.image.height, req.canvas) == ((0, 0), W, H_, (W, H_))
    [rec] = item.results
    assert (rec.x, rec.y, rec.width, rec.height, rec.canvas) == (0, 0, 56, 64, (W, H_))
    local = run_job(req, models).patches[0]
    assert session.store.pixels(rec.id) == local.image.data
    [info] = panel.apply_results([rec])
    assert doc.size == (56, 64) and [la.name for la in doc.stack] == ["[Expand] more sky (seed 11)", "Paint"]
    old = layer_pixels(F32_LINEAR)
    assert doc.stack[1].pixels[:40, 8:].tobytes() == old.tobytes()
    assert not doc.stack[1].pixels[40:].any() and not doc.stack[1].pixels[:, :8].any()
    new = doc.stack[0].pixels
    assert np.array_equal(new, as_array(local, F32_LINEAR)) and (new[40:, :, 3] == 1).all()
    assert not new[:40, 8:].any()                                   # nothing over the old pixels
    assert "canvas 56×64" in panel.form.context.text()
    doc.undo_last()
    assert doc.size == (56, 64) and [la.name for la in doc.stack] == ["Paint"]
    doc.undo_last()
    assert doc.size == (W, H_) and doc.stack[0].pixels.tobytes() == old.tobytes()


def test_an_empty_growth_is_refused_naming_the_sizes(qtbot, session):
    panel, _doc, _ = panel_on(qtbot, session, U16, select=None)
    panel.set_mode("expand")
    for box in panel.form.expand_boxes.values():
        box.setValue(0)
    n = len(session.items)
    assert panel.generate() is None and len(session.items) == n
    assert "set how many px to add" in panel.last_message[1]
    assert panel.invalid_widgets() == [panel.form.bindings["expand"].widget]


def test_inpaint_with_a_selection_touching_the_canvas_edge_keeps_working(qtbot, session, models):
    """A selection running off the right and bottom edges: the region stays inside the canvas, every
    pixel outside the selection stays as it was."""
    panel, doc, layer = panel_on(qtbot, session, U16, select=(30, 26, 18, 14))
    item = run_panel(panel, "inpaint", steps=1)
    assert item.state == "done", item.message
    req = item.prepared.request
    assert req.origin[0] + req.image.width == W and req.origin[1] + req.image.height == H_
    [rec] = item.results
    panel.apply_results([rec])
    new = doc.stack[0].pixels
    outside = np.ones((H_, W), bool)
    outside[26:, 30:] = False
    assert not new[outside].any() and new[26:, 30:, 3].all()
