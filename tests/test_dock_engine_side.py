"""What the engine does for the dock so that the editor never converts pixels: text-to-image patches in
the layer's own layout (``options.output_format``), depth maps given as layers in the editor's layouts,
and LaMa's presence (with its install hint) among the capabilities."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.contract.jobs import ImageBuffer, JobRequest, JobResult, Options, Params, Patch, validate
from core.contract.params import ValidationError
from core.engine.service import EngineService, in_request_layout
from core.models.manager import ModelManager
from core.raster.pixels import as_array, convert_buffer, depth_array, from_array, from_working

from .helpers import buffer, rgba_u8


def text_request(**options) -> JobRequest:
    return JobRequest("generate", Params(prompt="x", steps=2, seed=1), Options(width=64, height=64, **options),
                      canvas=(64, 64))


def test_output_format_is_checked_by_name():
    validate(text_request(output_format="RGBA_F32", output_linear=True))
    with pytest.raises(ValidationError) as e:
        validate(text_request(output_format="CMYK_U8"))
    assert e.value.parameter == "output_format" and "BGRA_U8" in str(e.value)


@pytest.mark.parametrize("fmt,linear", [("BGRA_U8", False), ("BGRA_U16", False), ("RGBA_F16", True),
                                        ("RGBA_F32", True)])
def test_text_to_image_patches_come_back_in_the_named_layout(fmt, linear):
    rgba = buffer(rgba_u8(16, 24, seed=2))
    res = JobResult("generate", (Patch(3, 4, rgba, 9),))
    req = text_request(output_format=fmt, output_linear=linear)
    [patch] = in_request_layout(req, res).patches
    assert (patch.x, patch.y, patch.seed) == (3, 4, 9)
    assert (patch.image.format, patch.image.linear) == (fmt, linear)
    assert patch.image.data == convert_buffer(rgba, fmt, linear).data
    # Without output_format the engine's RGBA_U8 is left as it is.
    assert in_request_layout(text_request(), res).patches[0].image is rgba


def test_text_to_image_runs_into_a_linear_f32_layout(models):
    from core.pipelines import run_job

    req = text_request(output_format="RGBA_F32", output_linear=True)
    res = in_request_layout(req, run_job(req, models))
    img = res.patches[0].image
    assert (img.format, img.linear, img.width, img.height) == ("RGBA_F32", True, 64, 64)
    arr = as_array(img)
    assert np.isfinite(arr).all() and arr[..., 3].min() == 1.0


@pytest.mark.parametrize("fmt,linear", [("BGRA_U8", False), ("BGRA_U16", False), ("RGBA_F16", True),
                                        ("RGBA_F32", True)])
def test_a_depth_layer_in_an_editor_layout_reads_as_its_gray_values(fmt, linear):
    gray = np.linspace(0, 1, 40, dtype=np.float32).reshape(5, 8)
    rgba = np.stack([gray, gray, gray, np.ones_like(gray)], axis=-1)
    layer = from_array(from_working(rgba, fmt, linear), fmt, linear)     # as the depth job writes it
    tol = 1 / 255 if fmt == "BGRA_U8" else 2e-3
    assert np.allclose(depth_array(layer), gray, atol=tol)
    reference = ImageBuffer(8, 5, "GRAY_U16", np.rint(gray * 65535).astype("<u2").tobytes())
    assert np.allclose(depth_array(layer), depth_array(reference), atol=tol)


def test_validate_accepts_a_depth_layer_in_the_editor_layouts():
    img = buffer(rgba_u8(8, 8), "BGRA_U8")
    depth = ImageBuffer(8, 8, "RGBA_F16", np.zeros((8, 8, 4), "<f2").tobytes(), True)
    req = JobRequest("restyle", Params(prompt="x"), Options(depth_source="given"), image=img, depth=depth)
    assert validate(req).depth is depth
    with pytest.raises(ValidationError):
        validate(replace(req, depth=ImageBuffer(8, 8, "RGBA_U8", bytes(256))))


def test_capabilities_list_lama_with_its_install_hint(tmp_path, policy):
    from core.lama.weights import build_tiny, default_weights_path

    service = EngineService(models=ModelManager(policy, models_dir=tmp_path, hub_cache=tmp_path / "hub"),
                            warm_up=False)
    lama = {m["key"]: m for m in service.scan_capabilities().models}["big-lama"]
    assert lama["found"] is False and lama["optional"] and lama["modes"] == ["fill"]
    assert "installer models import big-lama.pt" in lama["hint"]
    build_tiny(default_weights_path(tmp_path))
    lama = {m["key"]: m for m in service.scan_capabilities().models}["big-lama"]
    assert lama["found"] is True and lama["path"].endswith("big-lama.safetensors")
    assert "fill" in service.scan_capabilities().modes
