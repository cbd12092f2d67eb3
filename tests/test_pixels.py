"""Pixel layouts of the editor (BGRA U8/U16, RGBA F16/F32 with linear light): round trips through the
engine's working format, and results coming back in the request's layout."""

import numpy as np
import pytest

from core.contract.jobs import EDITOR_FORMATS, ImageBuffer, JobRequest, JobResult, Patch
from core.engine.service import in_request_layout
from core.raster import pixels

from .helpers import buffer


def every_u8_value():
    v = np.arange(256, dtype=np.uint8)
    # each channel walks all values, in a different order, so a channel swap cannot go unnoticed
    return np.stack([v, v[::-1], np.roll(v, 85), np.roll(v, 170)], axis=-1).reshape(16, 16, 4)


def test_bgra_u8_round_trip_is_exact_and_channel_order_is_krita_s():
    native = every_u8_value()
    work = pixels.to_working(native, "BGRA_U8")
    # B, G, R, A in memory → R, G, B, A in the working array
    assert np.allclose(work[..., 0], native[..., 2] / 255.0)
    assert np.allclose(work[..., 2], native[..., 0] / 255.0)
    assert np.allclose(work[..., 3], native[..., 3] / 255.0)
    assert np.array_equal(pixels.from_working(work, "BGRA_U8"), native)


def test_bgra_u16_round_trip_is_exact_for_every_value():
    v = np.arange(65536, dtype=np.uint16)
    native = np.stack([v, v[::-1], np.roll(v, 1000), np.roll(v, 30000)], axis=-1).reshape(256, 256, 4)
    work = pixels.to_working(native, "BGRA_U16")
    assert np.allclose(work[..., 0], native[..., 2] / 65535.0, atol=1e-7)
    assert np.array_equal(pixels.from_working(work, "BGRA_U16"), native)


def test_rgba_f16_round_trip_is_exact_in_range():
    rng = np.random.default_rng(0)
    native = rng.random((32, 32, 4)).astype(np.float16)
    work = pixels.to_working(native, "RGBA_F16")
    assert np.array_equal(pixels.from_working(work, "RGBA_F16"), native)


def test_rgba_f32_linear_light_is_converted_to_srgb_and_back():
    # reference points of the sRGB curve: linear 0.2140 ~ sRGB 0.5, linear 0.5 ~ sRGB 0.7354
    native = np.array([[[0.0, 0.21404114, 0.5, 1.0], [0.0031308, 0.00313, 0.04, 0.25]]], np.float32)
    work = pixels.to_working(native, "RGBA_F32", linear=True)
    assert work[0, 0, 1] == pytest.approx(0.5, abs=1e-6)
    assert work[0, 0, 2] == pytest.approx(0.735357, abs=1e-5)
    assert work[0, 0, 3] == 1.0                       # alpha is never gamma-converted
    assert work[0, 1, 3] == pytest.approx(0.25)
    assert work[0, 1, 0] == pytest.approx(0.0031308 * 12.92, abs=1e-6)  # linear segment
    back = pixels.from_working(work, "RGBA_F32", linear=True)
    assert np.allclose(back, native, rtol=1e-5, atol=1e-7)


def test_rgba_f32_linear_round_trip_over_the_whole_range():
    rng = np.random.default_rng(1)
    native = rng.random((64, 64, 4)).astype(np.float32) ** 3  # many dark values, where the curve matters
    back = pixels.from_working(pixels.to_working(native, "RGBA_F32", True), "RGBA_F32", True)
    assert np.allclose(back, native, rtol=2e-5, atol=1e-7)
    # without the linear flag the values are taken as sRGB-encoded and pass through untouched
    assert np.array_equal(pixels.from_working(pixels.to_working(native, "RGBA_F32"), "RGBA_F32"), native)


def test_rgba_f16_linear_round_trip_within_half_precision():
    rng = np.random.default_rng(2)
    native = rng.random((32, 32, 4)).astype(np.float16)
    back = pixels.from_working(pixels.to_working(native, "RGBA_F16", True), "RGBA_F16", True)
    assert np.allclose(back.astype(np.float32), native.astype(np.float32), rtol=2e-3, atol=1e-4)


def test_float_inputs_outside_the_range_are_clipped_not_propagated():
    native = np.array([[[np.nan, np.inf, -1.0, 7.0]]], np.float32)
    work = pixels.to_working(native, "RGBA_F32", True)
    assert np.isfinite(work).all() and work.min() >= 0 and work.max() <= 1


@pytest.mark.parametrize("fmt,linear", [("BGRA_U8", False), ("BGRA_U16", False), ("RGBA_F16", False),
                                        ("RGBA_F16", True), ("RGBA_F32", False), ("RGBA_F32", True)])
def test_convert_buffer_between_layouts(fmt, linear):
    src = buffer(every_u8_value(), "BGRA_U8")
    there = pixels.convert_buffer(src, fmt, linear)
    assert (there.format, there.linear) == (fmt, linear)
    assert there.expected_nbytes() == len(there.data)
    back = pixels.convert_buffer(there, "BGRA_U8", False)
    assert np.array_equal(pixels.as_array(back), every_u8_value())  # exact after 8-bit rounding
    assert pixels.convert_buffer(src, "BGRA_U8") is src


LAYOUTS = [(f, False) for f in EDITOR_FORMATS] + [("RGBA_F16", True), ("RGBA_F32", True)]


@pytest.mark.parametrize("fmt,linear", LAYOUTS)
def test_result_patches_come_back_in_the_request_layout(fmt, linear):
    image = pixels.convert_buffer(buffer(every_u8_value(), "BGRA_U8"), fmt, linear)
    req = JobRequest("depth", image=image)
    gray = ImageBuffer(16, 16, "GRAY_U8", bytes(range(256)))
    res = in_request_layout(req, JobResult("depth", (Patch(0, 0, gray, None),)))
    out = res.patches[0].image
    assert (out.format, out.linear) == (fmt, linear)
    rgb = pixels.to_working(pixels.as_array(out), fmt, linear)
    assert np.allclose(rgb[..., 0].ravel(), np.arange(256) / 255.0, atol=1e-3)
    assert (rgb[..., 3] == 1).all()
    # a patch already in the right layout is passed through untouched
    same = in_request_layout(req, res)
    assert same.patches[0].image is out
