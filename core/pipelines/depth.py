"""Depth maps with MiDaS DPT-hybrid (the depth model's ``depth_estimator``).

The depth job returns a grayscale depth (white = near) the size of the input, or of the selection's
region with the selection as alpha, in the input's pixel layout (gray in R = G = B, 16-bit where the
layout has it).  ``estimate`` is also restyle's "auto" depth, so restyling with a depth map this job
made gives what auto depth gives.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.plan import plan_region_job
from ..raster import scaling
from . import regionjob
from .base import Output, PipelineBase


def normalize(depth: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the depth's own range (DPT's depth is relative); a flat map gives 0."""
    lo, hi = float(depth.min()), float(depth.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("the depth estimator returned non-finite values")
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        return np.zeros(depth.shape, np.float32)
    return np.clip((depth - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def estimate(part, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth of an RGB float image (H×W×3 in [0, 1]) as float32 h×w in [0, 1] for ``size`` = (w, h),
    1 = near.  ``part`` has ``depth_estimator`` and ``feature_extractor`` (a model part or pipeline)."""
    import torch

    est = part.depth_estimator
    inputs = part.feature_extractor(images=np.ascontiguousarray(rgb, dtype=np.float32), do_rescale=False,
                                    input_data_format="channels_last", return_tensors="pt")
    pixels = inputs.pixel_values.to(device=est.device, dtype=est.dtype)
    with torch.inference_mode():
        predicted = est(pixel_values=pixels).predicted_depth  # 1 × h' × w', larger = nearer
    depth = predicted[0].to(device="cpu", dtype=torch.float32).numpy()
    depth = cv2.resize(depth, tuple(size), interpolation=cv2.INTER_CUBIC)
    return normalize(depth)


class Depth(PipelineBase):
    mode = "depth"
    seeded = False

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        image = regionjob.source(req)
        loaded = models.get_part("depth", req.model, control=control)
        plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native, 0)
        native, selection, _ = regionjob.crop(req, plan.region)
        control.set_phase("encoding", 0, 1)
        small, _ = scaling.premultiplied_at(native, image.format, image.linear, plan.model_size)
        small = scaling.flatten_premultiplied(small)  # DPT works at 384 px anyway
        depth = estimate(loaded.pipe, small, (plan.region.w, plan.region.h))   # normalised at the layer's own size
        control.set_phase("finishing", 1, 1)
        alpha = scaling.feathered_alpha(selection, 0, image.format)
        patch = regionjob.patch_of(req, plan.region, np.repeat(depth[..., None], 3, axis=-1), alpha, None)
        return Output([patch], loaded.resolved.name, (), {"region": list(plan.region.as_tuple())})


PIPELINE = Depth()
