"""Run a loaded LaMa generator on an RGB image and a hole mask (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np

MIN_SIDE = 32   # the bottleneck needs at least 2 px for its reflection padding at 3 downsamplings


def pad_to(img: np.ndarray, multiple: int, minimum: int = MIN_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad H×W(×C) on the right and bottom, mirroring, to multiples of ``multiple`` (at least ``minimum``)."""
    h, w = img.shape[:2]
    th = max(minimum, -(-h // multiple) * multiple)
    tw = max(minimum, -(-w // multiple) * multiple)
    pad = [(0, th - h), (0, tw - w)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(img, pad, mode="symmetric"), (h, w)


def inpaint(model, rgb: np.ndarray, hole: np.ndarray, *, device: str = "cpu", on_layer=None) -> np.ndarray:
    """Fill ``hole`` (bool H×W) of ``rgb`` (float32 H×W×3 in [0, 1]); returns float32 H×W×3.

    As the model was trained: the hole's pixels are set to 0 and the mask is the 4th channel.
    The output is the model's image everywhere (the caller keeps the known pixels it wants).
    ``on_layer(i, n)`` is called after each top-level layer (progress and cancellation).
    """
    import torch

    mask = hole.astype(np.float32)
    x = np.concatenate([rgb.astype(np.float32) * (1.0 - mask[..., None]), mask[..., None]], axis=-1)
    x, (h, w) = pad_to(x, model.multiple)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    with torch.inference_mode():
        out = model(t, on_layer=on_layer)
    out = out[0, :, :h, :w].float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fill(model, rgb: np.ndarray, hole: np.ndarray, *, device: str = "cpu", on_layer=None) -> np.ndarray:
    """Fill ``hole`` with a loaded LaMa generator (``core.lama.weights.load_generator``); pixels outside
    the hole are kept exactly."""
    from ..raster.fastfill import keep_known

    if not hole.any():
        return rgb.astype(np.float32, copy=True)
    return keep_known(rgb, inpaint(model, rgb, hole, device=device, on_layer=on_layer), hole)
