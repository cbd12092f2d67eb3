"""The pure parts of the host interface: colour spaces and layouts, linear profiles, refusals,
provenance records and stores."""

from __future__ import annotations

import pytest

from plugin.diffusion_dock import host as H
from plugin.diffusion_dock.runtime.coreapi import jobs


@pytest.mark.parametrize("profile, linear", [
    ("sRGB-elle-V2-g10.icc", True), ("Rec2020-elle-V4-g10.icc", True), ("ACEScg-elle-V4-g10.icc", True),
    ("scRGB (linear)", True), ("Linear Rec.709", True), ("sRGB gamma 1.0", True),
    ("sRGB-elle-V2-srgbtrc.icc", False), ("sRGB-elle-V2-g22.icc", False), ("Rec2020-elle-V4-rec709.icc", False),
    ("sRGB-elle-V2-labl.icc", False), ("sRGB built-in", False), ("", False), ("gamma 1.8", False),
    ("Custom-g100.icc", False)])
def test_linear_profiles_are_recognised_by_name(profile, linear):
    assert H.is_linear_profile(profile) is linear


@pytest.mark.parametrize("depth, fmt", [("U8", "BGRA_U8"), ("U16", "BGRA_U16"), ("F16", "RGBA_F16"),
                                        ("F32", "RGBA_F32")])
def test_rgba_depths_map_to_krita_layouts(depth, fmt):
    c = H.ColorInfo("RGBA", depth, "x.icc")
    assert c.supported and c.pixel_format == fmt and c.converted() is c
    assert fmt in jobs.EDITOR_FORMATS


@pytest.mark.parametrize("model, depth, text, target", [
    ("CMYKA", "U8", "CMYK 8-bit integer", ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")),
    ("LABA", "U16", "L*a*b* 16-bit integer", ("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc")),
    ("GRAYA", "F32", "grayscale 32-bit float", ("RGBA", "F32", "sRGB-elle-V2-g10.icc")),
    ("RGBA", "F64", "RGB F64", ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc"))])
def test_other_colour_models_are_refused_with_an_offer(model, depth, text, target):
    c = H.ColorInfo(model, depth, "some.icc")
    assert not c.supported
    with pytest.raises(H.UnsupportedColorModel) as e:
        _ = c.pixel_format
    err = H.UnsupportedColorModel("Paint", c)
    assert text in str(err) and '"Paint"' in str(err) and "untouched" in str(err)
    assert err.can_convert and err.code == "unsupported_color_model" and e.value.color == c
    conv = c.converted()
    assert (conv.model, conv.depth, conv.profile) == target
    assert conv.linear == (target[1] in ("F16", "F32"))


def test_provenance_store_round_trip_and_garbage():
    records = {"{a}": {"mode": "inpaint", "seed": 1, "params": {"prompt": "écharpe rouge"}}}
    data = H.encode_provenance_store(records)
    assert H.decode_provenance_store(data) == records
    for bad in (b"", None, b"\xff\xfe", b"[1,2]", b'{"layers": 3}', b"{not json"):
        assert H.decode_provenance_store(bad) == {}
    assert H.decode_provenance_store(b'{"layers": {"x": 1, "y": {"seed": 2}}}') == {"y": {"seed": 2}}


def test_provenance_record_and_layer_name():
    result = jobs.JobResult("inpaint", (jobs.Patch(3, 4, jobs.ImageBuffer(2, 1, "BGRA_U8", bytes(8)), 77),),
                            model="stable-diffusion-2-inpainting", params=jobs.Params(prompt="red scarf", seed=76))
    prov = result.provenance(0)
    source = H.LayerInfo("{s}", "Sketch", "paint", True, False, 0, H.Rect(0, 0, 9, 9), H.ColorInfo("RGBA", "U8"))
    record = H.provenance_record(prov, source, result.patches[0])
    assert record["seed"] == 77 and record["params"]["seed"] == 77 and record["model"].endswith("inpainting")
    assert record["source_layer"] == {"id": "{s}", "name": "Sketch"}
    assert record["patch"] == {"x": 3, "y": 4, "width": 2, "height": 1, "format": "BGRA_U8", "linear": False}
    assert record["version"] == H.PROVENANCE_VERSION and record["app"].startswith("diffusion-dock ")
    assert H.result_layer_name(record) == "[Inpaint] red scarf (seed 77)"
    # A job can be re-run from its record: the request parts come straight back.
    again = jobs.JobRequest("inpaint", jobs.Params(**record["params"]), jobs.Options(**record["options"]))
    assert again.params.seed == 77 and again.params.prompt == "red scarf"


def test_errors_read_well():
    assert "Open or create a document" in str(H.NoDocument())
    assert "'a.kra'" in str(H.DocumentClosed("a.kra"))
    assert "no longer exists" in str(H.LayerNotFound("x"))
