"""The dock's control layers (issue 19) through pytest-qt: the list under the prompt, what the job builder
sends (each control layer's own pixels over exactly the job's region, in its own layout), inactive and
removed rows, modes without controls, a CMYK control layer refused by name, and the Make control layer
mode's type choice."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.panel.form import JobForm
from plugin.diffusion_dock.session import job_builder

from .memory_host import MemoryDocument

U8 = H.ColorInfo("RGBA", "U8", "sRGB")
F32_LINEAR = H.ColorInfo("RGBA", "F32", "sRGB-elle-V2-g10.icc")
W, HGT = 96, 64


@pytest.fixture
def doc():
    d = MemoryDocument(W, HGT)
    rng = np.random.default_rng(0)
    d.add("photo", rng.integers(0, 256, (HGT, W, 4), dtype=np.uint8) | np.uint8(0), U8)
    d.stack[0].pixels[..., 3] = 255
    sketch = np.zeros((HGT, W, 4), np.float32)
    sketch[20:24, 10:80] = 1.0
    d.add("sketch", sketch, F32_LINEAR)
    return d


@pytest.fixture
def form(qtbot, doc):
    f = JobForm(lambda: None, doc.layers, lambda: doc.size)
    qtbot.addWidget(f)
    f.show()
    return f


def test_controls_list_shows_for_modes_with_controls(form):
    from core.contract.modes import MODE_TABLE

    with_controls = {m.key for m in MODE_TABLE if m.controls}
    assert {"generate", "inpaint", "restyle", "expand"} <= with_controls and "upscale" not in with_controls
    for m in MODE_TABLE:
        form.set_mode(m.key)
        assert form.controls_box.isVisible() == m.controls, m.key


def test_a_control_row_sends_its_layers_pixels_over_the_jobs_region(qtbot, form, doc):
    photo, sketch = doc.stack
    form.set_mode("inpaint")
    mask = np.zeros((HGT, W), np.uint8)
    mask[10:40, 20:60] = 255
    doc.select(mask)
    form.controls_box.add_button.click()
    row = form.controls_box.rows[0]
    assert row.layer.currentText() == "Active layer"        # the default source
    row.layer.setCurrentIndex(row.layer.findData(sketch.id))
    row.type.setCurrentIndex(row.type.findData("canny"))
    row.strength.setValue(1.4)
    row.start.setValue(0.1)
    row.end.setValue(0.7)
    form.controls_box.add_button.click()                     # a second row, on the active layer, then off
    form.controls_box.rows[1].active.setChecked(False)
    prepared = job_builder.build(doc, photo.id, form.spec())
    req = prepared.request
    assert len(req.controls) == 1
    c = req.controls[0]
    assert (c.type, c.strength, c.start, c.end) == ("canny", pytest.approx(1.4), pytest.approx(0.1), pytest.approx(0.7))
    r = prepared.region
    assert c.origin == (r.x, r.y) == req.origin
    assert (c.image.width, c.image.height) == (r.w, r.h) == (req.image.width, req.image.height)
    assert c.image.format == "RGBA_F32" and c.image.linear      # the control layer's own layout
    expected = sketch.pixels[r.y:r.y + r.h, r.x:r.x + r.w]
    assert c.image.data == np.ascontiguousarray(expected).tobytes()
    # the wire form carries it
    assert "control0" in req.to_dict()["buffers"]
    form.controls_box.rows[1].active.setChecked(True)
    both = job_builder.build(doc, photo.id, form.spec()).request.controls
    assert both[1].image.data == np.ascontiguousarray(photo.pixels[r.y:r.y + r.h, r.x:r.x + r.w]).tobytes()
    form.controls_box.remove(form.controls_box.rows[0])
    assert [c.type for c in job_builder.build(doc, photo.id, form.spec()).request.controls] == ["scribble"]


def test_bad_control_is_named_and_outlined(form, doc):
    photo, _ = doc.stack
    form.set_mode("generate")
    form.width_box.setValue(512)
    form.height_box.setValue(512)
    form.controls_box.add_button.click()
    with pytest.raises(job_builder.DockError) as e:       # larger than the canvas: no control layer there
        job_builder.build(doc, photo.id, form.spec())
    assert e.value.parameter == "controls" and "inside the canvas" in str(e.value)
    form.size_from_canvas()
    row = form.controls_box.rows[0]
    row.start.setValue(0.8)
    row.end.setValue(0.2)
    with pytest.raises(job_builder.DockError) as e:
        job_builder.build(doc, photo.id, form.spec())
    assert e.value.parameter == "controls[0].end"
    form.mark_invalid(e.value.parameter)
    assert form.controls_box in form.invalid_widgets()


def test_a_cmyk_control_layer_is_refused_by_name(form, doc):
    photo, _ = doc.stack
    cmyk = doc.add("print", np.zeros((HGT, W, 5), np.uint8), H.ColorInfo("CMYKA", "U8", "proof"))
    doc.select(np.full((HGT, W), 255, np.uint8))
    form.set_mode("inpaint")
    form.controls_box.add_button.click()
    row = form.controls_box.rows[0]
    row.refresh()
    row.layer.setCurrentIndex(row.layer.findData(cmyk.id))
    with pytest.raises(H.UnsupportedColorModel) as e:
        job_builder.build(doc, photo.id, form.spec())
    assert "print" in str(e.value)


def test_make_control_layer_mode_offers_the_preprocessor_types(form, doc):
    form.set_mode("preprocess")
    assert form.control_type.isVisible() and not form.controls_box.isVisible()
    form.control_type.setCurrentIndex(form.control_type.findData("lineart"))
    req = job_builder.build(doc, doc.stack[0].id, form.spec()).request
    assert req.mode == "preprocess" and req.options.control_type == "lineart"


def test_the_type_list_offers_a_reference_image(form, doc):
    photo, sketch = doc.stack
    form.set_mode("generate")
    form.size_from_canvas()
    form.controls_box.add_button.click()
    row = form.controls_box.rows[0]
    types = [row.type.itemData(i) for i in range(row.type.count())]
    assert types[-1] == "reference" and row.type.itemText(len(types) - 1) == "Reference image"
    row.type.setCurrentIndex(row.type.findData("reference"))
    row.layer.setCurrentIndex(row.layer.findData(sketch.id))
    row.strength.setValue(0.6)
    c = job_builder.build(doc, photo.id, form.spec()).request.controls[0]
    assert (c.type, c.strength, c.model) == ("reference", pytest.approx(0.6), None)
    assert c.image.data == np.ascontiguousarray(sketch.pixels).tobytes()


def test_results_provenance_names_each_controls_layer(form, doc):
    """The dock's results record the controls used as the engine reports them (through the wire form of
    the result) with the name of each control's layer."""
    from core.contract.controls import record
    from core.contract.jobs import JobResult, Patch
    from plugin.diffusion_dock.session.dock_session import with_control_layers

    photo, sketch = doc.stack
    doc.select(np.full((HGT, W), 255, np.uint8))
    form.set_mode("restyle")
    form.controls_box.add_button.click()
    form.controls_box.add_button.click()
    row = form.controls_box.rows[0]
    row.layer.setCurrentIndex(row.layer.findData(sketch.id))
    row.type.setCurrentIndex(row.type.findData("lineart"))
    prepared = job_builder.build(doc, photo.id, form.spec())
    assert prepared.control_layers == ("sketch", "photo")      # the second row: the active layer
    req = prepared.request
    used = tuple(record(c, f"controlnet-{c.type}") for c in req.controls)
    patch = Patch(0, 0, req.image, 5)
    sent = JobResult("restyle", (patch,), "sd2-depth", req.params, req.options, controls=used)
    got = JobResult.from_header(sent.header(), [req.image.data])
    prov = with_control_layers(got.provenance(0), prepared.control_layers)
    assert [(c["type"], c["controlnet"], c["layer"]) for c in prov["controls"]] == [
        ("lineart", "controlnet-lineart", "sketch"), ("scribble", "controlnet-scribble", "photo")]
    assert prov["controls"][0]["strength"] == req.controls[0].strength
    assert "controls" not in with_control_layers(JobResult("restyle", (patch,)).provenance(0), ())


@pytest.mark.parametrize("mode", ["restyle", "expand"])
def test_a_reference_image_on_restyle_and_expand_sends_the_region_read(form, doc, mode):
    """The reference row on restyle (a selection) and expand (the strip beside the grown side): the request
    validates, and the reference is the layer's own pixels over exactly the region the job reads."""
    photo, sketch = doc.stack
    form.set_mode(mode)
    if mode == "restyle":
        mask = np.zeros((HGT, W), np.uint8)
        mask[10:40, 20:60] = 255
        doc.select(mask)
    else:
        for name, value in (("expand_left", 0), ("expand_top", 0), ("expand_right", 40), ("expand_bottom", 0)):
            form.expand_boxes[name].setValue(value)
    form.controls_box.add_button.click()
    row = form.controls_box.rows[0]
    row.type.setCurrentIndex(row.type.findData("reference"))
    row.layer.setCurrentIndex(row.layer.findData(sketch.id))
    prepared = job_builder.build(doc, photo.id, form.spec())
    (c,) = prepared.request.controls
    r = prepared.region
    assert (c.type, c.origin, c.image.width, c.image.height) == ("reference", (r.x, r.y), r.w, r.h)
    assert c.image.data == np.ascontiguousarray(sketch.pixels[r.y:r.y + r.h, r.x:r.x + r.w]).tobytes()
    if mode == "expand":
        from core.contract.expand import Growth, context_rect

        assert (r.x, r.y, r.w, r.h) == context_rect((W, HGT), Growth(0, 0, 40, 0)).as_tuple()
