"""The Hugging Face hub cache, found as huggingface_hub finds it.

``huggingface_hub.constants`` reads ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``
(with ``~`` expanded) and ``XDG_CACHE_HOME`` when huggingface_hub is first imported; this module never
reads those variables itself, so the engine, the installer and the hub library always agree.
"""

from __future__ import annotations

from pathlib import Path


def hf_hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
