"""Restyle with depth (stable-diffusion-2-depth): repaint the image, or the selection, keeping its
depth.  The depth is either estimated (DPT-hybrid, the same as the depth job) or given by the artist.

The pipeline is always loaded without its depth estimator and always gets a depth map: the estimator
is a separate model part, loaded only when the depth is "auto", so a given depth never loads it.

With control layers the job runs through diffusers' ``StableDiffusionControlNetImg2ImgPipeline`` over the
depth model's modules; its UNet is ``DepthUNet``, the depth model's 5-channel UNet with the depth map
appended to each call's latents exactly as the depth2img pipeline appends it (its own
``prepare_depth_map``), so the ControlNets see the 4 latent channels they were trained on and the depth
still guides.  At control strength 0 the result is the uncontrolled restyle's, bit for bit (tested).

A reference image (``reference.py``) is cut to the job's region like a ControlNet's picture.  Its
reference pass runs the same 5-channel UNet with the job's own depth channel appended to the reference's
latents (the depth map the job is conditioned on, as the pipeline prepared it), not a depth of the
reference: the reference pass runs under the job's conditions, its prompt and its depth, and differs
from the job's call only by the picture, so what the self-attention borrows is the reference's
appearance over the job's geometry, never the reference's own geometry; and nothing more is estimated
or loaded (a given depth still never loads the estimator).  The inpainting UNet's extra channels are
another matter: they say what is known of the picture being denoised, which in its reference pass is the
whole reference; the depth channel is a condition, like the prompt, so it stays the job's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.params import ValidationError
from ..contract.plan import plan_region_job
from ..models.unet_compile import size_multiple
from ..raster import compositing
from ..raster.pixels import depth_array
from . import adapters, regionjob
from . import controls as controls_job
from . import depth as depth_job
from . import reference as reference_job
from .base import Output, PipelineBase
from .common import image_kwargs, mean_encoding, run_pipeline, sampler_of, with_sampler


def given_depth(req: JobRequest, plan) -> np.ndarray:
    """The request's depth image over the plan's region, at model size, float in [0, 1]."""
    if req.depth is None:
        raise ValidationError("depth", "depth_source 'given' needs a depth image")
    rows, cols = plan.region.slices(req.origin)
    crop = depth_array(req.depth)[rows, cols]
    return compositing.resize(np.ascontiguousarray(crop), plan.model_size)


def check_not_flat(depth: np.ndarray, source: str) -> None:
    # The pipeline stretches the depth to [-1, 1] over its range; a flat map has none.
    if float(depth.max() - depth.min()) < 1e-4:
        raise ValidationError("depth", f"the {source} depth is flat (one value) over the region the model "
                                       f"works on; paint some depth variation or use depth source 'auto'")


def denoise(pipe, plan, work: regionjob.RegionWork, depth: np.ndarray, params, control: JobControl,
            device: str, sampler: str, controls: controls_job.Controls | None = None,
            reference: reference_job.Reference | None = None):
    """Run the diffusers depth2img pipeline (with ``controls``: the ControlNet image-to-image pipeline over
    the same modules and ``DepthUNet``) with sampler ``sampler``, injecting ``reference`` (its reference
    pass gets the job's depth channel: ``reference._reference_sample``); returns (float RGB images at model
    size, warnings)."""
    import torch

    image = torch.from_numpy(np.ascontiguousarray(work.model_rgb.transpose(2, 0, 1)))[None]
    depth_map = torch.from_numpy(depth)[None]
    with mean_encoding(pipe.vae):
        if controls is None:
            job = with_sampler(pipe, sampler)
            with reference_job.applied(job, reference):
                return run_pipeline(job, plan, params, control, device, image=image, depth_map=depth_map,
                                    **image_kwargs(plan))
        unet = DepthUNet(pipe.unet, pipe.prepare_depth_map(image, depth_map, 1, False, pipe.unet.dtype,
                                                           pipe.unet.device))
        job = with_sampler(controls_job.pipeline("image", pipe, controls, unet), sampler)
        with reference_job.applied(job, reference, unet=pipe.unet):   # the 5-channel UNet behind DepthUNet
            return run_pipeline(job, plan, params, control, device, image=image, control_image=controls.image_arg(),
                                **controls.kwargs(), **image_kwargs(plan))


def DepthUNet(unet, depth_mask):
    """``unet`` (the depth model's, 5 input channels) as a 4-channel denoiser: each call's latents get
    ``depth_mask`` (1×1×h×w, from ``prepare_depth_map``) appended as the fifth channel, for every image
    of the batch (classifier-free guidance doubles it), as the depth2img pipeline does in its loop."""
    import torch

    class _DepthUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        config = property(lambda self: self.unet.config)
        dtype = property(lambda self: self.unet.dtype)
        device = property(lambda self: self.unet.device)

        def forward(self, sample, timestep, *args, **kwargs):
            depth = depth_mask.to(sample.device, sample.dtype).expand(sample.shape[0], -1, -1, -1)
            return self.unet(torch.cat([sample, depth], dim=1), timestep, *args, **kwargs)

    return _DepthUNet()


class Restyle(PipelineBase):
    mode = "restyle"

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        given = req.options.depth_source == "given"
        found = controls_job.find(req, models)
        loaded = models.get("restyle", req.model, control=control, without_depth_estimator=True)
        estimator = None if given else models.get_part("restyle", req.model, control=control)
        plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native, seed,
                               size_multiple(loaded.pipe))
        work = regionjob.prepare(req, plan)
        control.set_phase("encoding", 0, plan.expected_steps)
        if estimator is None:
            depth = given_depth(req, plan)
        else:
            depth = depth_job.estimate(estimator.pipe, work.model_rgb, plan.model_size)
        check_not_flat(depth, "given" if given else "estimated")
        sampler = sampler_of(req, loaded)
        controls = controls_job.prepare(req, found, plan.region, plan.model_size, loaded.pipe, loaded.resolved.name,
                                        models, control)
        reference = reference_job.prepare(req, plan.region, plan.model_size, loaded.pipe, plan.seeds)
        with adapters.applied(loaded.pipe, req.params, models.models_dir):
            images, warnings = denoise(loaded.pipe, plan, work, depth, req.params, control, models.policy.device,
                                       sampler, controls, reference)
        control.set_phase("finishing")
        patches = regionjob.finish(req, work, images, plan.seeds, keep_layer_alpha=True)
        return Output(patches, loaded.resolved.name, warnings,
                      {"region": list(plan.region.as_tuple()), "model_size": list(plan.model_size),
                       "depth_source": req.options.depth_source, **({"controlnets": controls.names} if controls else {}),
                       **({"reference_steps": reference.steps} if reference else {})},
                      replace(req.options, sampler=sampler))


PIPELINE = Restyle()
