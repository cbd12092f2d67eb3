"""Text-to-image and image-to-image on the tiny 2-1 (v-prediction) and 2-1-base (epsilon) pipelines."""

import json
import shutil

import numpy as np
import pytest

from core.contract.jobcontrol import JobControl
from core.contract.jobs import JobRequest, Options, Params
from core.pipelines import regionjob, run_job
from core.pipelines.generate import img2img_pipeline
from core.raster.pixels import as_array

from .helpers import buffer, rect_mask, rgba_u8


def generate(width=None, height=None, image=None, mask=None, model="sd2-1-base", **params):
    p = dict(prompt="a lighthouse at dusk", steps=2, seed=9)
    p.update(params)
    return JobRequest("generate", Params(**p), Options(width=width, height=height), model=model,
                      image=buffer(image) if image is not None else None,
                      mask=buffer(mask, "GRAY_U8") if mask is not None else None)


@pytest.mark.parametrize("model,prediction", [("sd2-1", "v_prediction"), ("sd2-1-base", "epsilon")])
@pytest.mark.parametrize("size", [(128, 128), (200, 96)])
def test_text_to_image_at_two_sizes_with_both_prediction_types(models, model, prediction, size):
    res = run_job(generate(*size, model=model), models)
    p = res.patches[0]
    assert (p.x, p.y, p.image.width, p.image.height, p.image.format) == (0, 0, *size, "RGBA_U8")
    assert res.timings["prediction"] == prediction == models.get("generate", model).pipe.scheduler.config.prediction_type
    mw, mh = res.timings["model_size"]
    assert abs(mw * mh - 128 * 128) <= 0.15 * 128 * 128 and mw % 8 == 0 and mh % 8 == 0  # native area
    assert abs(mw / mh - size[0] / size[1]) < 0.1
    a = as_array(p.image)
    assert (a[..., 3] == 255).all() and a[..., :3].std() > 0


def test_prediction_type_comes_from_the_scheduler_config_not_the_name(models, tiny_root, tmp_path):
    misleading = tmp_path / "stable-diffusion-2-1-base-512-epsilon"
    shutil.copytree(tiny_root / "sd2-1", misleading)
    res = run_job(generate(64, 64, model=str(misleading)), models)
    assert res.timings["prediction"] == "v_prediction"
    # the same weights with the config saying epsilon: the config decides, and it changes the image
    relabelled = tmp_path / "sd2-1-768-v"
    shutil.copytree(misleading, relabelled)
    config = json.loads((relabelled / "scheduler" / "scheduler_config.json").read_text())
    config["prediction_type"] = "epsilon"
    (relabelled / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    res2 = run_job(generate(64, 64, model=str(relabelled)), models)
    assert res2.timings["prediction"] == "epsilon"
    assert not np.array_equal(as_array(res.patches[0].image), as_array(res2.patches[0].image))


def test_text_to_image_into_a_selection(models):
    mask = rect_mask(96, 128, 40, 30, 90, 70)
    req = generate(128, 96, mask=mask, num_images=2)
    res = run_job(req, models)
    assert [p.seed for p in res.patches] == [9, 10]
    p = res.patches[0]
    assert (p.x, p.y, p.image.width, p.image.height) == (32, 22, 66, 56)  # the box grown by 8
    a = as_array(p.image)
    sel = mask[p.y:p.y + p.image.height, p.x:p.x + p.image.width, 0]
    assert (a[sel == 0] == 0).all() and (a[sel > 0][:, 3] > 0).all()
    assert not np.array_equal(a, as_array(res.patches[1].image))


def test_image_to_image_strength_progress_and_selection(models):
    img = rgba_u8(72, 100, seed=6)
    mask = rect_mask(72, 100, 20, 20, 60, 50)
    seen = []
    req = generate(image=img, mask=mask, steps=6, strength=0.5)
    res = run_job(req, models, JobControl(lambda s, t, ph: seen.append((s, t)) if ph == "denoising" else None))
    assert seen == [(i, 6) for i in range(1, 7)]     # the steps asked for run, at any strength
    assert res.timings["image_to_image"] is True
    comp = regionjob.composite(req, res.patches[0])
    outside = mask[..., 0] == 0
    assert np.array_equal(comp[outside], img[outside]) and (comp[~outside] != img[~outside]).any()
    # strength matters: a weaker strength stays closer to the input
    weak = run_job(generate(image=img, steps=3, strength=0.34), models)
    strong = run_job(generate(image=img, steps=3, strength=1.0), models)
    d_weak = np.abs(as_array(weak.patches[0].image).astype(int) - img.astype(int)).mean()
    d_strong = np.abs(as_array(strong.patches[0].image).astype(int) - img.astype(int)).mean()
    assert d_weak < d_strong
    assert (weak.patches[0].image.width, weak.patches[0].image.height) == (100, 72)


def test_image_to_image_shares_the_loaded_modules(models):
    pipe = models.get("generate", "sd2-1-base").pipe
    dtypes = (pipe.unet.dtype, pipe.vae.dtype)
    loads = models.loads
    i2i = img2img_pipeline(pipe)
    assert i2i is img2img_pipeline(pipe)
    assert i2i.unet is pipe.unet and i2i.vae is pipe.vae and i2i.text_encoder is pipe.text_encoder
    assert i2i.scheduler is pipe.scheduler and (pipe.unet.dtype, pipe.vae.dtype) == dtypes
    assert models.loads == loads
