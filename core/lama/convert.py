"""Convert a big-lama checkpoint (a pickle) into the safetensors file the engine loads.

Pickles can run arbitrary code when they are loaded, so they are read here with torch's restricted
*weights-only* unpickler and nothing else:

- ``torch.save`` files (the official ``big-lama/models/best.ckpt``, a PyTorch Lightning checkpoint,
  or a bare state dict) go through ``torch.load(weights_only=True)``.  Lightning and OmegaConf
  objects that training stored beside the weights are not imported: their names are mapped to an
  inert stand-in class of ours, listed first with ``torch.serialization.get_unsafe_globals_in_checkpoint``.
  Any other name a file asks for (``os.system``, ``builtins.exec``, ...) makes the whole file refused.
- TorchScript exports (IOPaint's ``big-lama.pt``, made by ``torch.jit.trace``): ``torch.load``
  refuses weights-only loading of those, so their ``data.pkl`` is read with the same weights-only
  unpickler directly; their TorchScript code is never compiled or run, and the module classes they
  name (``__torch__.*``) become inert stand-ins too.

The generator's tensors are then checked against ``LamaGenerator`` (every key, every shape) and
written as safetensors with metadata.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from ..models.resolver import ModelError
from .model import LamaGenerator
from .weights import default_weights_path, generator_state, infer_config, save_generator

# Training-time metadata that Lightning checkpoints carry beside the weights.  Objects of these
# modules become inert stand-ins; their code is never imported.
METADATA_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "typing.",
                    "collections.", "pathlib.", "argparse.Namespace", "numpy.", "saicinpainting.")


# Plain types a pickle may name as values (OmegaConf stores ``dict`` as a node's type, for instance).
# They too become stand-ins, never the real builtins; callables such as exec, eval, getattr, open or
# __import__ are not in this list and make the file refused.
METADATA_BUILTINS = {f"{m}.{n}" for m in ("builtins", "__builtin__")
                     for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes",
                               "bool", "object", "type", "NoneType")}


class ConversionError(ModelError):
    code = "conversion_failed"


class UnsafeCheckpoint(ConversionError):
    code = "unsafe_model_file"


class Inert:
    """Stands in for a class a checkpoint names.  Records what the unpickler hands it; runs nothing."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items() if isinstance(k, str)})

    def __call__(self, *args, **kwargs):
        return Inert()


def _stand_ins(names) -> list[tuple[type, str]]:
    return [(type("Inert_" + n.replace(".", "_"), (Inert,), {}), n) for n in names]


def _is_metadata(name: str) -> bool:
    return name.startswith(METADATA_MODULES) or name in METADATA_BUILTINS


def _load_torch_save(src: Path) -> object:
    import torch

    try:
        unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(src)))
    except ValueError:
        unsafe = []  # legacy (non-zip) format: torch.load below still refuses anything not allowed
    refused = [n for n in unsafe if not _is_metadata(n)]
    if refused:
        raise UnsafeCheckpoint(
            f"{src} asks to import {', '.join(refused[:5])} when loaded: that is code, not weights. Refused.")
    try:
        with torch.serialization.safe_globals(_stand_ins(unsafe)):
            return torch.load(str(src), map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:  # pickle.UnpicklingError and friends: the restricted unpickler said no
        raise UnsafeCheckpoint(f"{src} cannot be read as weights only ({_first_line(e)}). Refused.") from None


def _load_torchscript(src: Path, zf: zipfile.ZipFile) -> dict:
    """Tensors of a TorchScript archive, through torch's weights-only unpickler (no TorchScript runs)."""
    import torch
    from torch import _weights_only_unpickler as wou

    names = zf.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
    if pkl is None:
        raise ConversionError(f"{src}: TorchScript archive without data.pkl")
    root = pkl.rsplit("/", 1)[0]
    data = zf.read(pkl)
    wanted = sorted(wou.get_globals_in_pkl(io.BytesIO(data)) - set(wou._get_allowed_globals()))
    refused = [n for n in wanted if not (n.startswith("__torch__.") or _is_metadata(n))]
    if refused:
        raise UnsafeCheckpoint(
            f"{src} asks to import {', '.join(refused[:5])} when loaded: that is code, not weights. Refused.")

    storages: dict[str, torch.UntypedStorage] = {}

    def persistent_load(saved_id):  # as torch.serialization does for torch.save archives
        kind, storage_type, key, _location, _numel = saved_id
        if kind != "storage":
            raise ConversionError(f"{src}: unexpected persistent id {kind!r}")
        if key not in storages:
            raw = zf.read(f"{root}/data/{key}")
            storages[key] = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        return torch.storage.TypedStorage(wrap_storage=storages[key], dtype=dtype, _internal=True)

    unpickler = wou.Unpickler(io.BytesIO(data), encoding="utf-8")
    unpickler.persistent_load = persistent_load
    try:
        with torch.serialization.safe_globals(_stand_ins(wanted)):
            obj = unpickler.load()
    except Exception as e:
        raise UnsafeCheckpoint(f"{src} cannot be read as weights only ({_first_line(e)}). Refused.") from None
    return _module_tensors(obj)


def _module_tensors(obj, prefix: str = "", out: dict | None = None, depth: int = 0) -> dict:
    """Flatten a tree of stand-in module objects into ``{dotted.name: tensor}``."""
    import torch

    out = {} if out is None else out
    if depth > 64:
        return out
    attrs = obj.__dict__.get("_state") if isinstance(obj, Inert) else obj
    if not isinstance(attrs, dict):
        return out
    for k, v in attrs.items():
        if not isinstance(k, str) or k.startswith("_"):
            continue
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v
        elif isinstance(v, (Inert, dict)):
            _module_tensors(v, f"{prefix}{k}.", out, depth + 1)
    return out


def read_checkpoint(src: str | Path) -> dict:
    """All tensors of a checkpoint, flattened to ``{key: tensor}``, read without running its code."""
    import torch

    src = Path(src)
    if not src.is_file():
        raise ConversionError(f"{src} does not exist")
    if src.suffix.lower() == ".safetensors":
        from .weights import read_safetensors

        return read_safetensors(src)[0]
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist()):
                return _load_torchscript(src, zf)
    obj = _load_torch_save(src)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]           # Lightning checkpoint
    if not isinstance(obj, dict):
        raise ConversionError(f"{src} does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def convert_lama_checkpoint(src: str | Path, dst: str | Path | None = None) -> Path:
    """Read a big-lama checkpoint safely and write its generator as safetensors; returns the path written.

    ``dst`` defaults to the app's models folder (``<models>/big-lama/big-lama.safetensors``).
    Raises ``UnsafeCheckpoint`` for files that ask to run code, ``ConversionError`` for anything else
    that is not big-lama (both are ``core.models.resolver.ModelError``).
    """
    return Path(convert_with_summary(src, dst)["path"])


def convert_with_summary(src: str | Path, dst: str | Path | None = None) -> dict:
    """``convert_lama_checkpoint`` returning ``{"path", "config", "parameters", "tensors"}``."""
    import torch

    src = Path(src)
    dst = Path(dst) if dst else default_weights_path()
    tensors = read_checkpoint(src)
    try:
        state = generator_state(tensors)
        config = infer_config(state)
    except ValueError as e:
        raise ConversionError(f"{src}: {e}") from None
    with torch.device("meta"):
        expected = LamaGenerator(config).state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in expected]
    bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or bad:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in
                 ((missing, "missing"), (extra, "unexpected"), (bad, "wrongly shaped")) if v]
        raise ConversionError(f"{src} is not a big-lama generator: {'; '.join(parts)}")
    for k in expected:
        if k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    save_generator(state, config, dst, source=src.name)
    params = sum(v.numel() for k, v in state.items() if v.is_floating_point() and "running_" not in k)
    return {"path": str(dst), "config": config.to_dict(), "parameters": params, "tensors": len(state)}


def _first_line(e: Exception) -> str:
    """The informative line of a (weights-only) unpickling error."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("WeightsUnpickler error:") or "Unsupported" in ln or "GLOBAL" in ln:
            return ln.removeprefix("WeightsUnpickler error:").strip()[:300]
    return (lines[0] if lines else type(e).__name__)[:300]

