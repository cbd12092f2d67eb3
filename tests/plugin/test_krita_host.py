"""The Krita host adapter through the installed plugin, on real Krita and on the fake ``krita`` module.

One run of ``krita_scripts/dd_host_check.py`` per place builds documents at each depth from bytes made
here, and the adapter reads layers and soft selections, writes patches as new layers, shows/clears a
preview, refuses CMYK and makes an RGB copy; the assertions compare its outputs with the known bytes.
The same script and the same assertions run in three places:

- ``krita``: real Krita 5.1.5 (kritarunner, PyQt5; ``@pytest.mark.krita``);
- ``fake-qt6``: the fake Krita (tests/fake_krita) on PyQt6 in this venv, posing as Krita 6;
- ``fake-qt5``: the fake on PyQt5 under the system Python, posing as Krita 5.1.5.

``test_fake_matches_real_krita`` then compares the fakes' results and dumped pixels with real Krita's:
where they disagree, the fake is wrong.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from .conftest import require
from .host_runs import CASES, DEPTHS, PLACES, SCRIPTS, run_place, system_pyqt5  # noqa: F401  (SCRIPTS: used by other tests)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, krita_home, models):
    return run_place("krita", tmp_path_factory, models, krita_home)


@pytest.fixture(scope="module")
def fake5_run(tmp_path_factory, models):
    require(system_pyqt5(), "system python3 with PyQt5 is missing (apt-get install python3-pyqt5)")
    return run_place("fake-qt5", tmp_path_factory, models)


FIXTURES = {"krita": "real_run", "fake-qt6": "fake6_run", "fake-qt5": "fake5_run"}


@pytest.fixture(scope="module", params=[pytest.param("krita", marks=pytest.mark.krita), "fake-qt6", "fake-qt5"])
def place(request):
    return request.param


@pytest.fixture(scope="module")
def krita_run(request, place):
    return request.getfixturevalue(FIXTURES[place])


def case_out(krita_run, name):
    work, results, data = krita_run
    out = results["cases"][name]
    assert "crash" not in out, out["crash"]
    return work, out, data[name]


def raw(work, name, dtype, shape):
    return np.frombuffer((work / name).read_bytes(), dtype=dtype).reshape(shape)


def test_installed_plugin_is_self_contained(krita_run, place):
    _, results, _ = krita_run
    assert results["inside_krita"] is True
    assert results["binding"] == PLACES[place][0]       # Krita 5.1.5 has no qt_major_version: assume 5
    assert results["core_installed"] is True
    assert "/pykrita/diffusion_dock/_core/" in results["core_file"]
    assert "/pykrita/diffusion_dock/vendor/qasync/" in results["qasync_file"]
    assert results["generic_modules"] == []            # no top-level core/qasync/plugin in Krita


@pytest.mark.parametrize("name", list(CASES))
def test_reads_layer_pixels_in_krita_layout(krita_run, name):
    work, out, d = case_out(krita_run, name)
    depth = DEPTHS[name][0]
    expected_format = {"U8": "BGRA_U8", "U16": "BGRA_U16", "F16": "RGBA_F16", "F32": "RGBA_F32"}[depth]
    assert out["color"]["model"] == "RGBA" and out["color"]["depth"] == depth
    assert out["color"]["pixel_format"] == expected_format
    assert out["read"]["format"] == expected_format
    assert out["read"]["linear"] == out["color"]["linear"]
    rx, ry, rw, rh = CASES[name]["read_rect"]
    got = raw(work, out["read"]["file"], d["dtype"], (rh, rw, 4))
    assert got.tobytes() == d["source"][ry:ry + rh, rx:rx + rw].tobytes()
    # A rect reaching past the canvas: the layer inside, transparent zeros outside.
    edge = raw(work, out["read_edge"], d["dtype"], (8, 8, 4))
    assert edge[:4, :4].tobytes() == d["source"][-4:, -4:].tobytes()
    assert not edge[4:].any() and not edge[:, 4:].any()


def test_float32_default_profile_is_linear_and_u8_is_not(krita_run):
    _, u8, _ = case_out(krita_run, "u8")
    _, f32, _ = case_out(krita_run, "f32")
    assert u8["color"]["linear"] is False and "srgbtrc" in u8["color"]["profile"]
    assert f32["color"]["linear"] is True and "g10" in f32["color"]["profile"]


@pytest.mark.parametrize("name", list(CASES))
def test_reads_soft_selection(krita_run, name):
    work, out, d = case_out(krita_run, name)
    w, h = CASES[name]["w"], CASES[name]["h"]
    sx, sy, sw, sh = CASES[name]["selection_rect"]
    canvas = np.zeros((h, w), np.uint8)
    canvas[sy:sy + sh, sx:sx + sw] = d["sel"]
    full = raw(work, out["selection_full"], np.uint8, (h, w))
    assert full.tobytes() == canvas.tobytes()          # grey levels kept, zeros outside
    ys, xs = np.nonzero(canvas)
    bx, by, bw, bh = out["selection_bounds"]
    # The bounds hold every selected pixel and stay inside what was written and the canvas.
    assert bx <= xs.min() and by <= ys.min() and bx + bw > xs.max() and by + bh > ys.max()
    assert bx >= 0 and by >= 0 and bx + bw <= w and by + bh <= h
    sel = out["selection"]
    assert sel["format"] == "GRAY_U8" and (sel["width"], sel["height"]) == (bw, bh)
    assert raw(work, sel["file"], np.uint8, (bh, bw)).tobytes() == canvas[by:by + bh, bx:bx + bw].tobytes()


def test_selection_mask_node_is_not_a_layer(krita_run):
    _, out, _ = case_out(krita_run, "u8")
    kinds = [i["kind"] for i in out["layers_with_selection"]]
    assert all(not k.endswith("mask") for k in kinds)
    assert [i["name"] for i in out["layers_with_selection"]] == ["above", "source", "Background"]


@pytest.mark.parametrize("name", list(CASES))
def test_patch_becomes_new_layer_above_source_at_its_offset(krita_run, name):
    work, out, d = case_out(krita_run, name)
    w, h = CASES[name]["w"], CASES[name]["h"]
    px, py, pw, ph = CASES[name]["patch_rect"]
    result = out["result"]
    assert result["name"] == "[Inpaint] red scarf (seed 1234)"
    assert result["kind"] == "paint" and result["level"] == 0 and not result["preview"]
    assert result["bounds"] == [px, py, pw, ph]
    assert result["color"][:2] == ["RGBA", DEPTHS[name][0]]
    names = [i["name"] for i in out["layers_after"]]
    assert names == ["above", result["name"], "source", "Background"]
    pixels = raw(work, out["result_pixels"], d["dtype"], (h, w, 4))
    expected = np.zeros_like(pixels)
    expected[py:py + ph, px:px + pw] = d["patch"]
    assert pixels.tobytes() == expected.tobytes()
    assert out["source_identical"] is True


@pytest.mark.parametrize("name", list(CASES))
def test_bad_patches_are_refused_before_anything_is_written(krita_run, name):
    _, out, _ = case_out(krita_run, name)
    for key in ("wrong_format", "short_buffer", "wrong_linear", "outside_canvas"):
        err = out["errors"][key]
        assert err is not None and err["type"] == "HostError", (key, err)
    assert "needs" in out["errors"]["wrong_format"]["message"]
    assert "bytes" in out["errors"]["short_buffer"]["message"]
    assert out["errors"]["missing_layer"]["type"] == "LayerNotFound"
    assert out["layers_after_refusals"] == len(out["layers_before"])


def test_provenance_is_stored_and_survives_saving(krita_run):
    _, out, _ = case_out(krita_run, "u8")
    prov = out["provenance"]
    assert prov["mode"] == "inpaint" and prov["seed"] == 1234 and prov["model"] == "tiny"
    assert prov["params"]["prompt"] == "red scarf"
    assert prov["source_layer"] == {"id": out["source_id"], "name": "source"}
    assert prov["patch"] == {"x": 7, "y": 5, "width": 10, "height": 8, "format": "BGRA_U8", "linear": False}
    assert out["provenance_of_source"] is None
    assert out["saved"] is True
    reopened = out["reopened"]
    assert reopened["provenance"] == prov
    assert {i["id"] for i in out["layers_after"]} <= {i["id"] for i in reopened["layers"]}   # UUIDs kept


def test_preview_layer_is_locked_replaced_and_removed(krita_run):
    _, out, _ = case_out(krita_run, "u8")
    p = out["preview"]
    assert p["locked"] and p["preview"] and p["name"].startswith("[Preview] ")
    names = [i["name"] for i in out["layers_with_preview"]]
    assert names.index(p["name"]) == names.index("source") - 1      # directly above the source
    assert out["preview_replaced"] is True
    assert [i["id"] for i in out["layers_after_preview"]] == [i["id"] for i in out["layers_after"]]


def test_apply_turns_the_preview_into_the_result_layer(krita_run):
    _, out, _ = case_out(krita_run, "u8")
    a = out["applied"]
    assert out["apply_other_name"] is True                 # only the preview of that very result
    assert out["applied_same_node"] and a["name"] == "applied" and not a["locked"] and not a["preview"]
    assert out["applied_provenance"]["seed"] == 1234 and out["applied_pixels"] is True
    assert out["previews_left"] == [] and out["apply_without_preview"] is True


def test_groups_levels_and_bounds_clamped_to_canvas(krita_run):
    work, out, d = case_out(krita_run, "u8")
    w, h = CASES["u8"]["w"], CASES["u8"]["h"]
    assert out["raw_offcanvas_bounds"][:2] == [-7, -5]
    layers = {i["name"]: i for i in out["extras_layers"]}
    assert layers["offcanvas"]["bounds"] == [0, 0, w - 7, h - 5]
    assert layers["group"]["kind"] == "group" and layers["group"]["level"] == 0
    assert layers["inner"]["level"] == 1 and layers["inner"]["parent_id"] == layers["group"]["id"]
    names = [i["name"] for i in out["extras_layers"]]
    assert names.index("group") + 1 == names.index("inner")
    group = raw(work, out["group_read"], np.uint8, (h, w, 4))
    assert group.tobytes() == d["source"].tobytes()     # a group is read through its projection


def test_active_layer_and_closed_document_without_a_view(krita_run, place):
    _, out, _ = case_out(krita_run, "u16")
    assert out["active_layer"] is None                   # no view: Krita has no active node
    assert out["closed_detected"] is True
    assert out["host_name"].startswith("Krita " + PLACES[place][1])


def test_cmyk_is_refused_and_converted_copy_leaves_original_untouched(krita_run):
    _, results, _ = krita_run
    c = results["cmyk"]
    assert "crash" not in c, c["crash"]
    assert c["color"][:2] == ["CMYKA", "U8"]
    for key in ("read_error", "require_error"):
        assert c[key]["type"] == "UnsupportedColorModel"
        assert "CMYK 8-bit integer" in c[key]["message"] and "converted to RGB 8-bit" in c[key]["message"]
        assert "untouched" in c[key]["message"]
    assert "copy_error" not in c, c.get("copy_error")
    assert c["copy_color"][:2] == ["RGBA", "U8"]
    assert c["copy_read_format"] == "BGRA_U8"
    assert all(i["color"][0] == "RGBA" for i in c["copy_layers"])
    assert c["original_color_after"] == ["CMYKA", "U8"]
    assert c["original_layer_color_after"] == ["CMYKA", "U8"]
    assert c["original_identical"] is True


def test_result_follows_a_layer_with_its_own_colour_space(krita_run):
    work, out, _ = case_out(krita_run, "u8")
    assert out["mixed_color"] == ["RGBA", "F32", "sRGB-elle-V2-g10.icc", True]
    assert out["mixed_result_color"] == ["RGBA", "F32", "sRGB-elle-V2-g10.icc"]   # not the U8 document's
    assert out["mixed_read_format"] == "RGBA_F32"
    assert (work / out["mixed_result_pixels"]).read_bytes() == (work / "f32_patch.in").read_bytes()[:4 * 2 * 16]


UUID = re.compile(r"\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}")
VOLATILE = {"python", "package_file", "core_file", "qasync_file", "binding", "fake", "api_calls", "krita_version", "created",
            "krita_api",
            "host_name"}
# Where the Krita 6 stand-in differs from Krita 5.1.5 on purpose: Node.setPixelData returns bool in
# the Qt 6 tree's Node.sip (void in 5.1's), so the fake posing as Krita 6 returns it.
KRITA6_DIFFERENCES = {"cases.u8.probes.set_short", "cases.u8.probes.set_full"}


def normalized(results: dict) -> dict:
    """Results without what differs by place (paths, binding, versions), UUIDs numbered by appearance."""
    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [drop(x) for x in v]
        return v

    ids: dict[str, str] = {}
    text = UUID.sub(lambda m: ids.setdefault(m.group(0), f"uuid-{len(ids)}"), json.dumps(drop(results)))
    return json.loads(text)


def differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            out += differences(a.get(k), b.get(k), p) if k in a and k in b else [f"{p}: only in one"]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.krita
@pytest.mark.parametrize("fake", ["fake-qt6", "fake-qt5"])
def test_fake_matches_real_krita(request, real_run, fake):
    """Everything the check script saw and dumped is the same on the fake as on real Krita 5.1.5."""
    real_work, real, _ = real_run
    fake_work, faked, _ = request.getfixturevalue(FIXTURES[fake])
    diff = differences(normalized(real), normalized(faked))
    allowed = KRITA6_DIFFERENCES if fake == "fake-qt6" else set()
    assert [d for d in diff if d.split(":")[0] not in allowed] == [], "the fake differs from Krita 5.1.5"
    assert {d.split(":")[0] for d in diff} == allowed
    dumped = sorted(p.name for p in real_work.glob("*.raw"))
    assert dumped == sorted(p.name for p in fake_work.glob("*.raw"))
    assert [n for n in dumped if (real_work / n).read_bytes() != (fake_work / n).read_bytes()] == []


def test_fake_records_the_api_calls(krita_run, place):
    """The fake logs which Krita methods the plugin and the script called (checked against the .sip
    files in test_fake_krita_api.py)."""
    _, results, _ = krita_run
    if place == "krita":
        assert "api_calls" not in results and results["fake"] is False
    else:
        calls = {(c, m) for c, m, _ in results["api_calls"]}
        assert {("Node", "setPixelData"), ("Document", "createNode"), ("Krita", "createDocument")} <= calls


def doc_arities(doc: str) -> set[tuple[int, int]]:
    """(min, max) arguments of each overload in a sip docstring ("name(self, a: int, b: str = '') -> T")."""
    from tests.fake_krita.sip_signatures import split_top

    out = set()
    for line in doc.splitlines():
        m = re.match(r"^\w+\((.*)\)(\s*->.*)?$", line.strip())
        if not m:
            continue
        params = [p for p in split_top(m.group(1)) if p and p not in ("self", "*")]
        out.add((sum("=" not in p for p in params), len(params)))
    return out


@pytest.mark.krita
def test_sip_data_matches_the_real_krita_module(real_run):
    """The .sip data (read from Krita 5.1.5's sources) against the krita module of the installed Krita
    5.1.5: the same methods, with the argument counts of the module's own signatures."""
    from tests.fake_krita import load_api

    api = load_api("5.1")["classes"]
    real = real_run[1]["krita_api"]
    assert len(real) == 13
    for cls, methods in real.items():
        sip = dict(api[cls]["methods"])
        for base in api[cls]["bases"]:
            sip.update(api.get(base, {}).get("methods", {}))
        mine = {m for m, o in api[cls]["methods"].items() if all("protected" not in x[3] for x in o)}
        assert mine <= set(methods) | {"property", "setProperty"}, (cls, mine - set(methods))   # QObject's names
        for meth, doc in methods.items():
            if meth not in sip or not doc_arities(doc):
                continue
            assert doc_arities(doc) == {(o[0], o[1]) for o in sip[meth]}, (cls, meth, doc, sip[meth])


def expand_outputs(krita_run):
    """(the work folder, the expand scenario's outputs, its inputs) of the host run; fails on its crash."""
    work, results, data = krita_run
    out = results["expand"]
    assert "crash" not in out, out["crash"]
    return work, out, data["expand"]


def test_expand_grows_the_canvas_moving_every_pixel_and_the_selection(krita_run):
    """The tiny model's expand result through the Krita host: ``resizeImage`` grows the canvas and moves
    the layer and the selection by the left and top growth, bit for bit; the result is a new layer."""
    work, out, e = expand_outputs(krita_run)
    w, h = e["w"], e["h"]
    left, top, right, bottom = e["growth"]
    nw, nh = w + left + right, h + top + bottom
    assert out["refused"]["type"] == "HostError" and out["size_after_refusal"] == [w, h]
    assert out["size"] == [nw, nh]
    assert [i["name"] for i in out["layers"]] == ["[Expand] more (seed 3)", "source", "Background"]
    src = np.frombuffer((work / e["source"]).read_bytes(), np.uint8).reshape(h, w, 4)
    moved = raw(work, out["source_pixels"], np.uint8, (nh, nw, 4))
    assert moved[top:top + h, left:left + w].tobytes() == src.tobytes()
    inside = np.zeros((nh, nw), bool)
    inside[top:top + h, left:left + w] = True
    assert not moved[~inside].any() and not raw(work, out["source_outside"], np.uint8, (4, 4, 4)).any()
    px, py, pw, ph = e["patch_rect"]
    result = raw(work, out["result_pixels"], np.uint8, (nh, nw, 4))
    patch = np.frombuffer((work / e["patch"]).read_bytes(), np.uint8).reshape(ph, pw, 4)
    assert result[py:py + ph, px:px + pw].tobytes() == patch.tobytes()
    assert (result[~inside][:, 3] == 255).all() and not result[inside].any()
    sx, sy, _, _ = out["selection_bounds"]
    bx, by, bw, bh = out["selection_after"]
    assert (bx, by) == (sx + left, sy + top) and bx + bw <= nw and by + bh <= nh
    assert out["provenance"]["mode"] == "expand" and out["provenance"]["options"]["expand_right"] == right


def test_a_selection_over_the_canvas_edge_is_clamped_for_inpaint_and_unused_by_expand(krita_run):
    work, out, e = expand_outputs(krita_run)
    w, h = e["w"], e["h"]
    sx, sy, sw, sh = e["selection_rect"]
    rx, ry, rw, rh = out["raw_selection"]
    assert rx + rw > w or ry + rh > h                         # Krita keeps the part past the edge...
    assert out["selection_bounds"] == [sx, sy, w - sx, h - sy]   # ...the host clamps it to the canvas
    ix, iy, iw, ih = out["inpaint"]["region"]
    assert ix >= 0 and iy >= 0 and ix + iw == w and iy + ih == h
    mask = raw(work, out["inpaint"]["mask"], np.uint8, (ih, iw))
    expected = np.zeros((h, w), np.uint8)
    expected[sy:, sx:] = 255
    assert mask.tobytes() == expected[iy:, ix:].tobytes()
    req = out["expand_request"]
    assert req["mask"] is False and req["canvas"] == [w, h] and req["region"] == [0, 0, w, h]
    src = np.frombuffer((work / e["source"]).read_bytes(), np.uint8)
    assert (work / req["image"]).read_bytes() == src.tobytes()


def test_a_control_layer_gives_the_same_request_bytes_in_krita_as_in_the_editor(krita_run, qapp):
    """Issue 19: an inpaint request with a control layer, built by the dock's job builder through the Krita
    host (real Krita, or the fakes) and through the editor's host from the same pixels and selection: the
    same JSON form and the same bytes in every buffer (image, mask, control0, control1)."""
    from plugin.diffusion_dock.editor import pixels
    from plugin.diffusion_dock.editor.document import EditorDocument
    from plugin.diffusion_dock.editor.host import EditorHostDocument
    from plugin.diffusion_dock.runtime.coreapi import jobs
    from plugin.diffusion_dock.session.job_builder import ControlSpec, JobSpec, build

    work, out, e = expand_outputs(krita_run)
    w, h = e["w"], e["h"]
    sx, sy, _, _ = e["selection_rect"]
    src = (work / e["source"]).read_bytes()
    doc = EditorDocument.new(w, h, "ddexpand")
    pixels.write_rect(doc.layers[0].image, 0, 0, w, h, bytes(w * h * 4))
    source = doc.add_layer("source")
    pixels.write_rect(source.image, 0, 0, w, h, src)
    sketch = doc.add_layer("sketch")
    pixels.write_rect(sketch.image, 0, 0, w, h, src[::-1])
    mask = pixels.new_mask(w, h)
    pixels.write_rect(mask, sx, sy, w - sx, h - sy, bytes([255]) * ((w - sx) * (h - sy)))
    doc.set_selection(mask)
    hdoc = EditorHostDocument(doc)
    controls = (ControlSpec(sketch.id, "canny", 1.25, 0.1, 0.8), ControlSpec(None, "depth", 0.5))
    prepared = build(hdoc, source.id, JobSpec("inpaint", jobs.Params(prompt="more", steps=1, seed=3),
                                              jobs.default_options("inpaint"), controls=controls))
    req = prepared.request
    got = out["control_request"]
    assert json.dumps(req.to_dict(), sort_keys=True) == json.dumps(got["json"], sort_keys=True)   # the wire's JSON
    assert list(prepared.control_layers) == got["layers"] == ["sketch", "source"]
    assert sorted(req.buffers()) == sorted(got["buffers"]) == ["control0", "control1", "image", "mask"]
    for name, buf in req.buffers().items():
        assert buf.data == (work / got["buffers"][name]).read_bytes(), name
