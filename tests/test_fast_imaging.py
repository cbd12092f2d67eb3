"""The fast paths of the image geometry give the results of the plain formulas: the capped, tiled,
parallel distance transform (exact up to its cap, to OpenCV's float rounding, which depends on where
the window starts: within 1e-6 relative), and the banded flatten and colour match (identical)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.raster import compositing, masks, pixels


def blobs(h: int, w: int, seed: int) -> np.ndarray:
    """A boolean mask of random discs and rectangles (edges in many tiles, some tiles uniform)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for _ in range(12):
        cv2.circle(m, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(5, 200)), 1, -1)
    m[h // 3: h // 3 + 300, 40: w - 40] = 1
    return m > 0


def full_distance(binary: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(binary.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(masks, "DISTANCE_TILE", 128)
    monkeypatch.setattr(masks, "DISTANCE_TILED_PIXELS", 1)


@pytest.mark.parametrize("cap", [1, 6.5, 24, 150])
@pytest.mark.parametrize("seed", [0, 1])
def test_capped_distance_is_exact_up_to_the_cap(small_tiles, cap, seed):
    binary = blobs(1000, 900, seed)
    want = full_distance(binary)
    got = masks._distance_inside(binary, cap)
    near = want <= cap
    assert np.allclose(got[near], want[near], rtol=1e-6, atol=0)
    assert (got[~near] > cap).all()
    out_want, out_got = full_distance(~binary), masks.distance_outside(binary, cap)
    assert np.allclose(out_got[out_want <= cap], out_want[out_want <= cap], rtol=1e-6, atol=0)
    assert (out_got[out_want > cap] > cap).all()


def test_grow_feather_and_ring_match_the_plain_transform(small_tiles, monkeypatch):
    sel = (blobs(700, 800, 3) * 255).astype(np.uint8)
    binary = sel > 0
    grown, feathered = masks.grow_mask(binary, 9), masks.feather_alpha(sel, 12)
    ring = masks.ring_mask(binary, 17, masks.distance_outside(binary, 17))
    monkeypatch.setattr(masks, "DISTANCE_TILED_PIXELS", 1 << 40)  # the plain, untiled transform
    assert np.array_equal(grown, masks.grow_mask(binary, 9))
    plain = masks.feather_alpha(sel, 12)
    assert np.allclose(feathered, plain, rtol=0, atol=1e-6) and np.array_equal(feathered == 0, plain == 0)
    assert np.array_equal(ring, masks.ring_mask(binary, 17))


def test_uniform_masks(small_tiles):
    assert (masks._distance_inside(np.ones((300, 300), bool), 5) >= 5).all()
    assert not masks._distance_inside(np.zeros((300, 300), bool), 5).any()


def test_banded_flatten_and_colour_match_equal_one_pass(monkeypatch):
    monkeypatch.setattr(pixels, "PARALLEL_PIXELS", 1)
    rng = np.random.default_rng(5)
    rgba = rng.random((300, 257, 4), dtype=np.float32)
    a = rgba[..., 3:4]
    assert np.array_equal(compositing.flatten(rgba), rgba[..., :3] * a + 0.5 * (1.0 - a))
    result = rng.random((300, 257, 3), dtype=np.float32)
    ref = rng.random((300, 257, 3), dtype=np.float32) * 0.5
    ring = np.zeros((300, 257), bool)
    ring[100:120] = True
    got = compositing.color_match(result, ref, ring)
    r, o = result[ring], ref[ring]
    gain = np.clip(o.std(0) / np.maximum(r.std(0), 1e-3), 0.5, 2.0)
    want = np.clip((result - r.mean(0)) * gain + o.mean(0), 0.0, 1.0).astype(np.float32)
    assert np.array_equal(got, want)
    assert np.array_equal(compositing.color_match(result, ref[ring], ring), want)   # the ring's pixels only
