"""Small builders shared by tests."""

from __future__ import annotations

import numpy as np

from core.contract.jobs import ImageBuffer, JobRequest, Options, Params


def rgba_u8(h: int, w: int, seed: int = 0, alpha: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if not alpha:
        img[..., 3] = 255
    return img


def buffer(arr: np.ndarray, fmt: str = "RGBA_U8", linear: bool = False) -> ImageBuffer:
    arr = np.ascontiguousarray(arr)
    return ImageBuffer(arr.shape[1], arr.shape[0], fmt, arr.tobytes(), linear)


def rect_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w, 1), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


def inpaint_request(img: np.ndarray, mask: np.ndarray | None, **params) -> JobRequest:
    opts = params.pop("options", Options())
    p = dict(prompt="a red ball", steps=3, seed=1, strength=1.0)
    p.update(params)
    return JobRequest("inpaint", Params(**p), opts, image=buffer(img),
                      mask=buffer(mask, "GRAY_U8") if mask is not None else None)


def write_image_and_mask(folder, h: int, w: int, seed: int, rect: tuple[int, int, int, int]):
    """Write a random RGB ``in.png`` and a ``mask.png`` selecting rect (x0, y0, x1, y1) into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img, "RGB").save(folder / "in.png")
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = rect
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask, "L").save(folder / "mask.png")
    return folder, img, mask


class FillingFile:
    """A file object on a disk that fills up: writes fail with ENOSPC once the budget (shared by every
    file given the same dict: ``{"left": bytes, "failures": 0}``) is spent; the bytes that fit are written."""

    def __init__(self, f, budget: dict):
        self._f, self._budget = f, budget

    def write(self, data):
        import errno

        room = self._budget["left"]
        if len(data) > room:
            if room:
                self._f.write(data[:room])
            self._budget["left"] = 0
            self._budget["failures"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget["left"] -= len(data)
        return self._f.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def disk_full_after(monkeypatch, limit: int) -> dict:
    """Make every file the atomic writer (``core.contract.atomic``) opens fail with ENOSPC after ``limit``
    bytes in total.  Returns the budget: ``left`` bytes, ``failures`` so far."""
    from core.contract import atomic

    budget = {"left": limit, "failures": 0}
    real = atomic._fdopen
    monkeypatch.setattr(atomic, "_fdopen", lambda fd, *a, **kw: FillingFile(real(fd, *a, **kw), budget))
    return budget


def leftovers(folder) -> list[str]:
    """The atomic writer's temporary files in ``folder`` (recursively)."""
    from pathlib import Path

    from core.contract import atomic

    return sorted(str(p) for p in Path(folder).rglob("*") if atomic.temp_target(p.name) is not None)
