"""The region's pixels to the model's size and back (core.raster.scaling): the fast paths against the
plain formulas they replace, over random inputs, with bands and tiles made small enough to be many."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.raster import compositing, masks, pixels, scaling
from core.raster.pixels import from_working_reference, linear_to_srgb, pack, to_working

FORMATS = ["BGRA_U8", "RGBA_U8", "BGRA_U16", "RGBA_U16", "RGBA_F16", "RGBA_F32"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def small_pieces(monkeypatch):
    """Bands of a few rows and tiles of a few pixels, so every test crosses many of them."""
    monkeypatch.setattr(pixels, "BAND_PIXELS", 256)
    monkeypatch.setattr(pixels, "PARALLEL_PIXELS", 1)
    monkeypatch.setattr(scaling, "ALPHA_TILE", 16)


def native_image(rng, h: int, w: int, fmt: str, opaque: bool, nan: bool = False) -> np.ndarray:
    if fmt.endswith("U8"):
        img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    elif fmt.endswith("U16"):
        img = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    else:
        img = (rng.random((h, w, 4)) * 1.4 - 0.2).astype(np.float16 if fmt == "RGBA_F16" else np.float32)
        if nan:
            img[rng.random((h, w)) < 0.05, rng.integers(0, 4)] = np.nan
    if opaque:
        img[..., 3] = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(img.dtype, 1.0)
    return img


def plain_premultiplied_at(img: np.ndarray, fmt: str, linear: bool, size) -> np.ndarray:
    """The definition: clean and clip, premultiply, average areas in the layer's own encoding, and
    only then apply the sRGB curve (to the straight colour)."""
    top = 255.0 if fmt.endswith("U8") else 65535.0 if fmt.endswith("U16") else 1.0
    f = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=top, neginf=0.0).clip(0.0, top) / top
    if fmt.startswith("BGRA"):
        f = f[..., [2, 1, 0, 3]]
    f[..., :3] *= f[..., 3:]
    small = cv2.resize(f, tuple(size), interpolation=cv2.INTER_AREA)
    if linear:
        a = small[..., 3:]
        straight = np.divide(small[..., :3], a, out=np.zeros_like(small[..., :3]), where=a > 0)
        small[..., :3] = linear_to_srgb(straight) * a
    return small


@given(st.integers(0, 2**31), st.sampled_from(FORMATS), st.booleans(), st.booleans(),
       st.integers(9, 70), st.integers(9, 70), st.integers(1, 8), st.integers(1, 8))
@SETTINGS
def test_shrinking_averages_premultiplied_areas(small_pieces, seed, fmt, opaque, linear, h, w, sw, sh):
    rng = np.random.default_rng(seed)
    linear = linear and not fmt.endswith("U8")
    img = native_image(rng, h, w, fmt, opaque, nan=True)
    got, is_opaque = scaling.premultiplied_at(img, fmt, linear, (sw, sh))
    want = plain_premultiplied_at(img, fmt, linear, (sw, sh))
    assert got.shape == (sh, sw, 4) and got.dtype == np.float32
    # opaque 8-bit layers are averaged in 8 bits (OpenCV rounds): half a level off at most
    assert np.abs(got - want).max() < (0.501 / 255 if opaque and fmt.endswith("U8") else 2e-4)
    assert is_opaque == opaque


def test_transparent_pixels_colour_does_not_bleed_when_shrinking(small_pieces):
    img = np.zeros((64, 64, 4), np.uint8)
    img[..., 2] = 255            # red everywhere (BGRA) ...
    img[:, 32:] = (255, 0, 0, 255)   # ... but only the blue right half is visible
    small, opaque = scaling.premultiplied_at(img, "BGRA_U8", False, (8, 8))
    rgb = scaling.flatten_premultiplied(small)
    assert not opaque
    assert np.allclose(rgb[:, :4], 0.5) and np.allclose(rgb[:, 4:], (0, 0, 1))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(40, 30), (64, 48)])
def test_equal_or_larger_sizes_convert_then_interpolate(fmt, size):
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    smooth = np.stack([xx, yy, 0.5 + 0.3 * np.sin(xx * 9), 0.3 + 0.6 * yy], axis=-1)
    img = from_working_reference(smooth.astype(np.float32), fmt)
    got, _ = scaling.premultiplied_at(img, fmt, fmt.startswith("RGBA_F"), size)
    rgba = to_working(img, fmt, fmt.startswith("RGBA_F"))
    rgba[..., :3] *= rgba[..., 3:]
    if size == (64, 48):
        assert np.array_equal(got, rgba)
    big, _ = scaling.premultiplied_at(img, fmt, fmt.startswith("RGBA_F"), (128, 96))
    assert big.shape == (96, 128, 4) and big.min() >= 0 and np.all(big[..., :3] <= big[..., 3:] + 1e-7)
    # the model sees the same picture at twice the size
    assert np.abs(cv2.resize(big, (64, 48), interpolation=cv2.INTER_AREA) - rgba).max() < 0.02


def test_opacity_check_reads_alpha_only():
    img = np.full((5, 7, 4), 255, np.uint8)
    assert scaling.is_opaque(img, "BGRA_U8") and scaling.is_opaque(img[1:4, 2:6], "BGRA_U8")
    img[3, 4, 3] = 254
    assert not scaling.is_opaque(img, "BGRA_U8") and not scaling.is_opaque(img[1:4, 2:6], "BGRA_U8")
    img[3, 4] = (0, 0, 0, 255)
    assert scaling.is_opaque(img, "RGBA_U8")


def test_selection_at_marks_every_pixel_that_covers_a_selected_one():
    sel = np.zeros((80, 80), bool)
    sel[37, 5] = True                                 # one pixel
    small = scaling.selection_at(sel, (10, 10))  # 8 px per pixel
    assert small.sum() == 1 and small[4, 0]
    big = scaling.selection_at(sel[30:40, 0:10], (20, 20))
    assert big.sum() == 4 and big[14:16, 10:12].all()
    assert scaling.scaled_px(8, (4096, 4096), (512, 512)) == 1
    assert scaling.scaled_px(8, (100, 100), (100, 100)) == 8
    assert scaling.scaled_px(9, (4096, 4096), (512, 512)) == 2
    assert scaling.scaled_px(0, (10, 10), (5, 5)) == 0


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 200), st.integers(1, 200), st.floats(0, 1),
       st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_shrinking_never_loses_a_single_selected_pixel(h, w, sh, sw, fy, fx):
    if sh * sw >= h * w:
        return
    sel = np.zeros((h, w), bool)
    y, x = min(h - 1, int(fy * h)), min(w - 1, int(fx * w))
    sel[y, x] = True
    small = scaling.selection_at(sel, (sw, sh))
    assert small[min(sh - 1, int((y + 0.5) * sh / h)), min(sw - 1, int((x + 0.5) * sw / w))]
    assert small.sum() <= 4 * -(-sh // h) * -(-sw // w)    # its cells, and no more


mask_arrays = arrays(np.uint8, st.tuples(st.integers(1, 60), st.integers(1, 60)),
               elements=st.sampled_from([0, 0, 0, 0, 0, 1, 37, 128, 254, 255, 255, 255]))


@given(mask_arrays, st.integers(0, 12), st.sampled_from(FORMATS), st.booleans(), st.integers(0, 2**31))
@SETTINGS
def test_feathered_alpha_is_the_plain_feather_in_the_format(small_pieces, sel, feather, fmt, layer, seed):
    rng = np.random.default_rng(seed)
    img = native_image(rng, *sel.shape, fmt, opaque=False) if layer else None
    got = scaling.feathered_alpha(sel, feather, fmt, None if img is None else img[..., 3])
    want = masks.feather_alpha(sel, feather)
    if img is not None:
        want = want * to_working(img, fmt, False)[..., 3]
    if fmt.startswith("RGBA_F"):
        assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-5
    else:
        top = 255 if fmt.endswith("U8") else 65535
        assert got.dtype == (np.uint8 if top == 255 else np.uint16)
        assert np.abs(got.astype(np.int64) - np.rint(want * top)).max() <= 1   # rounding of a tie at most
    assert np.all(got[sel == 0] == 0)
    if img is None and feather == 0:   # no feather: the selection itself, in the format's alpha
        scale = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 257}.get(got.dtype, 1 / 255)
        assert np.allclose(got, sel.astype(np.float64) * scale, rtol=0, atol=1e-6)


@given(st.integers(0, 2**31), st.sampled_from(FORMATS), st.booleans(), st.integers(4, 40), st.integers(4, 40),
       st.integers(4, 90), st.integers(4, 90), st.integers(0, 6))
@SETTINGS
def test_patch_pixels_scale_the_output_into_the_format_with_the_alpha(small_pieces, seed, fmt, linear,
                                                                      sh, sw, h, w, feather):
    rng = np.random.default_rng(seed)
    linear = linear and fmt.startswith("RGBA_F")
    rgb = rng.random((sh, sw, 3)).astype(np.float32)
    sel = (rng.random((h, w)) < 0.6).astype(np.uint8) * rng.choice([255, 128, 3], (h, w)).astype(np.uint8)
    alpha = scaling.feathered_alpha(sel, feather, fmt)
    got = scaling.patch_pixels(rgb, alpha, fmt, linear)
    assert got.shape == (h, w, 4) and got.dtype == pixels._dtype(fmt)
    a = got[..., 3].astype(np.float32)
    assert np.array_equal(a, alpha.astype(got.dtype).astype(np.float32))   # the alpha, exactly
    assert np.all(got[alpha == 0] == 0)                                 # transparent pixels all zero
    # the colour is the output scaled to the region, as the plain formulas would do it
    plain = pack(compositing.resize(rgb, (w, h)), np.ones((h, w), np.float32), fmt, linear)
    seen = alpha != 0
    diff = np.abs(to_working(got, fmt, linear)[..., :3] - to_working(plain, fmt, linear)[..., :3])[seen]
    assert diff.size == 0 or diff.mean() <= 0.1   # bicubic against Lanczos on noise; smooth pictures below
    if (sh, sw) == (h, w):
        assert np.array_equal(got[seen][:, :3], plain[seen][:, :3])   # same size: no scaling at all


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_smooth_output_comes_back_close_to_the_plain_path(fmt):
    yy, xx = np.mgrid[0:32, 0:48].astype(np.float32)
    rgb = np.stack([xx / 47, yy / 31, 0.5 + 0.4 * np.sin(xx / 9)], axis=-1).astype(np.float32)
    alpha = np.full((256, 384), 255, np.uint8) if fmt.endswith("U8") else None
    if alpha is None:
        alpha = scaling.feathered_alpha(np.full((256, 384), 255, np.uint8), 0, fmt)
    linear = fmt.startswith("RGBA_F")
    got = to_working(scaling.patch_pixels(rgb, alpha, fmt, linear), fmt, linear)[..., :3]
    plain = compositing.resize(rgb, (384, 256))
    assert np.abs(got - plain).max() < 0.01


def test_from_array_shares_the_arrays_memory_read_only():
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    buf = pixels.from_array(arr, "RGBA_F32")
    assert len(buf.data) == arr.nbytes and bytes(buf.data) == arr.tobytes()
    assert np.shares_memory(pixels.as_array(buf), arr)
    with pytest.raises(TypeError):
        buf.data[0] = 1
    converted = pixels.from_array(arr, "RGBA_F16")            # another dtype: a new array
    assert not np.shares_memory(pixels.as_array(converted), arr)
    assert np.array_equal(pixels.as_array(converted), arr.astype(np.float16))


def test_patch_from_a_whole_4k_layer_stays_exact_outside_the_selection():
    """The shrinking path end to end at a size where bands and tiles are many by default."""
    from core.contract.jobs import JobRequest, Options, Params
    from core.contract.plan import plan_region_job
    from core.pipelines import regionjob

    from .helpers import buffer

    rng = np.random.default_rng(5)
    side = 2048
    img = rng.integers(0, 256, (side, side, 4), dtype=np.uint8)
    img[..., 3] = 255
    img[:100, :100, 3] = 0            # some transparency in one corner
    sel = np.zeros((side, side), np.uint8)
    cv2.ellipse(sel, (side // 2, side // 2), (side // 2 - 3, side // 3), 0, 0, 360, 255, -1)
    sel[0, 0] = 200                   # the box is the whole layer
    req = JobRequest("inpaint", Params(), Options(), image=buffer(img, "BGRA_U8"), mask=buffer(sel[..., None], "GRAY_U8"))
    plan = plan_region_job(req, regionjob.selection_bbox(req), 512, seed=1)
    work = regionjob.prepare(req, plan)
    assert plan.model_size[0] * plan.model_size[1] < side * side and not work.opaque
    out = np.full((plan.model_size[1], plan.model_size[0], 3), (0.2, 0.6, 0.9), np.float32)
    (patch,) = regionjob.finish(req, work, [out], [1], keep_layer_alpha=True)
    comp = regionjob.composite(req, patch)
    assert np.array_equal(comp[sel == 0], img[sel == 0])
    p = pixels.as_array(patch.image)
    deep = cv2.erode(sel, np.ones((41, 41), np.uint8)) == 255
    assert np.all(p[deep][:, 3] == 255)
    # colour match pulls the flat output toward the noise around it, but the same for every pixel
    assert np.ptp(p[deep][:, :3].astype(int), axis=0).max() <= 1
