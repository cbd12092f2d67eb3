"""Pieces every diffusion job uses: seeds and generators, prompt embeddings, the step callback."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..contract import samplers
from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, Params
from .preview import latent_to_rgb

if TYPE_CHECKING:
    import torch


def generators(seeds, device: str = "cpu"):
    """One generator per image, so image i depends only on seed + i (not on how many are made)."""
    import torch

    gen_device = "cpu" if device == "mps" else device
    return [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]


def sampler_of(req: JobRequest, loaded) -> str:
    """The sampler the job runs: the request's choice, or for "auto" the loaded model's catalogue default
    (``catalog.ModelSpec.sampler``; a model outside the catalogue gets ``samplers.FALLBACK``)."""
    spec = getattr(loaded.resolved, "spec", None)
    return samplers.resolve(req.options.sampler, spec.sampler if spec is not None else None)


def with_sampler(pipe, key: str):
    """A per-job view of the cached ``pipe`` with its own scheduler for sampler ``key``: the cached
    pipeline's scheduler is never replaced, so no sampler or scheduler state leaks between jobs."""
    from ..models.samplers import job_pipeline

    return job_pipeline(pipe, key)


def prompt_kwargs(pipe, params: Params, guidance_scale: float | None = None) -> tuple[dict, tuple[str, ...]]:
    """``prompt_embeds``/``negative_prompt_embeds`` for a diffusers call, plus warnings.  The negative
    prompt is encoded only when the call guides (``guidance_scale``, default the request's, above 1)."""
    from .adapters import convert_prompt
    from .prompts import encode

    guidance = (params.guidance if guidance_scale is None else guidance_scale) > 1.0
    emb = encode(pipe.tokenizer, pipe.text_encoder, convert_prompt(pipe, params.prompt),
                 convert_prompt(pipe, params.negative_prompt),
                 weighted=params.weighted, guidance=guidance)
    kw = {"prompt_embeds": emb.positive}
    if guidance:
        kw["negative_prompt_embeds"] = emb.negative
    return kw, emb.warnings


def run_pipeline(pipe, plan, params: Params, control: JobControl, device: str, *, tiny=None, latents=False,
                 **inputs):
    """Call a diffusers pipeline that has ``callback_on_step_end``: prompt embeddings, one generator
    per seed of ``plan``, progress/previews/cancel.  Returns (float RGB images H×W×3, warnings), decoded
    by the tiny autoencoder ``tiny`` when given, else by the pipeline's VAE; ``latents=True``: the
    denoised latents (B×4×h×w) instead of images."""
    import numpy as np
    import torch

    prompts, warnings = prompt_kwargs(pipe, params, inputs.get("guidance_scale"))
    raw = latents or tiny is not None
    with torch.inference_mode():
        out = pipe(**prompts, num_images_per_prompt=len(plan.seeds), generator=generators(plan.seeds, device),
                   output_type="latent" if raw else "np", callback_on_step_end=step_callback(control), **inputs)
    if latents:
        return out.images, warnings
    if tiny is not None:
        return decode_latents(pipe, out.images, tiny), warnings
    return [np.asarray(im, dtype=np.float32) for im in out.images], warnings


def decode_latents(pipe, latents, tiny=None) -> list:
    """Denoised SD latents (B×4×h×w, scaled) → float RGB images H×W×3 in [0, 1], through the tiny
    autoencoder when given (it takes the scaled latents as they are), else the pipeline's VAE."""
    import numpy as np
    import torch

    with torch.inference_mode():
        if tiny is not None:
            images = tiny.decode(latents.to(device=tiny.device, dtype=tiny.dtype)).sample
        else:
            vae = pipe.vae
            images = vae.decode(latents.to(vae.device) / vae.config.scaling_factor, return_dict=False)[0]
        images = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(im, dtype=np.float32) for im in images]


TINY_MISSING = ("the tiny autoencoder (TAESD) is not installed, so the full VAE was used; get it with "
                "python -m installer models download taesd")


def tiny_autoencoder(req, models) -> tuple[object | None, tuple[str, ...]]:
    """(the tiny autoencoder, warnings) for a request whose ``vae`` option asks for it: None with a
    warning when it is not installed (the job then uses the model's own VAE)."""
    if req.options.vae != "tiny":
        return None, ()
    find = getattr(models, "tiny_vae", None)
    tiny = find() if find is not None else None
    return tiny, (() if tiny is not None else (TINY_MISSING,))


def image_kwargs(plan) -> dict:
    """The plan's pipeline arguments for pipelines that take their size from the image."""
    return {k: v for k, v in plan.pipeline_kwargs.items() if k not in ("width", "height")}


def step_callback(control: JobControl):
    """A ``callback_on_step_end`` that reports progress, sends previews and cancels within a step."""

    def callback(pipe, i, t, kwargs):
        total = getattr(pipe, "num_timesteps", None) or len(pipe.scheduler.timesteps)
        control.report_step(i + 1, total)
        if control.wants_preview and (i + 1) % control.preview_every == 0 and "latents" in kwargs:
            control.preview((control.decode_preview or latent_to_rgb)(kwargs["latents"][0]))
        if i + 1 >= total:
            control.set_phase("decoding")
        return kwargs

    return callback


def legacy_step_callback(control: JobControl, total: int, *, previews: bool = True):
    """The old ``callback(step, t, latents)`` hook (the x4 upscaler has only this one).  Cancelling
    raises ``Cancelled`` from inside it, which ends the pipeline call.  ``previews=False`` for latents
    that ``latent_to_rgb`` does not describe (the x4 VAE's)."""

    def callback(i, t, latents):
        control.report_step(i + 1, total)
        if previews and control.wants_preview and (i + 1) % control.preview_every == 0:
            control.preview(latent_to_rgb(latents[0]))

    return callback


def encode_image(pipe, rgb, tiny=None) -> torch.Tensor:
    """Latents of an RGB float image (H×W×3 in [0, 1]), deterministic: the mean of the VAE posterior
    (or the tiny autoencoder's ``tiny`` encode, which is deterministic itself).

    Diffusers samples the posterior with the first generator, which would tie every image of a batch
    to image 0's seed; taking the mean keeps "image i depends only on seed + i" exact, and an editor
    wants the same pixels to give the same latents anyway.  Repeats come from ``core.models.latent_cache``.
    """
    import numpy as np
    import torch
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from ..models import latent_cache

    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None] * 2.0 - 1.0
    if tiny is not None:
        with torch.inference_mode():
            latents = tiny.encode(x.to(device=tiny.device, dtype=tiny.dtype)).latents
        return latents.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
    vae = pipe.vae
    x = x.to(device=vae.device, dtype=vae.dtype)
    with torch.inference_mode():
        params = latent_cache.posterior(vae, x)
        latents = DiagonalGaussianDistribution(params).mode() * vae.config.scaling_factor
    return latents.to(pipe.unet.dtype)


@contextmanager
def mean_encoding(vae):
    """Within the block, ``vae.encode`` returns a posterior with no spread, so a pipeline that
    encodes images itself gets the same latents as ``encode_image`` (the mean), whatever generator it
    samples with.  For pipelines that take no image latents (depth2img derives the depth map's size
    from ``image``, so latents there give a depth map 8× too small).  Restored on exit; a pipeline
    runs one call at a time anyway (its scheduler holds per-call state).  Repeats come from
    ``core.models.latent_cache``."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

    from ..models import latent_cache

    own = vae.__dict__.get("encode")  # an instance-level wrapper (mixed precision), if any
    encode = vae.encode

    def parameters(x):
        out = encode(x)
        return (out.latent_dist if hasattr(out, "latent_dist") else out[0]).parameters

    def encode_mean(x, *args, **kwargs):
        params = latent_cache.posterior(vae, x, parameters)
        mean = DiagonalGaussianDistribution(params, deterministic=True)
        return AutoencoderKLOutput(latent_dist=mean) if kwargs.get("return_dict", True) else (mean,)

    vae.encode = encode_mean
    try:
        yield
    finally:
        if own is None:
            del vae.encode
        else:
            vae.encode = own
