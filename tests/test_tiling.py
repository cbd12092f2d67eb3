"""Tiling, blending and the shared noise field.

The tiler is checked against a stand-in: with a plain bicubic 4× resize in place of the diffusion
step, the tiled result must equal the untiled resize.  A tiling bug (an offset, a gap, a bad weight,
a lost row) cannot hide in noise that way.
"""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract.geometry import Rect
from core.raster import masks
from core.raster.noise import normal_field
from core.raster.tileblend import axis_weights, resize_rows, scale_tiled, selection_alpha_rows
from core.raster.tiling import default_overlap, plan_tiles, split_axis


def bicubic(pixels, scale=4):
    h, w = pixels.shape[:2]
    return cv2.resize(np.ascontiguousarray(pixels, np.float32), (w * scale, h * scale),
                      interpolation=cv2.INTER_CUBIC)


def stand_in(rect, pixels):
    return bicubic(pixels)


def tiled(image, tile, fn=stand_in, multiple=1):
    grid = plan_tiles(image.shape[1], image.shape[0], tile, multiple=multiple)
    bands = list(scale_tiled(image, grid, fn, 4))
    tops = [t for t, _ in bands]
    assert tops[0] == 0 and all(t1 == t0 + len(b) for (t0, b), t1 in zip(bands, tops[1:]))
    return np.concatenate([b for _, b in bands]), grid, bands


@st.composite
def axes(draw):
    tile = draw(st.integers(64, 512))
    return draw(st.integers(1, 6000)), tile, draw(st.sampled_from([1, 8]))


@given(axes())
@settings(max_examples=400, deadline=None)
def test_split_axis_covers_with_equal_overlapping_spans_never_three_deep(a):
    length, tile, multiple = a
    overlap = default_overlap(tile)
    spans = split_axis(length, tile, overlap, multiple)
    sizes = {s for _, s in spans}
    assert len(sizes) == 1 and spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    size = sizes.pop()
    assert size <= tile
    if len(spans) > 1:
        assert size % multiple == 0
    starts = [s for s, _ in spans]
    assert all(b - a > 0 and a + size - b >= overlap for a, b in zip(starts, starts[1:]))
    assert all(c >= a + size for a, c in zip(starts, starts[2:]))
    # every output pixel gets weight from some span
    total = np.zeros(length * 4, np.float32)
    for s, n in spans:
        total[s * 4:(s + n) * 4] += axis_weights(s, n, length, overlap, 4)
    assert (total > 0).all()


def test_weights_are_zero_in_the_skirt_of_shared_edges_and_one_inside():
    w = axis_weights(40, 64, 200, 16, 4)  # both edges shared; skirt 4 input px = 16 output px
    assert (w[:16] == 0).all() and (w[-16:] == 0).all()
    assert (w[48:-48] == 1).all()
    edge = axis_weights(0, 64, 200, 16, 4)  # the image border is not a shared edge
    assert (edge[:100] == 1).all() and (edge[-16:] == 0).all()


def test_final_rows_partition_the_image():
    grid = plan_tiles(300, 301, 64)
    rows = grid.final_rows()
    assert rows[0][0] == 0 and rows[-1][1] == 301
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))


@pytest.mark.parametrize("h,w,tile,multiple", [
    (97, 61, 64, 1),     # odd sizes, edge tiles on both axes
    (203, 301, 64, 8),   # many tiles, sizes rounded to multiples of 8 as the upscaler asks
    (45, 33, 64, 1),     # one tile
    (1, 1, 64, 1),       # one pixel
    (130, 129, 128, 8),  # just over one tile: two tiles that overlap a lot
])
def test_tiled_stand_in_equals_untiled_resize(h, w, tile, multiple):
    rng = np.random.default_rng(h * w)
    img = rng.random((h, w, 3), dtype=np.float32)
    out, grid, _ = tiled(img, tile, multiple=multiple)
    expected = bicubic(img)
    assert out.shape == expected.shape == (h * 4, w * 4, 3)
    assert np.abs(out - expected).max() < 2e-5
    if (h, w) == (45, 33):
        assert len(grid) == 1


def test_stand_in_catches_a_tiling_bug():
    img = np.random.default_rng(1).random((97, 161, 3), dtype=np.float32)

    def off_by_one(rect, pixels):  # a tile placed one output pixel off
        return np.roll(bicubic(pixels), 1, axis=1)

    def colour_jump(rect, pixels):  # tile-wise colour shift
        return bicubic(pixels) + (0.01 if rect.x else 0.0)

    for fn in (off_by_one, colour_jump):
        out, _, _ = tiled(img, 64, fn)
        assert np.abs(out - bicubic(img)).max() > 1e-3


def test_memory_follows_the_tile_not_the_image():
    """Bands are about one row of tiles high, however tall the image."""
    img = np.zeros((1000, 40, 3), np.float32)
    _, grid, bands = tiled(img, 64)
    assert len(grid.rows) > 10
    assert max(len(b) for _, b in bands) <= 64 * 4


def test_tile_function_gets_the_tile_and_must_scale_it():
    img = np.zeros((70, 70, 3), np.float32)
    seen = []

    def fn(rect, pixels):
        seen.append((rect, pixels.shape))
        return bicubic(pixels)

    tiled(img, 64, fn)
    assert all(shape[:2] == (r.h, r.w) for r, shape in seen) and len(seen) == 4
    with pytest.raises(ValueError, match="expected"):
        list(scale_tiled(img, plan_tiles(70, 70, 64), lambda r, p: p, 4))


def test_resize_rows_matches_the_whole_resize():
    a = np.random.default_rng(2).random((53, 41), dtype=np.float32)
    whole = cv2.resize(a, (41 * 4, 53 * 4), interpolation=cv2.INTER_LANCZOS4)
    for top, bottom in ((0, 13), (13, 101), (101, 212), (0, 212)):
        assert np.array_equal(resize_rows(a, 4, top, bottom), whole[top:bottom])


def test_selection_alpha_rows_match_the_whole_selection():
    sel = np.zeros((40, 50), np.uint8)
    sel[8:30, 10:41] = 255
    sel[15:20, 20:25] = 90
    big = np.repeat(np.repeat(sel, 4, axis=0), 4, axis=1)
    whole = masks.feather_alpha(big, 12)
    parts = [selection_alpha_rows(sel, 4, 12, t, b) for t, b in ((0, 37), (37, 90), (90, 160))]
    assert np.array_equal(np.concatenate(parts), whole)
    assert (whole[big == 0] == 0).all()


def test_noise_field_agrees_wherever_rectangles_overlap():
    a = normal_field(7, 0, 4, Rect(-5, 10, 200, 120))
    b = normal_field(7, 0, 4, Rect(60, 50, 33, 17))
    assert np.array_equal(a[:, 40:57, 65:98], b)
    assert abs(float(a.mean())) < 0.02 and abs(float(a.std()) - 1) < 0.02
    # channels, neighbours, seeds and streams are independent
    assert abs(np.corrcoef(a[0].ravel(), a[1].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(a[0, :, 1:].ravel(), a[0, :, :-1].ravel())[0, 1]) < 0.03
    for other in (normal_field(8, 0, 4, Rect(-5, 10, 200, 120)), normal_field(7, 1, 4, Rect(-5, 10, 200, 120))):
        assert abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 0.02
