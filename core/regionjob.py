"""Shared machinery of selection-based jobs: crop the region with context, scale it for the model,
and bring the model's output back as a patch composited with a feathered alpha.

Invariant: a patch's alpha is 0 wherever the selection is 0, so stacking the patch over the source
layer leaves every pixel outside the selection bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import imaging
from .geometry import Rect
from .jobs import JobRequest, Patch
from .pixels import as_array, from_array, mask_array, pack, to_working
from .translate import RegionPlan


@dataclass
class RegionWork:
    plan: RegionPlan
    rgba: np.ndarray          # working float RGBA of the region (sRGB, straight alpha)
    selection: np.ndarray     # uint8 selection over the region (255 everywhere without a selection)
    has_selection: bool
    model_rgb: np.ndarray     # float RGB at model size (transparent pixels flattened on grey)
    model_mask: np.ndarray    # float at model size, 1 = repaint (the selection grown by ``grow``)
    outside: np.ndarray | None = None  # distance to the selection, exact up to ``ring_width`` (reused)

    @property
    def region(self) -> Rect:
        return self.plan.region


def selection_bbox(req: JobRequest) -> Rect | None:
    """Bounding box (canvas coordinates) of the request's selection, or None without one."""
    if req.mask is None:
        return None
    return imaging.mask_bbox(mask_array(req.mask), req.origin)


def crop(req: JobRequest, region: Rect) -> tuple[np.ndarray, np.ndarray, bool]:
    """(native pixels, uint8 selection, has_selection) of ``region`` from the request's buffers."""
    rows, cols = region.slices(req.origin)
    native = as_array(req.image)[rows, cols]
    return native, selection_crop(req, region), req.mask is not None


def selection_crop(req: JobRequest, region: Rect) -> np.ndarray:
    """uint8 selection over ``region`` (255 everywhere without a selection)."""
    if req.mask is None:
        return np.full((region.h, region.w), 255, np.uint8)
    rows, cols = region.slices(req.origin)
    return np.ascontiguousarray(mask_array(req.mask)[rows, cols])


def prepare(req: JobRequest, plan: RegionPlan) -> RegionWork:
    native, sel, has_sel = crop(req, plan.region)
    rgba = to_working(native, req.image.format, req.image.linear)
    model_rgb = imaging.resize(imaging.flatten(rgba), plan.model_size)
    binary = sel > 0
    outside = imaging.distance_outside(binary, ring_width(plan)) if has_sel and binary.any() else None
    repaint = imaging.grow_mask(binary, plan.grow, outside).astype(np.float32)
    model_mask = imaging.resize(repaint, plan.model_size)
    return RegionWork(plan, rgba, sel, has_sel, model_rgb, model_mask, outside)


def ring_width(plan: RegionPlan) -> int:
    return plan.grow + 8


def finish(req: JobRequest, work: RegionWork, outputs, seeds, *, keep_layer_alpha: bool) -> list[Patch]:
    """Model outputs (float RGB at model size) → patches in the request's pixel format."""
    region = work.region
    binary = work.selection > 0
    alpha = imaging.feather_alpha(work.selection, work.plan.feather)
    if keep_layer_alpha:
        alpha = alpha * work.rgba[..., 3]
    ring = reference = None
    if work.plan.color_match and work.has_selection:
        ring = imaging.ring_mask(binary, ring_width(work.plan), work.outside) & (work.rgba[..., 3] > 0.5)
        reference = imaging.flatten(work.rgba[ring][:, None])[:, 0]   # the ring's pixels only
    patches = []
    for out, seed in zip(outputs, seeds, strict=True):
        rgb = imaging.resize(np.asarray(out, dtype=np.float32)[..., :3], (region.w, region.h))
        if ring is not None:
            rgb = imaging.color_match(rgb, reference, ring)
        patches.append(make_patch(req, region, rgb, alpha, seed))
    return patches


def make_patch(req: JobRequest, region: Rect, rgb: np.ndarray, alpha: np.ndarray, seed) -> Patch:
    """Assemble a patch in the request's format (RGBA_U8 without an input image); pixels whose
    alpha rounds to 0 are all zero."""
    fmt, linear = (req.image.format, req.image.linear) if req.image is not None else ("RGBA_U8", False)
    return Patch(region.x, region.y, from_array(pack(rgb, alpha, fmt, linear), fmt, linear), seed)


def composite(req: JobRequest, patch: Patch) -> np.ndarray:
    """The request's image with ``patch`` stacked over it (native array, same format and size)."""
    original = as_array(req.image)
    p = as_array(patch.image)
    rect = Rect(patch.x - req.origin[0], patch.y - req.origin[1], patch.image.width, patch.image.height)
    return imaging.composite_native(original, p, rect, req.image.format, req.image.linear)
