"""Colour spaces and paint devices of the fake Krita, with Krita's byte layouts (krita.md, and what
tests/plugin/test_krita_host.py asserts on real Krita 5.1.5):

- RGBA U8 and U16: B, G, R, A; F16 and F32: R, G, B, A (little-endian); CMYKA U8: C, M, Y, K, A;
  a selection: one byte per pixel (GRAY U8), 0 = not selected.
- Default profiles as Krita 5.1.5 reports them: RGBA U8 ``sRGB-elle-V2-srgbtrc.icc``, RGBA U16/F16/F32
  ``sRGB-elle-V2-g10.icc`` (linear), CMYKA U8 ``Chemical proof``.  Other models/depths are refused
  (Krita has them, the fake does not: a loud failure rather than made-up bytes).
- A device reads transparent zeros (its default pixel) outside what was written, at any coordinates;
  its exact bounds are its pixels that are not fully transparent (alpha 0, whatever the colour bytes:
  seen on Krita 5.1.5), or for a selection not 0.
- Compositing ("normal", for projections) is exact where it is exact in Krita (a transparent
  destination takes the source pixel, an opaque source replaces the destination) and a float
  approximation in between (Krita's own rounding there is not modelled, and not compared); colour conversion has no ICC transforms (RGB <-> CMYK naive, sRGB curve <-> linear exact).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DEPTH_BYTES = {"U8": 1, "U16": 2, "F16": 2, "F32": 4}
DEPTH_CODE = {"U8": "B", "U16": "H", "F16": "e", "F32": "f"}
MODEL_CHANNELS = {"RGBA": 4, "CMYKA": 5, "GRAYA": 2}
SRGB, LINEAR = "sRGB-elle-V2-srgbtrc.icc", "sRGB-elle-V2-g10.icc"
DEFAULT_PROFILES = {("RGBA", "U8"): SRGB, ("RGBA", "U16"): LINEAR, ("RGBA", "F16"): LINEAR,
                    ("RGBA", "F32"): LINEAR, ("CMYKA", "U8"): "Chemical proof"}
PROFILES = {"RGBA": (SRGB, LINEAR), "CMYKA": ("Chemical proof",)}
# Qt::white in Krita's default colour spaces, as Krita 5.1.5 stores it (lcms rounding included: seen).
WHITE = {("RGBA", "U8"): bytes.fromhex("ffffffff"), ("RGBA", "U16"): bytes.fromhex("ffff" * 4),
         ("RGBA", "F16"): bytes.fromhex("ff3b003cff3b003c"),
         ("RGBA", "F32"): bytes.fromhex("95ff7f3f1600803f7dff7f3f0000803f")}


@dataclass(frozen=True)
class ColorSpace:
    model: str
    depth: str
    profile: str

    @property
    def channels(self) -> int:
        return MODEL_CHANNELS[self.model]

    @property
    def pixel_size(self) -> int:
        return self.channels * DEPTH_BYTES[self.depth]

    @property
    def float(self) -> bool:
        return self.depth in ("F16", "F32")

    def decode(self, px: bytes) -> list[float]:
        """One pixel as floats 0..1 in channel order R, G, B, A (RGBA) or C, M, Y, K, A."""
        vals = list(struct.unpack("<" + DEPTH_CODE[self.depth] * self.channels, px))
        if not self.float:
            top = (1 << (8 * DEPTH_BYTES[self.depth])) - 1
            vals = [v / top for v in vals]
        if self.model == "RGBA" and not self.float:
            vals[0], vals[2] = vals[2], vals[0]       # stored B, G, R, A
        return vals

    def encode(self, vals: list[float]) -> bytes:
        vals = list(vals)
        if self.model == "RGBA" and not self.float:
            vals[0], vals[2] = vals[2], vals[0]
        if not self.float:
            top = (1 << (8 * DEPTH_BYTES[self.depth])) - 1
            vals = [min(top, max(0, int(round(v * top)))) for v in vals]
        return struct.pack("<" + DEPTH_CODE[self.depth] * self.channels, *vals)

    def alpha(self, px: bytes) -> float:
        return self.decode(px)[-1]


GRAY8 = ColorSpace("GRAYA", "U8", "")    # selections (one byte: the fake keeps alpha-free 8-bit masks)


def color_space(model: str, depth: str, profile: str = "") -> ColorSpace | None:
    """Krita's ``KoColorSpaceRegistry::colorSpace``: None for what the fake does not know."""
    if (model, depth) not in DEFAULT_PROFILES:
        return None
    if not profile:
        profile = DEFAULT_PROFILES[(model, depth)]
    if profile not in PROFILES.get(model, ()):
        return None
    return ColorSpace(model, depth, profile)


class Device:
    """A paint device: pixels in a growing rectangle (x0, y0, w, h); its default pixel elsewhere
    (transparent zeros, or for a document's background white, whose exact bounds are then the canvas)."""

    def __init__(self, cs: ColorSpace | None, pixel_size: int | None = None, default: bytes | None = None,
                 canvas: tuple[int, int, int, int] | None = None):
        self.cs = cs
        self.pixel_size = pixel_size or cs.pixel_size
        self.x0 = self.y0 = self.w = self.h = 0
        self.buf = bytearray()
        self.default = default or bytes(self.pixel_size)
        self.canvas = canvas

    def copy(self) -> Device:
        d = Device(self.cs, self.pixel_size, self.default, self.canvas)
        d.x0, d.y0, d.w, d.h, d.buf = self.x0, self.y0, self.w, self.h, bytearray(self.buf)
        return d

    def _grow(self, x: int, y: int, w: int, h: int) -> None:
        if self.w and self.x0 <= x and self.y0 <= y and x + w <= self.x0 + self.w and y + h <= self.y0 + self.h:
            return
        if self.w:
            nx0, ny0 = min(self.x0, x), min(self.y0, y)
            nx1, ny1 = max(self.x0 + self.w, x + w), max(self.y0 + self.h, y + h)
        else:
            nx0, ny0, nx1, ny1 = x, y, x + w, y + h
        nw, nh, ps = nx1 - nx0, ny1 - ny0, self.pixel_size
        buf = bytearray(self.default * (nw * nh))
        for row in range(self.h):
            src = row * self.w * ps
            dst = ((self.y0 + row - ny0) * nw + (self.x0 - nx0)) * ps
            buf[dst:dst + self.w * ps] = self.buf[src:src + self.w * ps]
        self.x0, self.y0, self.w, self.h, self.buf = nx0, ny0, nw, nh, buf

    def write(self, data: bytes, x: int, y: int, w: int, h: int) -> None:
        if w <= 0 or h <= 0:
            return
        self._grow(x, y, w, h)
        ps = self.pixel_size
        for row in range(h):
            dst = ((y + row - self.y0) * self.w + (x - self.x0)) * ps
            self.buf[dst:dst + w * ps] = data[row * w * ps:(row + 1) * w * ps]

    def read(self, x: int, y: int, w: int, h: int) -> bytes:
        ps = self.pixel_size
        out = bytearray(self.default * (max(w, 0) * max(h, 0)))
        if not self.w or w <= 0 or h <= 0:
            return bytes(out)
        cx0, cx1 = max(x, self.x0), min(x + w, self.x0 + self.w)
        for row in range(h):
            yy = y + row
            if not (self.y0 <= yy < self.y0 + self.h) or cx0 >= cx1:
                continue
            src = ((yy - self.y0) * self.w + (cx0 - self.x0)) * ps
            dst = (row * w + (cx0 - x)) * ps
            out[dst:dst + (cx1 - cx0) * ps] = self.buf[src:src + (cx1 - cx0) * ps]
        return bytes(out)

    def fill(self, value: bytes, x: int, y: int, w: int, h: int) -> None:
        self.write(value * (w * h), x, y, w, h)

    def _empty(self, px: bytes) -> bool:
        if self.cs is None:
            return not any(px)
        return not any(px) or self.cs.alpha(px) == 0.0

    def exact_bounds(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the pixels that are not transparent; (0, 0, 0, 0) if none."""
        if not self._empty(self.default):
            return self.canvas or (0, 0, 0, 0)
        ps = self.pixel_size
        xs, ys = [], []
        for row in range(self.h):
            line = self.buf[row * self.w * ps:(row + 1) * self.w * ps]
            if not any(line):
                continue
            cols = [c for c in range(self.w) if not self._empty(bytes(line[c * ps:(c + 1) * ps]))]
            if not cols:
                continue
            ys.append(row)
            xs += [cols[0], cols[-1]]
        if not ys:
            return (0, 0, 0, 0)
        return (self.x0 + min(xs), self.y0 + ys[0], max(xs) - min(xs) + 1, ys[-1] - ys[0] + 1)

    def translated(self, dx: int, dy: int) -> Device:
        d = self.copy()
        d.x0 += dx
        d.y0 += dy
        return d


def srgb_to_linear(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def linear_to_srgb(v: float) -> float:
    v = max(0.0, v)
    return v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


def convert_pixel(px: bytes, src: ColorSpace, dst: ColorSpace) -> bytes:
    vals = src.decode(px)
    if src.model == "CMYKA" and dst.model == "RGBA":
        c, m, y, k, a = vals
        vals = [(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k), a]
        src_profile = SRGB
    elif src.model == "RGBA" and dst.model == "CMYKA":
        r, g, b, a = vals
        k = 1 - max(r, g, b)
        den = (1 - k) or 1.0
        vals = [(1 - r - k) / den, (1 - g - k) / den, (1 - b - k) / den, k, a]
        src_profile = dst.profile
    else:
        src_profile = src.profile
    if dst.model == "RGBA" and src_profile != dst.profile:
        curve = srgb_to_linear if dst.profile == LINEAR else linear_to_srgb
        vals = [curve(v) for v in vals[:3]] + vals[3:]
    return dst.encode(vals)


def convert_device(dev: Device, dst: ColorSpace) -> Device:
    default = None if not any(dev.default) else convert_pixel(dev.default, dev.cs, dst)
    out = Device(dst, default=default, canvas=dev.canvas)
    if not dev.w:
        return out
    src, ps = dev.cs, dev.pixel_size
    zero = bytes(ps)
    data = bytearray()
    for i in range(dev.w * dev.h):
        px = bytes(dev.buf[i * ps:(i + 1) * ps])
        data += out.default if px == dev.default else bytes(dst.pixel_size) if px == zero else \
            convert_pixel(px, src, dst)
    out.write(bytes(data), dev.x0, dev.y0, dev.w, dev.h)
    return out


def composite_over(dst: Device, src: Device, opacity: float = 1.0) -> None:
    """Krita's "normal" blending of ``src`` onto ``dst`` (same colour space), in place."""
    if src._empty(src.default):
        if not src.w:
            return
        x, y, w, h = src.x0, src.y0, src.w, src.h
        over = src.buf
    else:                                          # a background: its default pixel fills the canvas
        x, y, w, h = src.canvas
        over = src.read(x, y, w, h)
    cs, ps = dst.cs, dst.pixel_size
    under = dst.read(x, y, w, h)
    out = bytearray(under)
    zero = bytes(ps)
    for i in range(w * h):
        s = bytes(over[i * ps:(i + 1) * ps])
        if s == zero:
            continue
        d = under[i * ps:(i + 1) * ps]
        if opacity >= 1.0 and (d == zero or cs.alpha(d) == 0.0 or cs.alpha(s) >= 1.0):
            out[i * ps:(i + 1) * ps] = s
            continue
        sv, dv = cs.decode(s), cs.decode(d)
        sa, da = sv[-1] * opacity, dv[-1]
        oa = sa + da * (1 - sa)
        col = [(sc * sa + dc * da * (1 - sa)) / oa if oa else 0.0 for sc, dc in zip(sv[:-1], dv[:-1])]
        out[i * ps:(i + 1) * ps] = cs.encode(col + [oa])
    dst.write(bytes(out), x, y, w, h)
