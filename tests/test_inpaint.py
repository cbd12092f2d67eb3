"""Inpainting on the tiny SD2-inpainting pipeline (a real diffusers run)."""

import threading

import numpy as np
import pytest

from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import Options
from core.pipelines import regionjob, run_job
from core.raster.pixels import as_array

from .helpers import inpaint_request, rect_mask, rgba_u8

H, W = 96, 120
IMG = rgba_u8(H, W, seed=3)
MASK = rect_mask(H, W, 40, 30, 80, 70)


def patch_pixels(result, i=0):
    return as_array(result.patches[i].image)


def test_one_image_patch_placement_and_untouched_outside(models):
    req = inpaint_request(IMG, MASK, steps=3, seed=7)
    res = run_job(req, models)
    assert len(res.patches) == 1
    p = res.patches[0]
    assert p.seed == 7 and res.params.seed == 7
    # the patch covers the selection plus context, inside the canvas
    assert p.x <= 40 and p.y <= 30 and p.x + p.image.width >= 80 and p.y + p.image.height >= 70
    assert p.image.format == "RGBA_U8"
    comp = regionjob.composite(req, p)
    outside = MASK[..., 0] == 0
    assert np.array_equal(comp[outside], IMG[outside])
    assert (comp[~outside] != IMG[~outside]).any()
    assert comp.shape == IMG.shape


def test_several_images_use_seed_plus_i(models):
    res = run_job(inpaint_request(IMG, MASK, steps=3, seed=100, num_images=3), models)
    assert [p.seed for p in res.patches] == [100, 101, 102]
    a, b = patch_pixels(res, 0), patch_pixels(res, 1)
    assert not np.array_equal(a, b)
    # image 1 of the batch is the image seed 101 gives alone (up to batch numerics)
    alone = run_job(inpaint_request(IMG, MASK, steps=3, seed=101), models)
    diff = np.abs(patch_pixels(alone).astype(int) - b.astype(int))
    assert diff.max() <= 3, diff.max()


def test_same_seed_same_output_different_seed_different_output(models):
    r1 = run_job(inpaint_request(IMG, MASK, steps=3, seed=5), models)
    r2 = run_job(inpaint_request(IMG, MASK, steps=3, seed=5), models)
    r3 = run_job(inpaint_request(IMG, MASK, steps=3, seed=6), models)
    assert np.array_equal(patch_pixels(r1), patch_pixels(r2))
    assert not np.array_equal(patch_pixels(r1), patch_pixels(r3))


def test_random_seed_is_reported(models):
    res = run_job(inpaint_request(IMG, MASK, steps=2, seed=None), models)
    assert isinstance(res.patches[0].seed, int) and 0 <= res.patches[0].seed < 2**32


@pytest.mark.parametrize("steps,strength,expected", [(6, 1.0, 6), (10, 0.5, 10), (4, 0.8, 4), (1, 0.3, 1)])
def test_progress_counts_the_denoising_steps(models, steps, strength, expected):
    seen, phases = [], []

    def on_progress(step, total, phase):
        phases.append(phase)
        if phase == "denoising":
            seen.append((step, total))

    run_job(inpaint_request(IMG, MASK, steps=steps, strength=strength), models, JobControl(on_progress))
    assert seen == [(i, expected) for i in range(1, expected + 1)]
    assert phases.index("encoding") < phases.index("denoising") < phases.index("decoding")


def test_previews_come_from_the_latents(models):
    previews = []
    run_job(inpaint_request(IMG, MASK, steps=3), models, JobControl(on_preview=previews.append))
    assert len(previews) == 3
    assert previews[0].dtype == np.uint8 and previews[0].ndim == 3 and previews[0].shape[2] == 3


def test_cancel_mid_run_returns_no_image(models):
    control = None

    def on_progress(step, total, phase):
        if phase == "denoising" and step == 2:
            control.cancel()

    control = JobControl(on_progress)
    steps_seen = []
    orig = control.report_step

    def spy(step, total):
        steps_seen.append(step)
        orig(step, total)

    control.report_step = spy
    with pytest.raises(Cancelled):
        run_job(inpaint_request(IMG, MASK, steps=20), models, control)
    assert max(steps_seen) <= 3  # ends within one step of the cancel


def test_cancel_from_another_thread(models):
    control = JobControl()
    started = threading.Event()
    control._on_progress = lambda s, t, p: started.set() if p == "denoising" else None
    threading.Thread(target=lambda: (started.wait(30), control.cancel()), daemon=True).start()
    with pytest.raises(Cancelled):
        run_job(inpaint_request(IMG, MASK, steps=200), models, control)
    assert control.step < 200


def test_no_selection_repaints_the_whole_image(models):
    req = inpaint_request(IMG, None, steps=2)
    res = run_job(req, models)
    p = res.patches[0]
    assert (p.x, p.y, p.image.width, p.image.height) == (0, 0, W, H)
    assert (patch_pixels(res)[..., 3] == 255).all()


def test_transparent_layer_alpha_and_soft_mask(models):
    img = IMG.copy()
    img[:, : W // 2, 3] = 0
    soft = MASK.copy()
    soft[30:70, 40:50] = 100
    req = inpaint_request(img, soft, steps=2, options=Options(feather=0, color_match=False))
    res = run_job(req, models)
    comp = regionjob.composite(req, res.patches[0])
    assert np.array_equal(comp[soft[..., 0] == 0], img[soft[..., 0] == 0])
    p = patch_pixels(res)
    rows = slice(30 - res.patches[0].y, 70 - res.patches[0].y)
    # soft selection → partial alpha; full selection → opaque new content even over transparency
    assert set(np.unique(p[rows, 40 - res.patches[0].x][..., 3])) == {100}
    assert (p[rows, 60 - res.patches[0].x][..., 3] == 255).all()


def test_long_prompt_is_not_cut(models):
    long = " ".join(["a very detailed painting of a red scarf"] * 12)
    res = run_job(inpaint_request(IMG, MASK, steps=2, prompt=long), models)
    assert any("chunks" in w and "not cut" in w for w in res.warnings)


def test_large_canvas_only_region_reaches_the_model(models):
    big = np.zeros((2048, 2048, 4), np.uint8)
    big[..., 3] = 255
    mask = rect_mask(2048, 2048, 1000, 1000, 1064, 1064)
    res = run_job(inpaint_request(big, mask, steps=2), models)
    assert res.timings["model_size"][0] * res.timings["model_size"][1] <= 160 * 160
    assert res.patches[0].image.width < 300
