"""Control layers in a job: load the request's ControlNets, cut their pictures to the job's region at the
model's size, and run diffusers' ControlNet pipelines built from the modules of the base pipeline that is
already loaded (text encoder, tokenizer, VAE, UNet and scheduler are shared, nothing is loaded twice).

Several controls run together through diffusers' ``MultiControlNetModel``.  Each control's strength is
its ``controlnet_conditioning_scale`` and its start/end the fraction of the steps that run
(``control_guidance_start``/``end``: diffusers counts them over the steps of the call, which are the
steps that run, whatever the strength).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract import controls as C
from ..contract.geometry import Rect
from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest
from ..models import controlnets
from ..raster import scaling
from ..raster.pixels import as_array

PIPELINE_CLASSES = {"text": "StableDiffusionControlNetPipeline", "image": "StableDiffusionControlNetImg2ImgPipeline",
                    "inpaint": "StableDiffusionControlNetInpaintPipeline"}


@dataclass
class Controls:
    """The request's controls, ready for a diffusers ControlNet pipeline."""

    nets: list                 # ControlNetModel per control
    images: list               # float tensors 1×3×H×W in [0, 1] at model size, one per control
    strengths: list[float]
    starts: list[float]
    ends: list[float]
    names: list[str]           # the ControlNets' names (the result's timings say which ran)

    @property
    def controlnet(self):
        if len(self.nets) == 1:
            return self.nets[0]
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        return MultiControlNetModel(self.nets)

    def kwargs(self) -> dict:
        one = len(self.nets) == 1
        return {"controlnet_conditioning_scale": self.strengths[0] if one else list(self.strengths),
                "control_guidance_start": self.starts[0] if one else list(self.starts),
                "control_guidance_end": self.ends[0] if one else list(self.ends)}

    def image_arg(self):
        return self.images[0] if len(self.images) == 1 else list(self.images)


def control_picture(control: C.Control, region: Rect, size: tuple[int, int]) -> np.ndarray:
    """The control's pixels over ``region`` (canvas coordinates) at the model's ``size``: float RGB in
    [0, 1], transparent pixels as black (no signal).  Any layout the editor sends is converted (16-bit,
    float, linear light); the crop is never stretched beyond the region's own scaling to the model.
    Where the picture has no pixels (Expand's new border beyond a control of the old canvas) it is
    transparent, so black too."""
    ox, oy = control.origin
    src = as_array(control.image)
    have = region.intersect(Rect(ox, oy, control.image.width, control.image.height))
    native = np.zeros((region.h, region.w, src.shape[2]), src.dtype)
    if not have.empty:
        native[have.slices((region.x, region.y))] = src[have.slices((ox, oy))]
    small, _opaque = scaling.premultiplied_at(native, control.image.format, control.image.linear, size)
    return np.clip(small[..., :3], 0.0, 1.0).astype(np.float32)


def covers(control: C.Control, region: Rect) -> bool:
    return Rect(*control.origin, control.image.width, control.image.height).contains(region)


def find(req: JobRequest, models) -> list:
    """The ControlNet of each control, found on disk before anything is loaded (a missing one is named
    with its install command at once)."""
    return [None if c.type == C.REFERENCE else   # no ControlNet: pipelines/reference.py
            controlnets.resolve(c.type, c.model, models_dir=getattr(models, "models_dir", None),
                                hub_cache=getattr(models, "hub_cache", None)) for c in req.controls]


def prepare(req: JobRequest, found: list, region: Rect, size: tuple[int, int], pipe, base_name: str, models,
            control: JobControl, *, padded: bool = False) -> Controls | None:
    """Load the ControlNets ``found`` for the request's controls (each checked against the base model's
    UNet first) and cut their pictures; None without ControlNet controls (a reference image is not one).  A
    control that does not cover ``region`` is refused, or with ``padded`` (Expand) black where it has no pixels."""
    if not any(c.type != C.REFERENCE for c in req.controls):
        return None
    import torch

    policy = models.policy
    out = Controls([], [], [], [], [], [])
    for i, (c, resolved) in enumerate(zip(req.controls, found, strict=True)):
        if c.type == C.REFERENCE:
            continue
        if not padded:
            C.check_covers(i, c, region.as_tuple())
        controlnets.check_fits(resolved, pipe.unet.config, base_name, C.field(i, "model"))
        key = ("controlnet", str(resolved.path), policy.device, policy.dtype)
        net = models.get_other(key, lambda r=resolved: controlnets.load(r, policy), control=control)
        rgb = control_picture(c, region, size)
        out.nets.append(net)
        out.images.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])
        out.strengths.append(c.strength)
        out.starts.append(c.start)
        out.ends.append(c.end)
        out.names.append(resolved.name)
    return out


def pipeline(kind: str, pipe, controls: Controls, unet=None):
    """A diffusers ControlNet pipeline (``kind``: text, image or inpaint) over ``pipe``'s modules (``unet``:
    another denoiser in place of ``pipe``'s UNet: restyle's depth-conditioned one).
    Built directly rather than with ``from_pipe``, which would cast the shared modules to one dtype."""
    import diffusers

    cls = getattr(diffusers, PIPELINE_CLASSES[kind])
    c = pipe.components
    cp = cls(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=unet or c["unet"],
             controlnet=controls.controlnet, scheduler=c["scheduler"], safety_checker=None, feature_extractor=None,
             requires_safety_checker=False)
    cp.set_progress_bar_config(disable=True)
    return cp
