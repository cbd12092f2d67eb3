"""4× upscaling (stable-diffusion-x4-upscaler), tiled so that any size works in bounded memory.

The image (or the selection's region with context) is cut into overlapping tiles (``core.raster.tiling``),
each tile is upscaled by the diffusion model and the results are blended with feathered weights in
output space (``core.raster.tileblend``); the VAE decodes in tiles too.  Every tile takes its starting
latents and the noise added to its low-res input from one image-wide noise field
(``core.raster.noise``), so overlapping tiles start from the same noise and join without seams or colour
jumps.  Alpha is upscaled separately (Lanczos): the model only sees RGB.  With a selection, the
patch's alpha is 0 outside the selection scaled 4× (each pixel a 4×4 block) and feathered inward.

Patches are in the coordinates of the canvas scaled ``SCALE``× (the mode's ``scale``).
"""

from __future__ import annotations

from contextlib import contextmanager

import cv2
import numpy as np

from ..contract.geometry import Rect
from ..contract.jobcontrol import JobControl
from ..contract.jobs import JobRequest, Patch
from ..contract.modes import spec
from ..contract.plan import image_region
from ..raster import compositing
from ..raster.noise import normal_field
from ..raster.pixels import as_array, from_array, pack, to_working
from ..raster.tileblend import resize_rows, scale_tiled, selection_alpha_rows
from ..raster.tiling import plan_tiles
from . import regionjob
from .base import Output, PipelineBase
from .common import legacy_step_callback, prompt_kwargs

TILE_MULTIPLE = 8     # tile sides the UNet and VAE take without resizing
LATENT_STREAM, LOW_RES_STREAM = 0, 1
SCALE = spec("upscale").scale   # 4
VAE_TILE = 128        # latent px (512 output px) the x4 VAE decodes in one piece


def use_vae_tiling(vae, latent_tile: int = VAE_TILE) -> None:
    """Decode in VAE tiles of at most ``latent_tile`` latents.  A tile of up to 128 input px (the
    default is 96) then decodes in one piece: with diffusers' default 64-latent VAE tiles the full x4 VAE took
    62.7 s and 0.47 GB for a 128² latent here, in one piece 24–26 s and 0.96 GB.  Larger tiles are still
    split, so the decode never needs more than about 1 GB (untiled, a 512² latent wants 256 GiB)."""
    vae.enable_tiling()
    vae.tile_latent_min_size = latent_tile
    vae.tile_sample_min_size = latent_tile * 2 ** (len(vae.config.block_out_channels) - 1)


@contextmanager
def low_res_noise(pipe, noise):
    """The x4 pipeline draws the noise it adds to the low-res image from its generator, and no
    argument takes it; for this call its low-res scheduler adds ``noise`` (the tile's slice of the
    image-wide field) instead."""
    scheduler = pipe.low_res_scheduler
    own = scheduler.__dict__.get("add_noise")
    add = scheduler.add_noise

    def add_field_noise(original, _drawn, timesteps):
        return add(original, noise.to(device=original.device, dtype=original.dtype), timesteps)

    scheduler.add_noise = add_field_noise
    try:
        yield
    finally:
        if own is None:
            del scheduler.add_noise
        else:
            scheduler.add_noise = own


def pad_to_multiple(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad the bottom and right so both sides are multiples of ``multiple``."""
    h, w = pixels.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return pixels
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


PREVIEW_SIDE = 256    # px of the longer side of the tile-by-tile preview


class TilePreview:
    """The upscale's preview: the input scaled to at most ``PREVIEW_SIDE`` px, each finished tile
    pasted over it as it arrives.  (The 4-channel latent projection the other modes use for their
    step previews fits the SD VAE, not the x4 one, so this job shows whole tiles instead.)"""

    def __init__(self, rgb: np.ndarray, control: JobControl, side: int = PREVIEW_SIDE):
        h, w = rgb.shape[:2]
        self.control = control
        self.scale = min(1.0, side / max(h, w))
        self.image = compositing.resize(rgb, (max(1, round(w * self.scale)), max(1, round(h * self.scale))))

    def tile_done(self, rect: Rect, out: np.ndarray) -> None:
        if not self.control.wants_preview:
            return
        k = self.scale
        x0, y0 = round(rect.x * k), round(rect.y * k)
        x1 = min(self.image.shape[1], max(x0 + 1, round(rect.right * k)))
        y1 = min(self.image.shape[0], max(y0 + 1, round(rect.bottom * k)))
        self.image[y0:y1, x0:x1] = compositing.resize(out, (x1 - x0, y1 - y0))
        self.control.preview(np.rint(self.image * 255.0).astype(np.uint8))


def diffusion_tile(pipe, prompts: dict, params, noise_level: int, seed: int, origin: tuple[int, int],
                   control: JobControl, preview: TilePreview | None = None):
    """A tile function for ``scale_tiled``: one x4 pipeline run per tile, noise from the shared field
    at the tile's absolute canvas position (``origin`` = the canvas position of the tiled image)."""
    import torch

    dtype = pipe.unet.dtype
    steps = params.steps

    def upscale(rect: Rect, pixels: np.ndarray) -> np.ndarray:
        padded = pad_to_multiple(pixels, TILE_MULTIPLE)
        h, w = padded.shape[:2]
        where = Rect(origin[0] + rect.x, origin[1] + rect.y, w, h)
        latents = torch.from_numpy(normal_field(seed, LATENT_STREAM, 4, where))[None].to(dtype)
        noise = torch.from_numpy(normal_field(seed, LOW_RES_STREAM, 3, where))[None]
        image = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
        with torch.inference_mode(), low_res_noise(pipe, noise):
            out = pipe(
                **prompts,
                image=image,
                latents=latents,
                noise_level=noise_level,
                num_inference_steps=steps,
                guidance_scale=params.guidance,
                generator=torch.Generator().manual_seed(seed),  # not drawn from; keeps global RNG untouched
                output_type="np",
                callback=legacy_step_callback(control, steps, previews=False),
                callback_steps=1,
            )
        control.advance_offset(steps)
        s = SCALE
        result = np.asarray(out.images[0], dtype=np.float32)[: rect.h * s, : rect.w * s]
        if preview is not None:
            preview.tile_done(rect, result)
        return result

    return upscale


def upscale_rgba(rgba: np.ndarray, selection: np.ndarray | None, grid, tile_fn, fmt: str, linear: bool,
                 feather: int) -> np.ndarray:
    """Tile, scale and blend the RGB, add the alpha (Lanczos, times the scaled selection), and
    convert band by band into a native array of ``fmt``.  Only the output array grows with the image."""
    s = SCALE
    h, w = rgba.shape[:2]
    out = None
    for top, band in scale_tiled(compositing.flatten(rgba), grid, tile_fn, s):
        bottom = top + band.shape[0]
        alpha = resize_rows(rgba[..., 3], s, top, bottom)
        alpha[alpha < 1e-5] = 0.0  # Lanczos leaves ±1e-7 where the layer is flat: keep 0 and 1 exact
        alpha[alpha > 1.0 - 1e-5] = 1.0
        if selection is not None:
            alpha *= selection_alpha_rows(selection, s, feather * s, top, bottom)
        native = pack(band, alpha, fmt, linear)
        if out is None:
            out = np.empty((h * s, w * s, native.shape[2]), native.dtype)
        out[top:bottom] = native
    if out is None:
        raise ValueError("upscale_rgba: the image has no rows")
    return out


class Upscale(PipelineBase):
    mode = "upscale"
    single_image = True

    def work(self, req: JobRequest, models, control: JobControl, seed: int) -> Output:
        image = regionjob.source(req)
        loaded = models.get("upscale", req.model, control=control)
        pipe = loaded.pipe
        region = image_region(req, regionjob.selection_bbox(req))
        native, selection, has_selection = regionjob.crop(req, region)
        rgba = to_working(native, image.format, image.linear)
        grid = plan_tiles(region.w, region.h, req.options.tile, multiple=TILE_MULTIPLE)
        total = req.params.steps * len(grid)
        control.set_phase("encoding", 0, total)
        prompts, warnings = prompt_kwargs(pipe, req.params)
        use_vae_tiling(pipe.vae)
        control.plan_total(total)
        preview = TilePreview(compositing.flatten(rgba), control) if control.wants_preview else None
        tile_fn = diffusion_tile(pipe, prompts, req.params, req.options.noise_level, seed, (region.x, region.y),
                                 control, preview)
        out = upscale_rgba(rgba, selection if has_selection else None, grid, tile_fn, image.format,
                           image.linear, req.options.feather)
        control.set_phase("finishing")
        s = SCALE
        patch = Patch(region.x * s, region.y * s, from_array(out, image.format, image.linear), seed)
        return Output([patch], loaded.resolved.name, warnings,
                      {"region": list(region.as_tuple()), "tiles": len(grid),
                       "tile_grid": [len(grid.rows[0]), len(grid.rows)]})

def plain_upscale(req: JobRequest) -> np.ndarray:
    """The request's image scaled 4× by a plain filter (Lanczos), in its native format: what an editor
    shows under an upscale patch with a selection (the CLI composites over it)."""
    image = regionjob.source(req)
    a = as_array(image)
    s = SCALE
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    big = cv2.resize(np.ascontiguousarray(a), (a.shape[1] * s, a.shape[0] * s), interpolation=cv2.INTER_LANCZOS4)
    return big.astype(as_array(image).dtype)


def composite(req: JobRequest, patch: Patch) -> np.ndarray:
    """The plain 4× upscale of the request's image with ``patch`` stacked over it (native array)."""
    s, image = SCALE, regionjob.source(req)
    rect = Rect(patch.x - req.origin[0] * s, patch.y - req.origin[1] * s, patch.image.width, patch.image.height)
    return compositing.composite_native(plain_upscale(req), as_array(patch.image), rect, image.format, image.linear)




PIPELINE = Upscale()
