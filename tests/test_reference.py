"""The reference-image control (issue 19): reference-only attention injection on the tiny models.  The
reference changes the picture, more with more strength, and strength 0 is the job without it bit for bit;
its start/end are the steps where the UNet runs the reference pass; the UNet's processors and hooks are
back after the job (done, cancelled or failed) and the next job's pixels are those of a job before it;
it combines with a ControlNet; one of another size is refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.contract import controls as C
from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params, validate
from core.contract.params import ValidationError
from core.pipelines import run_job

from .test_controls import SIZE, full_mask, lines, pixels, rgba, run


def picture(seed: int = 9, size: int = SIZE) -> ImageBuffer:
    """A reference with strong colour and texture: stripes over a gradient."""
    y, x = np.mgrid[0:size, 0:size]
    a = np.zeros((size, size, 4), np.uint8)
    a[..., 0] = (x * 2) % 256
    a[..., 1] = np.where((x // 8 + y // 8) % 2 == 0, 230, 20)
    a[..., 2] = (y * 2) % 256
    a[..., 3] = 255
    return ImageBuffer(size, size, "RGBA_U8", a.tobytes())


def ref(strength=1.0, start=0.0, end=1.0, image=None) -> C.Control:
    return C.Control("reference", image if image is not None else picture(), strength, start, end)


def gen(models, *controls, steps=3, guidance=7.5, **opts) -> JobRequest:
    return JobRequest("generate", Params(steps=steps, seed=5, guidance=guidance), Options(width=128, height=128, **opts),
                      controls=tuple(controls))


class UNetCalls:
    """Counts the UNet's calls (the reference pass is a call of its own)."""

    def __init__(self, unet):
        self.unet, self.count = unet, 0

    def __enter__(self):
        def hook(module, args, kwargs):
            self.count += 1

        self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def unet_state(unet):
    """What the job must leave as it found it: each attention module's processor object and the hooks."""
    return ({k: id(p) for k, p in unet.attn_processors.items()}, dict(unet._forward_pre_hooks),
            dict(unet._forward_hooks), unet.__dict__.get("forward"))


# --- the contract ---------------------------------------------------------------------------------


def test_reference_is_a_control_type_of_the_cli_and_the_dock():
    assert C.REFERENCE in C.CONTROL_TYPES and C.CONTROL_LABELS[C.REFERENCE] == "Reference image"
    assert C.parse_spec("reference:style.png:0.6:0:0.5") == ("reference", "style.png", 0.6, 0.0, 0.5)


@pytest.mark.parametrize("controls, mode, field, needle", [
    ((ref(), ref()), "generate", "controls[1].type", "at most one reference"),
    ((replace(ref(), model="/x/cn"),), "generate", "controls[0].model", "takes no model"),
    # a mode not in REFERENCE_MODES that took control layers (every such mode takes a reference today)
    ((C.Control("canny", lines()), ref()), "live", "controls[1].type",
     "works on generate, inpaint, restyle and expand only, not on live"),
])
def test_bad_reference_names_its_field(controls, mode, field, needle):
    with pytest.raises(ValidationError) as e:
        C.validate(controls, ("RGBA_U8",), mode, True)
    assert e.value.parameter == field and needle in str(e.value)


# --- through the jobs -----------------------------------------------------------------------------


def test_reference_changes_the_picture_more_with_strength_and_zero_is_bit_identical(exact_models):
    plain = pixels(run(exact_models, gen(exact_models))).astype(np.int32)
    diffs = []
    for s in (0.0, 0.5, 1.0, 2.0):
        res = run(exact_models, gen(exact_models, ref(s)))
        diffs.append(float(np.abs(pixels(res).astype(np.int32) - plain).mean()))
        assert ("reference_steps" in res.timings) == (s > 0)
    assert diffs[0] == 0.0
    assert 0.0 < diffs[1] < diffs[2] < diffs[3], diffs


@pytest.mark.parametrize("mode", ["generate", "generate-image", "inpaint"])
def test_start_and_end_are_the_steps_with_a_reference_pass(exact_models, mode):
    kind = "inpaint" if mode == "inpaint" else "generate"
    image = rgba() if mode != "generate" else None
    mask = full_mask() if mode == "inpaint" else None
    # guidance 1: one UNet call per step; 10 steps at any strength (steps are the steps that run).
    req = JobRequest(kind, Params(steps=10, guidance=1.0, seed=3, strength=0.6), Options(width=128, height=128),
                     image=image, mask=mask, controls=(ref(1.0, 0.3, 0.7),))
    with UNetCalls(exact_models.get(kind).pipe.unet) as calls:
        res = run(exact_models, req)
    assert res.timings["reference_steps"] == [3, 4, 5, 6]
    assert calls.count == 10 + 4


def test_guided_job_runs_one_reference_pass_per_step_in_the_window(exact_models):
    with UNetCalls(exact_models.get("generate").pipe.unet) as calls:
        res = run(exact_models, gen(exact_models, ref(1.0, 0.0, 0.5), steps=4))
    assert res.timings["reference_steps"] == [0, 1] and calls.count == 4 + 2


def test_inpaint_with_a_reference_keeps_the_outside_and_changes_the_inside(exact_models):
    from core.pipelines.regionjob import composite

    img, mask = rgba(1), full_mask()
    base = JobRequest("inpaint", Params(steps=3, seed=2), image=img, mask=mask)
    plain = composite(validate(base), run(exact_models, base).patches[0])
    req = replace(base, controls=(ref(1.5),))
    out = composite(validate(req), run(exact_models, req).patches[0])
    src = np.frombuffer(img.data, np.uint8).reshape(SIZE, SIZE, 4)
    outside = np.frombuffer(mask.data, np.uint8).reshape(SIZE, SIZE) == 0
    assert np.array_equal(out[outside], src[outside])
    assert not np.array_equal(out[~outside], plain[~outside])


def test_the_unet_is_restored_after_a_job_a_cancel_and_a_failure(exact_models):
    unet = exact_models.get("generate").pipe.unet
    before = unet_state(unet)
    first = pixels(run(exact_models, gen(exact_models)))
    run(exact_models, gen(exact_models, ref(1.0)))
    assert unet_state(unet) == before

    def cancel_at_2(step, total, phase):
        if step == 2:
            control.cancel()

    control = JobControl(on_progress=cancel_at_2)
    with pytest.raises(Cancelled):
        run_job(gen(exact_models, ref(1.0), steps=4), exact_models, control)
    assert unet_state(unet) == before

    def fail(step, total, phase):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_job(gen(exact_models, ref(1.0), steps=4), exact_models, JobControl(on_progress=fail))
    assert unet_state(unet) == before
    assert np.array_equal(pixels(run(exact_models, gen(exact_models))), first)   # the next job, pixel for pixel


def test_reference_with_a_controlnet_in_one_job(exact_models, cn):
    from .test_controls import ResidualSpy

    canny = C.Control("canny", lines(), 1.0)
    only_canny = pixels(run(exact_models, gen(exact_models, canny, guidance=1.0)))
    with ResidualSpy(exact_models.get("generate").pipe.unet) as spy:
        res = run(exact_models, gen(exact_models, canny, ref(1.0), guidance=1.0))
    # the job's own calls get the residuals, the reference passes do not (one per step, run from the job's
    # call's pre-hook, so the spy, hooked first, sees the job's call first)
    assert spy.calls == [True, False] * 3
    assert res.timings["controlnets"] == ["controlnet-canny"] and res.timings["reference_steps"] == [0, 1, 2]
    assert not np.array_equal(pixels(res), only_canny)


def test_reference_with_the_sampler_of_the_job(exact_models):
    """Noised by the job's own scheduler, whichever it is (a k-diffusion one scales its input)."""
    for sampler in ("euler_a", "ddim", "model"):
        plain = pixels(run(exact_models, gen(exact_models, sampler=sampler)))
        assert not np.array_equal(plain, pixels(run(exact_models, gen(exact_models, ref(1.0), sampler=sampler))))


def test_a_float_linear_reference_is_converted(exact_models):
    plain = pixels(run(exact_models, gen(exact_models, steps=2)))
    res = run(exact_models, gen(exact_models, ref(1.0, image=lines(fmt="RGBA_F32")), steps=2))
    assert res.timings["reference_steps"] == [0, 1] and not np.array_equal(pixels(res), plain)


def test_reference_of_another_size_is_refused_not_stretched(exact_models):
    req = JobRequest("inpaint", Params(steps=2, seed=1), image=rgba(), mask=full_mask(),
                     controls=(ref(image=picture(size=96)),))
    with pytest.raises(ValidationError) as e:
        run(exact_models, req)
    assert e.value.parameter == "controls[0].image"
    assert "96x96" in str(e.value) and "never stretched" in str(e.value)


@pytest.fixture(scope="module")
def cn(tiny_root):
    from core.contract.catalog import CONTROLNETS
    from core.devtools.tiny_models import build_controlnet

    return build_controlnet(tiny_root / CONTROLNETS["canny"], seed=0)


def test_cli_reference_on_generate_and_inpaint(tiny_root, tmp_path):
    from PIL import Image

    from .test_cli import run_cli

    env = {"DD_MODELS_DIR": str(tiny_root)}
    style = tmp_path / "style.png"
    Image.frombytes("RGBA", (SIZE, SIZE), picture().data).save(style)
    plain, refd = tmp_path / "plain.png", tmp_path / "ref.png"
    common = ["--model", tiny_root / "sd2-1-base", "--prompt", "x", "--width", 128, "--height", 128, "--steps", 2,
              "--seed", 4, "--quiet"]
    assert run_cli("generate", *common, "--out", plain, env=env).returncode == 0
    r = run_cli("generate", *common, "--control", f"reference:{style}:1.5:0:1", "--out", refd, env=env)
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(refd)))
    small = tmp_path / "small.png"
    Image.new("RGB", (96, 96)).save(small)
    r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", style, "--prompt", "x", "--steps", 1,
                "--control", f"reference:{small}", "--out", tmp_path / "i.png", "--quiet", env=env)
    assert r.returncode == 2 and "never stretched" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", style, "--prompt", "x", "--steps", 1,
                "--control", f"reference:{style}", "--out", tmp_path / "i.png", "--quiet", env=env)
    assert r.returncode == 0, r.stderr


def test_image_i_of_a_batch_depends_only_on_seed_plus_i(exact_models):
    two = run(exact_models, replace(gen(exact_models, ref(1.0)), params=Params(steps=3, seed=5, num_images=2)))
    one = run(exact_models, replace(gen(exact_models, ref(1.0)), params=Params(steps=3, seed=6)))
    a, b = np.frombuffer(two.patches[1].image.data, np.uint8).astype(int), pixels(one).astype(int)
    assert np.abs(a - b).max() <= 1      # as without a reference: float rounding differs with the batch size
    assert not np.array_equal(pixels(two), np.frombuffer(two.patches[1].image.data, np.uint8))
