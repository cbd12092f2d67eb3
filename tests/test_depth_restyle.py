"""Depth maps and restyle-with-depth on the tiny SD2-depth pipeline (real diffusers runs)."""

import numpy as np
import pytest

from core.contract.jobcontrol import JobControl
from core.contract.jobs import JobRequest, Options, Params
from core.contract.params import ValidationError
from core.models.manager import ModelManager
from core.pipelines import regionjob, run_job
from core.pipelines.common import encode_image, mean_encoding
from core.raster.pixels import as_array

from .helpers import buffer, rect_mask, rgba_u8

H, W = 72, 100
IMG = rgba_u8(H, W, seed=11)
MASK = rect_mask(H, W, 30, 20, 70, 50)
P = Params(prompt="a stone wall", steps=3, seed=4, strength=1.0)


def restyle(img=IMG, mask=None, depth=None, params=P, **opts):
    if depth is not None:
        opts["depth_source"] = "given"
    return JobRequest("restyle", params, Options(**opts), image=buffer(img),
                      mask=buffer(mask, "GRAY_U8") if mask is not None else None,
                      depth=buffer(depth, "GRAY_U16") if depth is not None else None)


def pixels(result, i=0):
    return as_array(result.patches[i].image)


def depth_of(img, models):
    """The depth job on ``img`` (as 16-bit RGBA), as a GRAY_U16 array."""
    res = run_job(JobRequest("depth", image=buffer(img.astype(np.uint16) * 257, "RGBA_U16")), models)
    return np.ascontiguousarray(pixels(res)[..., :1])


@pytest.mark.parametrize("fmt", ["RGBA_U8", "BGRA_U16", "RGBA_F32"])
def test_depth_is_grayscale_the_size_of_the_input_and_spans_its_range(models, fmt):
    img = IMG if fmt == "RGBA_U8" else IMG.astype(np.uint16) * 257 if fmt == "BGRA_U16" else IMG / np.float32(255)
    res = run_job(JobRequest("depth", image=buffer(img, fmt)), models)
    p = res.patches[0]
    assert (p.x, p.y, p.image.width, p.image.height, p.image.format) == (0, 0, W, H, fmt)
    a = pixels(res)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    top = {"RGBA_U8": 255, "BGRA_U16": 65535, "RGBA_F32": 1.0}[fmt]
    assert a[..., 0].min() == 0 and a[..., 0].max() == top and (a[..., 3] == top).all()
    if fmt == "BGRA_U16":
        assert len(np.unique(a[..., 0])) > 1024  # 16-bit precision, not 8-bit values widened
    assert p.seed is None


def test_depth_of_a_selection_is_its_region_with_the_selection_as_alpha(models):
    big = rgba_u8(200, 240, seed=2)
    mask = rect_mask(200, 240, 150, 120, 190, 160, value=200)
    res = run_job(JobRequest("depth", image=buffer(big), mask=buffer(mask, "GRAY_U8")), models)
    p = res.patches[0]
    assert p.image.width < 240 and p.x <= 150 and p.x + p.image.width >= 190
    a = pixels(res)
    sel = mask[p.y:p.y + p.image.height, p.x:p.x + p.image.width, 0]
    assert np.array_equal(a[..., 3], sel)


def test_depth_job_loads_only_the_estimator_and_restyle_reuses_it(tiny_root, policy):
    mm = ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none", capacity=4)
    run_job(JobRequest("depth", image=buffer(IMG)), mm)
    (only,) = mm._loaded.values()
    assert not hasattr(only.pipe, "unet") and only.pipe.depth_estimator.dtype.is_floating_point
    run_job(restyle(params=Params(prompt="x", steps=1, seed=1, strength=1.0)), mm)
    assert mm.loads == 2  # the restyle pipeline; the estimator came from the cache


def test_restyle_with_given_depth_never_loads_the_estimator(tiny_root, policy):
    mm = ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none", capacity=4)
    depth = np.tile(np.linspace(0, 65535, W, dtype=np.uint16), (H, 1))[..., None]
    res = run_job(restyle(depth=depth, params=Params(prompt="x", steps=2, seed=1)), mm)
    assert res.timings["depth_source"] == "given"
    (loaded,) = mm._loaded.values()
    assert loaded.pipe.depth_estimator is None and loaded.pipe.feature_extractor is None


def test_restyle_auto_depth_selection_keeps_outside_bit_identical_and_the_layer_alpha(models):
    img = IMG.copy()
    img[:, :45, 3] = 0  # half the layer is transparent
    req = restyle(img, MASK, feather=0, color_match=False)
    res = run_job(req, models)
    assert res.params.seed == 4 and res.timings["depth_source"] == "auto"
    comp = regionjob.composite(req, res.patches[0])
    outside = MASK[..., 0] == 0
    assert np.array_equal(comp[outside], img[outside])
    assert (comp[~outside] != img[~outside]).any()
    p, x0, y0 = pixels(res), res.patches[0].x, res.patches[0].y
    assert (p[20 - y0:50 - y0, 30 - x0:45 - x0, 3] == 0).all()     # restyle keeps transparency
    assert (p[20 - y0:50 - y0, 45 - x0:70 - x0, 3] == 255).all()


def test_depth_round_trip_restyle_with_the_depth_map_matches_auto(models):
    """The depth job's map fed back as a given depth restyles like auto depth does; a different
    depth (inverted) does not.  So the map carries the depth, and given depth is really used."""
    auto = pixels(run_job(restyle(), models)).astype(int)
    depth = depth_of(IMG, models)
    given = pixels(run_job(restyle(depth=depth), models)).astype(int)
    inverted = pixels(run_job(restyle(depth=65535 - depth), models)).astype(int)
    close, far = np.abs(auto - given).mean(), np.abs(auto - inverted).mean()
    assert close < far / 3, (close, far)


def test_flat_given_depth_is_refused(models):
    with pytest.raises(ValidationError) as e:
        run_job(restyle(depth=np.full((H, W, 1), 1000, np.uint16)), models)
    assert e.value.parameter == "depth" and "flat" in str(e.value)


def test_restyle_progress_seeds_and_strength(models):
    seen = []
    res = run_job(restyle(params=Params(prompt="x", steps=5, strength=0.5, seed=20, num_images=2)), models,
                  JobControl(lambda s, t, ph: seen.append((s, t)) if ph == "denoising" else None))
    assert [p.seed for p in res.patches] == [20, 21]
    assert seen == [(i, 5) for i in range(1, 6)]
    # (image i equals the one image made with seed + i: the pipeline contract checks it in float32,
    # tests/test_pipeline_contract.py; in bfloat16 a batch of two rounds differently from one image)
    assert not np.array_equal(pixels(res, 0), pixels(res, 1))


def test_mean_encoding_gives_the_posterior_mean_and_restores_the_vae(models):
    import torch

    pipe = models.get("restyle", without_depth_estimator=True).pipe
    rgb = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    x = (torch.from_numpy(rgb.transpose(2, 0, 1))[None] * 2 - 1).to(pipe.vae.dtype)
    before = pipe.vae.__dict__.get("encode")
    with torch.inference_mode(), mean_encoding(pipe.vae):
        sampled = pipe.vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(3))
    assert pipe.vae.__dict__.get("encode") is before
    expected = encode_image(pipe, rgb)
    assert torch.equal((sampled * pipe.vae.config.scaling_factor).to(expected.dtype), expected)
