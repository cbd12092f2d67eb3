"""Environment for the engine process: strictly offline, quiet libraries."""

from __future__ import annotations

import os
import warnings

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply() -> None:
    """Call before diffusers/transformers are imported.  Jobs never touch the network."""
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    inductor_cache()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")


def inductor_cache() -> None:
    """torch.compile's on-disk cache in the app's cache folder (TORCHINDUCTOR_CACHE_DIR wins), so the
    next engine compiles the same UNet faster.  Set before torch is imported: inductor writes its
    default (/tmp/torchinductor_<user>) into the environment the first time it looks."""
    from ..contract import paths

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(paths.cache_dir() / "inductor"))
