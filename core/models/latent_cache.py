"""VAE encodes remembered across jobs: the same pixels through the same VAE give the same latents.

An artist retries a selection with another prompt or seed far more often than they change its
pixels, and a VAE encode at 512² costs seconds on a CPU.  The engine encodes deterministically (the
posterior's mean, ``core.pipelines.common.encode_image``), so a repeat can reuse the first result.

Entries are keyed on a hash of the input pixels (the exact tensor the VAE would see: bytes, shape and
dtype) and held per VAE object (a weak reference: an unloaded model takes its entries with it), in a
small LRU bounded by entry count and bytes.  What is kept is the posterior's parameters, a few hundred
KB at 512².
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict

MAX_ENTRIES = 16                 # per VAE
MAX_BYTES = 64 << 20             # per VAE
_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()
stats = {"hits": 0, "misses": 0}


def pixel_key(x) -> tuple:
    """Identity of the VAE's input tensor: a hash of its bytes, its shape, dtype and device."""
    import torch

    t = x.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(memoryview(raw), digest_size=20).digest(), tuple(x.shape), str(x.dtype), str(x.device)


def posterior(vae, x, encode=None):
    """``vae.encode(x)``'s posterior parameters (mean and log-variance, B×2C×h×w), from the cache when
    these exact pixels went through this VAE before.  ``encode(x)`` computes them on a miss (default:
    ``vae.encode(x).latent_dist.parameters``).  The caller gets its own copy."""
    key = (*pixel_key(x), str(getattr(vae, "dtype", "")))
    with _lock:
        cache = _caches.get(vae)
        if cache is not None and key in cache:
            cache.move_to_end(key)
            stats["hits"] += 1
            return cache[key].clone()
    if encode is None:
        params = vae.encode(x).latent_dist.parameters
    else:
        params = encode(x)
    params = params.detach()
    with _lock:
        stats["misses"] += 1
        cache = _caches.setdefault(vae, OrderedDict())
        cache[key] = params.clone()
        while len(cache) > 1 and (len(cache) > MAX_ENTRIES or _nbytes(cache) > MAX_BYTES):
            cache.popitem(last=False)  # the least recently used
    return params


def _nbytes(cache) -> int:
    return sum(t.numel() * t.element_size() for t in cache.values())


def entries(vae) -> int:
    with _lock:
        return len(_caches.get(vae, ()))


def clear() -> None:
    with _lock:
        _caches.clear()
