"""Live (SD-Turbo) and the tiny autoencoder on the tiny models: 1–4 steps without guidance on SD-Turbo's
own trailing Euler schedule, the steps refused beyond 4, the working size, TAESD decoding (and
encoding) when it is installed and the full VAE otherwise, step previews from TAESD or from the
latent projection, and how SD-Turbo and TAESD are found on disk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core.contract.jobcontrol import JobControl
from core.contract.jobs import JobRequest, Options, Params
from core.contract.params import ValidationError
from core.contract.plan import live_native
from core.models.manager import ModelManager
from core.models.resolver import UnsafeModelFile, resolve
from core.pipelines import run_job
from core.pipelines.common import TINY_MISSING
from core.raster.pixels import as_array

from .helpers import buffer, inpaint_request, rect_mask, rgba_u8
from .test_resolver import hf_cache_copy

H, W = 72, 88
IMG = rgba_u8(H, W, seed=4)
MASK = rect_mask(H, W, 30, 20, 60, 50)


def live_request(vae: str = "tiny", **params) -> JobRequest:
    p = {"prompt": "a red ball", "steps": 1, "strength": 0.5, "seed": 2, **params}
    return JobRequest("live", Params(**p), Options(vae=vae), image=buffer(IMG), mask=buffer(MASK, "GRAY_U8"))


@pytest.fixture(scope="module")
def no_taesd_root(tiny_root, tmp_path_factory):
    """The tiny models without the tiny autoencoder."""
    root = tmp_path_factory.mktemp("no-taesd")
    for key in ("sd-turbo", "sd2-inpainting"):
        (root / key).symlink_to(tiny_root / key)
    return root


@pytest.fixture(scope="module")
def plain_models(no_taesd_root, policy):
    mm = ModelManager(policy, models_dir=no_taesd_root, hub_cache=no_taesd_root / "none", capacity=4)
    yield mm
    mm.unload_all()


class Calls:
    """Forward calls of the watched modules: batch size and first positional argument's shape."""

    def __init__(self):
        self.calls: dict[str, list] = {}
        self.handles = []

    def watch(self, name, module, keep=None):
        def hook(_m, args, kwargs):
            first = args[0] if args else next(iter(kwargs.values()))
            extra = keep(args, kwargs) if keep else None
            self.calls.setdefault(name, []).append((tuple(first.shape), extra))

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def count(self, name):
        return len(self.calls.get(name, ()))

    def close(self):
        for h in self.handles:
            h.remove()


def timestep_of(args, kwargs):
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    return float(t.flatten()[0]) if hasattr(t, "flatten") else float(t)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_sd_turbo_runs_exactly_the_steps_asked_without_guidance(models, steps):
    pipe = models.get("live").pipe
    calls = Calls().watch("unet", pipe.unet, timestep_of)
    seen = []
    try:
        res = run_job(live_request(steps=steps), models, JobControl(lambda s, t, ph: seen.append((s, t, ph))))
    finally:
        calls.close()
    unet = calls.calls["unet"]
    assert len(unet) == steps                                   # the steps that run, at strength 0.5 too
    assert all(shape[0] == 1 for shape, _t in unet)             # no classifier-free guidance: batch of one
    assert [(s, t) for s, t, ph in seen if ph == "denoising"] == [(i, steps) for i in range(1, steps + 1)]
    assert res.timings["steps"] == steps and res.model == "sd-turbo"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    if steps == 1:       # one step at strength 0.5 starts halfway down the trailing schedule
        assert unet[0][1] == pytest.approx(499, abs=1)


def test_live_results_stay_inside_the_selection_and_report_the_split(models):
    res = run_job(live_request(), models)
    [patch] = res.patches
    alpha = as_array(patch.image)[..., 3]
    sel = MASK[patch.y:patch.y + patch.image.height, patch.x:patch.x + patch.image.width, 0]
    assert alpha[sel == 0].max() == 0 and alpha[sel > 0].any()
    t = res.timings
    assert t["autoencoder"] == "tiny" and min(t["encode_s"], t["denoise_s"], t["decode_s"]) >= 0
    assert res.params.num_images == 1 and not res.warnings


def test_more_than_four_steps_are_refused_naming_the_field_before_any_work(models):
    loads = models.loads
    with pytest.raises(ValidationError) as e:
        run_job(live_request(steps=5), models)
    assert e.value.parameter == "steps" and "1–4" in str(e.value) and "Live" in str(e.value)
    assert models.loads == loads


def test_guidance_and_the_negative_prompt_are_not_used(models):
    """Live ignores guidance: any valid value gives the same frame, and the negative prompt too."""
    a = run_job(live_request(guidance=1.0), models)
    b = run_job(live_request(guidance=15.0, negative_prompt="blurry, dark"), models)
    assert a.patches[0].image.data == b.patches[0].image.data


def test_the_working_size_is_for_speed():
    assert live_native(512, "cuda") == 512 and live_native(768, "cuda") == 512
    assert live_native(512, "cpu") == 384 and live_native(128, "cpu") == 128


def test_the_tiny_autoencoder_encodes_and_decodes_when_installed(models):
    pipe, tiny = models.get("live").pipe, models.tiny_vae()
    assert tiny is not None and type(tiny).__name__ == "AutoencoderTiny"
    calls = (Calls().watch("vae_enc", pipe.vae.encoder).watch("vae_dec", pipe.vae.decoder)
             .watch("tiny_enc", tiny.encoder).watch("tiny_dec", tiny.decoder))
    try:
        tiny_res = run_job(live_request("tiny"), models)
        counts_tiny = {k: calls.count(k) for k in ("vae_enc", "vae_dec", "tiny_enc", "tiny_dec")}
        calls.calls.clear()
        full_res = run_job(live_request("full"), models)
        counts_full = {k: calls.count(k) for k in ("vae_enc", "vae_dec", "tiny_enc", "tiny_dec")}
    finally:
        calls.close()
    assert counts_tiny == {"vae_enc": 0, "vae_dec": 0, "tiny_enc": 1, "tiny_dec": 1}
    assert counts_full == {"vae_enc": 1, "vae_dec": 1, "tiny_enc": 0, "tiny_dec": 0}
    assert tiny_res.timings["autoencoder"] == "tiny" and full_res.timings["autoencoder"] == "full"
    assert tiny_res.patches[0].image.data != full_res.patches[0].image.data


def test_without_the_tiny_autoencoder_the_full_vae_is_used_and_said(plain_models):
    assert plain_models.tiny_vae() is None
    res = run_job(live_request("tiny"), plain_models)
    assert res.timings["autoencoder"] == "full" and res.warnings == (TINY_MISSING,)
    assert run_job(live_request("full"), plain_models).warnings == ()


def test_final_results_keep_the_full_vae_unless_asked(models):
    """Inpainting decodes with the full VAE by default; with vae="tiny" TAESD does it."""
    pipe, tiny = models.get("inpaint").pipe, models.tiny_vae()
    calls = Calls().watch("vae_dec", pipe.vae.decoder).watch("tiny_dec", tiny.decoder)
    try:
        run_job(inpaint_request(IMG, MASK, steps=2), models)
        default = (calls.count("vae_dec"), calls.count("tiny_dec"))
        calls.calls.clear()
        res = run_job(inpaint_request(IMG, MASK, steps=2, options=Options(vae="tiny")), models)
        chosen = (calls.count("vae_dec"), calls.count("tiny_dec"))
    finally:
        calls.close()
    assert default == (1, 0) and chosen == (0, 1)
    outside = MASK[..., 0] == 0
    from core.pipelines import regionjob

    comp = regionjob.composite(inpaint_request(IMG, MASK, steps=2), res.patches[0])
    assert np.array_equal(comp[outside], IMG[outside])


def test_step_previews_come_from_the_tiny_autoencoder_when_installed(models, plain_models):
    tiny = models.tiny_vae()
    calls = Calls().watch("tiny_dec", tiny.decoder)
    with_tiny, without = [], []
    try:
        run_job(inpaint_request(IMG, MASK, steps=3), models, JobControl(on_preview=with_tiny.append))
        decodes = calls.count("tiny_dec")
    finally:
        calls.close()
    run_job(inpaint_request(IMG, MASK, steps=3), plain_models, JobControl(on_preview=without.append))
    assert len(with_tiny) == len(without) == 3 and decodes == 3
    h, w = without[0].shape[:2]                      # the projection: one pixel per latent
    assert with_tiny[0].shape == (h * 8, w * 8, 3)   # TAESD: the image's pixels (under 256 px here)
    assert all(p.dtype == np.uint8 for p in with_tiny + without)
    assert with_tiny[-1].std() > 0


def test_jobs_without_previews_never_load_the_tiny_autoencoder(tiny_root, policy):
    mm = ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none")
    run_job(inpaint_request(IMG, MASK, steps=2), mm)
    assert mm._tiny == {}
    mm.unload_all()


# --- finding them on disk -------------------------------------------------------------------------

def test_sd_turbo_is_told_from_2_1_base_by_its_scheduler(tiny_root, tmp_path):
    assert resolve(str(tiny_root / "sd-turbo")).spec.key == "sd-turbo"
    assert resolve(str(tiny_root / "sd2-1-base")).spec.key == "sd2-1-base"
    assert resolve(None, "live", models_dir=tiny_root, hub_cache=tmp_path).path == tiny_root / "sd-turbo"
    # SD-Turbo's folder saved with another scheduler is still SD-Turbo when looked up as such, and the
    # loader gives it its trailing Euler schedule back.
    dst = tmp_path / "models" / "sd-turbo"
    shutil.copytree(tiny_root / "sd-turbo", dst)
    shutil.copy(tiny_root / "sd2-1-base" / "scheduler" / "scheduler_config.json", dst / "scheduler")
    r = resolve("sd-turbo", models_dir=tmp_path / "models", hub_cache=tmp_path)
    assert r.spec.key == "sd-turbo" and r.spec.distilled


def test_the_tiny_autoencoder_is_found_like_every_model(tiny_root, tmp_path):
    r = resolve("taesd", models_dir=tiny_root, hub_cache=tmp_path)
    assert (r.source, r.pipeline, r.path) == ("models-dir", "AutoencoderTiny", tiny_root / "taesd")
    hub = tmp_path / "hub"
    snap = hf_cache_copy(tiny_root / "taesd", hub, "madebyollin/taesd")
    assert resolve("taesd", models_dir=tmp_path / "empty", hub_cache=hub).path == snap
    assert resolve("madebyollin/taesd", models_dir=tmp_path / "empty", hub_cache=hub).source == "hf-cache"
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_root / "taesd", pickled)
    w = pickled / "diffusion_pytorch_model.safetensors"
    w.rename(w.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(UnsafeModelFile, match="pickle"):
        resolve(str(pickled), models_dir=tmp_path)


@pytest.mark.parametrize("mode,model,other", [("generate", "sd-turbo", "2.1"), ("live", "sd2-1-base", "SD-Turbo")])
def test_a_distilled_model_and_a_guided_one_do_not_stand_in_for_each_other(models, mode, model, other):
    req = live_request() if mode == "live" else JobRequest("generate", Params(prompt="x", steps=2, seed=1),
                                                                      Options(width=64, height=64))
    from dataclasses import replace

    with pytest.raises(ValidationError) as e:
        run_job(replace(req, model=model), models)
    assert e.value.parameter == "model" and other in str(e.value)


def test_the_command_line_makes_one_live_frame(tiny_root, tmp_path, capsys):
    from PIL import Image

    from core.cli import main

    from .helpers import write_image_and_mask

    d, img, mask = write_image_and_mask(tmp_path, 45, 61, 1, (20, 10, 45, 30))
    code = main(["live", "--model", str(tiny_root / "sd-turbo"), "--image", str(d / "in.png"), "--mask",
                 str(d / "mask.png"), "--prompt", "marble", "--steps", "2", "--seed", "3", "--vae", "full",
                 "--out", str(d / "live.png"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.split() == [str(d / "live.png")] and "seed 3" in err
    with Image.open(d / "live.png") as im:
        result = np.asarray(im.convert("RGB"))
    outside = mask == 0
    assert np.array_equal(result[outside], img[outside]) and not np.array_equal(result, img)
    code = main(["live", "--model", str(tiny_root / "sd-turbo"), "--image", str(d / "in.png"), "--steps", "5",
                 "--out", str(d / "bad.png")])
    err = capsys.readouterr().err
    assert code == 2 and "steps must be in 1–4 for Live" in err and not (d / "bad.png").exists()
