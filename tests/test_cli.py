"""``python -m core`` round trips, in a real subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT
from .helpers import write_image_and_mask


def run_cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_image_and_mask(tmp_path_factory.mktemp("cli"), 72, 100, 0, (30, 20, 70, 50))


def test_inpaint_round_trip(tiny_root, files):
    d, img, mask = files
    out = d / "out.png"
    r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", d / "in.png", "--mask", d / "mask.png",
                "--prompt", "a red scarf", "--out", out, "--steps", 3, "--seed", 42, "--num-images", 2,
                "--grow", 4, "--feather", 2)
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert paths == [str(out), str(d / "out_2.png")]
    a = np.asarray(Image.open(out))
    assert a.shape == img.shape  # same size, RGB in → RGB out
    outside = mask == 0
    assert np.array_equal(a[outside], img[outside])
    assert not np.array_equal(a[~outside], img[~outside])
    b = np.asarray(Image.open(d / "out_2.png"))
    assert not np.array_equal(a, b)
    assert "seed 42" in r.stderr and "seed 43" in r.stderr


def test_same_seed_reproduces(tiny_root, files):
    d, _, _ = files
    outs = []
    for name in ("r1.png", "r2.png"):
        r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", d / "in.png", "--mask",
                    d / "mask.png", "--prompt", "x", "--out", d / name, "--steps", 2, "--seed", 9, "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append(np.asarray(Image.open(d / name)))
    assert np.array_equal(*outs)


@pytest.mark.parametrize("args,needle", [
    (["--steps", "0"], "steps must be in 1–512"),
    (["--guidance", "30"], "guidance must be in 1–20"),
    (["--num-images", "9"], "num_images must be in 1–4"),
    (["--strength", "1.5"], "strength must be in 0–1"),
    (["--seed", "-3"], "seed must be in"),
    (["--grow", "-1"], "grow must be in"),
])
def test_bad_input_exits_non_zero_with_one_line(tiny_root, files, args, needle):
    d, _, _ = files
    r = run_cli("inpaint", "--model", tiny_root / "sd2-inpainting", "--image", d / "in.png", "--mask",
                d / "mask.png", "--prompt", "x", "--out", d / "bad.png", *args)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("error:")
    assert r.stdout == ""
    assert not (d / "bad.png").exists()


def test_missing_files_and_models(files, tmp_path):
    d, _, _ = files
    r = run_cli("inpaint", "--image", d / "nope.png", "--prompt", "x", "--out", d / "o.png")
    assert r.returncode == 2 and "not found" in r.stderr
    r = run_cli("inpaint", "--image", d / "in.png", "--prompt", "x", "--out", d / "o.png",
                env={"DD_MODELS_DIR": str(tmp_path), "HF_HOME": str(tmp_path)})
    assert r.returncode == 3 and "python -m installer models download sd2-inpainting" in r.stderr
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    r = run_cli("inpaint", "--model", ckpt, "--image", d / "in.png", "--prompt", "x", "--out", d / "o.png")
    assert r.returncode == 3 and "pickle" in r.stderr
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    r = run_cli("inpaint", "--image", d / "in.png", "--mask", small, "--prompt", "x", "--out", d / "o.png")
    assert r.returncode == 2 and "mask must be the size of the image" in r.stderr


def test_models_lists_what_the_resolver_finds(tiny_root):
    r = run_cli("models", "--models-dir", tiny_root)
    assert r.returncode == 0
    for key in ("sd2-inpainting", "sd2-depth", "sd2-x4-upscaler", "sd2-1", "sd2-1-base"):
        assert any(line.split()[:2] == ["found", key] for line in r.stdout.splitlines()), r.stdout


def test_demo_runs_with_smoke_models_and_says_so(tmp_path):
    r = run_cli("demo", "--out", tmp_path, "--steps", 2,
                env={"DD_MODELS_DIR": str(tmp_path / "m"), "HF_HOME": str(tmp_path / "hf"),
                     "DD_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert "TINY RANDOM SMOKE-TEST MODELS" in r.stderr and "NOISE" in r.stderr
    out = r.stdout.split()
    assert out and all(os.path.exists(p) for p in out)
    assert Image.open(out[0]).size == Image.open(ROOT / "resources" / "sample.png").size
