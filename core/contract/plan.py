"""Translation of a validated request into a plan: which region, at which model size, which seeds,
which pipeline arguments.  Pure (standard library only) and therefore easy to test exhaustively."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .geometry import Rect, model_size, plan_region
from .jobs import JobRequest, Options
from .modes import LIVE_SIZE, LIVE_SIZE_CPU, REGION_CONTEXT, ModeSpec, spec
from .params import SEED_MAX


@dataclass(frozen=True)
class RegionPlan:
    mode: str
    region: Rect                    # canvas coordinates of the pixels the model works on
    model_size: tuple[int, int]     # (w, h) the model works at, multiples of 8
    seeds: tuple[int | None, ...]   # one per image: seed, seed + 1, ... (None: the job draws no noise)
    grow: int
    feather: int
    color_match: bool
    pipeline_kwargs: dict = field(default_factory=dict)
    expected_steps: int = 0

    @property
    def scale(self) -> float:
        return self.model_size[0] / self.region.w


def seeds_for(seed: int, count: int) -> tuple[int, ...]:
    return tuple((seed + i) % (SEED_MAX + 1) for i in range(count))


TRAIN_TIMESTEPS = 1000   # the SD2 schedulers' training timesteps: no schedule is longer


@dataclass(frozen=True)
class Schedule:
    """How a job with a strength runs: ``steps`` means the denoising steps that RUN (as in the leading
    Krita plugin), whatever the strength.  The schedule has ``total`` steps and its last ``steps`` run,
    starting at the noise level ``strength`` asks for (to the nearest schedule step), so at least one
    step always runs and 25 steps at strength 0.5 are 25 steps, not 12.  Below ``steps / 1000`` the
    schedule cannot be longer: the steps run at its lowest noise levels."""

    steps: int                # steps that run
    total: int                # num_inference_steps for diffusers
    strength: float           # the strength to give diffusers so that exactly ``steps`` run

    @classmethod
    def of(cls, steps: int, strength: float) -> Schedule:
        wanted = max(float(strength), steps / TRAIN_TIMESTEPS)
        total = min(TRAIN_TIMESTEPS, max(steps, math.ceil(steps / wanted - 1e-9)))
        # diffusers runs min(int(total * strength), total) steps: half a step more keeps int() exact
        return cls(steps, total, min(1.0, (steps + 0.5) / total))


def guidance_scale(req: JobRequest) -> float:
    """The guidance scale to give diffusers: the request's, or 0 for a mode without classifier-free
    guidance (a distilled model: one UNet pass per step, no negative prompt)."""
    return req.params.guidance if spec(req.mode).uses_guidance else 0.0


def live_native(native: int, device: str) -> int:
    """The side of a Live frame's working area: the model's native size, at most ``LIVE_SIZE``, and
    ``LIVE_SIZE_CPU`` on the CPU (a frame's cost grows with its area)."""
    return min(native, LIVE_SIZE_CPU if device == "cpu" else LIVE_SIZE)


def image_rect(req: JobRequest) -> Rect:
    """Where the request's pixels sit on the canvas."""
    if req.image is None:
        w, h = req.canvas_size
        return Rect(0, 0, w, h)
    return Rect(req.origin[0], req.origin[1], req.image.width, req.image.height)


def plan_region_job(req: JobRequest, bbox: Rect | None, native: int, seed: int, multiple: int = 8) -> RegionPlan:
    """Plan for a selection-based job (inpaint, restyle, selection-bound generate, fill).

    ``bbox`` is the selection's bounding box on the canvas (None = no selection: the whole image);
    the model's width and height are multiples of ``multiple`` (64 for a compiled UNet: fewer shapes).
    """
    o, p = req.options, req.params
    region = image_region(req, bbox)
    size = model_size(region.w, region.h, native, multiple=multiple)
    kwargs = dict(num_inference_steps=p.steps, guidance_scale=guidance_scale(req), width=size[0], height=size[1])
    expected = p.steps
    if spec(req.mode).uses_strength(req.image is not None):
        sched = Schedule.of(p.steps, p.strength)
        kwargs.update(num_inference_steps=sched.total, strength=sched.strength)
    return RegionPlan(req.mode, region, size, seeds_for(seed, p.num_images), o.grow, o.feather,
                      o.color_match, kwargs, expected)


def selection_region(mode: ModeSpec, bbox: Rect, canvas: tuple[int, int], options: Options) -> Rect:
    """The canvas area a job on a selection with bounding box ``bbox`` reads (the dock sends exactly
    this; the engine plans exactly this): the box grown by ``grow`` with context around it, or for a
    mode that changes only the selection (``REGION_CONTEXT``: upscale) the box with context."""
    if mode.region == REGION_CONTEXT:
        return plan_region(bbox, canvas)
    return plan_region(bbox, canvas, grow=options.grow, feather=options.feather)


def image_region(req: JobRequest, bbox: Rect | None) -> Rect:
    """What a job on the request's image works on: the whole image, or the selection's region."""
    available = image_rect(req)
    if bbox is None:
        return available
    return selection_region(spec(req.mode), bbox, req.canvas_size, req.options).intersect(available)


def text_region(bbox: Rect | None, canvas: tuple[int, int], options: Options) -> Rect:
    """Where text-to-image paints: the selection's box grown by ``grow`` (inside the canvas), or
    without a selection width × height (default: the canvas) at the canvas origin."""
    cw, ch = canvas
    if bbox is None:
        return Rect(0, 0, options.width or cw, options.height or ch)
    return bbox.pad(options.grow).intersect(Rect(0, 0, cw, ch))


def plan_text_job(req: JobRequest, bbox: Rect | None, native: int, seed: int, multiple: int = 8) -> RegionPlan:
    """Plan for text-to-image: the model works at its native area in the region's aspect ratio and
    the result is scaled to the region (no pixels to look at, so no context and no colour match)."""
    region = text_region(bbox, req.canvas_size, req.options)
    size = model_size(region.w, region.h, native, multiple=multiple)
    p, o = req.params, req.options
    kwargs = dict(num_inference_steps=p.steps, guidance_scale=guidance_scale(req), width=size[0], height=size[1])
    return RegionPlan(req.mode, region, size, seeds_for(seed, p.num_images), o.grow, o.feather, False,
                      kwargs, p.steps)
