"""Loaded pipelines: resolve, load once, keep the most recently used ones."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .control import JobControl
from .device import DevicePolicy, current_policy
from .resolver import ResolvedModel, resolve


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    pipe: object
    variant: tuple = ()


class ModelManager:
    """Resolves and loads models for jobs; keeps up to ``capacity`` pipelines loaded (LRU)."""

    def __init__(self, policy: DevicePolicy | None = None, *, models_dir: Path | None = None,
                 hub_cache: Path | None = None, capacity: int = 2, config: Path | None = None):
        self._policy = policy
        self.config = config  # config folder for an explicitly named single-file model
        self.models_dir = models_dir
        self.hub_cache = hub_cache
        self.capacity = capacity
        self._loaded: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many pipelines were loaded from disk (for tests and benchmarks)

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
        key = (str(resolved.path), resolved.pipeline, without_depth_estimator)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            if control is not None:
                control.set_phase("loading")
            from .loader import load_pipeline

            while len(self._loaded) >= self.capacity:
                self._loaded.popitem(last=False)
            pipe = load_pipeline(resolved, self.policy, without_depth_estimator=without_depth_estimator)
            self.loads += 1
            loaded = LoadedModel(resolved, pipe, key)
            self._loaded[key] = loaded
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
                self._loaded.popitem(last=False)
            obj = load()
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
        with self._lock:
            for key, loaded in reversed(self._loaded.items()):
                if key[0] == str(resolved.path) and getattr(loaded.pipe, part, None) is not None:
                    self._loaded.move_to_end(key)
                    return loaded
            if control is not None:
                control.set_phase("loading")
            from .loader import load_depth_estimator

            while len(self._loaded) >= self.capacity:
                self._loaded.popitem(last=False)
            key = (str(resolved.path), part)
            loaded = LoadedModel(resolved, load_depth_estimator(resolved, self.policy), key)
            self.loads += 1
            self._loaded[key] = loaded
            return loaded

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
