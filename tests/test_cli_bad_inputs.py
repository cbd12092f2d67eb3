"""Bad inputs through the command line, from one table (issue 16): damaged, empty and huge-header
images, odd colour modes, masks of another size, NaN / inf / huge numbers, long and non-UTF-8 text,
folders for files, unwritable outputs, output equal to input.

Every row runs ``core.cli.main`` in this process.  A refused row ends with exit 2 (bad input) or 3 (model),
one line on stderr that starts with ``error:``, nothing on stdout, no file at the output path and no
temporary file beside it, and its inputs untouched.  An accepted row (an odd but valid image: CMYK,
palette, LA, 16-bit, 1×1) ends with exit 0 and a readable image.  A few rows run again in a real
process, with real non-UTF-8 bytes on the command line, to show that no traceback escapes; and a real
64 KB tmpfs fills up under an output (skipped where mounting is not permitted).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import cli

from .conftest import ROOT
from .helpers import disk_full_after, leftovers

W, H = 40, 32


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(w: int, h: int, depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB, nor a header that lies)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def bomb_png(side: int = 30000) -> bytes:
    """A 30000×30000 RGB PNG header over a few bytes of data: decoding it would need 2.7 GB."""
    return png_bytes(side, side, 8, 2, b"\0" * 64)


def bomb_bmp(side: int = 30000) -> bytes:
    header = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return struct.pack("<2sIHHI", b"BM", 14 + 40 + 64, 0, 0, 14 + 40) + header + b"\0" * 64


def rgb16_png(w: int, h: int) -> bytes:
    a = (np.arange(w * h * 3, dtype=np.uint32) * 997 % 65536).astype(">u2").reshape(h, w * 3)
    rows = b"".join(b"\0" + row.tobytes() for row in a)
    return png_bytes(w, h, 16, 2, rows)


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Every input file of the table."""
    d = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(d / "in.png")
    Image.fromarray(rgb, "RGB").save(d / "in.jpg", quality=90)
    mask = np.zeros((H, W), np.uint8)
    mask[8:24, 10:30] = 255
    Image.fromarray(mask, "L").save(d / "mask.png")
    Image.fromarray(mask[:20, :20], "L").save(d / "small_mask.png")
    Image.fromarray(np.full((H, W), 128, np.uint8), "L").save(d / "depth8.png")
    Image.fromarray(np.zeros((H // 2, W), np.uint8), "L").save(d / "small_depth.png")
    Image.fromarray((np.arange(W * H).reshape(H, W) * 50).astype(np.uint16)).save(d / "depth16.png")
    Image.fromarray(rgb, "RGB").convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rgb, "RGB").convert("CMYK").save(d / "cmyk.tif")
    Image.fromarray(rgb, "RGB").convert("P").save(d / "palette.png")
    p = Image.fromarray(rgb, "RGB").convert("P")
    p.info["transparency"] = 0
    p.save(d / "palette_t.png", transparency=0)
    la = np.stack([rgb[..., 0], np.full((H, W), 200, np.uint8)], axis=-1)
    Image.fromarray(la, "LA").save(d / "la.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(d / "gray16.png")
    (d / "rgb16.png").write_bytes(rgb16_png(W, H))
    Image.fromarray(mask.astype(np.uint16) * 257).save(d / "mask16.png")
    Image.fromarray(rgb, "RGB").convert("L").save(d / "gray.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "one.png")
    Image.new("L", (1, 1), 255).save(d / "one_mask.png")
    full = (d / "in.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    jpg = (d / "in.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "corrupt.png").write_bytes(full[:60] + bytes(rng.integers(0, 256, 400, dtype=np.uint8)))
    (d / "garbage.png").write_bytes(b"this is not an image at all\n" * 20)
    (d / "zero.png").write_bytes(b"")
    (d / "bomb.png").write_bytes(bomb_png())
    (d / "bomb.bmp").write_bytes(bomb_bmp())
    (d / "wide.png").write_bytes(png_bytes(16385, 1, 8, 0, b"\0" * (16386)))
    (d / "folder.png").mkdir()
    (d / "a_file").write_text("x")
    (d / "not_a_model").mkdir()
    (d / "model.ckpt").write_bytes(b"\x80\x04pickle")
    (d / "out").mkdir()
    return d


INPAINT = ["inpaint", "--model", "{tiny}/sd2-inpainting", "--prompt", "a cat", "--steps", "2", "--seed", "1"]
FILL = ["fill", "--backend", "opencv"]
RESTYLE = ["restyle", "--model", "{tiny}/sd2-depth", "--prompt", "x", "--steps", "2", "--seed", "1"]
UPSCALE = ["upscale", "--model", "{tiny}/sd2-x4-upscaler", "--steps", "2", "--seed", "1"]
GENERATE = ["generate", "--model", "{tiny}/sd2-1-base", "--prompt", "x", "--steps", "2", "--seed", "1"]
DEPTH = ["depth", "--model", "{tiny}/sd2-depth"]
IMG = ["--image", "{d}/in.png"]
BAD_UTF8 = "a \udcff\udcfe cat"          # the bytes ff fe as Python keeps them from a non-UTF-8 argv
PROMPT_100K = "word " * 20_480         # 100 kB

# id: (arguments, expected exit code, what the one line says; for exit 0: the output's size)
ROWS = {
    # damaged, empty and truncated images
    "corrupt png": (INPAINT + ["--image", "{d}/corrupt.png"], 2, "image file {d}/corrupt.png is damaged"),
    "garbage bytes": (INPAINT + ["--image", "{d}/garbage.png"], 2, "is not an image Pillow can read"),
    "truncated png": (INPAINT + ["--image", "{d}/truncated.png"], 2, "is damaged or truncated"),
    "truncated jpeg": (INPAINT + ["--image", "{d}/truncated.jpg"], 2, "is damaged or truncated"),
    "zero-byte image": (INPAINT + ["--image", "{d}/zero.png"], 2, "image file {d}/zero.png is empty (0 bytes)"),
    "zero-byte mask": (FILL + IMG + ["--mask", "{d}/zero.png"], 2, "mask file {d}/zero.png is empty"),
    "corrupt mask": (FILL + IMG + ["--mask", "{d}/corrupt.png"], 2, "mask file {d}/corrupt.png is damaged"),
    "truncated depth": (RESTYLE + IMG + ["--depth", "{d}/truncated.png"], 2, "depth file {d}/truncated.png is damaged"),
    # sizes
    "1x1 image (inpaint)": (INPAINT + ["--image", "{d}/one.png"], 0, (1, 1)),
    "1x1 image and mask (fill)": (FILL + ["--image", "{d}/one.png", "--mask", "{d}/one_mask.png"], 0, (1, 1)),
    "1x1 image (upscale)": (UPSCALE + ["--image", "{d}/one.png"], 0, (4, 4)),
    "30000x30000 png header": (INPAINT + ["--image", "{d}/bomb.png"], 2,
                               "image file {d}/bomb.png declares 30000x30000 px; images may be at most 16384 px "
                               "a side (refused before decoding)"),
    "30000x30000 bmp header": (FILL + ["--image", "{d}/bomb.bmp", "--mask", "{d}/mask.png"], 2,
                               "declares 30000x30000 px"),
    "30000x30000 mask": (FILL + IMG + ["--mask", "{d}/bomb.png"], 2, "mask file {d}/bomb.png declares 30000x30000"),
    "30000x30000 depth": (RESTYLE + IMG + ["--depth", "{d}/bomb.png"], 2, "depth file {d}/bomb.png declares"),
    "16385 px wide": (FILL + ["--image", "{d}/wide.png", "--mask", "{d}/mask.png"], 2, "declares 16385x1 px"),
    "mask of another size": (FILL + IMG + ["--mask", "{d}/small_mask.png"], 2,
                             f"mask must be the size of the image ({W}x{H}), got 20x20"),
    "inpaint mask of another size": (INPAINT + IMG + ["--mask", "{d}/small_mask.png"], 2, "mask must be the size"),
    "depth of another size": (RESTYLE + IMG + ["--depth", "{d}/small_depth.png"], 2,
                              f"depth must be the size of the image ({W}x{H}), got {W}x{H // 2}"),
    "generate size not of the image": (GENERATE + IMG + ["--width", "64"], 2, "--width 64 differs from the image's"),
    # colour modes: converted and accepted
    "CMYK jpeg": (INPAINT + ["--image", "{d}/cmyk.jpg"], 0, (W, H)),
    "CMYK tiff": (FILL + ["--image", "{d}/cmyk.tif", "--mask", "{d}/mask.png"], 0, (W, H)),
    "palette png": (FILL + ["--image", "{d}/palette.png", "--mask", "{d}/mask.png"], 0, (W, H)),
    "palette png with transparency": (INPAINT + ["--image", "{d}/palette_t.png"], 0, (W, H)),
    "LA png": (FILL + ["--image", "{d}/la.png", "--mask", "{d}/mask.png"], 0, (W, H)),
    "16-bit grey png": (INPAINT + ["--image", "{d}/gray16.png", "--mask", "{d}/mask.png"], 0, (W, H)),
    "16-bit RGB png": (FILL + ["--image", "{d}/rgb16.png", "--mask", "{d}/mask.png"], 0, (W, H)),
    "16-bit mask": (FILL + IMG + ["--mask", "{d}/mask16.png"], 0, (W, H)),
    "16-bit depth map": (RESTYLE + IMG + ["--depth", "{d}/depth16.png"], 0, (W, H)),
    "palette mask": (FILL + IMG + ["--mask", "{d}/palette.png"], 0, (W, H)),
    # numbers
    "guidance NaN": (INPAINT + IMG + ["--guidance", "nan"], 2, "guidance must be a number in 1–20, got nan"),
    "guidance inf": (INPAINT + IMG + ["--guidance", "inf"], 2, "guidance must be in 1–20, got inf"),
    "guidance 1e308": (INPAINT + IMG + ["--guidance", "1e308"], 2, "guidance must be in 1–20, got 1e+308"),
    "strength -inf": (INPAINT + IMG + ["--strength=-inf"], 2, "strength must be in 0–1, got -inf"),
    "strength NaN": (GENERATE + IMG + ["--strength", "NaN"], 2, "strength must be a number in 0–1, got nan"),
    "steps 1e999": (INPAINT + IMG + ["--steps", "1e999"], 2, "argument --steps: expected a whole number, got '1e999'"),
    "steps huge": (INPAINT + IMG + ["--steps", "9" * 30], 2, "steps must be in 1–512, got 999999"),
    "steps of 5000 digits": (INPAINT + IMG + ["--steps", "7" * 5000], 2, "expected a whole number, got '777"),
    "steps NaN": (INPAINT + IMG + ["--steps", "nan"], 2, "argument --steps: expected a whole number, got 'nan'"),
    "seed 2**64": (INPAINT + IMG + ["--seed", str(2**64)], 2, "seed must be in 0–4294967295, got 18446744073709551616"),
    "seed negative": (INPAINT + IMG + ["--seed", "-1"], 2, "seed must be in 0–4294967295, got -1"),
    "width huge": (GENERATE + ["--width", "99999992", "--height", "64"], 2, "width must be in 64–8192 px"),
    "width inf": (GENERATE + ["--width", "inf", "--height", "64"], 2, "argument --width: expected a whole number"),
    "num-images 10**9": (INPAINT + IMG + ["--num-images", "1000000000"], 2, "num_images must be in 1–4"),
    "noise level NaN": (UPSCALE + IMG + ["--noise-level", "nan"], 2, "argument --noise-level: expected a whole number"),
    "grow empty": (FILL + IMG + ["--mask", "{d}/mask.png", "--grow", ""], 2, "argument --grow: expected a whole number"),
    "tile huge": (UPSCALE + IMG + ["--tile", "100000"], 2, "tile must be in 64–512 px"),
    # text
    "100 kB prompt": (INPAINT[:4] + [PROMPT_100K] + INPAINT[5:] + IMG, 2,
                      "prompt must be at most 20000 characters, got 102400"),
    "non-UTF-8 prompt": (INPAINT[:4] + [BAD_UTF8] + INPAINT[5:] + IMG, 2,
                         "--prompt is not valid UTF-8 text (an undecodable byte at character 3)"),
    "non-UTF-8 negative prompt": (INPAINT + IMG + ["--negative", BAD_UTF8], 2, "--negative is not valid UTF-8 text"),
    "100 kB negative prompt": (GENERATE + ["--width", "64", "--height", "64", "--negative", PROMPT_100K], 2,
                               "negative_prompt must be at most 20000 characters"),
    # paths
    "image is a folder": (INPAINT + ["--image", "{d}/folder.png"], 2,
                          "image file {d}/folder.png is a folder; expected an image file"),
    "mask is a folder": (FILL + IMG + ["--mask", "{d}/folder.png"], 2, "mask file {d}/folder.png is a folder"),
    "image missing": (INPAINT + ["--image", "{d}/nope.png"], 2, "image file not found: {d}/nope.png"),
    "out is a folder": (INPAINT + IMG + ["--out", "{d}/out"], 2, "cannot write {d}/out: it is a folder"),
    "out under a file": (INPAINT + IMG + ["--out", "{d}/a_file/x.png"], 2,
                         "cannot write {d}/a_file/x.png: {d}/a_file is not a folder"),
    "out in /proc": (INPAINT + IMG + ["--out", "/proc/dd-no-such/x.png"], 2, "cannot write /proc/dd-no-such/x.png: "),
    "out without an image type": (INPAINT + IMG + ["--out", "{d}/out.xyz"], 2,
                                  "--out {d}/out.xyz: cannot tell the image type from .xyz"),
    "out equal to image": (INPAINT + IMG + ["--out", "{d}/in.png"], 2,
                           "--out {d}/in.png is the --image file: choose another output file"),
    "out equal to image, other spelling": (FILL + IMG + ["--mask", "{d}/mask.png", "--out", "{d}/out/../in.png"], 2,
                                           "is the --image file"),
    "out equal to mask": (FILL + IMG + ["--mask", "{d}/mask.png", "--out", "{d}/mask.png"], 2, "is the --mask file"),
    "out equal to depth": (RESTYLE + IMG + ["--depth", "{d}/depth8.png", "--out", "{d}/depth8.png"], 2,
                           "is the --depth file"),
    "second output equal to image": (INPAINT + ["--image", "{d}/x_2.png", "--num-images", "2", "--out", "{d}/x.png"],
                                     2, "--out {d}/x_2.png is the --image file"),
    "depth output equal to image": (DEPTH + IMG + ["--out", "{d}/in.png"], 2, "is the --image file"),
    # models and configs
    "config missing": (INPAINT + IMG + ["--config", "/nonexistent"], 2,
                       "--config /nonexistent: it does not exist; expected a diffusers config folder (with "
                       "model_index.json)"),
    "config is a file": (INPAINT + IMG + ["--config", "{d}/a_file"], 2, "--config {d}/a_file: it is a file"),
    "config without model_index": (INPAINT + IMG + ["--config", "{d}/not_a_model"], 2, "it has no model_index.json"),
    "model missing": (["inpaint", "--model", "{d}/no-model", "--prompt", "x"] + IMG, 3, "{d}/no-model does not exist"),
    "model not a model": (["inpaint", "--model", "{d}/not_a_model", "--prompt", "x"] + IMG, 3,
                          "is not a diffusers model folder"),
    "model is a pickle": (["inpaint", "--model", "{d}/model.ckpt", "--prompt", "x"] + IMG, 3, "pickle"),
}
ROW_IDS = list(ROWS)


def fill_in(args: list[str], d: Path, tiny: Path) -> list[str]:
    return [a.replace("{d}", str(d)).replace("{tiny}", str(tiny)) for a in args]


def snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


def test_the_table_has_every_kind_of_bad_input_the_issue_lists():
    assert len(ROWS) >= 40
    refused = [k for k, (_, code, _) in ROWS.items() if code]
    print(f"\n{len(ROWS)} rows: {len(refused)} refused (exit 2: {sum(ROWS[k][1] == 2 for k in refused)}, "
          f"exit 3: {sum(ROWS[k][1] == 3 for k in refused)}), {len(ROWS) - len(refused)} accepted (exit 0)")


@pytest.mark.parametrize("row", ROW_IDS)
def test_bad_input(row, d, tiny_root, tmp_path, capsys):
    args, code, expected = ROWS[row]
    args = fill_in(args, d, tiny_root)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "result.png")]
    args += ["--quiet"]
    out = Path(args[args.index("--out") + 1])
    before = snapshot(d)
    got = cli.main(args)
    captured = capsys.readouterr()
    assert got == code, captured.err
    assert snapshot(d) == before                                # the inputs are untouched
    assert not leftovers(d) and not leftovers(tmp_path)
    if code == 0:
        assert captured.out.split() == [str(out)]
        with Image.open(out) as im:
            assert im.size == expected
        return
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    needle = expected.replace("{d}", str(d))
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert len(lines[0]) < 400 and "Traceback" not in captured.err and "Errno" not in captured.err
    assert captured.out == ""
    if not (out.resolve().parent == d.resolve() and out.name in before) and not out.is_dir():   # inputs stay
        assert not out.exists() and not out.with_name(f"{out.stem}_2{out.suffix}").exists()


# --- in a real process ---------------------------------------------------------------------------------

def run_cli(args: list, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, cwd=ROOT, env=env,
                          timeout=300, **kw)


@pytest.mark.parametrize("row", ["corrupt png", "30000x30000 png header", "truncated jpeg", "steps 1e999",
                                 "out equal to image", "config missing", "image is a folder"])
def test_a_real_process_prints_one_line_and_no_traceback(row, d, tiny_root, tmp_path):
    args, code, expected = ROWS[row]
    args = fill_in(args, d, tiny_root)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "result.png")]
    r = run_cli(args)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected.replace("{d}", str(d)) in err and r.stdout == b""
    assert not (tmp_path / "result.png").exists()


def test_non_utf8_bytes_on_a_real_command_line(d, tiny_root, tmp_path):
    """The bytes ff fe in the prompt, as a shell in a Latin-1 terminal passes them: a clear line, exit 2."""
    out = tmp_path / "o.png"
    args = [a.encode() for a in fill_in(INPAINT + IMG, d, tiny_root)]
    args[args.index(b"a cat")] = b"a \xff\xfe cat"
    r = subprocess.run([sys.executable, "-m", "core", *args, b"--out", bytes(out)], capture_output=True, cwd=ROOT,
                       timeout=300, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().splitlines() == [
        "error: --prompt is not valid UTF-8 text (an undecodable byte at character 3); expected UTF-8 text "
        "(set a UTF-8 locale, or convert the text)"]
    assert not out.exists()


def test_a_non_utf8_output_name_is_written_and_printed_byte_for_byte(d, tmp_path):
    out = os.fsencode(tmp_path) + b"/r\xe9sultat.png"
    r = run_cli([a.encode() for a in fill_in(FILL + IMG + ["--mask", "{d}/mask.png"], d, tmp_path)]
                + [b"--out", out, b"--quiet"])
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout == out + b"\n" and os.path.exists(out)


# --- a full disk ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,limit", [("inpaint", 0), ("inpaint", 100), ("inpaint-2", 3000), ("depth", 50),
                                        ("upscale", 200), ("fill", 1)])
def test_a_full_disk_leaves_no_output_and_one_line(mode, limit, d, tiny_root, tmp_path, capsys, monkeypatch):
    """Every writer of the command line, on a disk that fills up after ``limit`` bytes: exit 2, one line
    naming the file and the reason, no file at any output path, no temporary file.  With two images the
    first one fits and the second does not: neither is left (all or nothing)."""
    base = {"inpaint": INPAINT + IMG, "inpaint-2": INPAINT + IMG + ["--num-images", "2"], "depth": DEPTH + IMG,
            "upscale": UPSCALE + IMG, "fill": FILL + IMG + ["--mask", "{d}/mask.png"]}[mode]
    out = tmp_path / "o.png"
    budget = disk_full_after(monkeypatch, limit)
    got = cli.main(fill_in(base, d, tiny_root) + ["--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert got == 2 and budget["failures"] == 1, err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: cannot write {tmp_path}/o") and \
        err.rstrip().endswith(": No space left on device"), err
    assert os.listdir(tmp_path) == []


def test_the_demo_on_a_full_disk(tmp_path, capsys, monkeypatch):
    disk_full_after(monkeypatch, 10)
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: cannot write {tmp_path / 'demo' / 'fill.png'}: No space left on device"
    assert os.listdir(tmp_path / "demo") == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 64 KB tmpfs (root may mount one; elsewhere the test is skipped with the reason)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_tmpfs(d, tiny_root, tmp_path, small_tmpfs):
    """The audit's case: a 200 kB image to a 64 KB tmpfs.  Before: a truncated out.png and a traceback."""
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 150_000
    out = small_tmpfs / "out.png"
    r = run_cli(["fill", "--backend", "opencv", "--image", str(big), "--mask", str(_mask_for(big)), "--out", str(out),
                 "--quiet"])
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.splitlines() == [f"error: cannot write {out}: No space left on device"]
    assert r.stdout == b"" and os.listdir(small_tmpfs) == []
    # Nothing at all fits: a read-only remount is refused before the job runs.
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    r = run_cli(["fill", "--backend", "opencv", "--image", str(big), "--mask", str(_mask_for(big)), "--out", str(out)])
    assert r.returncode == 2 and r.stderr.decode().splitlines() == [
        f"error: cannot write {out}: {os.strerror(errno.EROFS)}"]


def _mask_for(image: Path) -> Path:
    path = image.with_name(image.stem + "_mask.png")
    if not path.exists():
        with Image.open(image) as im:
            m = np.zeros((im.height, im.width), np.uint8)
        m[10:40, 10:40] = 255
        Image.fromarray(m, "L").save(path)
    return path
