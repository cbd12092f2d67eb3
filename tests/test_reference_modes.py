"""The reference image on restyle and expand (issue 19), on the tiny models with real diffusers pipelines.

Restyle: the reference pass runs the 5-channel depth UNet with the job's own depth channel (checked call by
call), with and without a ControlNet; a given depth still never loads the estimator.  Expand: each pass takes
the reference's part nearest its window, at the pass's own scale; the original pixels stay as they were; one
that does not cover the old canvas's part the job reads is refused.  Both: the reference changes the result,
strength 0 is the job without it bit for bit, start/end are the steps with a reference pass; the CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.contract import controls as C
from core.contract.controls import Control
from core.contract.expand import Growth, context_rect
from core.contract.geometry import Rect
from core.contract.jobs import ImageBuffer, JobRequest, Options, Params, validate
from core.contract.modes import MODE_SPECS
from core.contract.params import ValidationError

from .test_controls import SIZE, ResidualSpy, full_mask, lines, pixels, rgba, run
from .test_reference import UNetCalls, picture, ref, unet_state


@pytest.fixture(scope="module")
def canny(tiny_root):
    from core.contract.catalog import CONTROLNETS
    from core.devtools.tiny_models import build_controlnet

    return build_controlnet(tiny_root / CONTROLNETS["canny"], seed=0)


def depth_unet(models):
    return models.get("restyle", without_depth_estimator=True).pipe.unet


def restyle(*controls, steps=3, guidance=7.5, strength=0.7, mask=True) -> JobRequest:
    return JobRequest("restyle", Params(steps=steps, seed=6, guidance=guidance, strength=strength), image=rgba(4),
                      mask=full_mask() if mask else None, controls=tuple(controls))


def expand(*controls, steps=3, guidance=7.5, strength=0.8, right=64, **sides) -> JobRequest:
    return JobRequest("expand", Params(steps=steps, seed=2, guidance=guidance, strength=strength),
                      Options(expand_left=0, expand_top=0, expand_right=right, expand_bottom=0, **sides),
                      image=rgba(3), controls=tuple(controls))


class Inputs:
    """Records each UNet call's ``sample`` (the job's calls and the reference passes alike)."""

    def __init__(self, unet):
        self.unet, self.samples = unet, []

    def __enter__(self):
        def hook(module, args, kwargs):
            self.samples.append((args[0] if args else kwargs["sample"]).detach().clone())

        self.handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --- the contract ---------------------------------------------------------------------------------


def test_the_reference_works_on_every_mode_that_takes_control_layers():
    assert set(C.REFERENCE_MODES) == {m for m, s in MODE_SPECS.items() if s.controls}
    for mode in C.REFERENCE_MODES:
        C.validate((ref(),), ("RGBA_U8",), mode, True)


# --- restyle --------------------------------------------------------------------------------------


def test_restyle_reference_changes_the_picture_and_zero_is_bit_identical(exact_models):
    from core.pipelines.regionjob import composite

    plain = pixels(run(exact_models, restyle()))
    zero = run(exact_models, restyle(ref(0.0)))
    assert np.array_equal(pixels(zero), plain) and "reference_steps" not in zero.timings
    req = restyle(ref(1.0))
    one = run(exact_models, req)
    assert not np.array_equal(pixels(one), plain) and one.timings["reference_steps"] == [0, 1, 2]
    out = composite(validate(req), one.patches[0])
    src = np.frombuffer(rgba(4).data, np.uint8).reshape(SIZE, SIZE, 4)
    outside = np.frombuffer(full_mask().data, np.uint8).reshape(SIZE, SIZE) == 0
    assert np.array_equal(out[outside], src[outside])


@pytest.mark.parametrize("with_controlnet", [False, True])
def test_restyle_reference_pass_gets_the_jobs_depth_channel(exact_models, canny, with_controlnet):
    """Guidance 1, 10 steps at strength 0.6, window 0.3–0.7: the reference pass runs at steps 3–6 only; each
    runs right after the job's call (from its pre-hook), with other latents and the job's own depth channel.
    Through the ControlNet pipeline (``DepthUNet``) the same, and the residuals reach the job's calls only."""
    controls = (C.Control("canny", lines(), 1.0), ref(1.0, 0.3, 0.7)) if with_controlnet else (ref(1.0, 0.3, 0.7),)
    unet = depth_unet(exact_models)
    before = unet_state(unet)
    with Inputs(unet) as seen, ResidualSpy(unet) as spy:
        res = run(exact_models, restyle(*controls, steps=10, guidance=1.0, strength=0.6))
    assert res.timings["reference_steps"] == [3, 4, 5, 6] and len(seen.samples) == 10 + 4
    assert unet_state(unet) == before
    assert all(s.shape[1] == 5 for s in seen.samples)
    for k in (3, 5, 7, 9):                  # steps 3-6: the job's call, then its reference pass
        job, reference = seen.samples[k], seen.samples[k + 1]
        assert torch_equal(reference[:, 4:], job[:, 4:])            # the job's depth, as the job's call has it
        assert not torch_equal(reference[:, :4], job[:, :4])        # the reference's latents, not the job's
    if with_controlnet:
        assert spy.calls == [True] * 3 + [True, False] * 4 + [True] * 3
        assert res.timings["controlnets"] == ["controlnet-canny"]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_restyle_reference_with_a_controlnet_at_zero_is_the_controlled_restyle(exact_models, canny):
    canny_only = pixels(run(exact_models, restyle(C.Control("canny", lines(), 1.0))))
    both = run(exact_models, restyle(C.Control("canny", lines(), 1.0), ref(0.0)))
    assert np.array_equal(pixels(both), canny_only)
    assert not np.array_equal(pixels(run(exact_models, restyle(C.Control("canny", lines(), 1.0), ref(1.0)))),
                              canny_only)


def test_restyle_reference_with_a_given_depth_never_loads_the_estimator(tiny_root, policy):
    from core.models.manager import ModelManager

    from .pipeline_contract import RecordingModels

    mm = RecordingModels(ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none", capacity=4))
    depth = np.tile(np.linspace(0, 65535, SIZE, dtype=np.uint16), (SIZE, 1))
    req = replace(restyle(ref(1.0), steps=2), options=Options(depth_source="given"),
                  depth=ImageBuffer(SIZE, SIZE, "GRAY_U16", depth.astype("<u2").tobytes()))
    res = run(mm, req)
    assert res.timings["reference_steps"] == [0, 1] and res.timings["depth_source"] == "given"
    assert not any(a.startswith("get_part") for a in mm.asked)


def test_restyle_reference_of_another_size_is_refused_not_stretched(exact_models):
    with pytest.raises(ValidationError) as e:
        run(exact_models, restyle(ref(image=picture(size=96))))
    assert e.value.parameter == "controls[0].image" and "never stretched" in str(e.value)


# --- expand ---------------------------------------------------------------------------------------


def test_expand_reference_rect_is_the_nearest_part_of_the_reference_at_the_windows_size():
    from core.contract.expand import pass_sizes, plan_passes
    from core.pipelines.expand import reference_rect, reference_size

    size, g = (SIZE, SIZE), Growth(40, 30, 150, 20)
    known = context_rect(size, g)
    max_side, band = pass_sizes(64)     # a model of 64 px: windows of 96, 20 passes
    passes = plan_passes(size, g, known.translate(*g.offset), max_side, band)
    assert len(passes) > 8 and any(not p.window.translate(-40, -30).intersect(known).w for p in passes)
    for p in passes:
        window = p.window.translate(-40, -30)
        rect = reference_rect(window, known)
        assert known.contains(rect)
        under = window.intersect(known)
        assert under.empty or rect.contains(under)        # every reference pixel under the window is in it
        assert (rect.w, rect.h) == (min(window.w, known.w), min(window.h, known.h))
        if (rect.w, rect.h) == (window.w, window.h):
            assert reference_size(rect, window, (96, 64)) == (96, 64)   # the pass's own model size
    # cut on an axis where the window is larger: scaled as the window is, not stretched to the model's size
    assert reference_rect(Rect(100, 0, 80, 60), Rect(0, 0, 128, 40)) == Rect(48, 0, 80, 40)
    assert reference_size(Rect(48, 0, 80, 40), Rect(100, 0, 80, 60), (128, 96)) == (128, 64)


def test_expand_reference_changes_the_border_keeps_the_original_and_zero_is_bit_identical(exact_models):
    from core.pipelines.expand import composite

    plain = run(exact_models, expand())
    zero = run(exact_models, expand(ref(0.0)))
    assert np.array_equal(pixels(zero), pixels(plain)) and "reference_steps" not in zero.timings
    req = expand(ref(1.0), right=160)         # two passes, outward
    one = run(exact_models, req)
    assert not np.array_equal(pixels(one), pixels(run(exact_models, expand(right=160))))
    passes = one.timings["passes"]
    assert passes > 1 and one.timings["reference_steps"] == [[0, 1, 2]] * passes     # several passes, each
    assert len(one.timings["reference_rects"]) == passes
    assert all(Rect(0, 0, SIZE, SIZE).contains(Rect(*r)) for r in one.timings["reference_rects"])
    out = composite(validate(req), one.patches[0])
    assert np.array_equal(out[:, :SIZE], np.frombuffer(rgba(3).data, np.uint8).reshape(SIZE, SIZE, 4))
    assert not any("no pixels over part of the new border" in w for w in one.warnings)


def test_expand_reference_start_and_end_are_the_steps_with_a_reference_pass_in_every_pass(exact_models):
    unet = exact_models.get("expand").pipe.unet
    before = unet_state(unet)
    # guidance 1: one UNet call per step; 10 steps at any strength (steps are the steps that run)
    with UNetCalls(unet) as calls:
        res = run(exact_models, expand(ref(1.0, 0.3, 0.7), steps=10, guidance=1.0, strength=0.6))
    passes = res.timings["passes"]
    assert res.timings["reference_steps"] == [[3, 4, 5, 6]] * passes and calls.count == passes * (10 + 4)
    assert unet_state(unet) == before


def test_expand_reference_with_a_controlnet_and_several_images(exact_models, canny):
    """The ControlNet inpaint pipeline per pass with the reference injected: residuals reach the job's calls
    only; image i of a batch depends only on seed + i, as without a reference."""
    controls = (C.Control("canny", lines(), 1.0), ref(1.0))
    with ResidualSpy(exact_models.get("expand").pipe.unet) as spy:
        res = run(exact_models, expand(*controls, steps=2, guidance=1.0))
    passes = res.timings["passes"]
    assert spy.calls == [True, False] * 2 * passes
    assert res.timings["controlnets"] == ["controlnet-canny"] and res.timings["reference_steps"] == [[0, 1]] * passes
    assert any(w.startswith("control 1 (canny) has no pixels over part of the new border") for w in res.warnings)
    assert not any(w.startswith("control 2") for w in res.warnings)     # said of the ControlNet only
    two = run(exact_models, replace(expand(ref(1.0), steps=2), params=Params(steps=2, seed=2, num_images=2)))
    one = run(exact_models, replace(expand(ref(1.0), steps=2), params=Params(steps=2, seed=3)))
    a = np.frombuffer(two.patches[1].image.data, np.uint8).astype(int)
    assert np.abs(a - pixels(one).astype(int)).max() <= 1


@pytest.mark.parametrize("image, origin", [(picture(size=96), (0, 0)), (picture(), (8, 0))])
def test_expand_reference_not_covering_the_old_canvas_is_refused(exact_models, image, origin):
    req = expand(replace(ref(1.0, image=image), origin=origin))
    with pytest.raises(ValidationError) as e:
        run(exact_models, req)
    assert e.value.parameter == "controls[0].image"
    assert f"{image.width}x{image.height} at {origin[0]},{origin[1]}" in str(e.value)
    assert "never stretched" in str(e.value)


def test_expand_reference_covering_only_the_part_read_is_enough(exact_models):
    """The dock sends a control over the old canvas's part the job reads (``context_rect``), no more."""
    from core.contract.expand import MIN_CONTEXT

    big = rgba(5, size=MIN_CONTEXT + 64)
    g = Growth(0, 0, 32, 0)
    known = context_rect((big.width, big.height), g)
    assert known.w < big.width
    a = np.frombuffer(picture(size=big.width).data, np.uint8).reshape(big.height, big.width, 4)
    part = np.ascontiguousarray(a[known.slices()])
    control = Control("reference", ImageBuffer(known.w, known.h, "RGBA_U8", part.tobytes()), 1.0,
                      origin=(known.x, known.y))
    req = JobRequest("expand", Params(steps=1, seed=1, strength=0.8), Options(expand_right=32), image=big,
                     controls=(control,))
    res = run(exact_models, req)
    assert all(known.contains(Rect(*r)) for r in res.timings["reference_rects"])


# --- the command line -----------------------------------------------------------------------------


def test_cli_reference_on_restyle_and_expand(tiny_root, tmp_path):
    from PIL import Image

    from .test_cli import run_cli
    from .test_control_cli import control_changes_restyle_and_expand

    env = {"DD_MODELS_DIR": str(tiny_root)}
    style, inp = tmp_path / "style.png", tmp_path / "in.png"
    Image.frombytes("RGBA", (SIZE, SIZE), picture().data).save(style)
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(inp)
    control_changes_restyle_and_expand(tiny_root, tmp_path, inp, f"reference:{style}:1.5", "--quiet")
    small = tmp_path / "small.png"
    Image.new("RGB", (96, 96)).save(small)
    r = run_cli("expand", "--model", tiny_root / "sd2-inpainting", "--right", 32, "--image", inp, "--prompt", "x",
                "--steps", 1, "--control", f"reference:{small}", "--out", tmp_path / "e.png", "--quiet", env=env)
    assert r.returncode == 2 and "never stretched" in r.stderr and r.stderr.count("\n") == 1
