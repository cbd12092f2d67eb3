"""The Stable Diffusion 2 family: what each model is and how to get it.  Standard library only."""

from __future__ import annotations

from dataclasses import dataclass

from .modes import MODE_TABLE


@dataclass(frozen=True)
class ModelSpec:
    key: str                  # short name used on the command line and in the models folder
    repo_id: str              # Hugging Face hub id
    pipeline: str             # diffusers pipeline class (a component's model class: AutoencoderTiny)
    native: int               # native resolution (px)
    prediction: str           # "epsilon" or "v_prediction" (the model's scheduler config is the authority)
    modes: tuple[str, ...]    # jobs that can use it
    unet_in_channels: int
    title: str
    single_files: tuple[str, ...] = ()  # names of the original single-file checkpoints
    files: tuple[str, ...] = ()  # a single-file model (ControlNets): the repo files to fetch
    # The sampler a job with sampler "auto" runs (``samplers.SAMPLERS``) and the step count it was
    # chosen for: DPM-Solver++ 2M at 25 steps, from published comparisons (README, "Samplers").  The
    # x4 upscaler keeps the scheduler it ships with.
    sampler: str = "dpmpp_2m"
    steps: int = 25
    # Distilled for 1–4 steps without classifier-free guidance (SD-Turbo: its sampler is the one it ships
    # with, Euler on trailing timesteps).
    distilled: bool = False
    # (scheduler class, timestep spacing) its folder names, when that tells it from a sibling of the
    # same pipeline, UNet and prediction type (SD-Turbo from 2.1-base).
    scheduler: tuple[str, str] | None = None
    # No job needs it: installed, it makes something better (TAESD: previews) or possible (ControlNets).
    optional: bool = False

    @property
    def component(self) -> bool:
        """A single diffusers model (config.json + weights at the folder's root), not a pipeline, nor a
        model fetched as single files (ControlNets: ``core.models.controlnets``)."""
        return not self.pipeline.endswith("Pipeline") and not self.files

    @property
    def cache_folder(self) -> str:
        """Folder name of this repo in the Hugging Face cache."""
        return "models--" + self.repo_id.replace("/", "--")

    def install_hint(self) -> str:
        return f"python -m installer models download {self.key}"


CATALOG: dict[str, ModelSpec] = {
    s.key: s
    for s in (
        ModelSpec("sd2-inpainting", "stabilityai/stable-diffusion-2-inpainting",
                  "StableDiffusionInpaintPipeline", 512, "epsilon", ("inpaint", "expand"), 9,
                  "Stable Diffusion 2 inpainting", ("512-inpainting-ema.safetensors",)),
        ModelSpec("sd2-depth", "stabilityai/stable-diffusion-2-depth",
                  "StableDiffusionDepth2ImgPipeline", 512, "epsilon", ("restyle", "depth"), 5,
                  "Stable Diffusion 2 depth", ("512-depth-ema.safetensors",)),
        ModelSpec("sd2-x4-upscaler", "stabilityai/stable-diffusion-x4-upscaler",
                  "StableDiffusionUpscalePipeline", 512, "v_prediction", ("upscale",), 7,
                  "Stable Diffusion x4 upscaler", ("x4-upscaler-ema.safetensors",), sampler="model"),
        ModelSpec("sd2-1", "stabilityai/stable-diffusion-2-1",
                  "StableDiffusionPipeline", 768, "v_prediction", ("generate",), 4,
                  "Stable Diffusion 2.1 (768)", ("v2-1_768-ema-pruned.safetensors",)),
        ModelSpec("sd2-1-base", "stabilityai/stable-diffusion-2-1-base",
                  "StableDiffusionPipeline", 512, "epsilon", ("generate",), 4,
                  "Stable Diffusion 2.1 base (512)", ("v2-1_512-ema-pruned.safetensors",)),
        ModelSpec("sd-turbo", "stabilityai/sd-turbo",
                  "StableDiffusionPipeline", 512, "epsilon", ("live",), 4,
                  "SD-Turbo (SD 2.1 distilled, 1–4 steps)", ("sd_turbo.safetensors",), distilled=True,
                  scheduler=("EulerDiscreteScheduler", "trailing"), sampler="model", steps=1),
        ModelSpec("taesd", "madebyollin/taesd",
                  "AutoencoderTiny", 512, "epsilon", (), 0,
                  "Tiny autoencoder TAESD (previews and Live, optional)", optional=True),
    )
}

# SD 2.1 ControlNets (thibaud/controlnet-sd21: single-file safetensors in the original ControlNet layout,
# fp16, 728 MB each; the repo's .ckpt files are pickles and never fetched).  Control type -> file stem.
_CONTROLNET_FILES = {"scribble": "scribble", "lineart": "lineart", "softedge": "hed", "canny": "canny",
                     "depth": "depth", "pose": "openposev2"}
CONTROLNETS: dict[str, str] = {t: f"controlnet-{t}" for t in _CONTROLNET_FILES}   # control type -> catalogue key
CATALOG.update(
    (f"controlnet-{t}", ModelSpec(
        f"controlnet-{t}", "thibaud/controlnet-sd21", "ControlNetModel", 768, "", (), 4,
        f"ControlNet {t} for SD 2.1", (f"{stem}-sd21-safe.safetensors",),
        files=(f"control_v11p_sd21_{stem}.safetensors",), optional=True))
    for t, stem in _CONTROLNET_FILES.items())

# The models a mode tries, best first (``modes.ModeSpec.models``).
MODE_MODELS: dict[str, tuple[str, ...]] = {m.key: m.models for m in MODE_TABLE}


def by_name(name: str) -> ModelSpec | None:
    """Find a spec by key, hub id or hub name (``stable-diffusion-2-inpainting``)."""
    if name in CATALOG:
        return CATALOG[name]
    for spec in CATALOG.values():
        if name == spec.repo_id or name == spec.repo_id.split("/")[1]:
            return spec
    return None


def by_pipeline(pipeline_class: str, unet_in_channels: int | None = None) -> list[ModelSpec]:
    return [s for s in CATALOG.values() if s.pipeline == pipeline_class
            and (unet_in_channels is None or s.component or s.unet_in_channels == unet_in_channels)]


# The tiny autoencoder: decodes step previews (and Live frames) when installed.
TINY_VAE = "taesd"
