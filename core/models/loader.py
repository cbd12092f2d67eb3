"""Load diffusers pipelines from disk: offline, safetensors only, in the policy's device and dtype."""

from __future__ import annotations

import threading

from ..contract.catalog import CATALOG
from . import env
from .device import DevicePolicy, torch_dtype
from .resolver import ResolvedModel

env.apply()

# diffusers and transformers import their submodules lazily, on first attribute access, and those
# lazy imports are not thread-safe: two threads importing different pipelines at once can see a
# half-initialised module ("cannot import name 'FromSingleFileMixin' from 'diffusers.loaders'").
# So every import of these libraries in the engine happens under one lock, and ``import_libraries``
# imports everything a job can need before the first job runs (service.py waits for it).
IMPORT_LOCK = threading.RLock()
_imported = False

# Components that only serve the (disabled) safety checker.
_NO_SAFETY = dict(safety_checker=None, requires_safety_checker=False)
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionImg2ImgPipeline")
# The only pipeline classes the engine loads: a model folder naming any other (DiffusionPipeline, a
# custom pipeline) is refused before diffusers sees it.
PIPELINE_CLASSES = tuple(dict.fromkeys([*(s.pipeline for s in CATALOG.values()), *SD_PIPELINES]))


def quiet_libraries() -> None:
    """No progress bars or chatter from diffusers/transformers: the engine reports progress itself."""
    with IMPORT_LOCK:
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


def import_libraries() -> None:
    """Import torch, diffusers, transformers, compel and every class a job loads or calls, once, in
    whichever thread asks first; other threads wait until it is done.  Idempotent and cheap afterwards."""
    global _imported
    if _imported:
        return
    with IMPORT_LOCK:
        if _imported:
            return
        import torch  # noqa: F401

        quiet_libraries()
        import diffusers
        import transformers

        for name in PIPELINE_CLASSES:
            getattr(diffusers, name)
        for name in ("DPMSolverMultistepScheduler", "DDIMScheduler", "DDPMScheduler", "PNDMScheduler",
                     "EulerDiscreteScheduler", "UNet2DConditionModel", "AutoencoderKL"):
            getattr(diffusers, name)
        for name in ("CLIPTextModel", "CLIPTokenizer", "DPTForDepthEstimation", "DPTImageProcessor"):
            getattr(transformers, name)
        import compel
        import compel.prompt_parser  # noqa: F401
        import diffusers.models.autoencoders.vae
        import diffusers.models.modeling_outputs

        _imported = True


def libraries_imported() -> bool:
    return _imported


def pipeline_class(name: str):
    """The diffusers class of one of ``PIPELINE_CLASSES`` (ValueError for any other name)."""
    if not isinstance(name, str) or name not in PIPELINE_CLASSES:
        raise ValueError(f"not a Stable Diffusion 2 pipeline class: {str(name)[:80]!r}")
    with IMPORT_LOCK:
        import diffusers

        return getattr(diffusers, name)


def load_kwargs(model: ResolvedModel, policy: DevicePolicy, *, without_depth_estimator: bool = False,
                components: dict | None = None) -> dict:
    """Keyword arguments for ``from_pretrained``/``from_single_file`` (pure decision, tested)."""
    kw: dict = dict(local_files_only=True, dtype=torch_dtype(policy.dtype))
    if not model.single_file:   # (from_single_file reads one .safetensors file and no code at all)
        kw.update(use_safetensors=True, trust_remote_code=False)
    if model.variant:
        kw["variant"] = model.variant
    if model.pipeline in SD_PIPELINES:
        kw.update(_NO_SAFETY, feature_extractor=None)
    if model.pipeline == "StableDiffusionDepth2ImgPipeline" and without_depth_estimator:
        kw.update(depth_estimator=None, feature_extractor=None)
    if components:
        kw.update(components)
    return kw


def load_pipeline(model: ResolvedModel, policy: DevicePolicy, *, without_depth_estimator: bool = False,
                  components: dict | None = None):
    """Load ``model`` as its diffusers pipeline, on ``policy.device`` in ``policy.dtype``.

    ``components`` are already-loaded modules to reuse (shared text encoder, tokenizer, VAE).
    Never touches the network; refuses pickle weights (``use_safetensors=True``).
    """

    import_libraries()
    cls = pipeline_class(model.pipeline)
    kw = load_kwargs(model, policy, without_depth_estimator=without_depth_estimator, components=components)
    with IMPORT_LOCK:   # loading resolves component classes through the lazy modules too
        if model.single_file:
            pipe = cls.from_single_file(str(model.path), config=str(model.config), **kw)
        else:
            pipe = cls.from_pretrained(str(model.path), **kw)
    vae_dtype = policy.upscaler_vae_dtype if model.pipeline == "StableDiffusionUpscalePipeline" else policy.vae_dtype
    pipe.to(policy.device)
    if pipe.vae.dtype != torch_dtype(vae_dtype):
        pipe.vae.to(torch_dtype(vae_dtype))
        mixed_precision_vae(pipe.vae)
    vae_layout(pipe.vae, policy)
    attention_kernel(policy, pipe.unet, pipe.vae)
    # The pipeline keeps the scheduler the model ships with: each job makes its own sampler from its
    # config (core/models/samplers.py).
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.text_encoder, pipe.vae):
        m.eval().requires_grad_(False)
    return pipe


def load_tiny_vae(model: ResolvedModel, policy: DevicePolicy):
    """The tiny autoencoder (TAESD, diffusers' ``AutoencoderTiny``) from its folder: offline,
    safetensors only, in the VAE's dtype on the policy's device."""
    from diffusers import AutoencoderTiny

    quiet_libraries()
    variant = {"variant": model.variant} if model.variant else {}
    vae = AutoencoderTiny.from_pretrained(str(model.path), local_files_only=True, use_safetensors=True,
                                          dtype=torch_dtype(policy.vae_dtype), **variant)
    vae.to(policy.device).eval().requires_grad_(False)
    vae_layout(vae, policy)
    return vae


def vae_layout(vae, policy: DevicePolicy) -> None:
    """The autoencoder's weights in channels_last where the policy says it pays (``VAE_CHANNELS_LAST``)."""
    if policy.vae_channels_last:
        import torch

        vae.to(memory_format=torch.channels_last)


def attention_kernel(policy: DevicePolicy, *models) -> None:
    """The attention layers of ``models`` compute attention block by block where the policy says it
    pays (``BLOCKED_ATTENTION``; core/models/blocked_attention.py)."""
    if policy.blocked_attention:
        from .blocked_attention import use_blocked_attention

        use_blocked_attention(*models)


def mixed_precision_vae(vae) -> None:
    """Let a VAE kept in another dtype than the rest of the pipeline (fp32 VAE beside a fp16 UNet)
    accept and return tensors of the pipeline's dtype: inputs are cast to the VAE's dtype and results
    back to the dtype they came in."""
    if getattr(vae, "dd_mixed_precision", False):
        return
    from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

    encode, decode = vae.encode, vae.decode

    def encode_cast(x, *args, **kwargs):
        out = encode(x.to(vae.dtype), *args, **kwargs)
        dist = out.latent_dist if hasattr(out, "latent_dist") else out[0]
        dist = DiagonalGaussianDistribution(dist.parameters.to(x.dtype))
        return AutoencoderKLOutput(latent_dist=dist) if kwargs.get("return_dict", True) else (dist,)

    def decode_cast(z, *args, **kwargs):
        out = decode(z.to(vae.dtype), *args, **kwargs)
        sample = out.sample if hasattr(out, "sample") else out[0]
        sample = sample.to(z.dtype)
        return DecoderOutput(sample=sample) if kwargs.get("return_dict", True) else (sample,)

    vae.encode, vae.decode = encode_cast, decode_cast
    vae.dd_mixed_precision = True


def load_depth_estimator(model: ResolvedModel, policy: DevicePolicy):
    """Only the depth estimator (DPT-hybrid) and its image processor from a depth model's folder,
    in float32: depth maps keep their 16-bit precision, and the rest of the model (UNet, VAE, text
    encoder) is not read at all.  Returns an object with ``depth_estimator`` and ``feature_extractor``."""
    from types import SimpleNamespace

    from .resolver import ModelNotFound

    import_libraries()
    import torch
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    folder = model.config if model.single_file else model.path
    weights = folder / "depth_estimator"
    if model.single_file or not weights.is_dir():
        raise ModelNotFound(f"{model.name} ({model.path}) has no depth_estimator folder, so it cannot estimate "
                            f"depth; give a depth image instead (depth source 'given')")
    # ``variant``: a folder as the installer downloads it holds only model.fp16.safetensors.
    variant = {"variant": model.variant} if model.variant else {}
    with IMPORT_LOCK:
        estimator = DPTForDepthEstimation.from_pretrained(str(weights), local_files_only=True, use_safetensors=True,
                                                          trust_remote_code=False, dtype=torch.float32, **variant)
        processor = DPTImageProcessor.from_pretrained(str(folder / "feature_extractor"), local_files_only=True)
    estimator.to(policy.device).eval().requires_grad_(False)
    return SimpleNamespace(depth_estimator=estimator, feature_extractor=processor)
