"""Fill: remove what is selected and fill it from its surroundings.  No prompt, no diffusion.

Backends: ``lama`` (the big-lama generator, when its weights are installed or given with
``model``), ``patch`` (texture-aware: patches copied from the surroundings, no weights;
``core.raster.fastfill.fill_textured``) and ``opencv`` (Telea inpainting, smooth).  ``auto`` takes LaMa
when it is installed, else ``patch``: ``python -m core.fill_eval`` chose it over Telea and OpenCV
contrib's xphoto fills.  Region, context and compositing are those of inpainting
(``core.pipelines.regionjob``): pixels outside the selection stay bit-identical.  Unlike diffusion, the fill
works at the region's own resolution, downscaled only above a size limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.params import ValidationError
from ..contract.plan import plan_region_job
from ..lama import infer as lama_infer
from ..models.resolver import PICKLE_SUFFIXES, ModelNotFound
from ..raster import fastfill
from . import regionjob
from .base import Output, PipelineBase

# Largest working area (pixels) per backend; larger regions are filled downscaled and scaled back.
# LaMa costs about 0.4 TFLOP per 512×512 (a few seconds on a desktop CPU); the fills without weights
# grow with the hole's area.
LAMA_MAX_PIXELS = {"cuda": 2048 * 2048, "mps": 1536 * 1536, "cpu": 1024 * 1024}
NO_WEIGHTS_MAX_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class BackendChoice:
    name: str                      # "patch", "opencv" or "lama"
    weights: Path | None = None    # the LaMa weights file
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.weights is not None:
            return f"lama:{self.weights.name}"
        return "opencv-telea" if self.name == "opencv" else self.name


def choose_backend(requested: str, model: str | None, models_dir: Path | None) -> BackendChoice:
    """``auto`` → LaMa when its weights are found (or ``model`` names them), else the patch fill."""
    from ..lama.weights import find_weights, install_hint

    if requested in ("opencv", "patch"):
        return BackendChoice(requested, warnings=(f"backend {requested}: the LaMa weights {model} are not used",)
                             if model else ())
    if requested == "lama" or model:
        return BackendChoice("lama", find_weights(model, models_dir))
    try:
        return BackendChoice("lama", find_weights(None, models_dir))
    except ModelNotFound:
        pass
    from ..lama.weights import default_weights_path

    folder = default_weights_path(models_dir).parent
    pickles = sorted(p for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        return BackendChoice("patch", warnings=(
            f"{pickles[0]} is a pickle checkpoint and is not loaded; LaMa needs it converted: {install_hint()}",))
    return BackendChoice("patch")


class CancelOnly:
    """A control for a job inside a job (the pre-fill of inpainting): it honours cancellation but keeps
    its own steps out of the outer job's progress."""

    def __init__(self, parent: JobControl):
        self.parent = parent

    def check(self) -> None:
        self.parent.check()

    def set_phase(self, phase: str, step: int | None = None, total: int | None = None) -> None:
        self.parent.check()

    def report_step(self, step: int, total: int) -> None:
        self.parent.check()


def work_size(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    """The region's own size, or the largest size of the same aspect within ``max_pixels``."""
    if w * h <= max_pixels:
        return w, h
    s = math.sqrt(max_pixels / (w * h))
    return max(1, int(w * s)), max(1, int(h * s))


def fill_array(rgb: np.ndarray, hole: np.ndarray, choice: BackendChoice, models,
               control: JobControl | CancelOnly) -> np.ndarray:
    """Run the chosen backend on float RGB with a boolean hole, reporting steps to ``control``."""
    path = choice.weights
    if path is not None:     # LaMa
        from ..lama.weights import load_generator

        device = models.policy.device
        model = models.get_other(("lama", str(path.resolve()), path.stat().st_mtime_ns, device),
                                 lambda: load_generator(path, device), control=control)
        control.set_phase("denoising", 0, len(model.model))
        return lama_infer.fill(model, rgb, hole, device=device, on_layer=control.report_step)
    if choice.name == "opencv":
        control.set_phase("denoising", 0, rgb.shape[2])
        return fastfill.fill_opencv(rgb, hole, on_channel=control.report_step)
    control.set_phase("denoising", 0, 1)
    return fastfill.fill_textured(rgb, hole, on_step=control.report_step)


def unknown_pixels(work: regionjob.RegionWork) -> np.ndarray:
    """Pixels (at working size) the fill must invent: the grown selection, and transparent pixels,
    whose colour means nothing (they would otherwise bleed the flattening grey into the fill)."""
    hole = work.model_mask > 1e-3
    return hole | (work.model_alpha < 0.5)


class Fill(PipelineBase):
    mode = "fill"
    seeded = False

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        bbox = regionjob.selection_bbox(req)
        if bbox is None:
            raise ValidationError("mask", "the selection is empty: select what to remove")
        models_dir = getattr(models, "models_dir", None)
        choice = choose_backend(req.options.backend, req.model, models_dir)
        warnings = list(choice.warnings)
        plan = plan_region_job(req, bbox, 512, 0)
        if choice.name == "lama":
            limit = LAMA_MAX_PIXELS.get(models.policy.device, LAMA_MAX_PIXELS["cpu"])
        else:
            limit = NO_WEIGHTS_MAX_PIXELS
        size = work_size(plan.region.w, plan.region.h, limit)
        if size != (plan.region.w, plan.region.h):
            warnings.append(f"the region ({plan.region.w}x{plan.region.h}) is larger than the {choice.name} fill's "
                            f"limit: filled at {size[0]}x{size[1]} and scaled back")
        plan = replace(plan, model_size=size, seeds=(None,), color_match=False, pipeline_kwargs={}, expected_steps=1)
        control.set_phase("encoding", 0, 1)
        work = regionjob.prepare(req, plan)
        unknown = unknown_pixels(work)
        if unknown.all():
            warnings.append("nothing around the selection is visible to fill from: filled with neutral grey")
            filled = np.full_like(work.model_rgb, 0.5)
        else:
            filled = fill_array(work.model_rgb, unknown, choice, models, control)
        control.set_phase("finishing")
        patches = regionjob.finish(req, work, [filled], plan.seeds, keep_layer_alpha=False)
        options = replace(req.options, backend=choice.name)
        return Output(patches, choice.label, tuple(warnings),
                      {"backend": choice.name, "region": list(plan.region.as_tuple()), "model_size": list(size)},
                      options)



PIPELINE = Fill()
