"""Loaded pipelines: resolve, load once, keep the most recently used ones.

Components that are byte-identical across models (all SD2 models share the text encoder and the
tokenizer, the 512 models share their VAE) are loaded once and handed to later pipelines as
``from_pretrained`` overrides.  Identity is a fingerprint of the component folder: the configs and
tokenizer files, and for each weight file its Hugging Face blob hash (the file name under ``blobs/``
is the file's sha256) or else its own sha256, computed once and remembered by size and mtime.

Before a load the manager compares the memory the new weights need with what is available and
unloads the least recently used pipelines first; an out-of-memory error while loading or running
unloads every cached pipeline and retries once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..contract.catalog import CATALOG, MODE_MODELS, TINY_VAE
from ..contract.jobcontrol import JobControl
from ..contract.params import ValidationError
from .device import DevicePolicy, current_policy
from .memory import GiB, OutOfMemory, available_memory, free_memory, is_out_of_memory, retry_after_unloading
from .resolver import ModelError, ResolvedModel, resolve
from .weights import FingerprintCache, estimate_weight_bytes

log = logging.getLogger(__name__)

# Components loaded once and shared when their files are identical.
SHARED_COMPONENTS = ("text_encoder", "tokenizer", "vae")


@dataclass
class LoadedModel:
    resolved: ResolvedModel | None   # None for models that are not diffusers pipelines (get_other)
    pipe: object
    variant: tuple = ()
    shared: tuple[str, ...] = ()    # components this pipeline got from the shared cache


def check_fits(mode: str, resolved: ResolvedModel) -> None:
    """Refuse a model whose pipeline cannot do ``mode`` (an upscaler asked to inpaint, ...)."""
    specs = [CATALOG[k] for k in MODE_MODELS.get(mode, ())]
    distilled = resolved.spec is not None and resolved.spec.distilled
    if specs and (resolved.pipeline not in {s.pipeline for s in specs}
                  or resolved.spec is not None and distilled != any(s.distilled for s in specs)):
        what = resolved.spec.title if resolved.spec else resolved.pipeline or "an unknown pipeline"
        raise ValidationError("model", f"model {resolved.name} is {what}, which cannot {mode}; "
                                       f"{mode} needs {' or '.join(s.title for s in specs)}")


class ModelManager:
    """Resolves and loads models for jobs; keeps up to ``capacity`` pipelines loaded (LRU).

    ``on_status(dict)`` hears about loads and unloads: {"model", "path", "state" (loading | loaded |
    unloaded | failed), "shared", "seconds", "message"}.  ``available_memory()`` (bytes, or None when
    unknown) and ``reserve`` (bytes kept free for the job itself) drive unloading under pressure.
    """

    def __init__(self, policy: DevicePolicy | None = None, *, models_dir: Path | None = None,
                 hub_cache: Path | None = None, capacity: int = 2, config: Path | None = None,
                 on_status: Callable[[dict], None] | None = None,
                 available_memory: Callable[[], int | None] | None = None, reserve: int = GiB,
                 fingerprints: FingerprintCache | None = None, compile_gate=None):
        self._policy = policy
        self.config = config  # config folder for an explicitly named single-file model
        self.models_dir = models_dir
        self.hub_cache = hub_cache
        self.capacity = capacity
        self._loaded: OrderedDict = OrderedDict()
        self._components: dict[tuple, object] = {}
        self._tiny: dict[tuple, object] = {}      # the tiny autoencoder, when one was asked for
        self._lock = threading.RLock()
        self.loads = 0  # how many pipelines were loaded from disk (for tests and benchmarks)
        self.on_status = on_status
        self._available = available_memory
        self.reserve = reserve
        self.fingerprints = fingerprints or FingerprintCache.default()
        # The engine's gate (core/models/compile_gate.py): UNets compile only while no job runs.
        self.compile_gate = compile_gate

    @property
    def policy(self) -> DevicePolicy:
        if self._policy is None:
            self._policy = current_policy()
        return self._policy

    def resolve(self, mode: str, name: str | None = None) -> ResolvedModel:
        return resolve(name, mode, config=self.config if name else None, models_dir=self.models_dir,
                       hub_cache=self.hub_cache)

    def get(self, mode: str, name: str | None = None, *, control: JobControl | None = None,
            without_depth_estimator: bool = False) -> LoadedModel:
        resolved = self.resolve(mode, name)
        check_fits(mode, resolved)
        key = (str(resolved.path), resolved.pipeline, without_depth_estimator)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            if control is not None:
                control.set_phase("loading")
            while len(self._loaded) >= self.capacity:
                self._unload_oldest()
            shared_keys = self._shared_keys(resolved)
            self._make_room(resolved, shared_keys)
            self._status(resolved, "loading")
            t0 = time.perf_counter()
            try:
                loaded = self._load(resolved, key, shared_keys, without_depth_estimator)
            except Exception as e:
                if not is_out_of_memory(e):
                    self._status(resolved, "failed", message=_said(e))
                    raise
                log.warning("out of memory loading %s: unloading every cached model and retrying", resolved.name)
                self.unload_all()
                shared_keys = self._shared_keys(resolved)
                try:
                    loaded = self._load(resolved, key, shared_keys, without_depth_estimator)
                except Exception as e2:
                    self._status(resolved, "failed", message=_said(e2))
                    if is_out_of_memory(e2):
                        raise OutOfMemory(f"not enough memory to load {resolved.name}, even with every other "
                                          f"model unloaded") from e2
                    raise
            self._status(resolved, "loaded", shared=list(loaded.shared),
                         seconds=round(time.perf_counter() - t0, 3))
            return loaded

    def get_other(self, key: tuple, load, *, control: JobControl | None = None):
        """A model that is not a diffusers pipeline (e.g. LaMa), made by ``load()`` once and kept in
        the same LRU as the pipelines.  ``key`` must identify the file and device."""
        key = ("other", *key)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key].pipe
            if control is not None:
                control.set_phase("loading")
            while len(self._loaded) >= self.capacity:
                self._unload_oldest()
            obj = self._retry_out_of_memory(load)
            self.loads += 1
            self._loaded[key] = LoadedModel(None, obj, key)
            return obj

    def get_part(self, mode: str, name: str | None = None, part: str = "depth_estimator", *,
                 control: JobControl | None = None) -> LoadedModel:
        """One part of a model (only ``depth_estimator`` so far: depth maps need nothing else).
        A loaded pipeline that has the part serves; otherwise the part is loaded alone and kept like
        a pipeline.  ``.pipe`` has the part as an attribute either way."""
        if part != "depth_estimator":
            raise ValueError(f"unknown model part {part!r}")
        resolved = self.resolve(mode, name)
        check_fits(mode, resolved)
        with self._lock:
            for key, loaded in reversed(self._loaded.items()):
                if key[0] == str(resolved.path) and getattr(loaded.pipe, part, None) is not None:
                    self._loaded.move_to_end(key)
                    return loaded
            if control is not None:
                control.set_phase("loading")
            from .loader import load_depth_estimator

            while len(self._loaded) >= self.capacity:
                self._unload_oldest()
            key = (str(resolved.path), part)
            self._status(resolved, "loading")
            part_obj = self._retry_out_of_memory(lambda: load_depth_estimator(resolved, self.policy))
            loaded = LoadedModel(resolved, part_obj, key)
            self.loads += 1
            self._loaded[key] = loaded
            self._status(resolved, "loaded")
            return loaded

    def tiny_vae(self):
        """The tiny autoencoder (TAESD) when it is installed, loaded once and kept like a model; None
        when it is not (previews then use the linear projection, and jobs the full VAE)."""
        from .resolver import ModelError

        try:
            resolved = resolve(TINY_VAE, models_dir=self.models_dir, hub_cache=self.hub_cache)
        except ModelError:
            return None

        def load():
            from .loader import load_tiny_vae

            return load_tiny_vae(resolved, self.policy)

        # Kept beside the LRU of pipelines, not in it: a few MB must not push a pipeline out.
        key = (str(resolved.path), self.policy.device, self.policy.vae_dtype)
        with self._lock:
            if key not in self._tiny:
                self._tiny.clear()
                self._tiny[key] = self._retry_out_of_memory(load)
            return self._tiny[key]

    def _retry_out_of_memory(self, load):
        """``load()``; on out-of-memory unload every cached model and try once more."""
        return retry_after_unloading(load, self.unload_all, what="while loading",
                                     failed="not enough memory to load the model, even with every other model "
                                            "unloaded")

    def _load(self, resolved: ResolvedModel, key, shared_keys: dict, without_depth_estimator: bool) -> LoadedModel:
        from .loader import load_pipeline

        reuse = {c: self._components[k] for c, k in shared_keys.items() if k in self._components}
        pipe = load_pipeline(resolved, self.policy, without_depth_estimator=without_depth_estimator,
                             components=reuse or None)
        self.loads += 1
        if self.policy.compile:
            self._compile_unet(resolved, pipe.unet)
        for comp, k in shared_keys.items():
            module = getattr(pipe, comp, None)
            if module is not None:
                self._components.setdefault(k, module)
        loaded = LoadedModel(resolved, pipe, key, tuple(sorted(reuse)))
        self._loaded[key] = loaded
        return loaded

    def _compile_unet(self, resolved: ResolvedModel, unet) -> None:
        """The UNet's calls go through a background-compiling dispatcher (core/models/unet_compile.py); its
        progress is reported like loads: compiling, compiled, compile_failed, compile_skipped.  A shape
        is compiled only when its compiled copy of the weights fits beside ``reserve``: unloading other
        models would not help, torch keeps a compiled graph's memory (``_warn_if_compiled``)."""
        from .unet_compile import install

        install(unet, has_room=self._fits, gate=self.compile_gate,
                on_status=lambda state, detail: self._status(resolved, state, message=detail))

    def _shared_keys(self, resolved: ResolvedModel) -> dict[str, tuple]:
        """Component -> cache key for the components of ``resolved`` that can be shared."""
        if resolved.single_file:
            return {}
        keys = {}
        for comp in SHARED_COMPONENTS:
            fp = self.fingerprints.component(resolved.path / comp, resolved.variant)
            if fp is None:
                continue
            if comp == "text_encoder":
                dtype = self.policy.dtype
            elif comp == "vae":
                upscaler = resolved.pipeline == "StableDiffusionUpscalePipeline"
                dtype = self.policy.upscaler_vae_dtype if upscaler else self.policy.vae_dtype
            else:
                dtype = ""
            keys[comp] = (comp, fp, dtype, self.policy.device)
        return keys

    # --- memory ---------------------------------------------------------------------------------

    def available_memory(self) -> int | None:
        if self._available is not None:
            return self._available()
        return available_memory(self.policy.device)

    def _make_room(self, resolved: ResolvedModel, shared_keys: dict) -> None:
        """Unload least recently used pipelines until the new weights fit beside ``reserve``."""
        skip = {c for c, k in shared_keys.items() if k in self._components}
        need = estimate_weight_bytes(resolved, self.policy, skip=skip)
        while self._loaded and not self._fits(need):
            log.info("memory: %s needs about %.2f GiB, %.2f GiB available: unloading the oldest model",
                     resolved.name, need / GiB, (self.available_memory() or 0) / GiB)
            self._unload_oldest()
        if not self._fits(need):
            log.warning("memory: %s needs about %.2f GiB and only %.2f GiB are available; trying anyway",
                        resolved.name, need / GiB, (self.available_memory() or 0) / GiB)

    def _fits(self, need: int) -> bool:
        """Whether ``need`` more bytes fit beside ``reserve`` in the available memory (True when unknown)."""
        avail = self.available_memory()
        return avail is None or need + self.reserve <= avail

    def _unload_oldest(self) -> None:
        _key, loaded = self._loaded.popitem(last=False)
        _warn_if_compiled(loaded)
        self._forget_unused_components()
        if loaded.resolved is not None:
            self._status(loaded.resolved, "unloaded")
        free_memory(self.policy.device)

    def unload(self, mode: str, name: str | None = None) -> int:
        """Unload every pipeline and part of the model ``name`` resolves to (a cluster replica does when
        Serve's model multiplexing drops it); returns how many were loaded."""
        path = str(self.resolve(mode, name).path)
        with self._lock:
            gone = [k for k in self._loaded if k[0] == path]
            for k in gone:
                loaded = self._loaded.pop(k)
                _warn_if_compiled(loaded)
                if loaded.resolved is not None:
                    self._status(loaded.resolved, "unloaded")
            if gone:
                self._forget_unused_components()
                free_memory(self.policy.device)
            return len(gone)

    def _forget_unused_components(self) -> None:
        used = {id(getattr(lm.pipe, c, None)) for lm in self._loaded.values() for c in SHARED_COMPONENTS}
        for k in [k for k, m in self._components.items() if id(m) not in used]:
            del self._components[k]

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._loaded.values())

    def unload_all(self) -> None:
        with self._lock:
            gone = list(self._loaded.values())
            self._loaded.clear()
            self._components.clear()
            self._tiny.clear()
            for loaded in gone:
                _warn_if_compiled(loaded)
                if loaded.resolved is not None:
                    self._status(loaded.resolved, "unloaded")
            free_memory(self._policy.device if self._policy else "cpu")

    def _status(self, resolved: ResolvedModel, state: str, **extra) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status({"model": resolved.name, "path": str(resolved.path), "state": state, **extra})
        except Exception:
            log.exception("model status callback failed")


def _said(e: Exception) -> str:
    """What a status message may say about a failed load: our own words (ModelError, ValidationError), never
    a library's exception text (that goes to the log with the job's failure)."""
    if isinstance(e, (ModelError, ValidationError)):
        return str(e)[:300]
    return "loading failed (an internal error, described in the engine's log)"


def _warn_if_compiled(loaded: LoadedModel) -> None:
    """torch 2.13 keeps a compiled UNet's graphs, and the weights they were made from, referenced after
    the model is dropped (even through torch._dynamo.reset()): say so, the engine's restart frees it."""
    from .unet_compile import installed

    unet = getattr(loaded.pipe, "unet", None)
    if unet is not None and installed(unet) is not None:
        log.warning("memory: %s had a compiled UNet; torch keeps its memory until the engine restarts",
                    loaded.resolved.name if loaded.resolved else "a model")
