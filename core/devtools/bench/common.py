"""Pieces every benchmark row uses: the result of a row, timers on model parts, test images, models."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .profiles import Profile

BENCH_KINDS = ("inpaint", "depth", "x4")


@dataclass
class Row:
    """One line of the benchmark table, plus its raw figures."""

    number: int
    title: str
    measured: str                 # the figure, in words and numbers
    goal: str
    passed: bool | None           # None: reported, no goal
    figures: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "–" if self.passed is None else "PASS" if self.passed else "FAIL"

    def as_dict(self) -> dict:
        return {"row": self.number, "title": self.title, "measured": self.measured, "goal": self.goal,
                "verdict": self.verdict, "figures": self.figures, "notes": self.notes}


def now() -> float:
    return time.perf_counter()


def best_of(fn, repeats: int, warm: int = 1) -> tuple[float, list[float]]:
    """(fastest time, all times) of ``fn()`` after ``warm`` untimed calls."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t = now()
        fn()
        times.append(now() - t)
    return min(times), times


class ModuleTimer:
    """Wall time and input shapes of every forward call of the watched modules (forward hooks).

    Calls of one module must not nest (true for the UNet, the text encoder and the VAE halves)."""

    def __init__(self):
        self.times: dict[str, list[float]] = defaultdict(list)
        self.shapes: dict[str, list[tuple]] = defaultdict(list)
        self.starts: dict[str, list[float]] = defaultdict(list)
        self._handles = []
        self._open: dict[str, float] = {}

    def watch(self, name: str, module) -> ModuleTimer:
        def pre(_m, args, kwargs):
            first = args[0] if args else next(iter(kwargs.values()), None)
            self.shapes[name].append(tuple(getattr(first, "shape", ())))
            self._open[name] = now()
            self.starts[name].append(self._open[name])

        def post(_m, _args, _kwargs, _out):
            self.times[name].append(now() - self._open.pop(name))

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(module.register_forward_hook(post, with_kwargs=True))
        return self

    def total(self, name: str) -> float:
        return float(sum(self.times.get(name, ())))

    def count(self, name: str) -> int:
        return len(self.times.get(name, ()))

    def span(self, name: str) -> float:
        """From the start of the first call to the end of the last (e.g. the whole denoising loop)."""
        if not self.times.get(name):
            return 0.0
        return self.starts[name][-1] + self.times[name][-1] - self.starts[name][0]

    def reset(self) -> None:
        self.times.clear()
        self.shapes.clear()
        self.starts.clear()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def watch_pipe(pipe) -> ModuleTimer:
    """Timers on the parts of an SD pipeline: text encoder, UNet, VAE encoder and decoder."""
    t = ModuleTimer()
    t.watch("text_encoder", pipe.text_encoder).watch("unet", pipe.unet)
    t.watch("vae_encode", pipe.vae.encoder).watch("vae_decode", pipe.vae.decoder)
    return t


@contextmanager
def watching(pipe):
    t = watch_pipe(pipe)
    try:
        yield t
    finally:
        t.close()


def clear_job_caches() -> None:
    """Forget cached prompt embeddings and VAE encodes, so a job does all of its work again."""
    from ...models import latent_cache
    from ...pipelines import prompts

    prompts.clear_cache()
    latent_cache.clear()


# --- images -------------------------------------------------------------------------------------

def noise_image(w: int, h: int, seed: int = 0, block: int = 512) -> np.ndarray:
    """h×w×4 uint8 test pixels (opaque), made by tiling a random block so huge canvases are cheap."""
    rng = np.random.default_rng(seed)
    tile = rng.integers(0, 256, (min(h, block), min(w, block), 4), dtype=np.uint8)
    tile[..., 3] = 255
    reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:h, :w])


def square_mask(w: int, h: int, side: int) -> np.ndarray:
    """GRAY_U8 mask with a ``side``² square selected in the middle."""
    m = np.zeros((h, w), np.uint8)
    y, x = (h - side) // 2, (w - side) // 2
    m[y:y + side, x:x + side] = 255
    return m


def ellipse_mask(w: int, h: int, margin: float = 0.05) -> np.ndarray:
    """GRAY_U8 mask selecting an ellipse that nearly fills the image (its box is the whole image)."""
    import cv2

    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    if margin:
        m[: max(1, int(h * margin))] = 0
        m[0, w // 2] = 255  # keep the bounding box the whole layer
    return m


def inpaint_request(w: int, h: int, mask: np.ndarray, *, steps: int, guidance: float = 7.5, seed: int = 1,
                    fmt: str = "BGRA_U8", linear: bool = False, prompt: str = "a stone wall with ivy",
                    pixels: np.ndarray | None = None):
    from ...contract.jobs import ImageBuffer, JobRequest, Options, Params
    from ...raster.pixels import convert_buffer

    img = noise_image(w, h) if pixels is None else pixels
    image = ImageBuffer(w, h, "BGRA_U8", img.tobytes())
    if fmt != "BGRA_U8" or linear:
        image = convert_buffer(image, fmt, linear)
    return JobRequest("inpaint", Params(prompt=prompt, negative_prompt="blurry", steps=steps, guidance=guidance,
                                        strength=1.0, seed=seed),
                      Options(), image=image, mask=ImageBuffer(w, h, "GRAY_U8", mask.tobytes()))


# --- models ---------------------------------------------------------------------------------------

def models_root(profile: Profile, override: Path | None = None) -> Path:
    """The folder holding sd2-inpainting/, sd2-depth/ and sd2-x4-upscaler/ for ``profile``; built once
    (full size: fp16 files as the installer downloads them, about 7 GB) and reused between runs."""
    from ...contract import paths
    from ..tiny_models import build_all

    if override is not None:
        return Path(override)
    base = Path(os.environ.get("DD_BENCH_MODELS") or paths.cache_dir())
    root = base / ("bench-tiny-fp16" if profile.tiny else "bench-sd2")
    build_all(root, full=not profile.tiny, kinds=BENCH_KINDS, variant="fp16")
    return root


def model_manager(root: Path, policy=None, capacity: int = 3):
    from ...models.device import current_policy
    from ...models.manager import ModelManager

    return ModelManager(policy or current_policy(), models_dir=root, hub_cache=root / "no-hub-cache",
                        capacity=capacity)


def fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def n_steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
