"""Live: SD-Turbo (SD 2.1 distilled by adversarial diffusion distillation) repaints the layer, or the
selection's region composited into the selection, in 1 to 4 steps without classifier-free guidance.

The dock's Live switch sends one of these jobs after every change of the layer, the selection or
the prompt, so a frame is made for speed: the working area is the model's native size at most and
smaller on the CPU (``contract.plan.live_native``), the text embedding comes from the prompt cache,
and with the tiny autoencoder installed (option ``vae="tiny"``, the mode's default) TAESD encodes the
start image and decodes the result instead of the full VAE.  ``steps`` are the steps that run
(``contract.plan.Schedule``): 1 step at strength 0.5 starts halfway down SD-Turbo's trailing schedule.

The result reports the split of a frame's time (``encode_s``, ``denoise_s``, ``decode_s``), which the
benchmark's Live row reads.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..contract.plan import live_native, plan_region_job
from ..models.unet_compile import size_multiple
from . import regionjob
from .base import Output, PipelineBase
from .common import (
    decode_latents,
    encode_image,
    image_kwargs,
    run_pipeline,
    sampler_of,
    tiny_autoencoder,
    with_sampler,
)
from .generate import img2img_pipeline


class Live(PipelineBase):
    mode = "live"
    single_image = True

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        loaded = models.get("live", req.model, control=control)
        pipe, device = loaded.pipe, models.policy.device
        native = live_native(loaded.resolved.native, device)
        plan = plan_region_job(req, regionjob.selection_bbox(req), native, seed, size_multiple(pipe))
        work = regionjob.prepare(req, plan)
        tiny, notes = tiny_autoencoder(req, models)
        sampler = sampler_of(req, loaded)     # "auto": SD-Turbo's own (Euler, trailing timesteps)
        control.set_phase("encoding", 0, plan.expected_steps)
        t0 = time.perf_counter()
        start = encode_image(pipe, work.model_rgb, tiny)
        t1 = time.perf_counter()
        latents, warnings = run_pipeline(with_sampler(img2img_pipeline(pipe), sampler), plan, req.params, control,
                                         device, latents=True, image=start, **image_kwargs(plan))
        t2 = time.perf_counter()
        images = decode_latents(pipe, latents, tiny)
        t3 = time.perf_counter()
        control.set_phase("finishing")
        patches = regionjob.finish(req, work, images, plan.seeds, keep_layer_alpha=True)
        return Output(patches, loaded.resolved.name, notes + tuple(warnings),
                      {"region": list(plan.region.as_tuple()), "model_size": list(plan.model_size),
                       "steps": plan.expected_steps, "autoencoder": "tiny" if tiny is not None else "full",
                       "encode_s": round(t1 - t0, 4), "denoise_s": round(t2 - t1, 4),
                       "decode_s": round(t3 - t2, 4)}, replace(req.options, sampler=sampler))


PIPELINE = Live()
