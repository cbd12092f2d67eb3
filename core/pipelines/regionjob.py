"""Shared machinery of selection-based jobs: crop the region with context, bring it to the model's
size, and bring the model's output back as a patch composited with a feathered alpha.

Work happens at the model's resolution wherever it can (``core.raster.scaling``): a whole-layer job on
an 8192² canvas costs little more than one on a 512² canvas.

Invariant: a patch's alpha is 0 wherever the selection is 0, so stacking the patch over the source
layer leaves every pixel outside the selection bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract.geometry import Rect
from ..contract.jobs import ImageBuffer, JobRequest, Patch
from ..contract.params import ValidationError
from ..contract.plan import RegionPlan
from ..raster import compositing, masks, scaling
from ..raster.pixels import as_array, from_array, mask_array


@dataclass
class RegionWork:
    plan: RegionPlan
    native: np.ndarray        # the region's pixels in the request's own layout (a view)
    selection: np.ndarray     # uint8 selection over the region (255 everywhere without a selection)
    has_selection: bool
    opaque: bool              # every pixel of the region is fully opaque
    model_rgb: np.ndarray     # float RGB at model size (transparent pixels flattened on grey)
    model_alpha: np.ndarray   # float layer alpha at model size
    model_mask: np.ndarray    # float at model size, 1 = repaint (the selection grown by ``grow``)
    model_ring: np.ndarray | None = None  # bool at model size: the band just outside the selection

    @property
    def region(self) -> Rect:
        return self.plan.region


def source(req: JobRequest) -> ImageBuffer:
    """The request's image (validation guarantees one to the modes that read pixels)."""
    if req.image is None:
        raise ValidationError("image", f"{req.mode} needs an input image")
    return req.image


def selection_bbox(req: JobRequest) -> Rect | None:
    """Bounding box (canvas coordinates) of the request's selection, or None without one."""
    if req.mask is None:
        return None
    return masks.mask_bbox(mask_array(req.mask), req.origin)


def crop(req: JobRequest, region: Rect) -> tuple[np.ndarray, np.ndarray, bool]:
    """(native pixels, uint8 selection, has_selection) of ``region`` from the request's buffers."""
    rows, cols = region.slices(req.origin)
    native = as_array(source(req))[rows, cols]
    return native, selection_crop(req, region), req.mask is not None


def selection_crop(req: JobRequest, region: Rect) -> np.ndarray:
    """uint8 selection over ``region`` (255 everywhere without a selection)."""
    if req.mask is None:
        return np.full((region.h, region.w), 255, np.uint8)
    rows, cols = region.slices(req.origin)
    return np.ascontiguousarray(mask_array(req.mask)[rows, cols])


def prepare(req: JobRequest, plan: RegionPlan) -> RegionWork:
    """Crop the region and bring it, its repaint mask and its colour-match ring to the model's size.
    The masks are made at the smaller of the two resolutions: the model's when the region is larger
    (a pixel there is selected when it covers any selected pixel), the region's otherwise."""
    native, sel, has_sel = crop(req, plan.region)
    image = source(req)
    fmt, size, region = image.format, plan.model_size, (plan.region.w, plan.region.h)
    small, opaque = scaling.premultiplied_at(native, fmt, image.linear, size)
    binary, grow, ring = sel > 0, plan.grow, ring_width(plan)
    shrinking = size[0] * size[1] < region[0] * region[1]
    if shrinking:
        binary = scaling.selection_at(binary, size)
        grow, ring = scaling.scaled_px(grow, region, size), scaling.scaled_px(ring, region, size)
    outside = masks.distance_outside(binary, ring) if has_sel and binary.any() else None
    repaint = masks.grow_mask(binary, grow, outside).astype(np.float32)
    ring_band = None if outside is None else masks.ring_mask(binary, ring, outside)
    if not shrinking:
        repaint = compositing.resize(repaint, size)
        ring_band = None if ring_band is None else scaling.selection_at(ring_band, size)
    return RegionWork(plan, native, sel, has_sel, opaque, scaling.flatten_premultiplied(small),
                      np.ascontiguousarray(small[..., 3]), repaint, ring_band)


def ring_width(plan: RegionPlan) -> int:
    return plan.grow + 8


def finish(req: JobRequest, work: RegionWork, outputs, seeds, *, keep_layer_alpha: bool) -> list[Patch]:
    """Model outputs (float RGB at model size) → patches in the request's pixel format."""
    plan = work.plan
    fmt = source(req).format
    layer = work.native[..., 3] if keep_layer_alpha and not work.opaque else None
    alpha = scaling.feathered_alpha(work.selection, plan.feather, fmt, layer)
    ring = None
    if plan.color_match and work.model_ring is not None:
        ring = work.model_ring & (work.model_alpha > 0.5)
    patches = []
    for out, seed in zip(outputs, seeds, strict=True):
        rgb = np.asarray(out, dtype=np.float32)[..., :3]
        if ring is not None:
            rgb = compositing.color_match(rgb, work.model_rgb, ring)
        patches.append(patch_of(req, plan.region, rgb, alpha, seed))
    return patches


def patch_of(req: JobRequest, region: Rect, rgb: np.ndarray, alpha: np.ndarray, seed) -> Patch:
    """A patch at ``region`` from RGB at any size and an alpha from ``scaling.feathered_alpha``
    (in the request's format, RGBA_U8 without an input image)."""
    fmt, linear = (req.image.format, req.image.linear) if req.image is not None else ("RGBA_U8", False)
    return Patch(region.x, region.y, from_array(scaling.patch_pixels(rgb, alpha, fmt, linear), fmt, linear),
                 seed)


def composite(req: JobRequest, patch: Patch) -> np.ndarray:
    """The request's image with ``patch`` stacked over it (native array, same format and size)."""
    image = source(req)
    p = as_array(patch.image)
    rect = Rect(patch.x - req.origin[0], patch.y - req.origin[1], patch.image.width, patch.image.height)
    return compositing.composite_native(as_array(image), p, rect, image.format, image.linear)
