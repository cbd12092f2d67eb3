"""Noise that belongs to pixel coordinates, not to the order it is drawn in (numpy).

``normal_field(seed, stream, channels, rect)`` gives standard normal values for every pixel of
``rect``, computed from a counter-based hash of (seed, stream, channel, y, x): any two rectangles
agree exactly where they overlap.  Tiles of one image therefore start from the same noise where they
overlap, whichever order and size they come in, so they join without seams or colour jumps.
"""

from __future__ import annotations

import numpy as np

from ..contract.geometry import Rect

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
COORD_BITS = 20          # coordinates up to ±2^19 (4× a 16384 px image fits with room to spare)
CHANNEL_BITS = 8


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 with good avalanche (wraps mod 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _key(seed: int, stream: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return _mix(np.array([(int(seed) << 8 | int(stream)) & 0xFFFFFFFFFFFFFFFF], np.uint64) * _GOLDEN)[0]


def normal_field(seed: int, stream: int, channels: int, rect: Rect) -> np.ndarray:
    """channels × rect.h × rect.w float32 standard normal noise at the absolute pixels of ``rect``."""
    if not 0 <= stream < 256 or not 0 < channels <= (1 << CHANNEL_BITS):
        raise ValueError("stream must be in 0–255 and channels in 1–256")
    half = 1 << (COORD_BITS - 1)
    if min(rect.x, rect.y) < -half or max(rect.right, rect.bottom) > half:
        raise ValueError(f"noise coordinates must lie within ±{half}")
    c = np.arange(channels, dtype=np.uint64)[:, None, None] << np.uint64(2 * COORD_BITS)
    y = (np.arange(rect.y, rect.bottom, dtype=np.int64) + half).astype(np.uint64)[None, :, None]
    x = (np.arange(rect.x, rect.right, dtype=np.int64) + half).astype(np.uint64)[None, None, :]
    counter = c | (y << np.uint64(COORD_BITS)) | x
    with np.errstate(over="ignore"):
        h = _mix(_mix(counter ^ _key(seed, stream)) + _GOLDEN)
    # Two 32-bit uniforms per value → Box–Muller (u1 in (0, 1], so the log is finite).
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 1.0) / 4294967296.0
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) / 4294967296.0
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)
