"""Make control layer: a control picture (``Options.control_type``) from the layer or the selection's
region, at the layer's own resolution, as a new layer in the layer's format (grey: R = G = B; alpha is the
selection, so outside it nothing changes).  Canny, soft edge, line art and scribble are OpenCV
(``core.raster.preprocess``, no weights); depth is DPT-hybrid from stable-diffusion-2-depth, as the
depth job makes it (white = near)."""

from __future__ import annotations

import numpy as np

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.plan import plan_region_job
from ..raster import preprocess, scaling
from . import depth as depth_job
from . import regionjob
from .base import Output, PipelineBase


class Preprocess(PipelineBase):
    mode = "preprocess"
    seeded = False
    single_image = True

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        image = regionjob.source(req)
        kind = req.options.control_type
        loaded = models.get_part("depth", None, control=control) if kind == "depth" else None
        plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native if loaded else 512, 0)
        native, selection, _ = regionjob.crop(req, plan.region)
        control.set_phase("encoding", 0, 1)
        region = (plan.region.w, plan.region.h)
        if loaded is not None:
            small, _ = scaling.premultiplied_at(native, image.format, image.linear, plan.model_size)
            grey = depth_job.estimate(loaded.pipe, scaling.flatten_premultiplied(small), region)
            rgb = np.repeat(grey[..., None], 3, axis=-1)
            name = loaded.resolved.name
        else:
            full, _ = scaling.premultiplied_at(native, image.format, image.linear, region)
            rgb = preprocess.preprocess(kind, scaling.flatten_premultiplied(full))
            name = "opencv"
        control.set_phase("finishing", 1, 1)
        alpha = scaling.feathered_alpha(selection, 0, image.format)
        patch = regionjob.patch_of(req, plan.region, rgb, alpha, None)
        return Output([patch], name, (), {"region": list(plan.region.as_tuple()), "control_type": kind})


PIPELINE = Preprocess()
