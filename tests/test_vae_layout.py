"""The autoencoders' layout: on the CPU their weights are channels_last (``VAE_CHANNELS_LAST``, measured
faster there), the picture they decode is the contiguous layout's within rounding, and a shared VAE
keeps it for every pipeline that reuses it."""

from __future__ import annotations

import torch


def conv_weights(module) -> list:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def test_loaded_pipelines_vae_follows_the_policy_and_decodes_the_same_picture(models, policy):
    vae = models.get("inpaint").pipe.vae
    assert conv_weights(vae) and all(w.is_contiguous(memory_format=torch.channels_last) == policy.vae_channels_last
                                     for w in conv_weights(vae))
    latents = torch.randn(1, vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(3)).to(vae.dtype)
    with torch.inference_mode():
        as_loaded = vae.decode(latents).sample.float()
        vae.to(memory_format=torch.contiguous_format)
        try:
            contiguous = vae.decode(latents).sample.float()
        finally:
            vae.to(memory_format=torch.channels_last if policy.vae_channels_last else torch.contiguous_format)
    assert as_loaded.shape == contiguous.shape
    # bf16 rounding differs with the convolution's algorithm: a few units of its 8-bit mantissa at most
    tolerance = 5e-2 if vae.dtype == torch.bfloat16 else 1e-4
    assert (as_loaded - contiguous).abs().max().item() <= tolerance


def test_a_shared_vae_keeps_the_layout_for_the_next_pipeline(models, policy):
    first = models.get("inpaint").pipe.vae
    second = models.get("generate").pipe.vae
    for vae in (first, second):
        assert all(w.is_contiguous(memory_format=torch.channels_last) == policy.vae_channels_last
                   for w in conv_weights(vae))
