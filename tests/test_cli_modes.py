"""``python -m core restyle|depth|upscale|generate``: files in, files out, clear errors.

In process (``core.cli.main``); tests/test_cli.py runs the real subprocess for the shared conventions."""

import cv2
import numpy as np
import pytest
from PIL import Image

from core.cli import main

from .helpers import write_image_and_mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_image_and_mask(tmp_path_factory.mktemp("cli-modes"), 45, 61, 1, (20, 10, 45, 30))


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_depth_then_restyle_with_that_depth_round_trip(tiny_root, files, capsys):
    d, img, mask = files
    code, out, err = cli(capsys, "depth", "--model", tiny_root / "sd2-depth", "--image", d / "in.png",
                         "--out", d / "depth.png")
    assert code == 0, err
    assert out.split() == [str(d / "depth.png")] and f"sd2-depth: {d / 'depth.png'}" in err
    with Image.open(d / "depth.png") as im:
        assert im.mode.startswith("I;16") and im.size == (61, 45)
        depth = np.asarray(im)
    assert depth.min() == 0 and depth.max() == 65535 and len(np.unique(depth)) > 256
    code, out, err = cli(capsys, "restyle", "--model", tiny_root / "sd2-depth", "--image", d / "in.png", "--mask",
                         d / "mask.png", "--depth", d / "depth.png", "--prompt", "marble", "--out", d / "re.png",
                         "--steps", 2, "--seed", 3)
    assert code == 0, err
    assert out.split() == [str(d / "re.png")] and "seed 3" in err
    out = np.asarray(Image.open(d / "re.png"))
    assert out.shape == img.shape
    assert np.array_equal(out[mask == 0], img[mask == 0]) and not np.array_equal(out[mask > 0], img[mask > 0])


def test_upscale_writes_4x_and_keeps_the_plain_resize_outside_the_selection(tiny_root, files, capsys):
    d, img, mask = files
    code, out, err = cli(capsys, "upscale", "--model", tiny_root / "sd2-x4-upscaler", "--image", d / "in.png",
                         "--mask", d / "mask.png", "--prompt", "crisp", "--out", d / "up.png", "--steps", 1,
                         "--tile", 64, "--noise-level", 40, "--quiet")
    assert code == 0, err
    assert out.split() == [str(d / "up.png")]
    up = np.asarray(Image.open(d / "up.png"))
    assert up.shape == (180, 244, 3)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    plain = cv2.resize(rgba, (244, 180), interpolation=cv2.INTER_LANCZOS4)[..., :3]
    outside = np.repeat(np.repeat(mask, 4, 0), 4, 1) == 0
    assert np.array_equal(up[outside], plain[outside]) and not np.array_equal(up[~outside], plain[~outside])


def test_generate_text_and_image_to_image(tiny_root, files, capsys):
    d, img, _ = files
    model = tiny_root / "sd2-1-base"
    code, out, err = cli(capsys, "generate", "--model", model, "--prompt", "a lighthouse", "--width", 96,
                         "--height", 64, "--steps", 1, "--num-images", 2, "--seed", 7, "--out", d / "gen.png", "--quiet")
    assert code == 0, err
    assert out.split() == [str(d / "gen.png"), str(d / "gen_2.png")]
    assert Image.open(d / "gen.png").size == (96, 64) and Image.open(d / "gen.png").mode == "RGB"
    code, out, err = cli(capsys, "generate", "--model", model, "--prompt", "a lighthouse", "--image", d / "in.png",
                         "--strength", 0.5, "--steps", 2, "--out", d / "i2i.png", "--quiet")
    assert code == 0, err
    assert Image.open(d / "i2i.png").size == (61, 45)


def test_expand_writes_the_grown_canvas_with_the_input_at_its_new_place(tiny_root, files, capsys):
    """The input is 61×45; the output holds it bit for bit at (left, top), the new border painted."""
    d, img, _ = files
    model = tiny_root / "sd2-inpainting"
    code, out, err = cli(capsys, "expand", "--model", model, "--image", d / "in.png", "--right", 40, "--top", 8,
                         "--prompt", "more meadow", "--steps", 1, "--seed", 5, "--out", d / "wide.png", "--quiet")
    assert code == 0, err
    assert out.split() == [str(d / "wide.png")] and "seed 5" in err
    wide = np.asarray(Image.open(d / "wide.png"))
    assert wide.shape == (53, 101, 3) and np.array_equal(wide[8:, :61], img)
    assert wide[:8].std() > 0 and wide[8:, 61:].std() > 0
    # --to-aspect 16:9: 45 px high wants 80 px wide: 19 more, 9 on the left and 10 on the right.
    code, out, err = cli(capsys, "expand", "--model", model, "--image", d / "in.png", "--to-aspect", "16:9",
                         "--prompt", "more meadow", "--steps", 1, "--seed", 5, "--out", d / "169.png", "--quiet")
    assert code == 0, err
    wide = np.asarray(Image.open(d / "169.png"))
    assert wide.shape == (45, 80, 3) and np.array_equal(wide[:, 9:70], img)


@pytest.mark.parametrize("args,needle", [
    (["expand", "--image", "{d}/in.png"], "expand needs at least one of expand_left"),
    (["expand", "--image", "{d}/in.png", "--left", "9000"], "expand_left must be in 0–8192 px"),
    (["expand", "--image", "{d}/in.png", "--to-aspect", "16x9"], "expected W:H with two whole numbers"),
    (["expand", "--image", "{d}/in.png", "--to-aspect", "0:1"], "expected W:H with two whole numbers"),
    (["expand", "--image", "{d}/in.png", "--to-aspect", "61:45"], "already has that aspect ratio"),
    (["expand", "--image", "{d}/in.png", "--to-aspect", "2:1", "--left", "4"], "exclude each other"),
    (["expand", "--image", "{d}/in.png", "--to-aspect", "2:1", "--left", "0"], "exclude each other"),
    (["upscale", "--noise-level", "351"], "noise_level must be in 0–350"),
    (["upscale", "--noise-level", "-1"], "noise_level must be in 0–350"),
    (["upscale", "--tile", "32"], "tile must be in 64–512"),
    (["generate", "--width", "100", "--height", "64"], "width must be a multiple of 8"),
    (["generate", "--width", "8192", "--height", "8200"], "height must be in 64–8192"),
    (["generate", "--width", "64"], "generate needs width and height"),
    (["generate", "--image", "{d}/in.png", "--strength", "1.5"], "strength must be in 0–1"),
    (["generate", "--image", "{d}/in.png", "--width", "64"], "--width 64 differs from the image's width 61"),
    (["restyle", "--image", "{d}/in.png", "--strength", "-0.1"], "strength must be in 0–1"),
    (["restyle", "--image", "{d}/in.png", "--depth", "{d}/small.png"], "depth must be the size of the image"),
    (["depth", "--image", "{d}/missing.png"], "image file not found"),
])
def test_bad_input_exits_2_with_one_line(files, capsys, args, needle):
    d, _, _ = files
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(d / "small.png")
    args = [a.format(d=d) for a in args]
    if args[0] in ("upscale", "restyle") and "--image" not in args:
        args += ["--image", str(d / "in.png")]
    extra = [] if args[0] == "depth" else ["--prompt", "x"]
    code, out, err = cli(capsys, *args, *extra, "--out", d / "bad.png")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
    assert not (d / "bad.png").exists()
