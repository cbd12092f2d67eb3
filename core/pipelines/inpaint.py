"""Inpainting with stable-diffusion-2-inpainting (9-channel UNet): repaint the selection."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.plan import plan_region_job
from ..models.unet_compile import size_multiple
from . import adapters, regionjob
from . import controls as controls_job
from . import reference as reference_job
from .base import Output, PipelineBase
from .common import (
    decode_latents,
    encode_image,
    generators,
    mean_encoding,
    prompt_kwargs,
    run_pipeline,
    sampler_of,
    step_callback,
    tiny_autoencoder,
    with_sampler,
)

NOISE_SEED_OFFSET = 0x5EED  # the masked-content noise must not repeat the pipeline's own noise


def uses_start_image(params) -> bool:
    """Whether the denoising looks at the image it starts from.  At strength 1 it starts from pure
    noise: the 9-channel UNet sees the image only through the masked image's latents, so the start
    image is never encoded (nor pre-filled)."""
    return params.strength < 1.0


def start_latents(pipe, plan, work: regionjob.RegionWork, masked_content: str, prefilled=None, tiny=None):
    """Latents of the image the denoising starts from (what strength < 1 keeps some of).

    - ``original``: the region as it is;
    - ``fill``: ``prefilled``, the region with the selection already filled by the fast fill;
    - ``noise``: the original with Gaussian noise in the latents under the selection, one draw per
      image from its seed (a batch then, so image i still depends only on seed + i).
    """
    import torch

    if masked_content == "fill":
        return encode_image(pipe, prefilled, tiny)
    latents = encode_image(pipe, work.model_rgb, tiny)
    if masked_content != "noise":
        return latents
    repaint = torch.from_numpy(np.ascontiguousarray(work.model_mask >= 0.5, dtype=np.float32))[None, None]
    hole = torch.nn.functional.adaptive_max_pool2d(repaint, latents.shape[-2:])[0].to(latents.device) > 0
    batch = []
    for seed in plan.seeds:
        g = torch.Generator("cpu").manual_seed((int(seed) + NOISE_SEED_OFFSET) % 2**32)
        noise = torch.randn(latents.shape[1:], generator=g).to(latents.device, latents.dtype)
        batch.append(torch.where(hole, noise, latents[0]))
    return torch.stack(batch)


def prefill(req: JobRequest, work: regionjob.RegionWork, models, control: JobControl) -> np.ndarray:
    """The region at model size with the repaint area filled by the Fill job's backend (auto: LaMa
    when installed, else the patch fill)."""
    from .fill import CancelOnly, choose_backend, fill_array

    choice = choose_backend(req.options.backend, None, getattr(models, "models_dir", None))
    return fill_array(work.model_rgb, work.model_mask >= 0.5, choice, models, CancelOnly(control))


def denoise(pipe, plan, work: regionjob.RegionWork, params, control: JobControl, device: str,
            image_latents=None, tiny=None, *, announce: bool = True, reference=None):
    """Run the diffusers inpaint pipeline; returns (float RGB images at model size, warnings).
    ``image_latents``: where the denoising starts (None: the region as it is, encoded only when the
    strength is below 1); ``tiny``: the tiny autoencoder, which then encodes and decodes.  ``announce``:
    report the encoding phase with this run's steps (False for a job of several runs, which announced
    its own total: Expand's passes); ``reference``: a reference image (``reference.prepare``) to inject."""
    import torch

    if announce:
        control.set_phase("encoding", 0, plan.expected_steps)
    prompts, warnings = prompt_kwargs(pipe, params)
    repaint = work.model_mask >= 0.5  # diffusers binarises the mask at 0.5 too
    if image_latents is None and uses_start_image(params):
        image_latents = encode_image(pipe, work.model_rgb, tiny)
    if image_latents is None:  # strength 1: the pipeline wants an image but never encodes it
        image_latents = torch.from_numpy(np.ascontiguousarray(work.model_rgb.transpose(2, 0, 1)))[None]
    masked_latents = encode_image(pipe, work.model_rgb * ~repaint[..., None], tiny)
    with torch.inference_mode(), reference_job.applied(pipe, reference):
        out = pipe(
            **prompts,
            image=image_latents,
            mask_image=repaint[None, ..., None].astype(np.float32),
            masked_image_latents=masked_latents,
            num_images_per_prompt=len(plan.seeds),
            generator=generators(plan.seeds, device),
            output_type="np" if tiny is None else "latent",
            callback_on_step_end=step_callback(control),
            **plan.pipeline_kwargs,
        )
    if tiny is not None:
        return decode_latents(pipe, out.images, tiny), warnings
    return [np.asarray(im, dtype=np.float32) for im in out.images], warnings


def denoise_controlled(pipe, plan, work: regionjob.RegionWork, params, control: JobControl, device: str,
                       controls: controls_job.Controls, start_rgb, sampler: str, tiny=None, reference=None, *,
                       announce: bool = True):
    """The same job through diffusers' ControlNet inpaint pipeline over ``pipe``'s modules with sampler
    ``sampler``: it takes the start image as pixels (``start_rgb``) and encodes it itself with the full
    VAE, to the posterior's mean (``mean_encoding``); ``tiny``, the tiny autoencoder, decodes only.
    ``announce`` as for ``denoise``."""
    import torch

    if announce:
        control.set_phase("encoding", 0, plan.expected_steps)
    repaint = work.model_mask >= 0.5
    # One copy per image: the pipeline encodes each with that image's generator, so image i still
    # depends only on seed + i (one copy would be encoded with the first generator only).
    image = torch.from_numpy(np.ascontiguousarray(start_rgb.transpose(2, 0, 1)))[None].repeat(len(plan.seeds), 1, 1, 1)
    job = with_sampler(controls_job.pipeline("inpaint", pipe, controls), sampler)
    with mean_encoding(pipe.vae), reference_job.applied(job, reference):
        return run_pipeline(job, plan, params, control, device, tiny=tiny, image=image,
                            mask_image=repaint[None, ..., None].astype(np.float32),
                            control_image=controls.image_arg(), **controls.kwargs(), **plan.pipeline_kwargs)


class Inpaint(PipelineBase):
    mode = "inpaint"

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        found = controls_job.find(req, models)
        loaded = models.get("inpaint", req.model, control=control)
        sampler = sampler_of(req, loaded)
        pipe = with_sampler(loaded.pipe, sampler)
        plan = plan_region_job(req, regionjob.selection_bbox(req), loaded.resolved.native, seed,
                               size_multiple(loaded.pipe))
        work = regionjob.prepare(req, plan)
        content = req.options.masked_content
        notes = []
        if content != "original" and req.params.strength >= 1.0:
            notes.append(f"masked content '{content}' has no effect at strength 1: the model starts from pure "
                         f"noise (use a strength below 1)")
        controls = controls_job.prepare(req, found, plan.region, plan.model_size, loaded.pipe, loaded.resolved.name, models,
                                        control)
        reference = reference_job.prepare(req, plan.region, plan.model_size, loaded.pipe, plan.seeds)
        if controls is not None and content == "noise":
            notes.append("masked content 'noise' is not used with control layers: the job starts from the original")
        tiny, tiny_notes = tiny_autoencoder(req, models)
        start = prefilled = None
        if content == "fill" and uses_start_image(req.params):
            prefilled = prefill(req, work, models, control)
        if controls is None and uses_start_image(req.params):
            start = start_latents(pipe, plan, work, content, prefilled, tiny)
        t_model = time.perf_counter()
        with adapters.applied(loaded.pipe, req.params, models.models_dir):
            if controls is not None:
                start_rgb = work.model_rgb if prefilled is None else prefilled
                images, warnings = denoise_controlled(loaded.pipe, plan, work, req.params, control,
                                                      models.policy.device, controls, start_rgb, sampler, tiny,
                                                      reference)
            else:
                images, warnings = denoise(pipe, plan, work, req.params, control, models.policy.device, start, tiny,
                                           reference=reference)
        model_seconds = time.perf_counter() - t_model
        warnings = tuple(notes) + tiny_notes + tuple(warnings)
        control.set_phase("finishing")
        patches = regionjob.finish(req, work, images, plan.seeds, keep_layer_alpha=False)
        return Output(patches, loaded.resolved.name, warnings,
                      {"model_seconds": round(model_seconds, 4), "region": list(plan.region.as_tuple()),
                       "model_size": list(plan.model_size), **({"controlnets": controls.names} if controls else {}),
                       **({"reference_steps": reference.steps} if reference else {})},
                      replace(req.options, sampler=sampler))


PIPELINE = Inpaint()
