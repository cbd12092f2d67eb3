"""Step previews: the tiny autoencoder's decode (TAESD, when installed), else a linear projection of
the 4-channel SD latent to RGB (no decoder at all).  Both work on the SD 1/2 VAE's latent space."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# latent(4) @ LATENT_RGB → RGB, roughly in [-1, 1] (factors for the SD 1/2 VAE latent space).
LATENT_RGB = np.array([[0.3512, 0.2297, 0.3227],
                       [0.3250, 0.4974, 0.2350],
                       [-0.2829, 0.1762, 0.2721],
                       [-0.2120, -0.2616, -0.7177]], dtype=np.float32)
PREVIEW_MAX = 256   # px: a decoded preview larger than this is averaged down (the dock shows 128 px)


def latent_to_rgb(latent) -> np.ndarray:
    """One latent (4×h×w torch tensor or array) → h×w×3 uint8 preview at latent resolution.
    The dock scales it up 8×."""
    import torch

    with torch.no_grad():
        lat = latent.detach().to(device="cpu", dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", lat[:4], torch.from_numpy(LATENT_RGB))
        rgb = ((rgb + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return rgb.numpy()


def tiny_to_rgb(tiny_vae, latent) -> np.ndarray:
    """One latent → uint8 RGB through the tiny autoencoder's decoder (8× the latent's size), averaged
    down to at most ``PREVIEW_MAX`` px a side."""
    import torch

    with torch.inference_mode():
        lat = latent.detach()[None, :4].to(device=tiny_vae.device, dtype=tiny_vae.dtype)
        img = tiny_vae.decode(lat).sample[0].float()
        factor = -(-max(img.shape[-2:]) // PREVIEW_MAX)
        if factor > 1:
            img = torch.nn.functional.avg_pool2d(img[None], factor, ceil_mode=True)[0]
        rgb = ((img.permute(1, 2, 0) + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return rgb.cpu().numpy()


def step_decoder(models) -> Callable[[object], np.ndarray]:
    """How a job's step previews are made: the tiny autoencoder when ``models`` has one installed
    (looked up at the first preview, so jobs without previews never load it), else the projection."""
    chosen: list = []

    def decode(latent) -> np.ndarray:
        if not chosen:
            find = getattr(models, "tiny_vae", None)
            chosen.append(find() if find is not None else None)
        tiny = chosen[0]
        return latent_to_rgb(latent) if tiny is None else tiny_to_rgb(tiny, latent)

    return decode
