"""Text-to-image and image-to-image (stable-diffusion-2-1 at 768 px with v-prediction, or 2-1-base at
512 px with epsilon; the prediction type comes from the model's scheduler config).

- Text-to-image paints width × height at the canvas origin, or the selection's box (composited into
  the selection).  The model works at its native area in the target's aspect ratio; the result is
  scaled to the target.  Without an input image the patch is RGBA_U8.
- Image-to-image (an input image and strength) works like restyle: the whole image, or the
  selection's region with context, composited into the selection.  Its pipeline shares every module
  of the loaded text-to-image pipeline (nothing is loaded twice).
"""

from __future__ import annotations

import weakref
from dataclasses import replace

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.plan import plan_region_job, plan_text_job
from ..models.unet_compile import size_multiple
from ..raster import scaling
from . import adapters, regionjob
from . import controls as controls_job
from . import reference as reference_job
from .base import Output, PipelineBase
from .common import encode_image, image_kwargs, run_pipeline, sampler_of, tiny_autoencoder, with_sampler

_img2img: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def img2img_pipeline(pipe):
    """A StableDiffusionImg2ImgPipeline over the same modules as ``pipe`` (built once per pipe).
    Built directly rather than with ``from_pipe``, which would cast the shared modules to one dtype."""
    if pipe not in _img2img:
        from diffusers import StableDiffusionImg2ImgPipeline

        c = pipe.components
        i2i = StableDiffusionImg2ImgPipeline(
            vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
            scheduler=c["scheduler"], safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        i2i.set_progress_bar_config(disable=True)
        _img2img[pipe] = i2i
    return _img2img[pipe]


def text_to_image(pipe, plan, params, control: JobControl, device: str, sampler: str, tiny=None, controls=None,
                  reference=None):
    if controls is not None:
        job = with_sampler(controls_job.pipeline("text", pipe, controls), sampler)
        with reference_job.applied(job, reference):
            return run_pipeline(job, plan, params, control, device, tiny=tiny, image=controls.image_arg(),
                                **controls.kwargs(), **plan.pipeline_kwargs)
    job = with_sampler(pipe, sampler)
    with reference_job.applied(job, reference):
        return run_pipeline(job, plan, params, control, device, tiny=tiny, **plan.pipeline_kwargs)


def image_to_image(pipe, plan, work: regionjob.RegionWork, params, control: JobControl, device: str, sampler: str,
                   tiny=None, controls=None, reference=None):
    latents = encode_image(pipe, work.model_rgb, tiny).repeat(len(plan.seeds), 1, 1, 1)
    if controls is not None:
        job = with_sampler(controls_job.pipeline("image", pipe, controls), sampler)
        with reference_job.applied(job, reference):
            return run_pipeline(job, plan, params, control, device, tiny=tiny, image=latents,
                                control_image=controls.image_arg(), **controls.kwargs(), **image_kwargs(plan))
    job = with_sampler(img2img_pipeline(pipe), sampler)
    with reference_job.applied(job, reference):
        return run_pipeline(job, plan, params, control, device, tiny=tiny, image=latents, **image_kwargs(plan))


class Generate(PipelineBase):
    mode = "generate"

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        found = controls_job.find(req, models)
        loaded = models.get("generate", req.model, control=control)
        pipe, native, device = loaded.pipe, loaded.resolved.native, models.policy.device
        bbox = regionjob.selection_bbox(req)
        sampler = sampler_of(req, loaded)
        tiny, notes = tiny_autoencoder(req, models)
        if req.image is not None:
            plan = plan_region_job(req, bbox, native, seed, size_multiple(loaded.pipe))
            work = regionjob.prepare(req, plan)
            controls = controls_job.prepare(req, found, plan.region, plan.model_size, pipe, loaded.resolved.name, models,
                                            control)
            reference = reference_job.prepare(req, plan.region, plan.model_size, pipe, plan.seeds)
            control.set_phase("encoding", 0, plan.expected_steps)
            with adapters.applied(pipe, req.params, models.models_dir):
                images, warnings = image_to_image(pipe, plan, work, req.params, control, device, sampler, tiny,
                                                  controls, reference)
            control.set_phase("finishing")
            patches = regionjob.finish(req, work, images, plan.seeds, keep_layer_alpha=True)
        else:
            plan = plan_text_job(req, bbox, native, seed, size_multiple(loaded.pipe))
            controls = controls_job.prepare(req, found, plan.region, plan.model_size, pipe, loaded.resolved.name, models,
                                            control)
            reference = reference_job.prepare(req, plan.region, plan.model_size, pipe, plan.seeds)
            control.set_phase("encoding", 0, plan.expected_steps)
            with adapters.applied(pipe, req.params, models.models_dir):
                images, warnings = text_to_image(pipe, plan, req.params, control, device, sampler, tiny, controls,
                                                 reference)
            control.set_phase("finishing")
            region = plan.region
            alpha = scaling.feathered_alpha(regionjob.selection_crop(req, region), plan.feather if bbox else 0,
                                            "RGBA_U8")
            patches = [regionjob.patch_of(req, region, im, alpha, s) for im, s in zip(images, plan.seeds)]
        return Output(patches, loaded.resolved.name, notes + tuple(warnings),
                      {"region": list(plan.region.as_tuple()), "model_size": list(plan.model_size),
                       "prediction": pipe.scheduler.config.prediction_type,
                       "image_to_image": req.image is not None,
                       **({"controlnets": controls.names} if controls else {}),
                       **({"reference_steps": reference.steps} if reference else {})},
                      replace(req.options, sampler=sampler))


PIPELINE = Generate()
