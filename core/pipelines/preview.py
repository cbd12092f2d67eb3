"""Cheap step previews: a linear projection of the 4-channel SD latent to RGB (no VAE decode)."""

from __future__ import annotations

import numpy as np

# latent(4) @ LATENT_RGB → RGB, roughly in [-1, 1] (factors for the SD 1/2 VAE latent space).
LATENT_RGB = np.array([[0.3512, 0.2297, 0.3227],
                       [0.3250, 0.4974, 0.2350],
                       [-0.2829, 0.1762, 0.2721],
                       [-0.2120, -0.2616, -0.7177]], dtype=np.float32)


def latent_to_rgb(latent) -> np.ndarray:
    """One latent (4×h×w torch tensor or array) → h×w×3 uint8 preview at latent resolution.
    The dock scales it up 8×."""
    import torch

    with torch.no_grad():
        lat = latent.detach().to(device="cpu", dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", lat[:4], torch.from_numpy(LATENT_RGB))
        rgb = ((rgb + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
    return rgb.numpy()
