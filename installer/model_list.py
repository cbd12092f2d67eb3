"""``models list``: every catalogue model, installed or missing, with its disk use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.contract.catalog import CATALOG, ModelSpec

from .hub_plan import human


@dataclass
class ModelRow:
    key: str
    title: str
    installed: bool
    path: Path | None
    source: str          # models-dir | hf-cache | single-file | explicit | "" when missing
    bytes: int
    note: str = ""


def disk_use(path: Path) -> int:
    """Bytes a model takes: a folder's files (links followed once, each blob counted once) or one file."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            try:
                st = p.stat()  # follows the snapshot's symlinks to the blobs
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_size
    return total


def rows(models_dir: Path | None = None, hub_cache: Path | None = None) -> list[ModelRow]:
    from core.contract import paths
    from core.models.resolver import ModelError, _search_spec

    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    out = []
    for spec in CATALOG.values():
        try:
            r = _search_spec(spec, models_dir, hub_cache)
            note = ""
        except ModelError as e:
            r, note = None, str(e)
        if r is None:
            out.append(ModelRow(spec.key, spec.title, False, None, "", 0, note or spec.install_hint()))
            continue
        size = disk_use(r.path) + (disk_use(r.config) if r.config and r.single_file else 0)
        extra = f"variant {r.variant}" if r.variant else ""
        out.append(ModelRow(spec.key, spec.title, True, r.path, r.source, size, extra))
    return out


def lama_row(models_dir: Path | None = None) -> ModelRow | None:
    """The fast fill's LaMa weights, when the engine knows about them (core.lama, another module)."""
    try:
        from core.lama import weights  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        path = weights.find_weights(None, models_dir)
    except Exception:
        return ModelRow("big-lama", "LaMa (fast fill)", False, None, "", 0,
                        "python -m installer models import big-lama.pt")
    return ModelRow("big-lama", "LaMa (fast fill)", True, Path(path), "models-dir", disk_use(Path(path)))


def custom_rows(models_dir: Path | None = None, hub_cache: Path | None = None) -> list[ModelRow]:
    """Models imported under a name of their own (``models import --name``)."""
    from core.contract import paths
    from core.models.inventory import custom_entries

    folder = Path(models_dir) if models_dir else paths.models_dir()
    return [ModelRow(e["key"], e["title"], True, Path(e["path"]), "imported", disk_use(Path(e["path"])))
            for e in custom_entries(folder, hub_cache)]


def removal_targets(key: str, models_dir: Path | None = None, hub_cache: Path | None = None) -> list[Path]:
    """Every copy of model ``key``: its folder in the models folder and (catalogue models) its hub cache repo."""
    import re

    from core.contract import paths
    from core.models.hub import hf_hub_cache

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key) or key == "configs":
        raise KeyError(f"{key!r} is not a model name")
    folder = Path(models_dir) if models_dir else paths.models_dir()
    out = [p for p in (folder / key,) if p.is_dir()]
    spec = CATALOG.get(key)
    if spec is not None:
        cached = Path(hub_cache or hf_hub_cache()) / spec.cache_folder
        if cached.is_dir():
            out.append(cached)
    return out


def remove(key: str, models_dir: Path | None = None, hub_cache: Path | None = None) -> int:
    """Delete every copy of ``key``; returns the bytes freed (KeyError: nothing of that name)."""
    import shutil

    targets = removal_targets(key, models_dir, hub_cache)
    if not targets:
        raise KeyError(f"no installed model is called {key!r}")
    freed = sum(disk_use(t) for t in targets)
    for t in targets:
        shutil.rmtree(t)
    return freed


def format_table(table: list[ModelRow]) -> str:
    lines = []
    for r in table:
        if r.installed:
            lines.append(f"  installed  {r.key:<16} {human(r.bytes):>10}  {r.path}  [{r.source}"
                         + (f", {r.note}" if r.note else "") + "]")
        else:
            lines.append(f"  missing    {r.key:<16} {'':>10}  {r.note}")
    total = sum(r.bytes for r in table)
    lines.append(f"  {sum(r.installed for r in table)} of {len(table)} installed, {human(total)} on disk")
    return "\n".join(lines)


def spec_or_error(name: str) -> ModelSpec:
    from core.contract.catalog import by_name

    spec = by_name(name)
    if spec is None:
        raise KeyError(f"unknown model {name!r}; the catalogue has: {', '.join(CATALOG)}")
    return spec
