"""Model weight files: what they weigh once loaded, and content fingerprints that tell identical
components of different models apart from merely similar ones."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
from pathlib import Path

from ..contract import atomic
from .device import DevicePolicy
from .resolver import ResolvedModel

log = logging.getLogger(__name__)

WEIGHT_SUFFIX = ".safetensors"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
TARGET_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

def weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The .safetensors files diffusers would load from a component folder."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIX))
    if variant:
        chosen = [p for p in files if f".{variant}." in p.name]
        return chosen or files
    plain = [p for p in files if not re.search(r"\.(fp16|bf16|fp32)\.", p.name)]
    return plain or files


def safetensors_params(path: Path) -> dict[str, int]:
    """Element count per stored dtype of a .safetensors file (reads only its header)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError(f"{path}: implausible safetensors header")
        header = json.loads(f.read(n))
    counts: dict[str, int] = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for s in t["shape"]:
            numel *= int(s)
        counts[t["dtype"]] = counts.get(t["dtype"], 0) + numel
    return counts


def estimate_weight_bytes(resolved: ResolvedModel, policy: DevicePolicy, skip=()) -> int:
    """Bytes the model's weights take once loaded in the policy's dtypes (components in ``skip``
    are already in memory)."""
    target = TARGET_BYTES.get(policy.dtype, 4)
    if resolved.single_file:
        try:
            return sum(n * min(target, DTYPE_BYTES.get(dt, 4))
                       for dt, n in safetensors_params(resolved.path).items())
        except (OSError, ValueError, KeyError):
            return resolved.path.stat().st_size if resolved.path.exists() else 0
    total = 0
    for comp in sorted(p.name for p in resolved.path.iterdir() if p.is_dir()):
        if comp in skip:
            continue
        if comp == "vae":
            upscaler = resolved.pipeline == "StableDiffusionUpscalePipeline"
            comp_target = TARGET_BYTES.get(policy.upscaler_vae_dtype if upscaler else policy.vae_dtype, 4)
        else:
            comp_target = target
        for f in weight_files(resolved.path / comp, resolved.variant):
            try:
                counts = safetensors_params(f)
            except (OSError, ValueError, KeyError):
                total += f.stat().st_size
                continue
            total += sum(n * (comp_target if dt in ("F32", "F16", "BF16", "F64") else DTYPE_BYTES.get(dt, 4))
                         for dt, n in counts.items())
    return total


_BLOB = re.compile(r"^[0-9a-f]{64}$")


class FingerprintCache:
    """sha256 of weight files, remembered by (path, size, mtime) in a small JSON file."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        self._dirty = False
        if path is not None:
            try:
                self._entries = json.loads(path.read_text())
            except (OSError, ValueError):
                self._entries = {}

    @classmethod
    def default(cls) -> FingerprintCache:
        from ..contract import paths

        try:
            return cls(paths.cache_dir() / "fingerprints.json")
        except Exception:
            return cls(None)

    def file_hash(self, path: Path) -> str:
        """Content hash of one file: the HF blob name when it is a cache symlink, else sha256."""
        real = Path(os.path.realpath(path))
        if real.parent.name == "blobs" and _BLOB.match(real.name):
            return real.name
        st = real.stat()
        sig = [st.st_size, st.st_mtime_ns]
        with self._lock:
            entry = self._entries.get(str(real))
            if entry and entry[:2] == sig:
                return entry[2]
        h = hashlib.sha256()
        with open(real, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._entries[str(real)] = [*sig, digest]
            self._dirty = True
        self.save()
        return digest

    def component(self, folder: Path, variant: str | None) -> str | None:
        """Fingerprint of a component folder (None if it has no files)."""
        if not folder.is_dir():
            return None
        h = hashlib.sha256()
        files = sorted(p for p in folder.iterdir() if p.is_file())
        weights = set(weight_files(folder, variant))
        any_file = False
        for p in files:
            if p.name.endswith(WEIGHT_SUFFIX):
                if p not in weights:
                    continue
                h.update(f"{p.name}:{self.file_hash(p)}\n".encode())
            elif p.suffix in (".json", ".txt", ".model"):
                h.update(f"{p.name}:".encode() + p.read_bytes() + b"\n")
            else:
                continue
            any_file = True
        return h.hexdigest() if any_file else None

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        with self._lock:
            data = json.dumps(self._entries)
            self._dirty = False
        try:
            atomic.write_text(self.path, data, parents=True)
        except OSError as e:
            log.warning("could not save the fingerprint cache %s: %s", self.path, e)
