"""Exemplar (patch-based) fill: the hole is rebuilt from 7×7 patches copied from the known pixels.

``synthesize`` is Wexler, Shechtman and Irani's completion ("Space-Time Completion of Video", 2007)
with PatchMatch (Barnes et al., 2009) as the nearest-neighbour search, coarse to fine:

- a pyramid halves the image until the hole is a few pixels thick; the coarsest level starts from a
  smooth fill;
- at each level, every patch that overlaps the hole looks for its most similar fully known patch
  (PatchMatch: neighbours' matches shifted by one, two, four and eight pixels, then random tries at
  shrinking radii, all patches at once with numpy), then every hole pixel becomes the weighted mean
  of what the patches covering it copy there ("voting"); a few such rounds per level;
- the matches go up to the next level as they are (coordinates doubled), so the finer level copies
  the same regions with their full detail;
- finally the copied texture is fitted to the hole's boundary: the mismatch measured on the known
  pixels next to the hole is spread over it as a membrane (Poisson blending).

Patches are compared on 16 numbers each (the low-frequency 2-D DCT coefficients of an opponent
colour transform: 10 of brightness, 3 of each colour difference), which keeps the search fast.
Deterministic: the random tries come from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from . import diffusion

PATCH = 7
R = PATCH // 2
PAD = 8                                # ≥ R and ≥ the longest propagation jump
JUMPS = (1, 2, 4, 8)
MIN_SIDE = 24                          # the coarsest level's shorter side, at least
MIN_SOURCES = 64                       # fully known patches a level needs to be used
EM_ROUNDS = (6, 3, 1)                  # rounds at the coarsest, middle and finest levels
SEARCH_ITERS = (2, 2, 1)               # PatchMatch iterations per round, same levels
RADIUS = (1 << 20, 64, 16)             # random search's first radius (px), same levels
JUMP_SETS = (JUMPS, JUMPS, (1, 2))     # propagation distances, same levels
LUMA_ORDER, CHROMA_ORDER = 3, 1        # DCT coefficients kept: u + v <= order

Tick = Callable[[], None]

_OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], np.float32)
_OPPONENT /= np.linalg.norm(_OPPONENT, axis=1, keepdims=True)


def _dct_rows(n: int) -> np.ndarray:
    k, x = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * (x + 0.5) * k / n) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2)
    return m.astype(np.float32)


_DCT = _dct_rows(PATCH)
_FEATURES = [(ch, u, v) for ch, order in ((0, LUMA_ORDER), (1, CHROMA_ORDER), (2, CHROMA_ORDER))
             for u in range(order + 1) for v in range(order + 1 - u)]


def _noop() -> None:
    pass


def features(img: np.ndarray) -> np.ndarray:
    """(H·W) × 16 patch descriptors of a padded image: orthonormal, so their squared distance is the
    part of the patches' sum of squared differences that the kept coefficients carry."""
    h, w = img.shape[:2]
    opp = cv2.transform(img, _OPPONENT)
    out = np.empty((h, w, len(_FEATURES)), np.float32)
    for k, (ch, u, v) in enumerate(_FEATURES):
        out[..., k] = cv2.sepFilter2D(opp[..., ch], cv2.CV_32F, _DCT[v], _DCT[u], borderType=cv2.BORDER_REFLECT)
    return out.reshape(h * w, -1)


def _pad(img: np.ndarray) -> np.ndarray:
    return cv2.copyMakeBorder(img, PAD, PAD, PAD, PAD, cv2.BORDER_REFLECT)


class Level:
    """One pyramid level, padded by PAD: flat indices into the padded image throughout."""

    def __init__(self, img: np.ndarray, hole: np.ndarray, forbidden: np.ndarray):
        self.shape = hole.shape
        h, w = hole.shape[0] + 2 * PAD, hole.shape[1] + 2 * PAD
        self.h, self.w = h, w
        self.img = _pad(img)
        self.hole = np.pad(hole, PAD)
        inside = np.zeros((h, w), bool)
        inside[PAD:-PAD, PAD:-PAD] = True
        usable = (inside & ~self.hole & ~np.pad(forbidden, PAD)).astype(np.uint8)
        square = np.ones((PATCH, PATCH), np.uint8)
        self.valid = (cv2.erode(usable, square, borderValue=0) > 0).ravel()
        self.sources = np.flatnonzero(self.valid)
        targets = (cv2.dilate(self.hole.astype(np.uint8), square) > 0) & inside
        self.targets = np.flatnonzero(targets)
        self.index = np.full(h * w, -1, np.int64)
        self.index[self.targets] = np.arange(len(self.targets))
        # patches centred nearer the known pixels are trusted more when voting (Wexler's confidence)
        dist = cv2.distanceTransform(self.hole.astype(np.uint8), cv2.DIST_L2, 3).ravel()
        self.confidence = np.power(np.float32(1.3), -dist[self.targets]).astype(np.float32)
        self.offsets = np.array([dy * w + dx for dy in range(-R, R + 1) for dx in range(-R, R + 1)], np.int64)
        ty, tx = np.divmod(self.targets, w)
        self.box = (int(ty.min()) - R, int(ty.max()) + R + 1, int(tx.min()) - R, int(tx.max()) + R + 1) \
            if len(self.targets) else (PAD, PAD + 1, PAD, PAD + 1)

    def random_sources(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sources[rng.integers(0, len(self.sources), n)]

    def unpad(self, img: np.ndarray) -> np.ndarray:
        return img[PAD:-PAD, PAD:-PAD]


def _search(lv: Level, fs: np.ndarray, ft: np.ndarray, src: np.ndarray, iters: int, radius: int,
            jumps: tuple[int, ...], rng: np.random.Generator, tick: Tick) -> tuple[np.ndarray, np.ndarray]:
    """PatchMatch: improve every target's source ``src`` (flat indices) in place; returns (src, cost)."""
    w, size = lv.w, lv.h * lv.w

    def cost_of(cand: np.ndarray) -> np.ndarray:
        d = fs[cand] - ft
        c = np.einsum("ij,ij->i", d, d)
        c[~lv.valid[cand]] = np.inf
        return c

    def take(cand: np.ndarray, best: np.ndarray) -> None:
        c = cost_of(cand)
        better = c < best
        src[better], best[better] = cand[better], c[better]

    best = cost_of(src)
    n = len(src)
    for _ in range(iters):
        for k in jumps:
            for d in (k, -k, k * w, -k * w):
                j = lv.index[lv.targets - d]
                has = j >= 0
                take(np.where(has, src[np.maximum(j, 0)] + d, src), best)
        r = min(radius, max(lv.shape))
        while r >= 1:
            y = np.clip(src // w + rng.integers(-r, r + 1, n), 0, lv.h - 1)
            x = np.clip(src % w + rng.integers(-r, r + 1, n), 0, w - 1)
            take(np.minimum(y * w + x, size - 1), best)
            r //= 2
        tick()
    return src, best


def _vote(lv: Level, img: np.ndarray, src: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel covered by a target patch: the weighted mean of what the patches copy there
    (H×W×3), and whether any patch covers it (H×W).  One nearest-pixel remap per patch offset: pixel q
    gets, from the patch centred at q - o, the source pixel src(q - o) + o."""
    w = lv.w
    field = np.zeros((lv.h, w, 2), np.int16)          # each target's source (x, y); 0 elsewhere
    wt = np.zeros((lv.h, w), np.float32)
    field.reshape(-1, 2)[lv.targets] = np.stack([src % w, src // w], -1)
    wt.ravel()[lv.targets] = weight
    y0, y1, x0, x1 = lv.box
    acc = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    total = np.zeros((y1 - y0, x1 - x0), np.float32)
    for oy in range(-R, R + 1):
        for ox in range(-R, R + 1):
            fs = field[y0 - oy:y1 - oy, x0 - ox:x1 - ox] + np.array([ox, oy], np.int16)
            ws = wt[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            acc += cv2.remap(img, fs, None, cv2.INTER_NEAREST) * ws[..., None]
            total += ws
    covered = np.zeros((lv.h, w), bool)
    covered[y0:y1, x0:x1] = total > 0
    out = np.zeros((lv.h, w, 3), np.float32)
    out[y0:y1, x0:x1] = acc / np.where(total > 0, total, 1)[..., None]
    return out, covered


def _similarity(cost: np.ndarray, lv: Level) -> np.ndarray:
    finite = np.isfinite(cost)
    if not finite.any():
        return lv.confidence
    sigma2 = float(np.percentile(cost[finite], 75)) + 1e-6
    return (np.exp(-np.where(finite, cost, np.inf) / (2 * sigma2)) * lv.confidence).astype(np.float32)


def _apply(lv: Level, img: np.ndarray, voted: np.ndarray, covered: np.ndarray) -> np.ndarray:
    out = img.copy()
    fill = lv.hole & covered
    out[fill] = voted[fill]
    return _pad(lv.unpad(out))           # keep the padding a reflection of the image


def pyramid(rgb: np.ndarray, hole: np.ndarray, forbidden: np.ndarray):
    """[(image, hole, forbidden)] coarsest first: halved while the hole is more than a few pixels
    thick at that level and the level keeps enough fully known patches."""
    thick = float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3).max())
    levels = [(rgb, hole, forbidden)]
    while thick / 2 ** (len(levels) - 1) > R and min(levels[-1][1].shape) >= 2 * MIN_SIDE:
        img, hm, fb = levels[-1]
        size = ((hm.shape[1] + 1) // 2, (hm.shape[0] + 1) // 2)
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        sh = cv2.resize(hm.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        sf = cv2.resize(fb.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        if Level(small, sh, sf).sources.size < MIN_SOURCES:
            break
        levels.append((small, sh, sf))
    return levels[::-1]


def _upsample_sources(prev: Level, prev_src: np.ndarray, lv: Level, rng: np.random.Generator) -> np.ndarray:
    ty, tx = lv.targets // lv.w - PAD, lv.targets % lv.w - PAD
    py = np.minimum(ty // 2, prev.shape[0] - 1)
    px = np.minimum(tx // 2, prev.shape[1] - 1)
    j = prev.index[(py + PAD) * prev.w + px + PAD]
    has = j >= 0
    ps = prev_src[np.maximum(j, 0)]
    sy = 2 * (ps // prev.w - PAD) + (ty - 2 * py) + PAD
    sx = 2 * (ps % prev.w - PAD) + (tx - 2 * px) + PAD
    ok = has & (sy >= 0) & (sy < lv.h) & (sx >= 0) & (sx < lv.w)
    src = np.where(ok, sy * lv.w + sx, 0)
    ok &= lv.valid[src]
    src[~ok] = lv.random_sources(int((~ok).sum()), rng)
    return src


def plan_ticks(levels: list) -> int:
    """The number of ``tick`` calls ``synthesize`` makes for these levels."""
    total = 0
    for i in range(len(levels)):
        k = 0 if i == 0 else 2 if i == len(levels) - 1 else 1
        total += EM_ROUNDS[k] * (SEARCH_ITERS[k] + 1) + (1 if i > 0 else 0)
    return total + 1


def synthesize(rgb: np.ndarray, hole: np.ndarray, smooth: np.ndarray, *, forbidden: np.ndarray | None = None,
               seed: int = 0, tick: Tick = _noop, levels: list | None = None) -> np.ndarray:
    """The hole of ``rgb`` rebuilt from patches of the known pixels (not from ``forbidden`` ones).
    ``smooth`` is a smooth fill of the same hole: the coarsest level's start and the fallback when
    the image has no fully known patch."""
    rgb = rgb.astype(np.float32)
    forbidden = np.zeros_like(hole) if forbidden is None else forbidden & ~hole
    if levels is None:
        levels = pyramid(rgb, hole, forbidden)
    if not hole.any() or Level(*levels[-1]).sources.size == 0:
        return smooth.copy()
    rng = np.random.default_rng(seed)
    prev: tuple[Level, np.ndarray] | None = None
    img = np.empty(0, np.float32)
    for i, (limg, lhole, lforbid) in enumerate(levels):
        k = 0 if i == 0 else 2 if i == len(levels) - 1 else 1
        lv = Level(limg, lhole, lforbid)
        fs = features(lv.img)
        if prev is None:
            size = (lhole.shape[1], lhole.shape[0])
            start = cv2.resize(smooth, size, interpolation=cv2.INTER_AREA) if smooth.shape[:2] != lhole.shape else smooth
            img = lv.img.copy()
            img[lv.hole] = _pad(start)[lv.hole]
            src = lv.random_sources(len(lv.targets), rng)
        else:
            src = _upsample_sources(prev[0], prev[1], lv, rng)
            img = _apply(lv, lv.img, *_vote(lv, lv.img, src, lv.confidence))
            tick()
        for r in range(EM_ROUNDS[k]):
            ft = features(img)[lv.targets]
            src, cost = _search(lv, fs, ft, src, SEARCH_ITERS[k], RADIUS[k], JUMP_SETS[k], rng, tick)
            if i < len(levels) - 1 or r < EM_ROUNDS[k] - 1:
                img = _apply(lv, img, *_vote(lv, img, src, _similarity(cost, lv)))
            tick()
        prev = (lv, src)
    assert prev is not None
    # The finest level does not vote at the end: the mean of overlapping copies softens fine grain
    # (grass, noise).  Each pixel takes the centre of its own patch's match instead.
    lv, src = prev
    copied = img.copy()
    copied.reshape(-1, 3)[lv.targets] = lv.img.reshape(-1, 3)[src]
    covered = np.zeros(lv.hole.shape, bool)
    covered.ravel()[lv.targets] = True
    out = _blend_boundary(lv, _apply(lv, img, copied, covered), copied, covered)
    tick()
    return out


def _blend_boundary(lv: Level, img: np.ndarray, voted: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Poisson blending: the difference between the known pixels and what the patches would put
    there, on the ring next to the hole, spread over the hole as a membrane and added."""
    ring = covered & ~lv.hole
    ring[:PAD], ring[-PAD:], ring[:, :PAD], ring[:, -PAD:] = False, False, False, False
    residual = np.zeros_like(img)
    residual[ring] = lv.img[ring] - voted[ring]
    unknown = ~ring
    if not ring.any():
        return lv.unpad(img).copy()
    correction = diffusion.membrane(lv.unpad(residual), lv.unpad(unknown))
    out = lv.unpad(img).copy()
    hole = lv.unpad(lv.hole)
    out[hole] += correction[hole]
    return out
