"""Reading and writing image files for the command line (Pillow).

Reading refuses, with one line naming the file: a missing file, a folder, an empty file, a file Pillow
cannot identify, a damaged or truncated one, and one whose header declares more than ``MAX_SIDE`` px a
side (checked on the header, before anything is decoded: a decompression bomb never reaches memory).
Greyscale, palette, CMYK, LA and 16-bit files are converted.

Writing goes through the project's atomic writer (``contract.atomic``): an image file exists complete
or not at all.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..contract import atomic
from ..contract.jobs import MAX_SIDE, ImageBuffer
from ..contract.params import ValidationError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
ALPHA_FORMATS = ("PNG", "TIFF", "WEBP", "GIF", "TGA", "JPEG2000", "ICO", "ICNS", "QOI")   # the rest get RGB


@contextlib.contextmanager
def _opened(path: str | Path, name: str):
    """The image at ``path``, opened and fully decoded; ValidationError (one line naming ``name`` and the
    file) for every way a file can fail."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    what = f"{name} file {path}"
    if not p.exists():
        raise ValidationError(name, f"{name} file not found: {path}")
    if p.is_dir():
        raise ValidationError(name, f"{what} is a folder; expected an image file")
    try:
        if p.stat().st_size == 0:
            raise ValidationError(name, f"{what} is empty (0 bytes); expected an image file")
    except OSError as e:
        raise ValidationError(name, f"{what} cannot be read: {atomic.reason_of(e)}") from None
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # the sides are checked below instead
    try:
        im = Image.open(p)
    except UnidentifiedImageError:
        raise ValidationError(name, f"{what} is not an image Pillow can read (PNG, JPEG, TIFF, WebP, BMP, …)") \
            from None
    except OSError as e:
        raise ValidationError(name, f"{what} cannot be read: {atomic.reason_of(e)}") from None
    except Exception:       # Pillow's header parsers raise many kinds on a damaged file
        raise ValidationError(name, f"{what} is damaged: its header cannot be read") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    with im:
        w, h = im.size
        if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise ValidationError(name, f"{what} declares {w}x{h} px; images may be at most {MAX_SIDE} px a side "
                                        f"(refused before decoding)")
        try:
            im.load()
        except Exception:   # OSError (truncated), SyntaxError, ValueError, struct.error, ... from the decoders
            raise ValidationError(name, f"{what} is damaged or truncated: its pixels cannot be decoded") from None
        yield im


def read_image(path: str | Path, name: str = "image") -> tuple[ImageBuffer, bool]:
    """An image file as an RGBA_U8 (or RGBA_U16 for 16-bit files) buffer, plus whether it had alpha."""
    with _opened(path, name) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or \
            (im.mode == "P" and "transparency" in im.info)
        if im.mode in SIXTEEN_BIT_MODES:
            a = np.asarray(im)
            if im.mode == "I":     # 32-bit integers: Pillow's 16-bit greyscale PNGs, clamped to 16 bits
                a = np.clip(a, 0, 65535)
            a = a.astype(np.uint16)
            rgba = np.stack([a, a, a, np.full_like(a, 65535)], axis=-1)
            return ImageBuffer(im.width, im.height, "RGBA_U16", rgba.tobytes()), False
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    return ImageBuffer(rgba.shape[1], rgba.shape[0], "RGBA_U8", np.ascontiguousarray(rgba).tobytes()), has_alpha


def _check_size(name: str, got: tuple[int, int], size: tuple[int, int]) -> None:
    if tuple(got) != tuple(size):
        raise ValidationError(name, f"{name} must be the size of the image ({size[0]}x{size[1]}), "
                                    f"got {got[0]}x{got[1]}")


def read_mask(path: str | Path, size: tuple[int, int], name: str = "mask") -> ImageBuffer:
    """A selection mask file (white = selected; grey = partly) as GRAY_U8 of ``size``."""
    with _opened(path, name) as im:
        _check_size(name, im.size, size)
        if im.mode in ("RGBA", "LA") and im.getextrema()[-1][0] < 255 and im.convert("L").getextrema() == (0, 0):
            gray = im.getchannel("A")  # a black image whose alpha holds the selection
        elif im.mode in SIXTEEN_BIT_MODES:
            gray = _gray8(np.asarray(im))
        else:
            gray = im.convert("L")
    return ImageBuffer(gray.width, gray.height, "GRAY_U8", np.asarray(gray, dtype=np.uint8).tobytes())


def _gray8(a: np.ndarray):
    """An 8-bit greyscale PIL image from 16-bit values (rounded, not cut to the low byte)."""
    from PIL import Image

    return Image.fromarray((np.clip(a, 0, 65535).astype(np.float32) / 257.0).round().astype(np.uint8), "L")


def read_depth(path: str | Path, size: tuple[int, int], name: str = "depth") -> ImageBuffer:
    """A depth image (white = near) as GRAY_U16 of ``size`` (8-bit files are widened)."""
    with _opened(path, name) as im:
        _check_size(name, im.size, size)
        if im.mode in SIXTEEN_BIT_MODES:
            a = np.clip(np.asarray(im).astype(np.float64), 0, 65535) / 65535.0
        else:
            a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    u16 = np.rint(np.clip(a, 0, 1) * 65535).astype("<u2")
    return ImageBuffer(u16.shape[1], u16.shape[0], "GRAY_U16", u16.tobytes())


# --- writing --------------------------------------------------------------------------------------------

def output_format(path: str | Path, name: str = "out") -> str:
    """Pillow's format for the file name's extension; ValidationError naming ``name`` when there is none."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix) if suffix else None
    if fmt is None or fmt not in Image.SAVE:
        raise ValidationError(name, f"--{name} {path}: cannot tell the image type from "
                                    f"{suffix or 'a name without an extension'}; use .png, .jpg, .tif or .webp")
    return fmt


def encode_image(fp, fmt: str, arr: np.ndarray, pixel_format: str, keep_alpha: bool = True) -> None:
    """Encode a native RGBA_U8/RGBA_U16 array (or GRAY_U16 depth) as ``fmt`` (a Pillow format) into ``fp``."""
    from PIL import Image

    if pixel_format == "GRAY_U16":
        a = arr[..., 0] if arr.ndim == 3 else arr
        if fmt in ("PNG", "TIFF"):
            Image.fromarray(np.ascontiguousarray(a.astype("<u2"))).save(fp, format=fmt)  # 16-bit greyscale
        else:
            _gray8(a).save(fp, format=fmt)
        return
    if pixel_format == "RGBA_U16":
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif pixel_format != "RGBA_U8":
        raise ValueError(f"cannot write {pixel_format} to a file")
    im = Image.fromarray(np.ascontiguousarray(arr), "RGBA")
    if fmt not in ALPHA_FORMATS or not keep_alpha:
        im = im.convert("RGB")
    im.save(fp, format=fmt)


def write_image(path: str | Path, arr: np.ndarray, fmt: str, keep_alpha: bool = True) -> Path:
    """Write a native RGBA_U8/RGBA_U16 array (or GRAY_U16 depth) to ``path`` (format by extension), atomically.
    Raises ValidationError for an extension without an image type, atomic.WriteError when it cannot be written."""
    path = Path(path)
    kind = output_format(path)
    with atomic.open_atomic(path, parents=True) as f:
        encode_image(f, kind, arr, fmt, keep_alpha)
    return path


def numbered(path: Path, index: int) -> Path:
    """``out.png`` for image 0, ``out_2.png`` for image 1, ..."""
    return path if index == 0 else path.with_name(f"{path.stem}_{index + 1}{path.suffix}")
