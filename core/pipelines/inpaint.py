"""Inpainting with stable-diffusion-2-inpainting (9-channel UNet): repaint the selection."""

from __future__ import annotations

import time

import numpy as np

from .. import regionjob
from ..control import JobControl
from ..jobs import JobRequest, JobResult
from ..translate import plan_region_job
from .common import choose_seed, encode_image, generators, prompt_kwargs, step_callback


def denoise(pipe, plan, work: regionjob.RegionWork, params, control: JobControl, device: str):
    """Run the diffusers inpaint pipeline; returns (float RGB images at model size, warnings)."""
    import torch

    control.set_phase("encoding", 0, plan.expected_steps)
    prompts, warnings = prompt_kwargs(pipe, params)
    repaint = work.model_mask >= 0.5  # diffusers binarises the mask at 0.5 too
    image_latents = encode_image(pipe, work.model_rgb)
    masked_latents = encode_image(pipe, work.model_rgb * ~repaint[..., None])
    with torch.inference_mode():
        out = pipe(
            **prompts,
            image=image_latents,
            mask_image=repaint[None, ..., None].astype(np.float32),
            masked_image_latents=masked_latents,
            num_images_per_prompt=len(plan.seeds),
            generator=generators(plan.seeds, device),
            output_type="np",
            callback_on_step_end=step_callback(control),
            **plan.pipeline_kwargs,
        )
    return [np.asarray(im, dtype=np.float32) for im in out.images], warnings


def run(req: JobRequest, models, control: JobControl) -> JobResult:
    t0 = time.perf_counter()
    loaded = models.get("inpaint", req.model, control=control)
    seed = choose_seed(req.params)
    plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native, seed)
    work = regionjob.prepare(req, plan)
    images, warnings = denoise(loaded.pipe, plan, work, req.params, control, models.policy.device)
    control.set_phase("finishing")
    patches = regionjob.finish(req, work, images, plan.seeds, keep_layer_alpha=False)
    return JobResult("inpaint", tuple(patches), loaded.resolved.name, _params_with_seed(req, seed), req.options,
                     warnings, {"seconds": round(time.perf_counter() - t0, 3),
                                "region": list(plan.region.as_tuple()), "model_size": list(plan.model_size)})


def _params_with_seed(req: JobRequest, seed: int):
    from dataclasses import replace

    return replace(req.params, seed=seed)
