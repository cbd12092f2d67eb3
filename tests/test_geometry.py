"""Region geometry and compositing, as properties over random inputs (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.contract.geometry import Rect, model_size, plan_region
from core.contract.jobs import JobRequest, Options, Params
from core.contract.plan import plan_region_job
from core.pipelines import regionjob
from core.raster import compositing, masks
from core.raster.pixels import as_array

from .helpers import buffer


@st.composite
def canvas_and_bbox(draw):
    cw = draw(st.integers(1, 9000))
    ch = draw(st.integers(1, 9000))
    x = draw(st.integers(0, cw - 1))
    y = draw(st.integers(0, ch - 1))
    w = draw(st.integers(1, cw - x))
    h = draw(st.integers(1, ch - y))
    return (cw, ch), Rect(x, y, w, h)


@given(canvas_and_bbox(), st.integers(0, 512), st.integers(0, 512), st.sampled_from([128, 512, 768]))
@settings(max_examples=500, deadline=None)
def test_region_inside_canvas_contains_bbox_and_scales_to_multiples_of_8(cb, grow, feather, native):
    canvas, bbox = cb
    region = plan_region(bbox, canvas, grow=grow, feather=feather)
    assert Rect(0, 0, *canvas).contains(region)
    assert region.contains(bbox)
    # the repaint margin fits wherever the canvas allows it
    grown = bbox.pad(grow).intersect(Rect(0, 0, *canvas))
    assert region.contains(grown)
    w, h = model_size(region.w, region.h, native)
    assert w % 8 == 0 and h % 8 == 0 and w >= 64 and h >= 64


@given(st.integers(1, 9000), st.integers(1, 9000), st.sampled_from([512, 768]))
@settings(max_examples=300, deadline=None)
def test_model_size_keeps_area_near_native_and_aspect(w, h, native):
    mw, mh = model_size(w, h, native)
    if 64 < mw and 64 < mh:
        # area within rounding of native²; aspect within rounding
        assert abs(mw * mh - native * native) <= 8 * (mw + mh) + 64
        assert abs(mw / mh - w / h) <= (w / h) * (8 / min(mw, mh) + 8 / min(mw, mh)) + 1e-9


@given(st.integers(1, 9000), st.integers(1, 9000))
@settings(max_examples=300, deadline=None)
def test_model_size_in_multiples_of_64_for_a_compiled_unet(w, h):
    """Few shapes (each compiled once): the shorter side is rounded to 64 and the longer follows from
    the area, so the stretch is bounded by that rounding, and from 1:4 to 4:1 there are 9 sizes."""
    mw, mh = model_size(w, h, 512, multiple=64)
    assert mw % 64 == 0 and mh % 64 == 0
    short, long_ = sorted((mw, mh))
    if short > 64:
        assert abs(mw * mh - 512 * 512) <= 32 * long_ + 32 * short + 32 * 32
        exact_short = min(w, h) * 512 / (w * h) ** 0.5      # what the shorter side was rounded from
        e1, e2 = 32 / exact_short, 32 / long_               # half a step, relative
        stretch = (mw / mh) / (w / h)
        assert max(stretch, 1 / stretch) <= max((1 + e1) ** 2 / (1 - e2), (1 + e2) / (1 - e1) ** 2) + 1e-9
    sizes = {model_size(a, b, 512, multiple=64) for a in range(256, 1025, 7) for b in range(256, 1025, 7)}
    assert len(sizes) == 9 and (512, 512) in sizes, sorted(sizes)


def test_small_selection_goes_up_large_region_goes_down():
    small = plan_region(Rect(100, 100, 20, 20), (1000, 1000), grow=0)
    assert model_size(small.w, small.h, 512)[0] > small.w
    large = plan_region(None, (8192, 8192))
    assert large == Rect(0, 0, 8192, 8192)
    assert model_size(large.w, large.h, 512) == (512, 512)


def test_region_is_moved_inside_the_canvas_rather_than_cut():
    r = plan_region(Rect(0, 0, 40, 40), (1000, 1000), grow=8)
    assert r.x == 0 and r.y == 0
    margin = 8 + 32
    assert r.w == 40 + 2 * margin and r.h == 40 + 2 * margin


def test_region_is_widened_toward_max_aspect():
    r = plan_region(Rect(100, 500, 800, 4), (2000, 2000), grow=0)
    assert r.w <= r.h * 3.0 + 1


def test_mask_bbox():
    m = np.zeros((50, 60), np.uint8)
    assert masks.mask_bbox(m) is None
    m[10:20, 30:41] = 3
    assert masks.mask_bbox(m, (5, 7)) == Rect(35, 17, 11, 10)


def test_grow_and_feather():
    sel = np.zeros((64, 64), np.uint8)
    sel[20:44, 20:44] = 255
    grown = masks.grow_mask(sel > 0, 5)
    assert grown[15, 32] and not grown[14, 32] and grown[32, 48] and not grown[32, 49]
    alpha = masks.feather_alpha(sel, 6)
    assert alpha[sel == 0].max() == 0.0
    assert alpha[32, 32] == 1.0
    assert 0.0 < alpha[20, 32] < 0.2  # edge pixel inside: soft
    assert np.all(np.diff(alpha[32, 20:32]) >= 0)  # monotone ramp inward


def test_color_match_removes_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.random((40, 40, 3)).astype(np.float32) * 0.5 + 0.2
    shifted = np.clip(ref * 0.8 + 0.1, 0, 1)
    ring = np.ones((40, 40), bool)
    fixed = compositing.color_match(shifted, ref, ring)
    assert np.abs(fixed - ref).max() < 1e-3
    assert np.abs(shifted - ref).max() > 0.05


mask_arrays = arrays(np.uint8, st.tuples(st.integers(8, 40), st.integers(8, 40)),
               elements=st.sampled_from([0, 0, 0, 0, 1, 37, 128, 254, 255]))


@given(mask_arrays, st.integers(0, 2**31), st.integers(0, 12), st.integers(0, 12), st.booleans(), st.booleans(),
       st.sampled_from(["RGBA_U8", "BGRA_U8", "BGRA_U16", "RGBA_F16", "RGBA_F32"]), st.sampled_from([1, 4]),
       st.sampled_from([8, 64]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_composite_leaves_every_pixel_outside_the_selection_bit_identical(
        mask, seed, grow, feather, transparent, color_match, fmt, blow_up, multiple):
    """(Masks blown up 4× make regions of up to 160 px, larger than the 64 px model input asked for:
    the shrinking path.  Model sizes in multiples of 64, as with a compiled UNet, stretch the region
    a little on its way to the model and back.)"""
    mask = np.kron(mask, np.ones((blow_up, blow_up), np.uint8))
    native = 128 if blow_up == 1 else 64
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    if fmt in ("RGBA_U8", "BGRA_U8"):
        img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    elif fmt == "BGRA_U16":
        img = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    else:
        img = rng.random((h, w, 4)).astype(np.float16 if fmt == "RGBA_F16" else np.float32) * 1.5
    if not transparent:
        img[..., 3] = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(img.dtype, 1.0)
    req = JobRequest("inpaint", Params(), Options(grow=grow, feather=feather, color_match=color_match),
                     image=buffer(img, fmt, linear=fmt.startswith("RGBA_F")),
                     mask=buffer(mask[..., None], "GRAY_U8"))
    bbox = regionjob.selection_bbox(req)
    plan = plan_region_job(req, bbox, native, seed=1, multiple=multiple)
    assert plan.model_size[0] % multiple == 0 and plan.model_size[1] % multiple == 0
    work = regionjob.prepare(req, plan)
    fake_output = rng.random((plan.model_size[1], plan.model_size[0], 3)).astype(np.float32)
    (patch,) = regionjob.finish(req, work, [fake_output], [1], keep_layer_alpha=transparent)
    comp = regionjob.composite(req, patch)
    outside = mask == 0
    assert comp.dtype == img.dtype
    assert np.array_equal(comp[outside].view(np.uint8), img[outside].view(np.uint8))
    # the patch itself is transparent wherever the selection is 0
    p = as_array(patch.image)
    rows, cols = Rect(patch.x, patch.y, patch.image.width, patch.image.height).slices()
    assert np.all(p[..., 3][outside[rows, cols]] == 0)
    inside = mask == 255
    if inside.any() and feather == 0 and not transparent:
        assert not np.array_equal(comp[inside], img[inside])
