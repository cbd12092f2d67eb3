"""LaMa-style evaluation masks: coverage inside its range, deterministic per seed, the right shapes."""

import numpy as np
import pytest

from core.devtools.maskgen import STYLES, coverage, random_mask


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [(256, 256), (96, 200)])
def test_coverage_stays_in_range(style, size):
    h, w = size
    for rng in ((0.05, 0.15), (0.1, 0.4), (0.3, 0.5)):
        for seed in range(12):
            m = random_mask(h, w, seed=seed, style=style, coverage_range=rng)
            assert m.shape == (h, w) and m.dtype == bool
            assert rng[0] <= coverage(m) <= rng[1], (style, size, rng, seed, coverage(m))


@pytest.mark.parametrize("style", STYLES)
def test_same_seed_same_mask_other_seed_other_mask(style):
    a = random_mask(128, 160, seed=7, style=style)
    assert np.array_equal(a, random_mask(128, 160, seed=7, style=style))
    assert not np.array_equal(a, random_mask(128, 160, seed=8, style=style))


def test_styles_differ_in_shape():
    """Thin strokes have much of their area near an edge, thick ones little; boxes are solid rectangles."""
    import cv2

    def edge_share(m):
        inner = cv2.erode(m.astype(np.uint8), np.ones((9, 9), np.uint8))
        return 1 - inner.sum() / m.sum()

    thin = [edge_share(random_mask(512, 512, seed=s, style="thin")) for s in range(5)]
    thick = [edge_share(random_mask(512, 512, seed=s, style="thick")) for s in range(5)]
    assert min(thin) > 0.4 and max(thick) < 0.25  # measured: thin 0.50–0.66, thick 0.06–0.16
    box = random_mask(512, 512, seed=3, style="box", coverage_range=(0.01, 0.1))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(box.astype(np.uint8))
    # every connected piece of a box mask is a union of rectangles: it fills most of its bounding box
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        assert area >= 0.5 * w * h


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        random_mask(64, 64, seed=0, style="stars")
    with pytest.raises(ValueError, match="coverage"):
        random_mask(64, 64, seed=0, coverage_range=(0.5, 0.2))
    with pytest.raises(ValueError, match="too narrow"):
        random_mask(64, 64, seed=0, coverage_range=(0.2, 0.2001))
