"""Expand (outpainting) with stable-diffusion-2-inpainting: the canvas grows by the ``expand_*`` options
and the new border is painted, as a patch in the GROWN canvas's coordinates.

``contract.expand`` plans the passes (the region the model sees is the new border plus context beside
it, never the whole canvas; larger expansions take several overlapping passes) and
``raster.outpaint`` runs them and cross-fades each pass into the earlier ones.  A pass is an inpainting
job on its window (``inpaint.denoise``): the window goes to the model's size; its fresh pixels are
pre-filled from their surroundings by the Fill job's backend (LaMa when installed, else OpenCV's
Telea, which carries the edge's colours and lines outward) plus noise of the context's own spread, and
the denoising starts from that below strength 1; the repaint mask is the fresh pixels and the band of
earlier results; the output's colours are matched to the window's context (the VAE drifts) and it
comes back to the window's size.  The old pixels are context only: the patch's alpha is 0 over them.

Control layers: a control is placed on the OLD canvas (the request's coordinates, like the image); each
pass takes the control's pixels over its window, cut and scaled exactly like the window, and runs the
ControlNet inpaint pipeline (``inpaint.denoise_controlled``).  A control layer of the old canvas has no
pixels over the new border: there it is transparent, which a ControlNet sees as black (no lines, or
for a depth control: far away), never the picture stretched to the grown canvas; the result says so.

A reference image (``reference.py``) is not spatially aligned (its tokens join the keys of self-attention),
so black borders would not mean "no signal": they would be part of the look it lends.  Each pass takes
instead the reference's pixels of its window moved inside the old canvas's part the job reads (the
smallest shift; cut to that part on an axis where the window is larger): every reference pixel under the
window, plus the reference next to it up to the window's size, and for a pass wholly in the new border
(an outer ring) the part of the reference nearest it.  That part is encoded at the pass's own scale (the
window's canvas px to model px, on multiples of 8), so the reference's textures have the size of the
pixels painted beside them; it is never stretched to the model's size nor letterboxed.  A reference
that does not cover the old canvas's part the job reads (``contract.expand.context_rect``: what the dock
sends) is refused, naming ``controls[i].image``.  The result's timings give ``reference_rects`` (old-canvas
coordinates) and ``reference_steps``, one per pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..contract import controls as C
from ..contract.expand import Growth, context_rect, new_area, pass_sizes, patch_rect, plan_passes
from ..contract.geometry import MIN_MODEL_SIDE, Rect, fit_inside, model_size, round_to
from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, Patch
from ..contract.plan import RegionPlan, Schedule, seeds_for
from ..raster import compositing, masks, scaling
from ..raster.outpaint import KNOWN, PAINTED, run_passes
from ..raster.pixels import as_array, from_array, pack, to_working
from . import controls as controls_job
from . import reference as reference_job
from . import regionjob
from .base import Output, PipelineBase

PREFILL_NOISE = 0x0E4A     # the pre-fill's noise stream (never the pipeline's own noise)
NOISE_SHARE = 0.5          # the pre-fill noise's spread, as a share of the context's own
RING_PX = 16               # px of context around the repainted pixels the colours are matched on


@dataclass
class ExpandJob:
    """The geometry of one request: growth, canvases, the area worked on and the passes."""

    req: JobRequest
    growth: Growth
    size: tuple[int, int]            # the old canvas
    new_size: tuple[int, int]
    known: Rect                      # the old pixels read (new-canvas coordinates)
    area: Rect                       # what the working canvas covers (new-canvas coordinates)
    passes: tuple = ()
    base: tuple = field(default=(), repr=False)   # (RGB, state) of the working canvas before any pass

    @property
    def patch_rect(self) -> Rect:
        return patch_rect(self.size, self.growth)


def plan(req: JobRequest, native: int) -> ExpandJob:
    """The job's geometry for a model working at ``native`` px (validated request)."""
    growth = Growth.of(req.options)
    size = req.canvas_size
    known = context_rect(size, growth).translate(*growth.offset)
    area = known
    for r in new_area(size, growth):
        area = area.union(r)
    max_side, band = pass_sizes(native)
    return ExpandJob(req, growth, size, growth.canvas(size), known, area,
                     plan_passes(size, growth, known, max_side, band))


def working_canvas(job: ExpandJob) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32, state uint8) over ``job.area``: the known old pixels flattened over grey where
    transparent, as the model sees them; the new border blank."""
    if job.base:
        return job.base[0].copy(), job.base[1].copy()
    image = regionjob.source(job.req)
    a = job.area
    rgb = np.zeros((a.h, a.w, 3), np.float32)
    state = np.zeros((a.h, a.w), np.uint8)
    ox, oy = job.growth.offset
    src = job.known.translate(-ox - job.req.origin[0], -oy - job.req.origin[1])   # in the image's own pixels
    native = as_array(image)[src.slices()]
    rows, cols = job.known.slices((a.x, a.y))
    rgb[rows, cols] = compositing.flatten(to_working(native, image.format, image.linear))
    state[rows, cols] = KNOWN
    job.base = (rgb, state)
    return rgb.copy(), state.copy()


def expand_image(job: ExpandJob, paint) -> tuple[np.ndarray, np.ndarray]:
    """Run every pass with ``paint`` (``raster.outpaint.Painter``); returns (RGB, state) over the area."""
    rgb, state = working_canvas(job)
    run_passes(rgb, state, (job.area.x, job.area.y), job.passes, paint)
    return rgb, state


def patch_of(job: ExpandJob, rgb: np.ndarray, state: np.ndarray, seed) -> Patch:
    """The painted border as a patch on the grown canvas: opaque over the new pixels, alpha 0 (all zero)
    over the old ones, in the request's pixel format."""
    image = regionjob.source(job.req)
    rows, cols = job.patch_rect.slices((job.area.x, job.area.y))
    alpha = (state[rows, cols] == PAINTED).astype(np.float32)
    native = pack(rgb[rows, cols], alpha, image.format, image.linear)
    r = job.patch_rect
    return Patch(r.x, r.y, from_array(native, image.format, image.linear), seed)


def composite(req: JobRequest, patch: Patch) -> np.ndarray:
    """The request's image on the grown canvas (transparent around it) with ``patch`` stacked over it,
    as an editor shows the expanded document (native array)."""
    image = regionjob.source(req)
    growth = Growth.of(req.options)
    nw, nh = growth.canvas(req.canvas_size)
    src = as_array(image)
    out = np.zeros((nh, nw, src.shape[2]), src.dtype)
    x, y = req.origin[0] + growth.left, req.origin[1] + growth.top
    out[y:y + image.height, x:x + image.width] = src
    rect = Rect(patch.x, patch.y, patch.image.width, patch.image.height)
    return compositing.composite_native(out, as_array(patch.image), rect, image.format, image.linear)


class ModelPainter:
    """One image's passes on the inpainting model (``raster.outpaint.Painter``)."""

    def __init__(self, pipe, native: int, multiple: int, req: JobRequest, seed: int, control: JobControl,
                 device: str, prefill, controlled=None, referenced=None):
        self.pipe, self.native, self.multiple = pipe, native, multiple
        self.req, self.seed, self.control, self.device = req, seed, control, device
        self.prefill = prefill           # (RGB, hole) -> RGB, or None at strength 1 (nothing starts from it)
        self.controlled = controlled     # (window, plan, work, start, reference) -> (images, warnings), or None
        self.referenced = referenced     # (index, pass, model size, seed) -> Reference, or None without one
        self.reference_steps: list[list[int]] = []
        self.sched = Schedule.of(req.params.steps, req.params.strength)
        self.warnings: list[str] = []
        self.model_sizes: list[list[int]] = []

    def __call__(self, index: int, p, rgb: np.ndarray, repaint: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        from .common import encode_image
        from .inpaint import denoise

        h, w = rgb.shape[:2]
        size = model_size(w, h, self.native, multiple=self.multiple)
        self.model_sizes.append(list(size))
        small = compositing.resize(rgb, size)
        mask = scaling.selection_at(repaint, size)
        params = self.req.params
        kwargs = dict(num_inference_steps=self.sched.total, guidance_scale=params.guidance, width=size[0],
                      height=size[1], strength=self.sched.strength)
        plan = RegionPlan("expand", p.window, size, (self.seed,), 0, 0, self.req.options.color_match, kwargs,
                          self.sched.steps)
        work = regionjob.RegionWork(plan, small, mask.view(np.uint8), True, True, small,
                                    np.ones(mask.shape, np.float32), mask.astype(np.float32))
        start = None
        if self.prefill is not None:
            start = self.prefill(index, small, scaling.selection_at(fresh, size) & mask)
        ref = None if self.referenced is None else self.referenced(index, p, size, self.seed)
        if self.controlled is not None:
            images, warnings = self.controlled(p.window, plan, work, start, ref)
        else:
            start = None if start is None else encode_image(self.pipe, start)
            images, warnings = denoise(self.pipe, plan, work, params, self.control, self.device, start, announce=False,
                                       reference=ref)
        if ref is not None:
            self.reference_steps.append(list(ref.steps))
        self.control.advance_offset(self.sched.steps)
        self.warnings.extend(x for x in warnings if x not in self.warnings)
        out = images[0]
        if self.req.options.color_match:
            ring = masks.ring_mask(mask, scaling.scaled_px(RING_PX, (w, h), size))
            out = compositing.color_match(out, small, ring)
        return compositing.resize(out, (w, h))


def noisy_fill(fill, seed: int):
    """A pre-fill: ``fill(RGB, hole)`` plus Gaussian noise in the hole with NOISE_SHARE of the spread of
    the pixels around it, drawn from the image's seed and the pass's index."""

    def prefill(index: int, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        if not hole.any():
            return rgb
        out = fill(rgb, hole)
        known = rgb[~hole]
        spread = known.std(axis=0) if known.size else np.full(3, 0.1, np.float32)
        rng = np.random.default_rng([int(seed), PREFILL_NOISE, index])
        out[hole] += rng.standard_normal((int(hole.sum()), 3), np.float32) * (NOISE_SHARE * spread)
        return np.clip(out, 0.0, 1.0, out=out)

    return prefill


class Expand(PipelineBase):
    mode = "expand"

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        from ..models.unet_compile import size_multiple
        from .common import prompt_kwargs, sampler_of, with_sampler
        from .fill import CancelOnly, choose_backend, fill_array

        found = controls_job.find(req, models)
        loaded = models.get("expand", req.model, control=control)
        sampler = sampler_of(req, loaded)
        pipe, native = with_sampler(loaded.pipe, sampler), loaded.resolved.native   # one sampler for every pass
        job = plan(req, native)
        seeds = seeds_for(seed, req.params.num_images)
        total = len(job.passes) * Schedule.of(req.params.steps, req.params.strength).steps * len(seeds)
        control.set_phase("encoding", 0, total)
        control.plan_total(total)
        prompt_kwargs(pipe, req.params)           # encoded once here; every pass finds it in the cache
        notes = ["the selection is not used: expand paints the whole new border"] if req.mask is not None else []
        fill = None
        if req.params.strength < 1.0:
            choice = choose_backend("auto", None, getattr(models, "models_dir", None))
            notes.extend(choice.warnings)

            def fill(rgb, hole):
                return fill_array(rgb, hole, choice, models, CancelOnly(control))

        controlled = with_controls(req, found, job, loaded, sampler, models, control, notes)
        referenced, ref_rects = with_reference(req, job, loaded.pipe)
        t_model = time.perf_counter()
        patches, warnings, sizes, ref_steps = [], list(notes), [], []
        for s in seeds:
            painter = ModelPainter(pipe, native, size_multiple(pipe), req, s, control, models.policy.device,
                                   None if fill is None else noisy_fill(fill, s), controlled, referenced)
            rgb, state = expand_image(job, painter)
            patches.append(patch_of(job, rgb, state, s))
            warnings.extend(w for w in painter.warnings if w not in warnings)
            sizes, ref_steps = painter.model_sizes, painter.reference_steps
        control.set_phase("finishing")
        return Output(patches, loaded.resolved.name, tuple(warnings),
                      {"model_seconds": round(time.perf_counter() - t_model, 4), "canvas": list(job.new_size),
                       "region": list(job.area.as_tuple()), "passes": len(job.passes),
                       "windows": [list(p.window.as_tuple()) for p in job.passes], "model_sizes": sizes,
                       **({"controlnets": [r.name for r in found if r is not None]} if any(found) else {}),
                       **({"reference_steps": ref_steps,
                           "reference_rects": [list(r.as_tuple()) for r in ref_rects]} if referenced else {})},
                      replace(req.options, sampler=sampler))


def with_controls(req: JobRequest, found: list, job: ExpandJob, loaded, sampler: str, models, control: JobControl,
                  notes: list):
    """A pass runner ``(window, plan, work, start RGB) -> (images, warnings)`` through the ControlNet inpaint
    pipeline with each control cut to the window (new-canvas coordinates; the controls are on the old
    canvas); None without controls.  Notes a control that has no pixels over part of the new border."""
    if all(c.type == C.REFERENCE for c in req.controls):
        return None
    from .inpaint import denoise_controlled

    dx, dy = job.growth.offset
    for i, c in enumerate(req.controls):
        if c.type != C.REFERENCE and not all(controls_job.covers(c, p.window.translate(-dx, -dy)) for p in job.passes):
            notes.append(f"control {i + 1} ({c.type}) has no pixels over part of the new border: the ControlNet "
                         f"sees black there (no lines; for depth: far away); it is not stretched to the new canvas")

    def run(window: Rect, plan: RegionPlan, work: regionjob.RegionWork, start, reference=None):
        controls = controls_job.prepare(req, found, window.translate(-dx, -dy), plan.model_size, loaded.pipe,
                                        loaded.resolved.name, models, control, padded=True)
        assert controls is not None
        start_rgb = work.model_rgb if start is None else start
        return denoise_controlled(loaded.pipe, plan, work, req.params, control, models.policy.device, controls,
                                  start_rgb, sampler, reference=reference, announce=False)

    return run


def reference_rect(window: Rect, known: Rect) -> Rect:
    """The part of the reference a pass whose ``window`` (old-canvas coordinates) reaches into the new border
    takes: the window moved inside ``known`` (the old canvas's part the job reads) by the smallest shift,
    cut to it on an axis where it is larger.  It holds every reference pixel under the window, and for a
    window wholly in the new border (an outer ring) the reference's part nearest to it."""
    return fit_inside(window, known)


def reference_size(rect: Rect, window: Rect, size: tuple[int, int]) -> tuple[int, int]:
    """``rect``'s size at the pass's own scale (its ``window`` at the model's ``size``), on multiples of 8, at
    least ``MIN_MODEL_SIDE``: the reference's textures keep the size they have next to the painted pixels."""
    return (round_to(rect.w * size[0] / window.w, 8, MIN_MODEL_SIDE),
            round_to(rect.h * size[1] / window.h, 8, MIN_MODEL_SIDE))


def with_reference(req: JobRequest, job: ExpandJob, pipe) -> tuple:
    """(a pass's reference ``(index, pass, model size, seed) -> Reference``, the rects it takes in old-canvas
    coordinates, one per pass), or (None, ()) without a reference or at strength 0.  A reference that does
    not cover the old canvas's part the job reads is refused (``controls.check_covers``), never stretched.
    Each pass's reference is encoded once and shared by the images of a batch."""
    found = reference_job.find(req)
    if found is None:
        return None, ()
    i, c = found
    dx, dy = job.growth.offset
    known = job.known.translate(-dx, -dy)
    C.check_covers(i, c, known.as_tuple())
    if c.strength == 0.0:
        return None, ()
    rects = tuple(reference_rect(p.window.translate(-dx, -dy), known) for p in job.passes)
    encoded: dict[int, reference_job.Reference] = {}

    def referenced(index: int, p, size: tuple[int, int], seed: int) -> reference_job.Reference:
        if index not in encoded:
            encoded[index] = reference_job.encode(c, rects[index], reference_size(rects[index], p.window, size),
                                                  pipe, ())
        return replace(encoded[index], seeds=(seed,), steps=[])

    return referenced, rects


PIPELINE = Expand()
