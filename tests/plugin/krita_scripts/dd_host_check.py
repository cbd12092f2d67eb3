"""Runs inside kritarunner (Krita's own Python, PyQt5), or on the fake ``krita`` module
(tests/fake_krita, PyQt5 or PyQt6) through ``tests/fake_krita/kritarunner.py``: exercises the
installed plugin's Krita host adapter on documents and dumps what it saw to files; the pytest side
makes the inputs, judges the outputs and compares the fake's with real Krita's.  It imports Qt only
through the plugin's shim, so the same script runs on both bindings.
Usage: kritarunner -s dd_host_check -f main WORKDIR
"""

import json
import mmap
import os
import sys
import traceback

from krita import Krita, Selection

QByteArray = None     # Krita's binding's, from the plugin's shim (imported in main: importing the plugin registers it)


def _load(workdir, name):
    with open(os.path.join(workdir, name), "rb") as f:
        return f.read()


def _dump(workdir, name, data):
    with open(os.path.join(workdir, name), "wb") as f:
        f.write(bytes(data))
    return name


def _info(layer):
    return {"id": layer.id, "name": layer.name, "kind": layer.kind, "visible": layer.visible,
            "locked": layer.locked, "level": layer.level, "bounds": list(layer.bounds.as_tuple()),
            "color": [layer.color.model, layer.color.depth, layer.color.profile],
            "parent_id": layer.parent_id, "preview": layer.preview}


def _error(fn):
    try:
        fn()
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e)}
    return None


def run_case(k, workdir, case, out):
    from diffusion_dock import host as H
    from diffusion_dock.krita.host import KritaHost
    from diffusion_dock.runtime.coreapi import jobs

    w, h = case["w"], case["h"]
    doc = k.createDocument(w, h, "dd" + case["name"], "RGBA", case["depth"], case.get("profile", ""), 72.0)
    doc.setBatchmode(True)
    probes = out.setdefault("probes", {})
    probes["selection_before"] = doc.selection() is None
    probes["doc_name"] = doc.name()
    probes["file_name"] = doc.fileName()
    root = doc.rootNode()
    probes["root"] = [root.type(), root.parentNode() is None, type(root).__name__]
    bg = root.childNodes()[0]
    probes["background"] = {"name": bg.name(), "bounds": list(bg.bounds().getRect()),
                            "pixels": _dump(workdir, case["name"] + "_bg.raw", bg.pixelData(w - 1, h - 1, 2, 2))}
    src = doc.createNode("source", "paintlayer")
    src.setPixelData(QByteArray(_load(workdir, case["source"])), 0, 0, w, h)
    root.addChildNode(src, None)
    above = doc.createNode("above", "paintlayer")
    root.addChildNode(above, src)
    doc.waitForDone()

    if case.get("selection"):
        sx, sy, sw, sh = case["selection_rect"]
        sel = Selection()      # empty (resize() would select everything)
        sel.setPixelData(QByteArray(_load(workdir, case["selection"])), sx, sy, sw, sh)
        doc.setSelection(sel)
        doc.waitForDone()
    out["raw_child_types"] = [n.type() for n in root.childNodes()] + [
        c.type() for n in root.childNodes() for c in n.childNodes()]
    probes["masks"] = [[n.name(), "root"] for n in root.childNodes() if n.type().endswith("mask")] + [
        [c.name(), n.name()] for n in root.childNodes() for c in n.childNodes() if c.type().endswith("mask")]
    probes["selection_after"] = None if doc.selection() is None else [
        doc.selection().x(), doc.selection().y(), doc.selection().width(), doc.selection().height()]

    hst = KritaHost(doc)
    d = hst.active_document()
    src_id = src.uniqueId().toString()
    out["host_name"] = hst.name
    out["size"] = list(d.size)
    out["doc_color"] = [d.color.model, d.color.depth, d.color.profile]
    out["active_layer"] = None if d.active_layer() is None else d.active_layer().id
    out["source_id"] = src_id
    out["above_id"] = above.uniqueId().toString()
    out["layers_before"] = [_info(i) for i in d.layers()]
    info = d.layer(src_id)
    out["color"] = {"model": info.color.model, "depth": info.color.depth, "profile": info.color.profile,
                    "linear": info.color.linear, "pixel_format": info.color.pixel_format}

    rx, ry, rw, rh = case["read_rect"]
    buf = d.read_pixels(src_id, H.Rect(rx, ry, rw, rh))
    out["read"] = {"file": _dump(workdir, case["name"] + "_read.raw", buf.data), "format": buf.format,
                   "linear": buf.linear, "width": buf.width, "height": buf.height}
    # Beyond the canvas edge: zeros outside, the layer inside.
    edge = d.read_pixels(src_id, H.Rect(w - 4, h - 4, 8, 8))
    out["read_edge"] = _dump(workdir, case["name"] + "_edge.raw", edge.data)

    b = d.selection_bounds()
    out["selection_bounds"] = None if b is None else list(b.as_tuple())
    m = d.read_selection()
    out["selection"] = None if m is None else {"file": _dump(workdir, case["name"] + "_sel.raw", m.data),
                                               "format": m.format, "width": m.width, "height": m.height}
    full = d.read_selection(H.Rect(0, 0, w, h))
    out["selection_full"] = None if full is None else _dump(workdir, case["name"] + "_selfull.raw", full.data)
    out["layers_with_selection"] = [_info(i) for i in d.layers()]

    before = bytes(src.pixelData(0, 0, w, h))
    px, py, pw, ph = case["patch_rect"]
    # As results from a local engine arrive: memory maps of shared-memory files (core.link.bulk), which PyQt5's
    # QByteArray does not take as they are.
    raw = _load(workdir, case["patch"])
    shared = mmap.mmap(-1, len(raw))
    shared.write(raw)
    pbuf = jobs.ImageBuffer(pw, ph, info.color.pixel_format, shared, info.color.linear)
    patch = jobs.Patch(px, py, pbuf, 1234)
    prov = {"mode": "inpaint", "model": "tiny", "seed": 1234,
            "params": {"prompt": "red scarf", "seed": 1234, "steps": 3}, "options": {"grow": 8}}

    # Refusals, before anything is written.
    bad = jobs.ImageBuffer(pw, ph, "RGBA_U8" if pbuf.format != "RGBA_U8" else "BGRA_U8",
                           bytes(pw * ph * 4), info.color.linear)
    out["errors"] = {
        "wrong_format": _error(lambda: d.add_result_layer(src_id, jobs.Patch(px, py, bad, 1), "x", prov)),
        "short_buffer": _error(lambda: d.add_result_layer(
            src_id, jobs.Patch(px, py, jobs.ImageBuffer(pw, ph, pbuf.format, pbuf.data[:-1], pbuf.linear), 1),
            "x", prov)),
        "wrong_linear": _error(lambda: d.add_result_layer(
            src_id, jobs.Patch(px, py, jobs.ImageBuffer(pw, ph, pbuf.format, pbuf.data, not pbuf.linear), 1),
            "x", prov)),
        "outside_canvas": _error(lambda: d.add_result_layer(src_id, jobs.Patch(w - 2, py, pbuf, 1), "x", prov)),
        "missing_layer": _error(lambda: d.read_pixels("{00000000-0000-0000-0000-000000000000}",
                                                      H.Rect(0, 0, 4, 4))),
    }
    out["layers_after_refusals"] = len(d.layers())

    name = jobs.result_name("inpaint", "red scarf", 1234)
    result = d.add_result_layer(src_id, patch, name, prov)
    doc.waitForDone()
    out["result"] = _info(result)
    out["layers_after"] = [_info(i) for i in d.layers()]
    node = d.node(result.id)
    out["result_pixels"] = _dump(workdir, case["name"] + "_result.raw", node.pixelData(0, 0, w, h))
    out["source_identical"] = bytes(src.pixelData(0, 0, w, h)) == before
    out["provenance"] = d.provenance(result.id)
    out["provenance_of_source"] = d.provenance(src_id)

    if case.get("preview"):
        p = d.show_preview(src_id, patch, name)
        out["preview"] = _info(p)
        out["layers_with_preview"] = [_info(i) for i in d.layers()]
        p2 = d.show_preview(src_id, patch, name)
        out["preview_replaced"] = [i.id for i in d.layers() if i.preview] == [p2.id]
        d.clear_preview()
        out["layers_after_preview"] = [_info(i) for i in d.layers()]
        # Apply turns the preview showing exactly that patch into the result layer itself.
        p3 = d.show_preview(src_id, patch, "applied")
        out["apply_other_name"] = d.apply_preview(src_id, patch, "something else", prov) is None
        a = d.apply_preview(src_id, patch, "applied", prov)
        out["applied"] = _info(a)
        out["applied_same_node"] = a.id == p3.id
        out["applied_provenance"] = d.provenance(a.id)
        out["applied_pixels"] = bytes(d.node(a.id).pixelData(px, py, pw, ph)) == bytes(pbuf.data)
        out["previews_left"] = [i.name for i in d.layers() if i.preview]
        out["apply_without_preview"] = d.apply_preview(src_id, patch, "applied", prov) is None
        d.node(a.id).remove()

    if case.get("extras"):
        grp = doc.createGroupLayer("group")
        inner = doc.createNode("inner", "paintlayer")
        inner.setPixelData(QByteArray(_load(workdir, case["source"])), 0, 0, w, h)
        grp.addChildNode(inner, None)
        root.addChildNode(grp, None)
        off = doc.createNode("offcanvas", "paintlayer")
        off.setPixelData(QByteArray(_load(workdir, case["source"])), 0, 0, w, h)
        root.addChildNode(off, None)
        off.move(-7, -5)
        doc.waitForDone()
        doc.refreshProjection()
        doc.waitForDone()
        out["raw_offcanvas_bounds"] = [off.bounds().x(), off.bounds().y(), off.bounds().width(),
                                       off.bounds().height()]
        out["extras_layers"] = [_info(i) for i in d.layers()]
        out["group_read"] = _dump(workdir, case["name"] + "_group.raw",
                                  d.read_pixels(grp.uniqueId().toString(), H.Rect(0, 0, w, h)).data)
        probes["group"] = {"pixel_data_len": len(grp.pixelData(0, 0, 2, 2)), "class": type(grp).__name__,
                           "child_class": type(root.childNodes()[-2]).__name__,
                           "bounds": list(grp.bounds().getRect()), "position": [off.position().x(), off.position().y()]}
        # A layer in its own colour space (F32 linear in a U8 document): results follow the layer.
        mixed = doc.createNode("mixed", "paintlayer")
        root.addChildNode(mixed, None)
        mixed.setColorSpace("RGBA", "F32", "sRGB-elle-V2-g10.icc")
        doc.waitForDone()
        mid = mixed.uniqueId().toString()
        minfo = d.layer(mid)
        out["mixed_color"] = [minfo.color.model, minfo.color.depth, minfo.color.profile, minfo.color.linear]
        fpatch = jobs.Patch(2, 3, jobs.ImageBuffer(4, 2, "RGBA_F32", _load(workdir, "f32_patch.in")[:4 * 2 * 16],
                                                   True), 5)
        mres = d.add_result_layer(mid, fpatch, "mixed result", prov)
        mnode = d.node(mres.id)
        out["mixed_result_color"] = [mnode.colorModel(), mnode.colorDepth(), mnode.colorProfile()]
        out["mixed_result_pixels"] = _dump(workdir, "mixed_result.raw", mnode.pixelData(2, 3, 4, 2))
        out["mixed_read_format"] = d.read_pixels(mres.id, H.Rect(2, 3, 4, 2)).format

    if case.get("probes"):
        run_probes(k, out["probes"])

    if case.get("save_kra"):
        path = os.path.join(workdir, case["name"] + ".kra")
        out["saved"] = bool(doc.saveAs(path))
        doc.waitForDone()
        doc.close()
        again = k.openDocument(path)
        again.setBatchmode(True)
        d2 = KritaHost(again).active_document()
        out["reopened"] = {"layers": [_info(i) for i in d2.layers()], "provenance": d2.provenance(result.id)}
        again.close()
    else:
        doc.close()
    out["closed_detected"] = d.closed


def run_probes(k, probes):
    """Krita's behaviour where the plugin depends on it and the fake must match: short buffers,
    exact bounds, when the projection changes, what setPixelData returns (on a white 8x8 document,
    with opaque pixels only: partial-alpha blending is Krita's own rounding)."""
    doc = k.createDocument(8, 8, "ddprobes", "RGBA", "U8", "", 72.0)
    doc.setBatchmode(True)
    root = doc.rootNode()
    scratch = doc.createNode("scratch", "paintlayer")
    probes["set_short"] = repr(scratch.setPixelData(QByteArray(b"\x05" * 7), 0, 0, 2, 2))
    probes["after_short"] = list(bytes(scratch.pixelData(0, 0, 2, 2)))
    probes["set_full"] = repr(scratch.setPixelData(QByteArray(bytes([0, 0, 0, 0, 1, 2, 3, 0]) + bytes(8)), 4, 4, 2, 2))
    probes["alpha0_bounds"] = list(scratch.bounds().getRect())      # a pixel of alpha 0 that is not all zeros
    probes["scratch_parent"] = scratch.parentNode() is None
    red = bytes([0, 0, 255, 255])
    top = doc.createNode("top", "paintlayer")
    root.addChildNode(top, None)
    doc.waitForDone()
    top.setPixelData(QByteArray(red * 4), 0, 0, 2, 2)
    doc.waitForDone()
    projection = {"written": bytes(doc.pixelData(0, 0, 1, 1)).hex()}
    empty = doc.createNode("empty", "paintlayer")
    root.addChildNode(empty, None)
    doc.waitForDone()
    projection["after_adding_an_empty_layer"] = bytes(doc.pixelData(0, 0, 1, 1)).hex()
    other = doc.createNode("other", "paintlayer")
    other.setPixelData(QByteArray(red * 4), 1, 1, 2, 2)
    root.addChildNode(other, None)
    doc.waitForDone()
    projection["after_adding_a_layer_over_it"] = bytes(doc.pixelData(0, 0, 1, 1)).hex()
    doc.refreshProjection()
    doc.waitForDone()
    projection["after_refresh"] = bytes(doc.pixelData(0, 0, 1, 1)).hex()
    top.remove()
    doc.waitForDone()
    projection["after_removing_it"] = bytes(doc.pixelData(0, 0, 1, 1)).hex()
    other.move(3, 3)
    doc.waitForDone()
    projection["after_move"] = bytes(doc.pixelData(2, 2, 1, 1)).hex()
    doc.refreshProjection()
    doc.waitForDone()
    projection["after_move_refresh"] = bytes(doc.pixelData(2, 2, 1, 1)).hex() + bytes(doc.pixelData(4, 4, 1, 1)).hex()
    probes["projection"] = projection
    probes["removed_parent"] = top.parentNode() is None
    for n in (empty, other):
        n.remove()
    doc.refreshProjection()
    doc.waitForDone()
    probes["same_wrapper"] = [root.childNodes()[0] == root.childNodes()[0], root.childNodes()[0] is root.childNodes()[0]]
    doc.close()


def run_cmyk(k, workdir, spec, out):
    from diffusion_dock import host as H
    from diffusion_dock.krita.host import KritaHost

    w, h = spec["w"], spec["h"]
    doc = k.createDocument(w, h, "ddcmyk", "CMYKA", "U8", "", 72.0)
    doc.setBatchmode(True)
    src = doc.createNode("cmyk source", "paintlayer")
    src.setPixelData(QByteArray(_load(workdir, spec["source"])), 0, 0, w, h)
    doc.rootNode().addChildNode(src, None)
    doc.waitForDone()
    before = bytes(src.pixelData(0, 0, w, h))
    hst = KritaHost(doc)
    d = hst.active_document()
    sid = src.uniqueId().toString()
    out["color"] = [d.layer(sid).color.model, d.layer(sid).color.depth, d.layer(sid).color.profile]
    out["read_error"] = _error(lambda: d.read_pixels(sid, H.Rect(0, 0, w, h)))
    out["require_error"] = _error(lambda: d.require_supported(sid))
    try:
        copy = hst.open_converted_copy(d)
        out["copy_color"] = [copy.color.model, copy.color.depth, copy.color.profile]
        out["copy_layers"] = [_info(i) for i in copy.layers()]
        copy_src = [i for i in copy.layers() if i.name == "cmyk source"][0]
        out["copy_read_format"] = copy.read_pixels(copy_src.id, H.Rect(0, 0, w, h)).format
        out["copy_keeps_ids"] = sorted(i.id for i in copy.layers()) == sorted(
            n.uniqueId().toString() for n in doc.rootNode().childNodes())
    except Exception as e:
        out["copy_error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    out["original_color_after"] = [doc.colorModel(), doc.colorDepth()]
    out["original_layer_color_after"] = [src.colorModel(), src.colorDepth()]
    out["original_identical"] = bytes(src.pixelData(0, 0, w, h)) == before
    out["original_layer_count"] = len(doc.rootNode().childNodes())
    doc.close()


API_CLASSES = ("Krita", "Window", "View", "Canvas", "Document", "Node", "GroupLayer", "Selection", "DockWidget",
               "DockWidgetFactoryBase", "Extension", "InfoObject", "Notifier")


def api_dump():
    """The krita module's classes as sip made them: each method's docstring (its Python signatures)."""
    import krita
    from diffusion_dock.runtime.qt import QObject, QtWidgets

    out = {}
    for name in API_CLASSES:
        cls = getattr(krita, name, None)
        if cls is None:
            continue
        base = QtWidgets.QDockWidget if issubclass(cls, QtWidgets.QDockWidget) else \
            QObject if issubclass(cls, QObject) else object
        names = sorted(set(dir(cls)) - set(dir(base)))      # sip adds methods lazily: not in vars(cls)
        out[name] = {attr: (getattr(getattr(cls, attr), "__doc__", None) or "") for attr in names
                     if not attr.startswith("_") and callable(getattr(cls, attr))}
    return out


def run_expand(k, workdir, spec, out):
    """Expand on a real document: the dock's requests with a selection hanging over the canvas's edge
    (Expand does not use it; Inpaint keeps it inside the canvas), then the tiny model's expand result
    applied through the host: the canvas grows, every layer and the selection move by the growth."""
    from diffusion_dock.krita.host import KritaHost
    from diffusion_dock.runtime.coreapi import expand, jobs
    from diffusion_dock.session.job_builder import JobSpec, build

    w, h = spec["w"], spec["h"]
    doc = k.createDocument(w, h, "ddexpand", "RGBA", "U8", "", 72.0)
    doc.setBatchmode(True)
    root = doc.rootNode()
    src = doc.createNode("source", "paintlayer")
    src.setPixelData(QByteArray(_load(workdir, spec["source"])), 0, 0, w, h)
    root.addChildNode(src, None)
    doc.waitForDone()
    sel = Selection()
    sx, sy, sw, sh = spec["selection_rect"]
    sel.select(sx, sy, sw, sh, 255)                  # reaches past the right and bottom edges
    doc.setSelection(sel)
    doc.waitForDone()
    d = KritaHost(doc).active_document()
    sid = src.uniqueId().toString()
    out["raw_selection"] = [doc.selection().x(), doc.selection().y(), doc.selection().width(),
                            doc.selection().height()]
    out["selection_bounds"] = list(d.selection_bounds().as_tuple())
    params = jobs.Params(prompt="more", steps=1, seed=3)
    inpaint = build(d, sid, JobSpec("inpaint", params, jobs.default_options("inpaint")))
    r = inpaint.request
    out["inpaint"] = {"region": list(inpaint.region.as_tuple()), "origin": list(r.origin),
                      "mask": _dump(workdir, "inpaint_mask.raw", r.mask.data), "size": [r.mask.width, r.mask.height]}
    run_control_request(doc, d, sid, workdir, spec, params, out)
    options = jobs.Options(**dict(zip(expand.FIELDS, spec["growth"])))
    prepared = build(d, sid, JobSpec("expand", params, options))
    r = prepared.request
    out["expand_request"] = {"region": list(prepared.region.as_tuple()), "origin": list(r.origin),
                             "canvas": list(r.canvas), "mask": r.mask is not None,
                             "image": _dump(workdir, "expand_request.raw", r.image.data)}
    growth = expand.Growth(*spec["growth"])
    px, py, pw, ph = spec["patch_rect"]
    patch = jobs.Patch(px, py, jobs.ImageBuffer(pw, ph, "BGRA_U8", _load(workdir, spec["patch"])), 3)
    prov = {"mode": "expand", "model": "tiny", "seed": 3, "params": {"prompt": "more"},
            "options": {f: v for f, v in zip(expand.FIELDS, spec["growth"])}}
    out["refused"] = _error(lambda: d.add_expanded_layer(sid, growth, jobs.Patch(px + 1, py, patch.image, 3),
                                                          "x", prov))
    out["size_after_refusal"] = list(d.size)
    info = d.add_expanded_layer(sid, growth, patch, "[Expand] more (seed 3)", prov)
    doc.waitForDone()
    nw, nh = d.size
    out["size"] = [nw, nh]
    out["layers"] = [_info(i) for i in d.layers()]
    out["source_pixels"] = _dump(workdir, "expand_source.raw", src.pixelData(0, 0, nw, nh))
    out["source_outside"] = _dump(workdir, "expand_source_outside.raw", src.pixelData(-8, -8, 4, 4))
    out["result_pixels"] = _dump(workdir, "expand_result.raw", d.node(info.id).pixelData(0, 0, nw, nh))
    out["selection_after"] = None if d.selection_bounds() is None else list(d.selection_bounds().as_tuple())
    out["provenance"] = d.provenance(info.id)
    doc.close()


def run_control_request(doc, d, sid, workdir, spec, params, out):
    """An inpaint request with a control layer ("sketch": the source's bytes reversed) and the source as a
    second control, as the dock builds it: its JSON form and each buffer's bytes (the editor must build the
    same from the same pixels)."""
    from diffusion_dock.runtime.coreapi import jobs
    from diffusion_dock.session.job_builder import ControlSpec, JobSpec, build

    w, h = spec["w"], spec["h"]
    sketch = doc.createNode("sketch", "paintlayer")
    sketch.setPixelData(QByteArray(_load(workdir, spec["source"])[::-1]), 0, 0, w, h)
    doc.rootNode().addChildNode(sketch, None)
    doc.waitForDone()
    controls = (ControlSpec(sketch.uniqueId().toString(), "canny", 1.25, 0.1, 0.8), ControlSpec(None, "depth", 0.5))
    prepared = build(d, sid, JobSpec("inpaint", params, jobs.default_options("inpaint"), controls=controls))
    req = prepared.request
    out["control_request"] = {"json": req.to_dict(), "layers": list(prepared.control_layers),
                              "buffers": {k: _dump(workdir, f"control_req_{k}.raw", b.data)
                                          for k, b in req.buffers().items()}}
    doc.rootNode().removeChildNode(sketch)
    doc.waitForDone()


def main(args):
    global QByteArray
    workdir = args[0]
    results = {"python": sys.version, "cases": {}}
    try:
        k = Krita.instance()
        import diffusion_dock
        from diffusion_dock.runtime import coreapi, qt

        QByteArray = qt.QByteArray
        results["fake"] = bool(getattr(sys.modules["krita"], "FAKE", False))
        if not results["fake"]:
            results["krita_api"] = api_dump()
        results["krita_version"] = k.version()
        results["package_file"] = diffusion_dock.__file__
        results["core_file"] = coreapi.core.__file__
        results["core_installed"] = coreapi.INSTALLED
        results["binding"] = qt.BINDING
        results["inside_krita"] = qt.INSIDE_KRITA
        results["qasync_file"] = coreapi.qasync().__file__
        results["generic_modules"] = sorted(m for m in ("core", "qasync", "plugin") if m in sys.modules)
        with open(os.path.join(workdir, "spec.json")) as f:
            spec = json.load(f)
        for case in spec["cases"]:
            out = results["cases"].setdefault(case["name"], {})
            try:
                run_case(k, workdir, case, out)
            except Exception:
                out["crash"] = traceback.format_exc()
        if spec.get("expand"):
            results["expand"] = {}
            try:
                run_expand(k, workdir, spec["expand"], results["expand"])
            except Exception:
                results["expand"]["crash"] = traceback.format_exc()
        if spec.get("cmyk"):
            results["cmyk"] = {}
            try:
                run_cmyk(k, workdir, spec["cmyk"], results["cmyk"])
            except Exception:
                results["cmyk"]["crash"] = traceback.format_exc()
    except Exception:
        results["crash"] = traceback.format_exc()
    calls = getattr(sys.modules.get("krita"), "CALLS", None)
    if calls is not None:
        results["api_calls"] = sorted(calls)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
