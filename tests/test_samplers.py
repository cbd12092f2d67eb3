"""Samplers (issue 22.1): the choice is a validated request option, every sampler is configured from the
model's own scheduler config for epsilon and v-prediction models, and a job's sampler never leaks into
the cached pipeline or the next job.

Correctness without real weights: with an exact denoiser (a UNet stand-in that knows the clean latents
x0 and answers with the true epsilon or v for what it is given), every sampler must land on x0, from
pure noise and from a partly noised start; answering the other prediction type must not.  Then each
sampler runs the real pipelines on the tiny models: seeds, the seed + i rule, cancel, the steps rule.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.contract import catalog, modes, samplers
from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import JobRequest, Options, Params, validate
from core.contract.params import ValidationError
from core.contract.plan import Schedule
from core.devtools.tiny_models import SCHEDULER
from core.models.samplers import make_scheduler
from core.pipelines import run_job
from core.raster.pixels import as_array

from .helpers import buffer, inpaint_request, rect_mask, rgba_u8

KEYS = [s.key for s in samplers.SAMPLERS]
OWN = {  # the schedulers the SD2 models ship with (tiny_models builds them from the same configs)
    "epsilon": ("PNDMScheduler", {**SCHEDULER, "prediction_type": "epsilon"}),
    "v_prediction": ("DDIMScheduler", {**SCHEDULER, "prediction_type": "v_prediction"}),
}


def own_scheduler(prediction: str):
    import diffusers

    name, config = OWN[prediction]
    return getattr(diffusers, name).from_config(config)


# --- the option -------------------------------------------------------------------------------------

def test_the_sampler_is_a_validated_choice_of_the_diffusion_modes():
    for mode in ("inpaint", "restyle", "generate", "expand"):
        assert "sampler" in modes.spec(mode).options, mode
    for mode in ("upscale", "depth", "fill"):             # the x4 upscaler keeps its own scheduler
        assert "sampler" not in modes.spec(mode).options, mode
    assert Options().sampler == samplers.AUTO and samplers.SAMPLER_CHOICES[0] == samplers.AUTO
    assert set(samplers.SAMPLER_CHOICES) == {"auto", "dpmpp_2m", "dpmpp_2m_karras", "euler", "euler_a", "unipc",
                                             "ddim", "model"}
    req = inpaint_request(rgba_u8(32, 32), rect_mask(32, 32, 4, 4, 20, 20), options=Options(sampler="euler_a"))
    assert validate(req).options.sampler == "euler_a"
    for bad in ("Euler", "", None, 3, "k_lms"):
        with pytest.raises(ValidationError) as e:
            validate(replace(req, options=Options(sampler=bad)))
        assert e.value.parameter == "sampler" and "sampler must be one of auto, dpmpp_2m" in str(e.value)
    # a request from the wire with an unknown sampler is refused the same way
    with pytest.raises(ValidationError, match="sampler"):
        validate(JobRequest.from_dict({**req.to_dict(), "options": {"sampler": "plms"}},
                                      {"image": req.image.data, "mask": req.mask.data}))


def test_the_default_is_a_per_model_catalogue_field():
    for spec in catalog.CATALOG.values():
        assert spec.sampler in samplers.SAMPLER_SPECS and spec.steps > 0, spec.key
    diffusion = [s for s in catalog.CATALOG.values()
                 if s.pipeline.endswith("Pipeline") and s.key != "sd2-x4-upscaler" and not s.distilled]
    assert {s.sampler for s in diffusion} == {"dpmpp_2m"} and {s.steps for s in diffusion} == {25}
    turbo = catalog.CATALOG["sd-turbo"]     # distilled: the sampler it ships with, one step
    assert (turbo.sampler, turbo.steps) == (samplers.MODEL, 1)
    assert catalog.CATALOG["sd2-x4-upscaler"].sampler == samplers.MODEL
    assert samplers.resolve("auto", "unipc") == "unipc" and samplers.resolve("euler", "unipc") == "euler"
    assert samplers.resolve("auto", None) == samplers.FALLBACK
    from core.contract.params import RANGES

    assert RANGES["steps"].default == catalog.CATALOG["sd2-inpainting"].steps   # the form starts there


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("key", KEYS)
def test_each_sampler_is_made_from_the_models_config(key, prediction):
    own = own_scheduler(prediction)
    s = make_scheduler(key, own)
    assert s is not own and s.config.prediction_type == prediction
    for fact in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps"):
        assert s.config[fact] == own.config[fact], fact
    assert torch.equal(s.alphas_cumprod, own.alphas_cumprod)
    spec = samplers.SAMPLER_SPECS[key]
    assert type(s).__name__ == (spec.scheduler or OWN[prediction][0])
    for name, value in spec.settings:
        assert s.config[name] == value, name


def test_settings_of_one_scheduler_class_do_not_cross_to_another():
    import diffusers

    karras = diffusers.DPMSolverMultistepScheduler.from_config({**SCHEDULER, "use_karras_sigmas": True,
                                                                "timestep_spacing": "leading"})
    euler = make_scheduler("euler", karras)
    assert not euler.config.use_karras_sigmas and euler.config.timestep_spacing == "linspace"
    assert make_scheduler("dpmpp_2m", karras).config.use_karras_sigmas is False
    assert make_scheduler(samplers.MODEL, karras).config.use_karras_sigmas is True     # the model's own, as is


class ExactDenoiser:
    """Answers what a perfect UNet would for clean latents ``x0``: given x = a·x0 + s·ε (the model's
    input, a² + s² = 1), the true ε, or v = a·ε − s·x0."""

    def __init__(self, x0, prediction: str):
        self.x0, self.prediction = x0, prediction

    def __call__(self, x, a: float):
        s = (1.0 - a * a) ** 0.5
        eps = (x - a * self.x0) / s
        return eps if self.prediction == "epsilon" else a * eps - s * self.x0


def signal_level(scheduler, t, i: int) -> float:
    """a = sqrt(ᾱ) of the model's input at step ``i`` (timestep ``t``): from the scheduler's own sigma
    where it has one, else from the training schedule."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        return float(1.0 / (1.0 + float(sigmas[i]) ** 2) ** 0.5)
    return float(scheduler.alphas_cumprod[int(t)]) ** 0.5


def sample(scheduler, denoiser, steps: int, strength: float, seed: int = 0):
    """The denoising loop as the diffusers image pipelines run it (timesteps for a strength, the start
    noised with ``add_noise``, ``scale_model_input``, ``step`` with the job's generator where the
    scheduler takes one).  Returns the final latents and the noise each model input implies
    ((x − a·x0) / s), one per model call."""
    import inspect

    from diffusers import StableDiffusionImg2ImgPipeline

    sched = Schedule.of(steps, strength)
    scheduler.set_timesteps(sched.total)
    timesteps, _ = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=scheduler), sched.total,
                                                                sched.strength, "cpu")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(denoiser.x0.shape, generator=g)
    if strength >= 1.0:
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(denoiser.x0, noise, timesteps[:1])
    begin = len(scheduler.timesteps) - len(timesteps)
    extra = {"generator": g} if "generator" in inspect.signature(scheduler.step).parameters else {}
    implied = []
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t)
        a = signal_level(scheduler, t, begin + i)
        implied.append((model_in - a * denoiser.x0) / (1.0 - a * a) ** 0.5)
        x = scheduler.step(denoiser(model_in, a), t, x, **extra).prev_sample
    return x, implied


def rms(t) -> float:
    return float(t.pow(2).mean().sqrt())


def off_the_path(key: str, implied) -> float:
    """How far the model's inputs strayed from the path of the first one.  A deterministic sampler fed
    the true answer keeps every input at a·x0 + s·ε with the same ε; an ancestral one draws a new ε at
    every step, but of unit spread."""
    if samplers.SAMPLER_SPECS[key].ancestral:
        return max(abs(float(e.std()) - float(implied[0].std())) for e in implied)
    return max(rms(e - implied[0]) for e in implied)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("key", KEYS)
def test_with_an_exact_denoiser_every_sampler_lands_on_the_clean_latents(key, prediction):
    x0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    wrong = "v_prediction" if prediction == "epsilon" else "epsilon"
    for strength, steps in ((1.0, 25), (1.0, 8), (0.6, 8), (0.3, 3)):
        s = make_scheduler(key, own_scheduler(prediction))
        pndm = type(s).__name__ == "PNDMScheduler"
        x, implied = sample(s, ExactDenoiser(x0, prediction), steps, strength)
        # DDIM and PNDM stop at the training schedule's first level (a = 0.9996): 0.03 of noise is left
        assert rms(x - x0) < 0.05, (key, prediction, strength, steps, rms(x - x0))
        # the steps rule: ``steps`` denoising steps run at any strength (PNDM evaluates one more)
        assert len(implied) == steps + (1 if pndm else 0), (key, strength, len(implied))
        # PNDM from a partly noised start is off the path by design: its first (warm-up) step assumes
        # it repeats the previous timestep, which image-to-image cuts off (so in stock diffusers too)
        if pndm and strength < 1.0:
            continue
        assert off_the_path(key, implied) < (0.1 if samplers.SAMPLER_SPECS[key].ancestral else 0.01), (key, strength)
        # the other prediction type leaves the path: the prediction type is what makes it right
        x, implied = sample(make_scheduler(key, own_scheduler(prediction)), ExactDenoiser(x0, wrong), steps, strength)
        assert off_the_path(key, implied) > 0.2, (key, strength, off_the_path(key, implied))


# --- the real pipelines on the tiny models ----------------------------------------------------------

H, W = 64, 80
IMG, MASK = rgba_u8(H, W, seed=4), rect_mask(H, W, 20, 16, 60, 48)
CASES = {   # (prediction type, request maker)
    "inpaint-epsilon": lambda **kw: inpaint_request(IMG, MASK, **{"steps": 3, **kw}),
    "generate-v": lambda **kw: JobRequest("generate", Params(**{"prompt": "a lighthouse", "steps": 3, **kw}),
                                          kw.pop("options", Options(width=64, height=64)), model="sd2-1"),
    "img2img-v": lambda **kw: JobRequest("generate", Params(**{"prompt": "a lighthouse", "steps": 3, "strength": 0.6,
                                                               **kw}), Options(), model="sd2-1", image=buffer(IMG),
                                         mask=buffer(MASK, "GRAY_U8")),
}


def request(case: str, key: str, **params) -> JobRequest:
    req = CASES[case](**params)
    return replace(req, options=replace(req.options, sampler=key))


def pixels(res, i: int = 0) -> np.ndarray:
    return as_array(res.patches[i].image).astype(int)


def unet_calls(models, case: str):
    pipe = models.get(*(("inpaint", None) if case.startswith("inpaint") else ("generate", "sd2-1"))).pipe
    calls = []
    return pipe, calls, pipe.unet.register_forward_pre_hook(lambda _m, _a: calls.append(1))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("key", KEYS)
def test_each_sampler_on_the_real_pipelines(exact_models, key, case):
    """Same seed → same image, the seed + i rule, the steps rule, the sampler in the provenance, and the
    cached pipeline keeps the model's own scheduler."""
    pipe, calls, hook = unet_calls(exact_models, case)
    own = pipe.scheduler
    try:
        first = run_job(request(case, key, seed=40), exact_models)
        per_image = len(calls)
        again = run_job(request(case, key, seed=40), exact_models)
        assert np.array_equal(pixels(first), pixels(again))
        pair = run_job(request(case, key, seed=40, num_images=2), exact_models)
        alone = run_job(request(case, key, seed=41), exact_models)
    finally:
        hook.remove()
    assert [p.seed for p in pair.patches] == [40, 41]
    assert np.abs(pixels(alone) - pixels(pair, 1)).max() <= 1
    assert np.abs(pixels(pair) - pixels(first)).max() <= 1
    assert not np.array_equal(pixels(pair, 0), pixels(pair, 1))
    pndm = key == samplers.MODEL and type(own).__name__ == "PNDMScheduler"
    assert per_image == 3 + (1 if pndm else 0), per_image        # the steps that run, at any strength
    assert first.options.sampler == key and first.provenance(0)["options"]["sampler"] == key
    assert pipe.scheduler is own and type(own).__name__ in ("PNDMScheduler", "DDIMScheduler")


@pytest.mark.parametrize("case", ["inpaint-epsilon", "generate-v"])
@pytest.mark.parametrize("key", ["dpmpp_2m", "euler_a", "unipc", "model"])
def test_cancel_within_the_first_step(exact_models, key, case):
    phases = []

    def on_progress(step, total, phase):
        phases.append((phase, step))
        if phase == "denoising":
            control.cancel()

    control = JobControl(on_progress)
    with pytest.raises(Cancelled):
        run_job(request(case, key, seed=3), exact_models, control)
    assert phases[-1] == ("denoising", 1)


def test_auto_runs_the_models_catalogue_default_and_records_it(exact_models):
    res = run_job(request("inpaint-epsilon", "auto", seed=5), exact_models)
    assert res.options.sampler == catalog.CATALOG["sd2-inpainting"].sampler == "dpmpp_2m"
    explicit = run_job(request("inpaint-epsilon", "dpmpp_2m", seed=5), exact_models)
    assert np.array_equal(pixels(res), pixels(explicit))               # the provenance re-runs it exactly


def test_no_sampler_state_leaks_between_jobs(exact_models):
    """A job of another sampler (an ancestral one, at another step count and strength) in between
    changes nothing: the next job gives the same pixels as before."""
    before = run_job(request("img2img-v", "dpmpp_2m", seed=8), exact_models)
    run_job(request("img2img-v", "euler_a", seed=9, steps=5, strength=0.9), exact_models)
    run_job(request("generate-v", "unipc", seed=9), exact_models)
    after = run_job(request("img2img-v", "dpmpp_2m", seed=8), exact_models)
    assert np.array_equal(pixels(before), pixels(after))
    differs = run_job(request("img2img-v", "euler", seed=8), exact_models)
    assert not np.array_equal(pixels(before), pixels(differs))         # and the choice does matter


def test_ancestral_noise_comes_from_the_jobs_generators(exact_models, monkeypatch):
    """Euler ancestral draws fresh noise at every step with the generator of each image, never torch's
    global one."""
    torch.manual_seed(0)
    a = run_job(request("inpaint-epsilon", "euler_a", seed=12), exact_models)
    torch.manual_seed(12345)
    torch.randn(100)
    b = run_job(request("inpaint-epsilon", "euler_a", seed=12), exact_models)
    assert np.array_equal(pixels(a), pixels(b))


def test_the_command_line_takes_a_sampler(tiny_root, tmp_path):
    from PIL import Image

    from .helpers import write_image_and_mask
    from .test_cli import run_cli

    d, img, mask = write_image_and_mask(tmp_path, 64, 80, 0, (20, 16, 60, 48))
    common = ("--model", tiny_root / "sd2-inpainting", "--image", d / "in.png", "--mask", d / "mask.png", "--steps", 3,
              "--seed", 42)
    r = run_cli("inpaint", *common, "--out", d / "a.png", "--sampler", "euler_a")
    assert r.returncode == 0, r.stderr
    assert "seed 42, Euler ancestral:" in r.stderr
    r = run_cli("inpaint", *common, "--out", d / "b.png")
    assert r.returncode == 0 and "seed 42, DPM++ 2M:" in r.stderr           # auto: the catalogue's choice
    assert not np.array_equal(np.asarray(Image.open(d / "a.png")), np.asarray(Image.open(d / "b.png")))
    r = run_cli("inpaint", *common, "--out", d / "c.png", "--sampler", "plms")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--sampler" in r.stderr
    assert "invalid choice: 'plms'" in r.stderr and not (d / "c.png").exists()
    r = run_cli("upscale", "--image", d / "in.png", "--out", d / "u.png", "--sampler", "euler")   # x4: its own
    assert r.returncode == 2 and "unrecognized arguments: --sampler" in r.stderr
