"""Find a model on disk, never on the network.

Search order for a model name (catalogue key, hub id) or a mode's default:
  1. an explicit folder or file given by the user;
  2. the app's models folder (``core.contract.paths.models_dir``);
  3. the standard Hugging Face cache (``$HF_HOME/hub/models--org--name/snapshots/<rev>``);
  4. a single ``.safetensors`` file together with a config folder.

Pickle files (``.ckpt``, ``.pt``, ``.bin``) are refused: loading one can run arbitrary code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..contract import paths
from ..contract.catalog import CATALOG, MODE_MODELS, ModelSpec, by_name, by_pipeline
from .hub import hf_hub_cache

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "depth_estimator")


class ModelError(Exception):
    code = "model_error"


class ModelNotFound(ModelError):
    code = "model_missing"


class UnsafeModelFile(ModelError):
    code = "unsafe_model_file"


@dataclass(frozen=True)
class ResolvedModel:
    name: str                   # catalogue key when known, else what the user gave
    spec: ModelSpec | None
    path: Path                  # diffusers folder, or the single .safetensors file
    source: str                 # explicit | models-dir | hf-cache | single-file
    pipeline: str               # diffusers pipeline class name
    prediction: str             # from the scheduler config
    config: Path | None = None  # config folder of a single file
    variant: str | None = None  # "fp16" when only fp16 weights are present
    native_override: int | None = None  # from the folder's diffusion_dock.json, if any

    @property
    def single_file(self) -> bool:
        return self.config is not None

    @property
    def native(self) -> int:
        """Native resolution: the folder's ``diffusion_dock.json`` {"native_resolution": N} if present
        (fine-tunes at other sizes, the test models), else the catalogue's, else by prediction type."""
        if self.native_override:
            return self.native_override
        if self.spec is not None:
            return self.spec.native
        return 768 if self.prediction == "v_prediction" else 512

    def describe(self) -> str:
        kind = "single file" if self.single_file else "folder"
        return f"{self.name}: {self.path} ({kind}, {self.source}, {self.pipeline}, {self.prediction})"


def pickle_refusal(path: Path) -> UnsafeModelFile:
    return UnsafeModelFile(
        f"{path} is a pickle file ({path.suffix}): loading it could run arbitrary code, so it is refused. "
        f"Use the .safetensors version of the model (the SD2 repos publish one beside each .ckpt); "
        f"`python -m installer models import FILE.safetensors` converts a single-file checkpoint.")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# "stable_diffusion": a diffusers pipeline module (older folders name the safety checker so; it is never loaded)
LIBRARIES = ("diffusers", "transformers", "stable_diffusion")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "scheduler_config.json")
_CODE_KEYS = ("auto_map", "custom_pipeline", "_custom_pipeline")


def code_refusal(folder: Path, what: str) -> UnsafeModelFile:
    return UnsafeModelFile(f"{folder} is refused: {what}. Diffusion Dock never runs code that comes with a "
                           f"model; use the model's plain diffusers folder (configs and .safetensors weights only)")


def _check_no_code(folder: Path, index: dict) -> None:
    """Refuse a folder that could make diffusers or transformers import code of its own: Python files,
    components from other libraries than diffusers and transformers, or configs that map classes to
    code (``auto_map``, custom pipelines).  Loading passes trust_remote_code=False as well."""
    if not isinstance(index.get("_class_name"), str) or not _IDENTIFIER.match(index["_class_name"]):
        raise code_refusal(folder, "its model_index.json does not name a diffusers pipeline class")
    folders = [folder]
    for comp, entry in index.items():
        if comp.startswith("_") or not isinstance(entry, list):
            continue
        if entry in ([None, None], [None]) or (len(entry) == 2 and entry[0] is None):
            continue
        if (len(entry) != 2 or entry[0] not in LIBRARIES or not isinstance(entry[1], str)
                or not _IDENTIFIER.match(entry[1])):
            raise code_refusal(folder, f"its component {comp[:40]!r} is not a diffusers or transformers class")
        folders.append(folder / comp)
    if any(k in index for k in _CODE_KEYS):
        raise code_refusal(folder, "its model_index.json names custom code")
    for d in folders:
        if not d.is_dir():
            continue
        if any(p.suffix == ".py" for p in d.iterdir()):
            raise code_refusal(folder, f"it holds Python code ({d.name}/*.py)")
        for name in _CONFIGS:
            cfg = _read_json(d / name) if (d / name).is_file() else {}
            if isinstance(cfg, dict) and any(k in cfg for k in _CODE_KEYS):
                raise code_refusal(folder, f"{d.name}/{name} maps classes to custom code")


def _weights_variant(folder: Path) -> tuple[bool, str | None]:
    """(complete, variant) for a diffusers folder; raise UnsafeModelFile if a component has only pickles
    or the folder carries code of its own."""
    index = _read_json(folder / "model_index.json")
    if not isinstance(index, dict):
        index = {}
    _check_no_code(folder, index)
    variant = None
    for comp in WEIGHT_COMPONENTS:
        entry = index.get(comp)
        if not entry or entry == [None, None] or not (isinstance(entry, list) and entry[0]):
            continue
        d = folder / comp
        files = [p.name for p in d.iterdir()] if d.is_dir() else []
        safes = [f for f in files if f.endswith(".safetensors") or f.endswith(".safetensors.index.json")]
        if not safes:
            if any(f.endswith(PICKLE_SUFFIXES) for f in files):
                raise pickle_refusal(d / next(f for f in files if f.endswith(PICKLE_SUFFIXES)))
            return False, None
        if not any(".fp16." not in f for f in safes):
            variant = "fp16"
    for comp, entry in index.items():   # any other component diffusers would load (never the safety checker)
        if comp in WEIGHT_COMPONENTS or comp == "safety_checker" or not (isinstance(entry, list) and entry
                                                                        and entry[0]):
            continue
        d = folder / comp
        files = [p.name for p in d.iterdir()] if d.is_dir() else []
        if not any(f.endswith(".safetensors") for f in files):
            pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
            if pickles:
                raise pickle_refusal(d / pickles[0])
    return True, variant


MODEL_NOTES = "diffusion_dock.json"


def _native_override(folder: Path) -> int | None:
    value = _read_json(folder / MODEL_NOTES).get("native_resolution")
    return int(value) if isinstance(value, int) and 64 <= value <= 4096 and value % 8 == 0 else None


def _prediction_of(folder: Path) -> str:
    sched = _read_json(folder / "scheduler" / "scheduler_config.json")
    return sched.get("prediction_type") or "epsilon"


def _scheduler_of(folder: Path) -> tuple[str, str]:
    """(scheduler class, timestep spacing) a pipeline folder names."""
    sched = _read_json(folder / "scheduler" / "scheduler_config.json")
    return str(sched.get("_class_name", "")), str(sched.get("timestep_spacing", ""))


def identify(folder: Path) -> tuple[str, ModelSpec | None, str]:
    """(pipeline class, catalogue spec or None, prediction type) of a diffusers folder (or of a single
    component's folder: its config.json names the model class)."""
    index = _read_json(folder / "model_index.json")
    if not index:
        component = str(_read_json(folder / "config.json").get("_class_name", ""))
        found = [s for s in by_pipeline(component) if s.component]
        return component, (found[0] if found else None), ""
    pipeline, candidates, prediction = _candidates(folder, index)
    if len(candidates) > 1:   # e.g. SD-Turbo beside 2.1-base: told apart by the scheduler it names
        sched = _scheduler_of(folder)
        candidates = ([c for c in candidates if c.scheduler == sched]
                      or [c for c in candidates if c.scheduler is None] or candidates)
    return pipeline, (candidates[0] if candidates else None), prediction


def _candidates(folder: Path, index: dict) -> tuple[str, list[ModelSpec], str]:
    """(pipeline class, the catalogue specs with its pipeline, UNet input and prediction type, prediction)."""
    pipeline = index.get("_class_name", "")
    in_ch = _read_json(folder / "unet" / "config.json").get("in_channels")
    prediction = _prediction_of(folder)
    candidates = by_pipeline(pipeline, in_ch)
    if len(candidates) > 1:
        candidates = [c for c in candidates if c.prediction == prediction] or candidates
    return pipeline, candidates, prediction


def _component_model(folder: Path, name: str | None, source: str, want: ModelSpec | None = None
                     ) -> ResolvedModel | None:
    """A single diffusers model (TAESD): config.json naming its class and safetensors weights beside it.
    A folder with only pickle weights is refused."""
    config = _read_json(folder / "config.json")
    cls = str(config.get("_class_name", ""))
    if not cls or (want is not None and cls != want.pipeline):
        return None
    files = [p.name for p in folder.iterdir() if p.is_file()]
    safes = [f for f in files if f.endswith(".safetensors")]
    if not safes:
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise pickle_refusal(folder / pickles[0])
        return None
    variant = "fp16" if not any(".fp16." not in f for f in safes) else None
    spec = want or next((s for s in by_pipeline(cls) if s.component), None)
    return ResolvedModel(name or (spec.key if spec else folder.name), spec, folder, source, cls, "", None,
                         variant, None)


def _folder_model(folder: Path, name: str | None, source: str, want: ModelSpec | None = None
                  ) -> ResolvedModel | None:
    if want is not None and want.component or want is None and (folder / "config.json").is_file() \
            and not (folder / "model_index.json").is_file():
        return _component_model(folder, name, source, want) if folder.is_dir() else None
    if not (folder / "model_index.json").is_file():
        return None
    complete, variant = _weights_variant(folder)
    if not complete:
        return None
    pipeline, spec, prediction = identify(folder)
    if want is not None:
        if pipeline != want.pipeline:
            return None
        # The folder of a catalogue model that its files fit is that model (SD-Turbo's folder with
        # another scheduler saved in it is still SD-Turbo); one they do not fit is what they say.
        spec = want if want in _candidates(folder, _read_json(folder / "model_index.json"))[1] else spec or want
    return ResolvedModel(name or (spec.key if spec else folder.name), spec, folder, source, pipeline,
                         prediction, None, variant, _native_override(folder))


def hub_snapshots(repo_id: str, hub_cache: Path | None = None) -> list[Path]:
    """Snapshot folders of ``repo_id`` in the HF cache, the one ``refs/main`` names first."""
    base = (hub_cache or hf_hub_cache()) / ("models--" + repo_id.replace("/", "--"))
    snaps = base / "snapshots"
    if not snaps.is_dir():
        return []
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    try:
        main = (base / "refs" / "main").read_text().strip()
        found.sort(key=lambda p: p.name != main)
    except OSError:
        pass
    return found


def _config_folders(spec: ModelSpec, models_dir: Path, hub_cache: Path | None) -> list[Path]:
    """Folders that hold a spec's configs (model_index.json), with or without weights."""
    cands = [models_dir / "configs" / spec.key, models_dir / spec.key,
             models_dir / spec.repo_id.split("/")[1], *hub_snapshots(spec.repo_id, hub_cache)]
    return [c for c in cands if (c / "model_index.json").is_file()]


def _single_file_model(file: Path, spec: ModelSpec | None, config: Path | None, models_dir: Path,
                       hub_cache: Path | None, source: str) -> ResolvedModel:
    if config is not None and not (config / "model_index.json").is_file():
        raise ModelNotFound(f"the config folder {config} has no model_index.json: expected a diffusers config "
                            f"folder, e.g. from `python -m installer models download KEY --config-only`")
    if config is None:
        sibling = file.with_suffix("")
        if (sibling / "model_index.json").is_file():
            config = sibling
        elif spec is not None:
            found = _config_folders(spec, models_dir, hub_cache)
            config = found[0] if found else None
    if config is None:
        what = spec.key if spec else "the model"
        raise ModelNotFound(
            f"{file} is a single-file checkpoint and needs a config folder (a diffusers folder with "
            f"model_index.json) to load offline. Put one beside it as {file.with_suffix('')}/, pass "
            f"--config DIR, or fetch the configs with `python -m installer models download {what} --config-only`.")
    pipeline, cspec, prediction = identify(config)
    return ResolvedModel(spec.key if spec else file.stem, spec or cspec, file, source, pipeline,
                         prediction, config, None, _native_override(config))


def _explicit(path: Path, config: Path | None, models_dir: Path, hub_cache: Path | None) -> ResolvedModel:
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise pickle_refusal(path)
        if path.suffix.lower() != ".safetensors":
            raise ModelNotFound(f"{path} is neither a diffusers folder nor a .safetensors file")
        spec = next((s for s in CATALOG.values() if path.name in s.single_files), None)
        return _single_file_model(path, spec, config, models_dir, hub_cache, "explicit")
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
            # A hub-cache repo folder (models--org--name) is accepted too.
            snaps = sorted(p for pat in ("*/model_index.json", "*/config.json")
                           for p in (path / "snapshots").glob(pat)) if (path / "snapshots").is_dir() else []
            if snaps:
                path = snaps[-1].parent
            else:
                raise ModelNotFound(f"{path} is not a diffusers model folder (no model_index.json)")
        found = _folder_model(path, None, "explicit")
        if found is None:
            raise ModelNotFound(f"{path} has a model_index.json but its weights are incomplete "
                                f"(no .safetensors for every component)")
        return found
    raise ModelNotFound(f"{path} does not exist")


CONTROLNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def controlnet_path(path: Path, names: tuple[str, ...] = ()) -> Path | None:
    """``path`` if it is a ControlNet we can read (a .safetensors file, a diffusers ControlNet folder),
    or the file named in ``names`` inside the folder ``path``; else None."""
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in CONTROLNET_WEIGHTS):
        return path
    return next((path / n for n in names if (path / n).is_file()), None) if path.is_dir() else None


def search_controlnet(spec: ModelSpec, models_dir: Path, hub_cache: Path | None) -> ResolvedModel | None:
    """A catalogue ControlNet (``core.models.controlnets``): ``<models dir>/<key>/`` holding its file or a
    diffusers ControlNet folder, the file itself in the models folder, or the file in the HF cache."""
    names = (*spec.files, *spec.single_files)
    found = None
    for cand in (models_dir / spec.key, *(models_dir / n for n in names)):
        if found is None and (p := controlnet_path(cand, names)) is not None:
            found = (p, "models-dir")
    for snap in hub_snapshots(spec.repo_id, hub_cache) if found is None else ():
        if found is None and (p := controlnet_path(snap, names)) is not None and p != snap:
            found = (p, "hf-cache")
    return None if found is None else ResolvedModel(spec.key, spec, found[0], found[1], spec.pipeline, "")


def _search_spec(spec: ModelSpec, models_dir: Path, hub_cache: Path | None) -> ResolvedModel | None:
    if spec.pipeline == "ControlNetModel":
        return search_controlnet(spec, models_dir, hub_cache)
    for folder in (models_dir / spec.key, models_dir / spec.repo_id.replace("/", "--"),
                   models_dir / spec.repo_id.split("/")[1]):
        found = _folder_model(folder, spec.key, "models-dir", spec)
        if found:
            return found
    for snap in hub_snapshots(spec.repo_id, hub_cache):
        found = _folder_model(snap, spec.key, "hf-cache", spec)
        if found:
            return found
    for fname in () if spec.component else (f"{spec.key}.safetensors", *spec.single_files):
        file = models_dir / fname
        if file.is_file():
            try:
                return _single_file_model(file, spec, None, models_dir, hub_cache, "single-file")
            except ModelNotFound:
                continue
    return None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or Path(name).suffix != "" or Path(name).exists()


# The name of a model installed in the models folder (its folder's name): no separators, no leading dot.
INSTALLED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")
REMOTE_MODEL_RULE = ("model must be the name of a model installed on the server: a catalogue key (such as "
                     "sd2-inpainting) or the name of a model in the server's models folder; a remote client "
                     "cannot name files or folders")


def _installed_folder(name: str, models_dir: Path) -> Path | None:
    """``models_dir/name`` when ``name`` is a plain name and that folder is a model (or LaMa's folder)."""
    if not INSTALLED_NAME.match(name) or ".." in name:
        return None
    folder = models_dir / name
    return folder if (folder / "model_index.json").is_file() else None


def check_remote_model(name, models_dir: Path | None = None) -> None:
    """What a remote client may give as ``model``: nothing (the mode's default), a catalogue key, LaMa's
    key, or the name of a model installed in the models folder.  Anything else, whether or not it exists
    on this machine, gets the same ValidationError, which says nothing about the server's files."""
    from ..contract.params import ValidationError

    if name is None or isinstance(name, str) and (name in CATALOG or name == LAMA_KEY):
        return
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    if isinstance(name, str) and _installed_folder(name, models_dir) is not None:
        return
    raise ValidationError("model", REMOTE_MODEL_RULE)


LAMA_KEY = "big-lama"


def resolve(name: str | None = None, mode: str | None = None, *, config: str | Path | None = None,
            models_dir: Path | None = None, hub_cache: Path | None = None) -> ResolvedModel:
    """Find a model by explicit path, catalogue key, hub id, or (``name=None``) the mode's default."""
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    config = Path(config).expanduser() if config else None
    if name:
        spec = by_name(name)
        installed = _installed_folder(name, models_dir) if spec is None else None
        if installed is not None:    # a model installed in the models folder, by its folder's name
            found = _folder_model(installed, name, "models-dir")
            if found is None:
                raise ModelNotFound(f"the model {name} in the models folder has incomplete weights (no "
                                    f".safetensors for every component): import it again")
            return found
        if spec is None and (_looks_like_path(name) or "/" not in name):
            return _explicit(Path(name).expanduser(), config, models_dir, hub_cache)
        if spec is None:  # an unknown hub id: look for it in the HF cache only
            for snap in hub_snapshots(name, hub_cache):
                found = _folder_model(snap, name, "hf-cache")
                if found:
                    return found
            raise ModelNotFound(
                f"Model {name} is not in the Hugging Face cache ({hub_cache or hf_hub_cache()}) and jobs "
                f"never download. Download it first, e.g. `huggingface-cli download {name}`.")
        specs = [spec]
    else:
        if mode not in MODE_MODELS or not MODE_MODELS[mode]:
            raise ModelNotFound(f"no model is needed or known for mode {mode!r}")
        specs = [CATALOG[k] for k in MODE_MODELS[mode]]
    for spec in specs:
        found = _search_spec(spec, models_dir, hub_cache)
        if found:
            return found
    spec = specs[0]
    others = f" (or {', '.join(s.key for s in specs[1:])})" if len(specs) > 1 else ""
    raise ModelNotFound(
        f"Model {spec.title} ({spec.repo_id}){others} is not installed. Looked in {models_dir} and the "
        f"Hugging Face cache {hub_cache or hf_hub_cache()}. Get it with: {spec.install_hint()}")


def find_installed(models_dir: Path | None = None, hub_cache: Path | None = None) -> list[ResolvedModel]:
    """Every catalogue model the resolver can find, plus other diffusers folders in the models folder."""
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    found: list[ResolvedModel] = []
    seen: set[Path] = set()
    for spec in CATALOG.values():
        try:
            r = _search_spec(spec, models_dir, hub_cache)
        except ModelError:
            r = None
        if r:
            found.append(r)
            seen.add(r.path.resolve())
    if models_dir.is_dir():
        for d in sorted(models_dir.iterdir()):
            if d.is_dir() and d.resolve() not in seen and d.name != "configs":
                try:
                    r = _folder_model(d, d.name, "models-dir")
                except ModelError:
                    r = None
                if r:
                    found.append(r)
    return found
