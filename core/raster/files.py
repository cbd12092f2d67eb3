"""Reading and writing image files for the command line (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contract.jobs import ImageBuffer
from ..contract.params import ValidationError


def read_image(path: str | Path, name: str = "image") -> tuple[ImageBuffer, bool]:
    """An image file as an RGBA_U8 (or RGBA_U16 for 16-bit files) buffer, plus whether it had alpha."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.uint32 if im.mode == "I" else np.uint16).astype(np.uint16)
                rgba = np.stack([a, a, a, np.full_like(a, 65535)], axis=-1)
                return ImageBuffer(im.width, im.height, "RGBA_U16", rgba.tobytes()), False
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
    except FileNotFoundError:
        raise ValidationError(name, f"{name} file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValidationError(name, f"{name} file {path} is not a readable image: {e}") from None
    return ImageBuffer(rgba.shape[1], rgba.shape[0], "RGBA_U8", np.ascontiguousarray(rgba).tobytes()), has_alpha


def read_mask(path: str | Path, size: tuple[int, int], name: str = "mask") -> ImageBuffer:
    """A selection mask file (white = selected; grey = partly) as GRAY_U8 of ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") and im.getextrema()[-1][0] < 255 and im.convert("L").getextrema() == (0, 0):
                gray = im.getchannel("A")  # a black image whose alpha holds the selection
            else:
                gray = im.convert("L")
    except FileNotFoundError:
        raise ValidationError(name, f"{name} file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValidationError(name, f"{name} file {path} is not a readable image: {e}") from None
    if gray.size != tuple(size):
        raise ValidationError(name, f"{name} must be the size of the image ({size[0]}x{size[1]}), "
                                    f"got {gray.size[0]}x{gray.size[1]}")
    return ImageBuffer(gray.width, gray.height, "GRAY_U8", np.asarray(gray, dtype=np.uint8).tobytes())


def read_depth(path: str | Path, size: tuple[int, int], name: str = "depth") -> ImageBuffer:
    """A depth image (white = near) as GRAY_U16 of ``size`` (8-bit files are widened)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im).astype(np.float64)
                a = a / 65535.0
            else:
                a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except FileNotFoundError:
        raise ValidationError(name, f"{name} file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValidationError(name, f"{name} file {path} is not a readable image: {e}") from None
    if (a.shape[1], a.shape[0]) != tuple(size):
        raise ValidationError(name, f"{name} must be the size of the image ({size[0]}x{size[1]}), "
                                    f"got {a.shape[1]}x{a.shape[0]}")
    u16 = np.rint(np.clip(a, 0, 1) * 65535).astype("<u2")
    return ImageBuffer(u16.shape[1], u16.shape[0], "GRAY_U16", u16.tobytes())


def write_image(path: str | Path, arr: np.ndarray, fmt: str, keep_alpha: bool = True) -> Path:
    """Write a native RGBA_U8/RGBA_U16 array (or GRAY_U16 depth) to ``path`` (format by extension)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if fmt == "GRAY_U16":
        a = arr[..., 0] if arr.ndim == 3 else arr
        if suffix == ".png":
            Image.fromarray(np.ascontiguousarray(a.astype("<u2"))).save(path)  # 16-bit greyscale PNG
        else:
            Image.fromarray((a.astype(np.float32) / 257.0).round().astype(np.uint8), "L").save(path)
        return path
    if fmt == "RGBA_U16":
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif fmt != "RGBA_U8":
        raise ValueError(f"cannot write {fmt} to a file")
    im = Image.fromarray(np.ascontiguousarray(arr), "RGBA")
    if suffix in (".jpg", ".jpeg") or not keep_alpha:
        im = im.convert("RGB")
    im.save(path)
    return path


def numbered(path: Path, index: int) -> Path:
    """``out.png`` for image 0, ``out_2.png`` for image 1, ..."""
    return path if index == 0 else path.with_name(f"{path.stem}_{index + 1}{path.suffix}")
