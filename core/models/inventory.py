"""What is installed beyond the catalogue, as the engine's capabilities list it: models imported into
the models folder under a name of their own (``models import``), and the LoRA and embedding files in
its ``loras/`` and ``embeddings/`` folders.  The dock offers them per mode from this list."""

from __future__ import annotations

from pathlib import Path

from ..contract.catalog import CATALOG
from . import adapters
from .resolver import find_installed


def modes_of(pipeline: str, in_channels: int | None = None) -> list[str]:
    """The jobs a diffusers pipeline class can do (those of the catalogue models built the same way)."""
    out: list[str] = []
    for spec in CATALOG.values():
        if spec.pipeline == pipeline and (in_channels is None or spec.unet_in_channels == in_channels):
            out += [m for m in spec.modes if m not in out]
    return out


def custom_entries(models_dir: Path, hub_cache: Path | None = None) -> list[dict]:
    """Capabilities entries of the models in the models folder that are not catalogue models."""
    out = []
    for r in find_installed(models_dir, hub_cache):
        if r.name in CATALOG:
            continue
        base = r.spec.key if r.spec else ""
        out.append({"key": r.name, "title": r.name + (f" ({r.spec.title})" if r.spec else ""), "found": True,
                    "path": str(r.path), "source": r.source, "hint": "", "modes": modes_of(r.pipeline),
                    "custom": True, "base": base, "prediction": r.prediction})
    return out


def adapter_entries(models_dir: Path) -> list[dict]:
    """One entry per LoRA / embedding file: ``kind`` "lora" or "embedding", no modes of its own."""
    out = []
    for field, kind in (("loras", "lora"), ("embeddings", "embedding")):
        for f in adapters.installed(models_dir)[field]:
            out.append({"key": f["name"], "title": f["name"], "found": True, "kind": kind, "modes": [],
                        "bytes": f["bytes"], "optional": True, "hint": ""})
    return out
