"""``models import PATH``: bring a model the user already has into the app's models folder.

- a diffusers folder (or a hub-cache ``models--org--name`` folder): its configs and safetensors weights
  are copied to ``<models folder>/<name>/`` (links resolved, pickles left behind);
- a single-file ``.safetensors`` checkpoint (original LDM/OpenCLIP key layout): converted to a diffusers
  folder with ``from_single_file(config=<local config folder>, local_files_only=True)`` and
  ``save_pretrained``; the config folder is ``--config``, a folder beside the file, or the catalogue
  model's configs found by the resolver (``models download KEY --config-only`` fetches them);
- ``big-lama.pt`` (the official LaMa checkpoint): handed to ``core.lama.convert.convert_lama_checkpoint``;
- any other pickle (``.ckpt``, ``.pt``, ``.bin``): refused, since loading one can run arbitrary code.

The result is written to a temporary folder next to the destination and renamed into place only once
the resolver accepts it, so a failed import leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from core.contract.catalog import CATALOG, by_name

from .hub_plan import PICKLE_SUFFIXES

LAMA_NAMES = ("big-lama.pt", "big-lama.ckpt", "big_lama.pt")
SINGLE_FILE_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline",
                         "StableDiffusionImg2ImgPipeline", "StableDiffusionUpscalePipeline")


EXIT_ASK = 4   # the file cannot be placed without an answer (ImportRefused.ask names the option)


class ImportRefused(Exception):
    """One line for the user; ``ask`` names what the importer needs to be told (``prediction``)."""

    def __init__(self, message: str, code: int = 2, ask: str | None = None, choices: tuple[str, ...] = ()):
        super().__init__(message)
        self.code = code
        self.ask = ask
        self.choices = choices


def _say(log, msg):
    if log:
        log(msg)


def import_model(path: Path, *, name: str | None = None, config: Path | None = None, models_dir: Path | None = None,
                 force: bool = False, log=None, prediction: str | None = None, fetch_configs: bool = False) -> Path:
    """Import ``path``; returns the folder (or file) the engine will now find."""
    from core.contract import paths

    path = Path(path)
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    if not path.exists():
        raise ImportRefused(f"{path} does not exist")
    if path.is_file() and (path.name.lower() in LAMA_NAMES or path.stem.lower().replace("_", "-") == "big-lama"):
        return import_lama(path, models_dir, log=log)
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        raise ImportRefused(
            f"{path.name} is a pickle file ({path.suffix}): loading it can run arbitrary code, so it is not "
            f"imported. Use the .safetensors release of the same model (the SD2 repos publish one beside "
            f"each .ckpt).")
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return import_single_file(path, name=name, config=config, models_dir=models_dir, force=force, log=log,
                                  prediction=prediction, fetch_configs=fetch_configs)
    if path.is_dir():
        return import_folder(path, name=name, models_dir=models_dir, force=force, log=log)
    raise ImportRefused(f"{path} is neither a diffusers folder nor a .safetensors file")


# --- destination handling ------------------------------------------------------------------------

def _destination(models_dir: Path, name: str, force: bool) -> Path:
    if "/" in name or "\\" in name or name in ("", ".", "..", "configs"):
        raise ImportRefused(f"--name {name!r} must be a plain folder name")
    dst = models_dir / name
    if dst.exists() and not force:
        raise ImportRefused(f"{dst} already exists: pass --force to replace it, or --name to import beside it")
    return dst


def _commit(tmp: Path, dst: Path) -> Path:
    """Check ``tmp`` with the resolver, then move it to ``dst`` (replacing an older import)."""
    from core.models.resolver import ModelError, resolve

    try:
        resolve(str(tmp), models_dir=tmp.parent / "__none__")
    except ModelError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ImportRefused(f"the imported model does not load: {e}", 3) from None
    if dst.exists():
        old = dst.with_name(dst.name + ".dd-old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dst)
    return dst


def _tmp_beside(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dst.name}.importing-", dir=dst.parent))


# --- diffusers folders ---------------------------------------------------------------------------

def import_folder(src: Path, *, name: str | None, models_dir: Path, force: bool, log=None) -> Path:
    from core.models.resolver import ModelError, resolve

    try:
        found = resolve(str(src), models_dir=models_dir / "__none__")
    except ModelError as e:
        raise ImportRefused(str(e), 3) from None
    folder = found.path
    dst = _destination(models_dir, name or (found.spec.key if found.spec else src.name), force)
    if folder.resolve() == dst.resolve():
        raise ImportRefused(f"{src} is already the app's model folder {dst}")
    tmp = _tmp_beside(dst)
    copied = 0
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        if f.suffix.lower() in PICKLE_SUFFIXES or f.suffix.lower() in (".msgpack", ".h5", ".onnx"):
            continue
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)  # follows the hub cache's links: a real copy
        copied += f.stat().st_size
    _say(log, f"copied {copied / 1e6:.1f} MB of configs and safetensors from {folder}")
    return _commit(tmp, dst)


# --- single files --------------------------------------------------------------------------------

def _file_dtype(path: Path) -> str:
    """The dominant floating dtype of a safetensors file, read from its header (no tensor loaded)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    counts: dict[str, int] = {}
    for k, v in header.items():
        if k != "__metadata__" and v.get("dtype") in ("F16", "BF16", "F32"):
            counts[v["dtype"]] = counts.get(v["dtype"], 0) + 1
    best = max(counts, key=counts.get) if counts else "F32"
    return {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}[best]


def find_config(file: Path, spec, config: Path | None, models_dir: Path) -> Path | None:
    if config is not None:
        if not (config / "model_index.json").is_file():
            raise ImportRefused(f"--config {config} is not a diffusers config folder (no model_index.json)")
        return config
    sibling = file.with_suffix("")
    if (sibling / "model_index.json").is_file():
        return sibling
    if spec is not None:
        from core.models.resolver import _config_folders

        found = _config_folders(spec, models_dir, None)
        return found[0] if found else None
    return None


def import_single_file(file: Path, *, name: str | None, config: Path | None, models_dir: Path, force: bool,
                       log=None, prediction: str | None = None, fetch_configs: bool = False) -> Path:
    from core.models import env

    from . import checkpoint

    spec = by_name(name) if name else None
    official = next((s for s in CATALOG.values() if file.name in s.single_files), None)
    spec = spec or official
    try:
        found = checkpoint.detect(file)
        detected = checkpoint.catalogue_key(found, prediction) if config is None else None
    except checkpoint.Unknown as e:
        raise ImportRefused(str(e), EXIT_ASK if e.ask else 2, e.ask, e.choices) from None
    if detected is not None:      # the architecture from the tensors' shapes decides which configs fit
        if spec is None or spec.key != detected:
            if spec is not None and spec.key in CATALOG and name == spec.key:
                raise ImportRefused(f"{file.name} is {CATALOG[detected].title} by its tensors, not "
                                    f"{spec.title}: import it under another --name")
            spec = CATALOG[detected]
        _say(log, f"{file.name}: {found.describe()} → {spec.title}")
    cfg = find_config(file, spec, config, models_dir)
    if cfg is None and fetch_configs and spec is not None:
        from .download import DownloadError, download_model

        _say(log, f"fetching the configs of {spec.key} (no weights)")
        try:
            download_model(spec, models_dir=models_dir, config_only=True, log=log)
        except DownloadError as e:
            raise ImportRefused(f"the configs of {spec.key} could not be fetched: {e}", 3) from None
        cfg = find_config(file, spec, config, models_dir)
    if cfg is None:
        what = spec.key if spec else "KEY"
        raise ImportRefused(
            f"{file.name} is a single-file checkpoint; converting it needs the model's config folder. Fetch the "
            f"configs once with `python -m installer models download {what} --config-only` (no weights), or pass "
            f"--config DIR (a diffusers folder of the same architecture)"
            + ("" if spec else ", and --name with the catalogue key (e.g. sd2-inpainting) or a new name"), 3)
    from core.models.resolver import identify

    pipeline, _cspec, _prediction = identify(cfg)
    problem = checkpoint.misfit(found, cfg)
    if problem:
        raise ImportRefused(f"{file.name} does not fit the configs of {cfg}: {problem}", 3)
    if pipeline not in SINGLE_FILE_PIPELINES:
        raise ImportRefused(f"{pipeline} has no single-file loader in diffusers; import a diffusers folder instead")
    # an official release keeps its catalogue name; any other file (a fine-tune) its own
    dst = _destination(models_dir, name or (official.key if official and spec is official else file.stem), force)
    env.apply()
    import torch

    from core.models.loader import pipeline_class, quiet_libraries

    quiet_libraries()
    dtype = _file_dtype(file)
    _say(log, f"converting {file.name} ({dtype}) with the configs of {cfg}")
    cls = pipeline_class(pipeline)
    kw = dict(config=str(cfg), local_files_only=True, dtype=getattr(torch, dtype))
    if pipeline != "StableDiffusionUpscalePipeline":
        kw.update(safety_checker=None, requires_safety_checker=False, feature_extractor=None)
    try:
        pipe = cls.from_single_file(str(file), **kw)
    except Exception as e:
        import logging

        logging.getLogger(__name__).info("converting %s failed: %s: %s", file, type(e).__name__, e)
        raise ImportRefused(f"{file.name} could not be converted with the configs of {cfg}: its tensors do not "
                            f"fit that model (another base model or a damaged file?)", 3) from None
    tmp = _tmp_beside(dst)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    from core.devtools.tiny_models import _fix_model_index

    _fix_model_index(tmp)
    notes = cfg / "diffusion_dock.json"
    if notes.is_file():
        shutil.copyfile(notes, tmp / notes.name)
    return _commit(tmp, dst)


# --- LaMa ----------------------------------------------------------------------------------------

LAMA_CONVERTER = "core.lama.convert"


def lama_destination(models_dir: Path) -> Path:
    try:
        from core.lama.weights import default_weights_path  # type: ignore[import-not-found]

        return Path(default_weights_path(models_dir))
    except ImportError:
        return models_dir / "big-lama" / "big-lama.safetensors"


def import_lama(src: Path, models_dir: Path, log=None) -> Path:
    """The official big-lama checkpoint is a pickle: only the engine's LaMa converter may read it
    (``torch.load(weights_only=True)``, never a plain unpickle) and write safetensors."""
    import importlib

    try:
        convert = importlib.import_module(LAMA_CONVERTER).convert_lama_checkpoint
    except (ImportError, AttributeError):
        raise ImportRefused(
            f"{src.name} is the LaMa checkpoint, but this engine has no LaMa converter yet "
            f"({LAMA_CONVERTER}.convert_lama_checkpoint is missing); update the engine and import it again", 3
        ) from None
    dst = lama_destination(models_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _say(log, f"converting {src.name} to {dst}")
    from core.models.resolver import ModelError

    try:
        result = convert(src, dst)
    except ModelError as e:  # a refused (unsafe or unrecognised) checkpoint: one clear line, no traceback
        raise ImportRefused(str(e), 3) from None
    return Path(result) if result else dst
