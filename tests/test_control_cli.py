"""Control pictures and the command line of control layers (issue 19): each OpenCV preprocessor on the
sample image as a property test (size, range, grey, something found), depth through the tiny depth model,
``python -m core preprocess`` and ``--control`` on generate and inpaint, in a real subprocess."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from core.contract.params import ValidationError
from core.raster import preprocess

from .conftest import ROOT
from .test_cli import run_cli

SAMPLE = ROOT / "resources" / "sample.png"


def sample_rgb() -> np.ndarray:
    return np.asarray(Image.open(SAMPLE).convert("RGB"), np.float32) / 255.0


@pytest.mark.parametrize("kind", preprocess.OPENCV_TYPES)
def test_preprocessor_on_the_sample_image(kind):
    rgb = sample_rgb()
    out = preprocess.preprocess(kind, rgb)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])   # grey
    # the ball and the horizon give strokes, but most of the picture is background (black)
    assert 0.002 < float((out[..., 0] > 0.5).mean()) < 0.5


@settings(max_examples=25, deadline=None, derandomize=True)
@given(kind=st.sampled_from(preprocess.OPENCV_TYPES), w=st.integers(1, 90), h=st.integers(1, 90),
       seed=st.integers(0, 2**16), flat=st.booleans())
def test_preprocessor_properties(kind, w, h, seed, flat):
    rng = np.random.default_rng(seed)
    rgb = np.full((h, w, 3), 0.4, np.float32) if flat else rng.random((h, w, 3), dtype=np.float32)
    out = preprocess.preprocess(kind, rgb)
    assert out.shape == (h, w, 3) and np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    if flat:
        assert out.max() == 0.0   # nothing to find in a flat picture


def test_cli_preprocess_each_type_and_the_selection(tiny_root, tmp_path):
    for kind in ("canny", "softedge", "lineart", "scribble", "depth"):
        out = tmp_path / f"{kind}.png"
        r = run_cli("preprocess", kind, "--image", SAMPLE, "--out", out, env={"DD_MODELS_DIR": str(tiny_root)})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(out)]
        a = np.asarray(Image.open(out).convert("RGB"))
        assert a.shape[:2] == Image.open(SAMPLE).size[::-1]
        assert a.std() > 0, kind
    mask = ROOT / "resources" / "sample_mask.png"
    out = tmp_path / "sel.png"
    r = run_cli("preprocess", "canny", "--image", SAMPLE, "--mask", mask, "--out", out)
    assert r.returncode == 0, r.stderr
    src, got = np.asarray(Image.open(SAMPLE).convert("RGB")), np.asarray(Image.open(out).convert("RGB"))
    outside = np.asarray(Image.open(mask).convert("L")) == 0
    assert np.array_equal(got[outside], src[outside])
    r = run_cli("preprocess", "pose", "--image", SAMPLE, "--out", tmp_path / "p.png")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "TYPE" in r.stderr


@pytest.fixture(scope="module")
def controlnets(tiny_root):
    from core.devtools.tiny_models import build_controlnet

    return build_controlnet(tiny_root / "controlnet-canny")


def test_cli_generate_and_inpaint_with_controls(tiny_root, controlnets, tmp_path):
    env = {"DD_MODELS_DIR": str(tiny_root)}
    edges = tmp_path / "edges.png"
    Image.fromarray((preprocess.canny(np.random.default_rng(0).random((128, 128, 3), dtype=np.float32))
                     * 255).astype(np.uint8)).save(edges)
    plain, ctl = tmp_path / "plain.png", tmp_path / "ctl.png"
    common = ["--model", tiny_root / "sd2-1-base", "--prompt", "x", "--width", 128, "--height", 128, "--steps", 3,
              "--seed", 4]
    assert run_cli("generate", *common, "--out", plain, env=env).returncode == 0
    r = run_cli("generate", *common, "--control", f"canny:{edges}:1.5:0:0.8", "--control", f"canny:{edges}:0.5",
                "--out", ctl, env=env)
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(ctl)))
    inp = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((128, 128, 3)) * 255).astype(np.uint8)).save(inp)
    r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", inp, "--prompt", "x", "--steps", 2,
                "--control", f"canny:{edges}", "--out", tmp_path / "i.png", env=env)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("control, needle, code", [
    ("canny:{small}", "never stretched", 2),
    ("canny:{edges}:3", "controls[0].strength", 2),
    ("canny:{edges}:1:0.8:0.2", "controls[0].end", 2),
    ("pose:{edges}", "python -m installer models download controlnet-pose", 3),
    ("canny:{missing}", "missing.png", 2),
])
def test_cli_bad_controls_exit_with_one_line(tiny_root, controlnets, tmp_path, control, needle, code):
    edges, small = tmp_path / "edges.png", tmp_path / "small.png"
    Image.new("RGB", (128, 128)).save(edges)
    Image.new("RGB", (96, 96)).save(small)
    spec = control.format(edges=edges, small=small, missing=tmp_path / "missing.png")
    r = run_cli("generate", "--model", tiny_root / "sd2-1-base", "--width", 128, "--height", 128, "--steps", 1,
                "--control", spec, "--out", tmp_path / "o.png", "--quiet", env={"DD_MODELS_DIR": str(tiny_root)})
    assert r.returncode == code, r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_cli_restyle_and_expand_with_controls(tiny_root, controlnets, tmp_path):
    """--control on restyle (the depth model through the ControlNet image-to-image pipeline) and on expand
    (the control of the image's size, cut to each pass's window): the control changes the result, and
    expand keeps the original pixels bit for bit."""
    rng = np.random.default_rng(2)
    edges, inp = tmp_path / "edges.png", tmp_path / "in.png"
    Image.fromarray((preprocess.canny(rng.random((128, 128, 3), dtype=np.float32)) * 255).astype(np.uint8)).save(edges)
    Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).save(inp)
    control_changes_restyle_and_expand(tiny_root, tmp_path, inp, f"canny:{edges}:1.5")


def control_changes_restyle_and_expand(tiny_root, tmp_path, inp, control: str, *extra_args) -> None:
    """``--control control`` on restyle and on expand (32 px to the right) changes the result; expand keeps
    ``inp``'s pixels bit for bit."""
    env = {"DD_MODELS_DIR": str(tiny_root)}
    for mode, extra in (("restyle", ["--model", tiny_root / "sd2-depth"]),
                        ("expand", ["--model", tiny_root / "sd2-inpainting", "--right", 32])):
        common = [mode, *extra, "--image", inp, "--prompt", "x", "--steps", 2, "--seed", 1, *extra_args]
        plain, ctl = tmp_path / f"{mode}.png", tmp_path / f"{mode}-ctl.png"
        assert run_cli(*common, "--out", plain, env=env).returncode == 0
        r = run_cli(*common, "--control", control, "--out", ctl, env=env)
        assert r.returncode == 0, r.stderr
        a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(ctl))
        assert a.shape == b.shape and not np.array_equal(a, b), mode
    src = np.asarray(Image.open(inp).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "expand-ctl.png").convert("RGB"))[:, :src.shape[1]], src)


def test_cli_json_provenance_records_the_controls(tiny_root, controlnets, tmp_path):
    """--json: one line per output on stdout with its provenance, which names each control used (type, the
    ControlNet that ran, strength, start, end); without controls there is no controls entry."""
    import json

    env = {"DD_MODELS_DIR": str(tiny_root)}
    edges = tmp_path / "edges.png"
    Image.new("RGB", (128, 128)).save(edges)
    common = ["generate", "--model", tiny_root / "sd2-1-base", "--width", 128, "--height", 128, "--steps", 2,
              "--seed", 7, "--quiet", "--json"]
    r = run_cli(*common, "--num-images", 2, "--control", f"canny:{edges}:1.5:0.2:0.9", "--control", f"canny:{edges}",
                "--out", tmp_path / "o.png", env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["path"] for d in lines] == [str(tmp_path / "o.png"), str(tmp_path / "o_2.png")]
    assert [d["seed"] for d in lines] == [7, 8] and lines[0]["mode"] == "generate"
    assert lines[1]["controls"] == [
        {"type": "canny", "controlnet": "controlnet-canny", "strength": 1.5, "start": 0.2, "end": 0.9},
        {"type": "canny", "controlnet": "controlnet-canny", "strength": 1.0, "start": 0.0, "end": 1.0}]
    r = run_cli(*common, "--out", tmp_path / "p.png", env=env)
    assert r.returncode == 0 and "controls" not in json.loads(r.stdout)


def test_request_from_files_places_a_grown_canvas_control_for_expand(tmp_path):
    """For expand a control may be the grown canvas's size (it then covers the new border: its origin is the
    grown canvas's corner on the old canvas); the image's size keeps origin (0, 0); any other size is refused
    naming the field; ``to_aspect`` is the growth the sizes are checked against."""
    from core.contract.jobs import Options, Params, default_options
    from core.jobfiles import request_from_files

    rng = np.random.default_rng(5)
    for name, (w, h) in (("in", (40, 30)), ("old", (40, 30)), ("grown", (40 + 8 + 12, 30)), ("odd", (44, 30)),
                         ("wide", (54, 30))):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    opts = Options(**{**default_options("expand").__dict__, "expand_left": 8, "expand_top": 0, "expand_right": 12,
                      "expand_bottom": 0})
    spec = [("canny", tmp_path / "grown.png", 1.0, 0.0, 1.0), ("canny", tmp_path / "old.png", 1.0, 0.0, 1.0)]
    req = request_from_files("expand", Params(prompt="x"), opts, image=tmp_path / "in.png", controls=spec).request
    assert [c.origin for c in req.controls] == [(-8, 0), (0, 0)]
    with pytest.raises(ValidationError) as e:
        request_from_files("expand", Params(prompt="x"), opts, image=tmp_path / "in.png",
                           controls=[("canny", tmp_path / "odd.png", 1.0, 0.0, 1.0)])
    assert e.value.parameter == "controls[0].image" and "60x30" in str(e.value)
    # 40x30 to 16:9: 54 px wide, 14 more: 7 left and 7 right
    plain = Options(**{**default_options("expand").__dict__, "expand_left": 0, "expand_top": 0, "expand_right": 0,
                       "expand_bottom": 0})
    req = request_from_files("expand", Params(prompt="x"), plain, image=tmp_path / "in.png", to_aspect=(16, 9),
                             controls=[("canny", tmp_path / "wide.png", 1.0, 0.0, 1.0)]).request
    assert (req.options.expand_left, req.options.expand_right) == (7, 7) and req.controls[0].origin == (-7, 0)
    with pytest.raises(ValidationError, match="exclude each other"):
        request_from_files("expand", Params(prompt="x"), opts, image=tmp_path / "in.png", to_aspect=(16, 9))


def test_cli_expand_with_a_control_of_the_grown_canvas(tiny_root, controlnets, tmp_path):
    """A control the grown canvas's size steers the new border too: no "no pixels over the new border"
    warning (there is one for the image-sized control), a different border, the original pixels kept."""
    env = {"DD_MODELS_DIR": str(tiny_root)}
    rng = np.random.default_rng(3)
    inp, old, grown = tmp_path / "in.png", tmp_path / "old.png", tmp_path / "grown.png"
    Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).save(inp)
    lines = (preprocess.canny(rng.random((128, 160, 3), dtype=np.float32)) * 255).astype(np.uint8)
    Image.fromarray(lines[:, :128]).save(old)
    Image.fromarray(lines).save(grown)
    common = ["expand", "--model", tiny_root / "sd2-inpainting", "--right", 32, "--image", inp, "--prompt", "x",
              "--steps", 2, "--seed", 1]
    a = run_cli(*common, "--control", f"canny:{old}:1.5", "--out", tmp_path / "a.png", env=env)
    b = run_cli(*common, "--control", f"canny:{grown}:1.5", "--out", tmp_path / "b.png", env=env)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert "new border" in a.stderr and "new border" not in b.stderr
    pa, pb = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("a.png", "b.png"))
    src = np.asarray(Image.open(inp).convert("RGB"))
    assert pa.shape == pb.shape == (128, 160, 3)
    assert np.array_equal(pa[:, :128], src) and np.array_equal(pb[:, :128], src)
    assert not np.array_equal(pa[:, 128:], pb[:, 128:])
