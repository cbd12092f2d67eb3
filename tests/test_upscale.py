"""Tiled 4× upscaling on the tiny x4 upscaler (real diffusers runs)."""

import cv2
import numpy as np
import pytest

from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import JobRequest, Options, Params
from core.models.device import HardwareFacts, choose_policy
from core.models.manager import ModelManager
from core.pipelines import run_job, upscale
from core.raster.pixels import as_array
from core.raster.tiling import plan_tiles

from .helpers import buffer, rect_mask, rgba_u8


def request(img, mask=None, fmt="RGBA_U8", steps=2, tile=64, **opts):
    return JobRequest("upscale", Params(prompt="sharp details", steps=steps, seed=5), Options(tile=tile, **opts),
                      image=buffer(img, fmt), mask=buffer(mask, "GRAY_U8") if mask is not None else None)


def with_alpha(h, w, seed=0):
    img = rgba_u8(h, w, seed=seed)
    img[..., 3] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[: h // 3, :, 3] = 0
    return img


@pytest.mark.parametrize("fmt", ["RGBA_U8", "BGRA_U16"])
def test_output_is_exactly_4x_and_alpha_is_lanczos_of_the_input_alpha(models, fmt):
    img = with_alpha(27, 35)  # odd sizes, one tile (padded to multiples of 8 inside)
    if fmt == "BGRA_U16":
        img = img.astype(np.uint16) * 257
    res = run_job(request(img, fmt=fmt), models)
    p = res.patches[0]
    assert (p.x, p.y, p.image.width, p.image.height, p.image.format) == (0, 0, 140, 108, fmt)
    assert res.timings["tiles"] == 1 and res.params.seed == 5
    out = as_array(p.image)
    top = 255.0 if fmt == "RGBA_U8" else 65535.0
    alpha = np.clip(cv2.resize(img[..., 3].astype(np.float32) / top, (140, 108), interpolation=cv2.INTER_LANCZOS4),
                    0, 1)
    assert np.abs(out[..., 3] / top - alpha).max() <= 0.51 / top
    assert (out[: (27 // 3 - 4) * 4, :, 3] == 0).all()  # transparent rows stay transparent
    assert (out[out[..., 3] == 0] == 0).all()
    assert out[60:, 100:, :3].std() > 0  # RGB is there where the layer is opaque


def test_tiles_start_from_the_same_noise_where_they_overlap(models):
    """Latents and the noised low-res image that reach the UNet agree exactly on overlaps."""
    img = rgba_u8(72, 80, seed=3)
    grid = plan_tiles(80, 72, 64, multiple=upscale.TILE_MULTIPLE)
    assert len(grid.rows) == 2 and len(grid.rows[0]) == 2
    pipe = models.get("upscale").pipe
    inputs = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: inputs.append(args[0].float().clone()))
    seen = []
    try:
        res = run_job(request(img, steps=1), models, JobControl(lambda s, t, ph: seen.append((s, t, ph))))
    finally:
        hook.remove()
    assert res.timings["tiles"] == 4 and len(inputs) == 4
    tiles = grid.tiles
    pairs = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 3)]
    for i, j in pairs:
        a, b = tiles[i], tiles[j]
        ov = a.intersect(b)
        xa, ya, xb, yb = ov.x - a.x, ov.y - a.y, ov.x - b.x, ov.y - b.y
        ia = inputs[i][..., ya:ya + ov.h, xa:xa + ov.w]
        ib = inputs[j][..., yb:yb + ov.h, xb:xb + ov.w]
        assert torch_equal(ia, ib), (i, j)
    assert [(s, t) for s, t, ph in seen if ph == "denoising"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "add_noise" not in pipe.low_res_scheduler.__dict__


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_progress_counts_steps_across_all_tiles_and_cancel_stops_within_a_step(models):
    img = rgba_u8(72, 80, seed=3)
    control = None
    seen = []

    def on_progress(step, total, phase):
        if phase == "denoising":
            seen.append((step, total))
            if step == 3:
                control.cancel()

    control = JobControl(on_progress)
    with pytest.raises(Cancelled):
        run_job(request(img, steps=2), models, control)
    assert seen == [(i, 8) for i in range(1, 4)]  # 4 tiles × 2 steps; tile 2's first step was the last
    pipe = models.get("upscale").pipe
    assert "add_noise" not in pipe.low_res_scheduler.__dict__


def test_selection_leaves_everything_outside_bit_identical(models):
    img = rgba_u8(50, 60, seed=4)
    mask = rect_mask(50, 60, 30, 20, 50, 40)
    req = request(img, mask, feather=2, steps=1)
    res = run_job(req, models)
    p = res.patches[0]
    assert p.x % 4 == 0 and p.y % 4 == 0 and p.x <= 120 and p.x + p.image.width >= 200
    out = as_array(p.image)
    big_mask = np.repeat(np.repeat(mask[..., 0], 4, 0), 4, 1)
    inside = big_mask[p.y:p.y + p.image.height, p.x:p.x + p.image.width] > 0
    assert (out[~inside] == 0).all()
    assert (out[inside][:, 3] > 0).all()
    comp = upscale.composite(req, p)
    base = upscale.plain_upscale(req)
    assert comp.shape == (200, 240, 4)
    assert np.array_equal(comp[big_mask == 0], base[big_mask == 0])
    assert (comp[big_mask > 0] != base[big_mask > 0]).any()


def test_x4_vae_decodes_in_float32_beside_a_bfloat16_unet(tiny_root, models):
    """The mixed-precision path, in bf16 whatever this CPU would choose."""
    import torch

    policy = choose_policy(HardwareFacts(cpu_flags=frozenset({"avx512_bf16"})), "cpu")
    assert policy.dtype == "bfloat16" and policy.upscaler_vae_dtype == "float32"
    same = models.policy.device == "cpu" and models.policy.dtype == "bfloat16"
    mm = models if same else ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none")
    res = run_job(request(rgba_u8(24, 24, seed=1), steps=1), mm)
    pipe = mm.get("upscale").pipe
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert pipe.vae.use_tiling and pipe.vae.tile_latent_min_size == upscale.VAE_TILE
    assert pipe.vae.tile_sample_min_size == 4 * upscale.VAE_TILE
    out = as_array(res.patches[0].image)
    assert out.shape == (96, 96, 4) and out[..., :3].std() > 0


def test_preview_shows_each_finished_tile_over_the_input(models):
    img = rgba_u8(72, 80, seed=4)
    previews = []
    run_job(request(img, steps=1), models, JobControl(on_preview=lambda rgb: previews.append(rgb.copy())))
    grid = plan_tiles(80, 72, 64, multiple=upscale.TILE_MULTIPLE)
    assert len(previews) == len(grid)  # one per tile, as it finishes
    first, last = previews[0], previews[-1]
    assert first.dtype == np.uint8 and first.shape == (72, 80, 3)
    # the first preview still shows the input where later tiles go; the last one has no input left in it
    flat = np.rint(img[..., :3].astype(np.float32)).astype(np.uint8)
    untouched = np.all(first == flat, axis=-1)
    assert untouched.any() and not np.all(last == flat, axis=-1).any()
