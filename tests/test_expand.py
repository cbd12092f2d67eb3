"""Expand (outpainting): its geometry and compositing as properties over random inputs (hypothesis),
with the model replaced by painters that say what they paint (the one boundary); then the tiny model.

- the new canvas has the right size, the old pixels sit at their new coordinates bit for bit, the
  patch is opaque over the new border and all zero over the old pixels;
- the passes paint every new pixel once, see only known pixels and earlier results besides their
  own, stay within the model's window size and never look at the whole canvas;
- passes that agree join exactly, and where they disagree every step between neighbouring pixels
  is bounded by the band's ramp: no seam at a pass border (and there would be one without the band).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.contract import expand as E
from core.contract.geometry import Rect
from core.contract.jobs import JobRequest, Options, Params, validate
from core.contract.params import ValidationError
from core.pipelines import expand as X
from core.pipelines import run_job
from core.raster.pixels import as_array, convert_buffer

from .helpers import buffer, rgba_u8

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def growths(draw, most=300):
    sides = [draw(st.integers(0, most)) if draw(st.booleans()) else 0 for _ in range(4)]
    if not any(sides):
        sides[draw(st.integers(0, 3))] = draw(st.integers(1, most))
    return E.Growth(*sides)


def request(img: np.ndarray, growth: E.Growth, fmt="BGRA_U8", linear=False, **params) -> JobRequest:
    image = buffer(img[..., [2, 1, 0, 3]], "BGRA_U8")
    if fmt != "BGRA_U8" or linear:
        image = convert_buffer(image, fmt, linear)
    p = {"prompt": "a meadow", "steps": 2, "seed": 1, **params}
    return JobRequest("expand", Params(**p), Options(**dict(zip(E.FIELDS, growth.as_tuple()))), image=image)


# --- geometry ------------------------------------------------------------------------------------------

def covered(rects, size) -> np.ndarray:
    out = np.zeros((size[1], size[0]), np.int32)
    for r in rects:
        out[r.slices()] += 1
    return out


@given(st.integers(1, 400), st.integers(1, 400), growths(), st.sampled_from([16, 24, 64, 128, 512]))
@FAST
def test_passes_paint_every_new_pixel_once_seeing_only_known_pixels_and_earlier_results(w, h, growth, native):
    size = (w, h)
    nw, nh = growth.canvas(size)
    known = E.context_rect(size, growth).translate(*growth.offset)
    max_side, band = E.pass_sizes(native)
    passes = E.plan_passes(size, growth, known, max_side, band)
    new = covered(E.new_area(size, growth), (nw, nh))
    assert new.max() == 1 and new.sum() == nw * nh - w * h          # the new border, once, nothing else
    assert np.array_equal(covered([p.fresh for p in passes], (nw, nh)), new)
    state = np.zeros((nh, nw), np.uint8)                                 # 0 blank, 1 known, 2 painted
    state[known.slices()] = 1
    for p in passes:
        assert Rect(0, 0, nw, nh).contains(p.window) and p.window.contains(p.fresh)
        assert max(p.window.w, p.window.h) <= max_side
        seen = state[p.window.slices()].copy()
        seen[p.fresh.translate(-p.window.x, -p.window.y).slices()] = 3
        assert (seen != 0).all()                                         # no hole as context
        assert (seen != 3).any()                                         # and some context
        state[p.fresh.slices()] = 2


@given(st.integers(1, 3000), st.integers(1, 3000), growths(2000))
@settings(max_examples=300, deadline=None)
def test_the_context_read_is_a_strip_beside_each_grown_side_inside_the_old_canvas(w, h, growth):
    rect = E.context_rect((w, h), growth)
    assert Rect(0, 0, w, h).contains(rect)
    for g, extent, edge in ((growth.left, w, rect.x == 0), (growth.right, w, rect.right == w),
                            (growth.top, h, rect.y == 0), (growth.bottom, h, rect.bottom == h)):
        if g:
            assert edge and (rect.w if extent == w else rect.h) >= min(extent, max(g, E.MIN_CONTEXT))
    if sum(1 for g in growth.as_tuple() if g) == 1 and max(growth.as_tuple()) < min(w, h) - E.MIN_CONTEXT:
        assert rect.w * rect.h < w * h                                   # one side: never the whole canvas


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 32), st.integers(1, 32))
@settings(max_examples=300, deadline=None)
def test_to_aspect_grows_one_way_the_least_that_reaches_the_ratio(w, h, aw, ah):
    g = E.to_aspect((w, h), (aw, ah))
    nw, nh = g.canvas((w, h))
    assert (g.top, g.bottom) == (0, 0) or (g.left, g.right) == (0, 0)
    assert abs(g.left - g.right) <= 1 and abs(g.top - g.bottom) <= 1
    assert nw * ah >= nh * aw if g.left + g.right else nh * aw >= nw * ah
    if g.left + g.right:
        assert (nw - 1) * ah < nh * aw                                  # one pixel less would not do
    if g.top + g.bottom:
        assert (nh - 1) * aw < nw * ah


def test_growth_from_a_provenance_record():
    assert E.Growth.from_dict({"expand_left": 3, "expand_bottom": 5, "grow": 8}) == E.Growth(3, 0, 0, 5)
    with pytest.raises(ValueError, match="expand_top must be a whole number"):
        E.Growth.from_dict({"expand_top": "7"})


# --- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("growth, image_rect, parameter, text", [
    (E.Growth(), None, "expand", "at least one of expand_left"),
    (E.Growth(0, 0, 8193, 0), None, "expand_right", "0–8192 px"),
    (E.Growth(8000, 0, 8000, 0), None, "expand", "at most 16384 px a side"),
    (E.Growth(0, 0, 64, 0), (0, 0, 40, 30), "image", "the context beside each grown side"),
])
def test_bad_growth_is_refused_naming_the_field(growth, image_rect, parameter, text):
    img = rgba_u8(30, 400)
    req = request(img, growth)
    if image_rect:
        req = replace(req, image=buffer(img[:30, :40]), canvas=(400, 30))
    with pytest.raises(ValidationError) as e:
        validate(req)
    assert e.value.parameter == parameter and text in str(e.value)


# --- compositing, with painters in place of the model ----------------------------------------------------

def field(x, y):
    """A smooth colour field over the whole (new) canvas."""
    return np.stack([0.5 + 0.4 * np.sin(x / 17.0), 0.5 + 0.4 * np.cos(y / 23.0), (x + y) % 97 / 97.0], axis=-1)


def field_painter(job):
    def paint(i, p, rgb, repaint, fresh):
        y, x = np.mgrid[p.window.y:p.window.bottom, p.window.x:p.window.right]
        return field(x.astype(np.float32), y.astype(np.float32)).astype(np.float32)
    return paint


def constant_painter(levels):
    def paint(i, p, rgb, repaint, fresh):
        return np.full(rgb.shape, levels[i % len(levels)], np.float32)
    return paint


@given(st.integers(1, 90), st.integers(1, 90), growths(120), st.sampled_from([16, 32, 64]),
       st.sampled_from([("BGRA_U8", False), ("BGRA_U16", False), ("RGBA_F16", True), ("RGBA_F32", True)]),
       st.integers(0, 2**16), st.booleans())
@FAST
def test_old_pixels_keep_their_new_coordinates_bit_for_bit_on_a_canvas_of_the_new_size(
        w, h, growth, native, layout, seed, transparent):
    fmt, linear = layout
    req = validate(request(rgba_u8(h, w, seed, alpha=transparent), growth, fmt, linear))
    job = X.plan(req, native)
    rgb, state = X.expand_image(job, constant_painter([0.2, 0.7, 0.45]))
    patch = X.patch_of(job, rgb, state, 1)
    nw, nh = growth.canvas((w, h))
    out = X.composite(req, patch)
    assert out.shape[:2] == (nh, nw)
    assert out[growth.top:growth.top + h, growth.left:growth.left + w].tobytes() == as_array(req.image).tobytes()
    layer = np.zeros((nh, nw, 4), as_array(patch.image).dtype)
    layer[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width] = as_array(patch.image)
    old = np.zeros((nh, nw), bool)
    old[growth.top:growth.top + h, growth.left:growth.left + w] = True
    assert not layer[old].any()                                           # all zero over the old pixels
    top = {"BGRA_U8": 255, "BGRA_U16": 65535}.get(fmt, 1.0)
    assert (layer[~old][:, 3] == top).all()                               # opaque over the whole new border


def steps_across(rgb: np.ndarray, new: np.ndarray) -> float:
    """The largest change between 4-neighbours that are both new pixels."""
    worst = 0.0
    for a, b, ma, mb in ((rgb[1:], rgb[:-1], new[1:], new[:-1]), (rgb[:, 1:], rgb[:, :-1], new[:, 1:], new[:, :-1])):
        both = ma & mb
        if both.any():
            worst = max(worst, float(np.abs(a - b).max(axis=-1)[both].max()))
    return worst


def new_mask(job) -> np.ndarray:
    a = job.area
    out = np.zeros((a.h, a.w), bool)
    for r in E.new_area(job.size, job.growth):
        out[r.slices((a.x, a.y))] = True
    return out


@given(st.integers(8, 70), st.integers(8, 70), growths(150), st.sampled_from([16, 24, 32]))
@FAST
def test_passes_that_agree_join_exactly(w, h, growth, native):
    job = X.plan(validate(request(rgba_u8(h, w, 3), growth)), native)
    rgb, _ = X.expand_image(job, field_painter(job))
    y, x = np.mgrid[job.area.y:job.area.bottom, job.area.x:job.area.right]
    new = new_mask(job)
    assert np.abs(rgb[new] - field(x, y)[new]).max() < 1e-5


@given(st.integers(8, 70), st.integers(8, 70), growths(150), st.sampled_from([16, 24, 32]))
@FAST
def test_no_seam_where_passes_disagree_only_the_band_ramp(w, h, growth, native):
    job = X.plan(validate(request(rgba_u8(h, w, 3), growth)), native)
    levels = [0.0, 1.0, 0.35, 0.8, 0.1]
    rgb, _ = X.expand_image(job, constant_painter(levels))
    band = min(p.band for p in job.passes)
    bound = 3.0 / (band + 1)                     # smoothstep's slope 1.5 per band width, two ramps at a corner
    assert steps_across(rgb, new_mask(job)) <= bound + 1e-4


def test_without_the_band_pass_borders_are_steps():
    """The same painter and passes with no band: the border between two passes is a full step (so the
    seam test above can fail)."""
    job = X.plan(validate(request(rgba_u8(40, 40, 3), E.Growth(0, 0, 200, 0))), 16)
    assert len(job.passes) > 2
    flat = replace(job, passes=tuple(replace(p, band=0) for p in job.passes))
    rgb, _ = X.expand_image(flat, constant_painter([0.0, 1.0]))
    assert steps_across(rgb, new_mask(job)) == 1.0
    rgb, _ = X.expand_image(job, constant_painter([0.0, 1.0]))
    assert steps_across(rgb, new_mask(job)) < 0.5


def test_a_window_with_a_hole_outside_its_fresh_pixels_is_refused():
    job = X.plan(validate(request(rgba_u8(20, 20, 3), E.Growth(0, 0, 30, 0))), 64)
    bad = replace(job.passes[0], window=job.passes[0].window.pad(0, 0, 5, 0))
    with pytest.raises(ValueError, match="outside the canvas area|unpainted"):
        X.expand_image(replace(job, passes=(bad,), base=()), constant_painter([0.5]))


def test_the_model_sees_the_new_border_and_context_not_the_whole_canvas():
    """1024×768 grown by 256 px on the right, planned for SD2 (512 px): one pass whose window is the
    new strip and as much old canvas beside it."""
    req = validate(request(rgba_u8(768, 1024, 1), E.Growth(0, 0, 256, 0)))
    job = X.plan(req, 512)
    assert [(p.fresh, p.window) for p in job.passes] == [(Rect(1024, 0, 256, 768), Rect(768, 0, 512, 768))]
    assert job.known == Rect(768, 0, 256, 768) and job.area == Rect(768, 0, 512, 768)


# --- the pre-fill ----------------------------------------------------------------------------------------

def test_the_prefill_carries_the_edge_outward_with_noise_of_the_contexts_spread():
    from core.raster.fastfill import fill_opencv

    rng = np.random.default_rng(0)
    rgb = np.zeros((64, 96, 3), np.float32)
    rgb[:, :48] = 0.2 + 0.05 * rng.standard_normal((64, 48, 3)).astype(np.float32)
    rgb[32:, :48, 0] += 0.5                                     # a red lower half, to carry across
    hole = np.zeros((64, 96), bool)
    hole[:, 48:] = True
    filled = X.noisy_fill(fill_opencv, seed=7)(2, rgb.copy(), hole)
    assert np.array_equal(filled[~hole], rgb[~hole])            # the known pixels stay
    right = filled[:, 60:]
    assert right[40:, :, 0].mean() - right[:24, :, 0].mean() > 0.3      # the edge's lines go on outward
    spread, expected = right[:24].std(axis=(0, 1)), X.NOISE_SHARE * rgb[~hole].std(axis=0)
    assert np.all(spread > 0.7 * expected) and np.all(spread < 1.3 * expected)
    again = X.noisy_fill(fill_opencv, seed=7)(2, rgb.copy(), hole)
    other = X.noisy_fill(fill_opencv, seed=8)(2, rgb.copy(), hole)
    assert np.array_equal(again, filled) and not np.array_equal(other, filled)


# --- the tiny model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("strength, images", [(0.6, 2), (1.0, 1)])
def test_tiny_model_paints_the_border_in_several_passes_and_keeps_the_old_pixels(exact_models, strength, images):
    """Below strength 1 the passes start from the pre-fill; at 1 from noise.  Progress counts every
    pass's steps of every image, in order."""
    from core.contract.jobcontrol import JobControl

    growth = E.Growth(0, 0, 150, 6)
    req = request(rgba_u8(40, 48, 5), growth, seed=21, steps=1, strength=strength, num_images=images)
    seen = []
    res = run_job(req, exact_models, JobControl(lambda s, t, ph: seen.append((s, t, ph))))
    passes = res.timings["passes"]
    assert passes >= 3 and res.timings["canvas"] == [198, 46]
    assert [p.seed for p in res.patches] == [21, 22][:images]
    steps = [s for s, t, ph in seen if ph == "denoising"]
    assert steps == list(range(1, passes * images + 1)) and seen[-1] == (passes * images, passes * images, "finishing")
    for patch in res.patches:
        assert (patch.x, patch.y, patch.image.width, patch.image.height) == (0, 0, 198, 46)
        out = X.composite(validate(req), patch)
        assert out[:40, :48].tobytes() == as_array(req.image).tobytes()
        assert (out[..., 3] == 255).all()
    if images == 2:
        assert not np.array_equal(as_array(res.patches[0].image), as_array(res.patches[1].image))


def test_a_selection_is_not_used_and_says_so(exact_models):
    from core.raster.pixels import as_array as arr

    img = rgba_u8(40, 48, 5)
    req = request(img, E.Growth(0, 0, 24, 0), seed=3, steps=1)
    mask = np.zeros((40, 48, 1), np.uint8)
    mask[:, 30:] = 255                                           # touches the right edge
    with_sel = run_job(replace(req, mask=buffer(mask, "GRAY_U8")), exact_models)
    without = run_job(req, exact_models)
    assert arr(with_sel.patches[0].image).tobytes() == arr(without.patches[0].image).tobytes()
    assert any("selection is not used" in w for w in with_sel.warnings) and not without.warnings
