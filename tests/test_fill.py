"""The Fill job: patch, OpenCV and LaMa backends, region and compositing, progress and cancel, the CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from core.contract.jobcontrol import Cancelled, JobControl
from core.contract.jobs import JobRequest, default_options
from core.contract.params import ValidationError
from core.lama.weights import TINY, build_tiny
from core.models.manager import ModelManager
from core.models.resolver import ModelNotFound, UnsafeModelFile
from core.pipelines import fill as fill_job
from core.pipelines import regionjob, run_job
from core.raster.pixels import as_array

from .helpers import buffer, rect_mask

H, W = 128, 160


def gradient(fmt="RGBA_U8"):
    """A smooth diagonal gradient in every channel, as the ground truth."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    f = np.stack([xx / (W - 1), yy / (H - 1), 0.25 + 0.5 * (xx + yy) / (W + H), np.ones_like(xx)], -1)
    if fmt == "RGBA_F32":
        return f
    scale, dt = {"RGBA_U8": (255, np.uint8), "RGBA_U16": (65535, np.uint16), "BGRA_U8": (255, np.uint8)}[fmt]
    a = np.rint(f * scale).astype(dt)
    return a[..., [2, 1, 0, 3]] if fmt.startswith("BGRA") else a


def psnr_inside(result, truth, inside, peak):
    err = (result[inside][:, :3].astype(np.float64) - truth[inside][:, :3]) / peak
    return 10 * np.log10(1.0 / np.mean(err ** 2))


def fill_request(img, mask, fmt="RGBA_U8", **opts):
    options = replace(default_options("fill"), **opts)
    return JobRequest("fill", options=options, image=buffer(img, fmt, linear=fmt == "RGBA_F32"),
                      mask=buffer(mask, "GRAY_U8"))


@pytest.fixture
def no_lama(tmp_path):
    """A model manager whose models folder has no LaMa: auto means the patch fill."""
    return ModelManager(models_dir=tmp_path / "empty-models")


@pytest.fixture(scope="module")
def lama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lama-models")
    build_tiny(d / "big-lama" / "big-lama.safetensors", seed=1)
    return d


@pytest.fixture
def with_lama(lama_dir):
    return ModelManager(models_dir=lama_dir)


MASK = rect_mask(H, W, 64, 48, 96, 80)
INSIDE = MASK[..., 0] > 0


@pytest.mark.parametrize("fmt,peak", [("RGBA_U8", 255), ("RGBA_U16", 65535), ("BGRA_U8", 255), ("RGBA_F32", 1)])
def test_auto_without_lama_fills_with_patches_and_leaves_the_rest_alone(no_lama, fmt, peak):
    truth = gradient(fmt)
    src = truth.copy()
    src[INSIDE, :3] = 0                      # the object to remove: a black square
    req = fill_request(src, MASK, fmt, backend="auto")
    res = run_job(req, no_lama)
    assert res.model == "patch" and res.options.backend == "patch"
    assert len(res.patches) == 1 and res.patches[0].seed is None
    out = regionjob.composite(req, res.patches[0])
    assert np.array_equal(out[~INSIDE], src[~INSIDE])          # bit-identical outside the selection
    # Measured with the defaults (grow 4: the fill starts 4 px outside the square): 60.7 dB (8-bit), 66.1
    # (16-bit), 45.8 (float, linear): a gradient has no texture, so this is the edge-continuing smooth
    # fill (Telea: 27.7-27.8 dB); the black square itself is at 6.0 dB.
    assert psnr_inside(src, truth, INSIDE, peak) < 8
    assert psnr_inside(out, truth, INSIDE, peak) > 40
    # and the patch only spans the selection plus context
    p = res.patches[0]
    assert p.x <= 64 and p.y <= 48 and p.x + p.image.width >= 96 and p.y + p.image.height >= 80
    assert p.image.width < W or p.image.height < H


def test_opencv_exact_hole_is_near_perfect_on_a_gradient(no_lama):
    """With grow 0 the fill sees the pixels right at the hole's edge: 31.5 dB measured."""
    truth = gradient()
    src = truth.copy()
    src[INSIDE, :3] = 0
    req = fill_request(src, MASK, grow=0, feather=0, backend="opencv")
    out = regionjob.composite(req, run_job(req, no_lama).patches[0])
    assert psnr_inside(out, truth, INSIDE, 255) > 30
    assert np.array_equal(out[~INSIDE], src[~INSIDE])


def test_soft_selection_and_feather_keep_alpha_zero_outside(no_lama):
    truth = gradient()
    soft = MASK.copy()
    soft[48:80, 64:70] = 90
    req = fill_request(truth, soft, feather=6, grow=2)
    res = run_job(req, no_lama)
    p = as_array(res.patches[0].image)
    px, py = res.patches[0].x, res.patches[0].y
    sel = soft[py: py + p.shape[0], px: px + p.shape[1], 0]
    assert (p[sel == 0] == 0).all()                     # fully transparent, all channels zero
    assert (p[sel > 0, 3] > 0).all()
    assert p[..., 3].max() == 255 and 0 < p[sel == 90, 3].max() <= 90
    out = regionjob.composite(req, res.patches[0])
    assert np.array_equal(out[soft[..., 0] == 0], truth[soft[..., 0] == 0])


@pytest.mark.parametrize("backend", ["patch", "opencv"])
def test_transparent_surroundings_do_not_bleed_grey(no_lama, backend):
    """Transparent pixels have no colour to copy: the fill takes its colours from the opaque ones."""
    img = np.zeros((H, W, 4), np.uint8)
    img[..., :3] = (200, 40, 40)
    img[..., 3] = 255
    img[:, :40, :3] = 0
    img[:, :40, 3] = 0                        # transparent band on the left, near the selection
    mask = rect_mask(H, W, 44, 40, 90, 90)
    req = fill_request(img, mask, backend=backend)
    out = regionjob.composite(req, run_job(req, no_lama).patches[0])
    inside = mask[..., 0] > 0
    assert np.abs(out[inside][:, :3].astype(int) - (200, 40, 40)).max() <= 2
    assert (out[inside][:, 3] == 255).all()


def test_empty_selection_is_refused(no_lama):
    with pytest.raises(ValidationError) as e:
        run_job(fill_request(gradient(), np.zeros((H, W, 1), np.uint8)), no_lama)
    assert e.value.parameter == "mask" and "empty" in str(e.value)


def test_fill_needs_a_mask(no_lama):
    with pytest.raises(ValidationError) as e:
        run_job(JobRequest("fill", image=buffer(gradient())), no_lama)
    assert e.value.parameter == "mask"


def test_auto_takes_lama_when_installed_and_composites(with_lama):
    truth = gradient()
    src = truth.copy()
    src[INSIDE, :3] = 0
    steps = []
    req = fill_request(src, MASK, backend="auto")
    res = run_job(req, with_lama, JobControl(lambda s, t, ph: steps.append((s, t, ph))))
    assert res.options.backend == "lama" and res.model == "lama:big-lama.safetensors"
    assert res.timings["model_size"] == [res.patches[0].image.width, res.patches[0].image.height]  # full res
    out = regionjob.composite(req, res.patches[0])
    assert np.array_equal(out[~INSIDE], src[~INSIDE])
    assert not np.array_equal(out[INSIDE], src[INSIDE])   # random weights: filled with *something*
    layer_steps = [(s, t) for s, t, ph in steps if ph == "denoising" and s > 0]
    n = 18 + TINY.n_blocks  # top-level layers of the generator: pads, convs, blocks, upsampling (36 in big-lama)
    assert layer_steps == [(i, n) for i in range(1, n + 1)]
    assert "loading" in [ph for _, _, ph in steps]
    # the weights stay loaded for the next job
    loads = with_lama.loads
    run_job(req, with_lama)
    assert with_lama.loads == loads


def test_explicit_model_and_backend_choice(lama_dir, no_lama, tmp_path):
    weights = lama_dir / "big-lama" / "big-lama.safetensors"
    src = gradient()
    res = run_job(JobRequest("fill", model=str(weights), image=buffer(src), mask=buffer(MASK, "GRAY_U8")), no_lama)
    assert res.options.backend == "lama"
    res = run_job(fill_request(src, MASK, backend="opencv"), ModelManager(models_dir=lama_dir))
    assert res.options.backend == "opencv" and res.model == "opencv-telea" and not res.warnings
    res = run_job(fill_request(src, MASK, backend="patch"), ModelManager(models_dir=lama_dir))
    assert res.options.backend == "patch" and res.model == "patch" and not res.warnings
    res = run_job(replace(fill_request(src, MASK, backend="opencv"), model=str(weights)), no_lama)
    assert res.options.backend == "opencv" and "not used" in res.warnings[0]
    with pytest.raises(ModelNotFound) as e:
        run_job(fill_request(src, MASK, backend="lama"), no_lama)
    assert "installer models import big-lama.pt" in str(e.value)
    pickle = tmp_path / "big-lama.pt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(UnsafeModelFile):
        run_job(JobRequest("fill", model=str(pickle), image=buffer(src), mask=buffer(MASK, "GRAY_U8")), no_lama)


def test_auto_mentions_an_unconverted_checkpoint(tmp_path):
    (tmp_path / "big-lama").mkdir()
    (tmp_path / "big-lama" / "best.ckpt").write_bytes(b"x")
    res = run_job(fill_request(gradient(), MASK), ModelManager(models_dir=tmp_path))
    assert res.options.backend == "patch"
    assert any("best.ckpt" in w and "pickle" in w for w in res.warnings)


def test_large_regions_are_filled_downscaled(no_lama, monkeypatch):
    monkeypatch.setattr(fill_job, "NO_WEIGHTS_MAX_PIXELS", 64 * 64)
    truth = gradient()
    src = truth.copy()
    src[INSIDE, :3] = 0
    req = fill_request(src, MASK, grow=0)
    res = run_job(req, no_lama)
    w, h = res.timings["model_size"]
    assert w * h <= 64 * 64 and any("scaled back" in x for x in res.warnings)
    p = res.patches[0]
    out = regionjob.composite(req, p)
    assert (p.image.width, p.image.height) == tuple(res.timings["region"][2:])
    assert np.array_equal(out[~INSIDE], src[~INSIDE])
    assert psnr_inside(out, truth, INSIDE, 255) > 29  # measured 31.2 dB at 64x64 for a 96x96 region


def test_work_size():
    assert fill_job.work_size(300, 200, 10**6) == (300, 200)
    w, h = fill_job.work_size(4000, 2000, 1000 * 1000)
    assert w * h <= 10**6 and abs(w / h - 2) < 0.01


def test_cancel_stops_lama_within_a_layer(with_lama):
    control = JobControl()
    seen = []

    def on_progress(step, total, phase):
        seen.append(step)
        if phase == "denoising" and step == 5:
            control.cancel()

    control._on_progress = on_progress
    with pytest.raises(Cancelled):
        run_job(fill_request(gradient(), MASK, backend="lama"), with_lama, control)
    assert max(seen) <= 6


def test_cli_fill_round_trip(tmp_path, lama_dir):
    from .test_cli import run_cli

    truth = gradient()[..., :3]
    src = truth.copy()
    src[INSIDE] = 0
    Image.fromarray(src, "RGB").save(tmp_path / "in.png")
    Image.fromarray(MASK[..., 0], "L").save(tmp_path / "mask.png")
    env = {"DD_MODELS_DIR": str(tmp_path / "no-models")}
    r = run_cli("fill", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "--out",
                tmp_path / "out.png", "--backend", "opencv", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "out.png")]
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == src.shape
    assert np.array_equal(out[~INSIDE], src[~INSIDE])
    assert psnr_inside(out, truth, INSIDE, 255) > 26
    r = run_cli("fill", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "--out",
                tmp_path / "lama.png", "--model", lama_dir / "big-lama" / "big-lama.safetensors", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    assert "lama:big-lama.safetensors" in r.stderr
    out = np.asarray(Image.open(tmp_path / "lama.png"))
    assert np.array_equal(out[~INSIDE], src[~INSIDE]) and not np.array_equal(out[INSIDE], src[INSIDE])


def test_opencv_reports_each_channel_and_cancels_between_them(no_lama):
    seen = []
    control = JobControl(lambda s, t, ph: seen.append((s, t, ph)))
    run_job(fill_request(gradient(), MASK, backend="opencv"), no_lama, control)
    assert [(s, t) for s, t, ph in seen if ph == "denoising" and s > 0] == [(1, 3), (2, 3), (3, 3)]
    control = JobControl()
    control._on_progress = lambda s, t, ph: control.cancel() if (ph, s) == ("denoising", 1) else None
    with pytest.raises(Cancelled):
        run_job(fill_request(gradient(), MASK, backend="opencv"), no_lama, control)


def test_patch_fill_reports_progress_and_cancels_within_the_synthesis(no_lama):
    """On a texture the patch fill copies patches (a gradient takes the smooth fill in one step)."""
    yy, xx = np.mgrid[0:H, 0:W]
    stripes = np.full((H, W, 4), 255, np.uint8)
    stripes[..., 0] = np.where((xx + yy) % 12 < 6, 200, 60)
    seen = []
    control = JobControl(lambda s, t, ph: seen.append((s, t, ph)))
    run_job(fill_request(stripes, MASK), no_lama, control)
    steps = [(s, t) for s, t, ph in seen if ph == "denoising" and s > 0]
    n = steps[-1][1]
    assert n > 5 and steps == [(i, n) for i in range(1, n + 1)]
    control = JobControl()
    control._on_progress = lambda s, t, ph: control.cancel() if (ph, s) == ("denoising", 3) else None
    with pytest.raises(Cancelled):
        run_job(fill_request(stripes, MASK), no_lama, control)
    seen = []
    run_job(fill_request(gradient(), MASK), no_lama, JobControl(lambda s, t, ph: seen.append((s, t, ph))))
    assert [(s, t) for s, t, ph in seen if ph == "denoising" and s > 0] == [(1, 1)]


def test_fastfill_functions_keep_known_pixels():
    from core.raster import fastfill

    rng = np.random.default_rng(0)
    rgb = rng.random((40, 50, 3), dtype=np.float32)
    hole = np.zeros((40, 50), bool)
    hole[10:20, 15:30] = True
    for out in (fastfill.fill_opencv(rgb, hole, "telea"), fastfill.fill_opencv(rgb, hole, "ns"),
                fastfill.fill_mean(rgb, hole), fastfill.fill_textured(rgb, hole)):
        assert out.dtype == np.float32 and np.array_equal(out[~hole], rgb[~hole])
        assert 0 <= out.min() and out.max() <= 1
    assert np.allclose(fastfill.fill_mean(rgb, hole)[hole], rgb[~hole].mean(axis=0), atol=1e-6)
    assert np.allclose(fastfill.fill_opencv(rgb, np.ones((40, 50), bool)), 0.5)   # nothing known: grey
    assert np.allclose(fastfill.fill_textured(rgb, np.ones((40, 50), bool)), 0.5)
    with pytest.raises(ValueError, match="telea, ns"):
        fastfill.fill_opencv(rgb, hole, "magic")
    # a constant surrounding gives back exactly that constant: no 8-bit rounding artefacts (Telea's +0.5)
    flat = np.full((40, 50, 3), 0.3, np.float32)
    assert np.abs(fastfill.fill_opencv(flat, hole, "telea")[hole] - 0.3).max() < 1e-4
