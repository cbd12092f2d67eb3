"""``cluster.yaml``: the one file that describes the engine's Ray Serve deployment.

Every key is optional; an unknown key, or a value of the wrong kind, is refused with a message naming
the key and what it expects (``ConfigError``)::

    address: auto               # the Ray cluster: "auto" (this machine's), "HOST:6379", "ray://HOST:10001"
    app: diffusion-dock         # Serve application name
    replicas: 2                 # a fixed number of engine replicas, or autoscaling:
    # replicas: {min: 1, max: 8, initial: 2, target_jobs: 1}
    num_gpus: 1                 # GPUs per replica (0: CPU replicas, as in the tests)
    num_cpus: 1                 # CPUs per replica
    device: cuda                # the engine's --device in each replica (cuda | cpu | mps); default: probed
    dtype: null                 # the engine's --dtype; default: the device policy
    models: [sd2-inpainting]   # catalogue keys every replica loads at start
    max_models_per_replica: 2   # models a replica keeps loaded (Serve's multiplexing, LRU)
    models_dir: null            # the models folder on every node (default: the app's, DD_MODELS_DIR)
    max_queued_per_artist: 20   # more queued jobs from one artist are refused (queue_full)
    retries: 1                  # a job whose replica dies is run again from the start this many times
    runtime_env: {}             # handed to Ray as the replicas' runtime_env (env_vars, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..contract.catalog import CATALOG


class ConfigError(ValueError):
    """A bad ``cluster.yaml``: ``key`` is the dotted key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"cluster config: {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Replicas:
    """A fixed count (``min == max == initial``) or Serve's autoscaling limits."""

    min: int = 2
    max: int = 2
    initial: int = 2
    target_jobs: float = 1.0     # ongoing jobs per replica the autoscaler aims at

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def serve_options(self) -> dict:
        if self.fixed:
            return {"num_replicas": self.max}
        return {"autoscaling_config": {"min_replicas": self.min, "max_replicas": self.max,
                                       "initial_replicas": self.initial,
                                       "target_ongoing_requests": self.target_jobs,
                                       "upscale_delay_s": 5.0, "downscale_delay_s": 300.0}}


@dataclass(frozen=True)
class ClusterConfig:
    address: str = "auto"
    app: str = "diffusion-dock"
    replicas: Replicas = field(default_factory=Replicas)
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    device: str | None = None
    dtype: str | None = None
    models: tuple[str, ...] = ("sd2-inpainting",)
    max_models_per_replica: int = 2
    models_dir: str | None = None
    max_queued_per_artist: int = 20
    retries: int = 1
    runtime_env: dict = field(default_factory=dict)

    @property
    def max_in_flight(self) -> int:
        """Jobs the gateway hands to Serve at once: one per replica at the most replicas there can be.
        The rest wait in the gateway's fair queue, where their order is decided."""
        return self.replicas.max

    def replica_options(self) -> dict:
        """Keyword arguments of ``Deployment.options`` (Serve decides where each replica runs)."""
        actor = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}
        if self.runtime_env:
            actor["runtime_env"] = dict(self.runtime_env)
        return {**self.replicas.serve_options(), "ray_actor_options": actor, "max_ongoing_requests": 1,
                "health_check_period_s": 2.0, "health_check_timeout_s": 30.0,
                "graceful_shutdown_timeout_s": 10.0}

    def engine_settings(self) -> dict:
        """What each replica needs to build its engine (plain data: it travels to the replica)."""
        return {"device": self.device, "dtype": self.dtype, "models": list(self.models),
                "max_models": self.max_models_per_replica, "models_dir": self.models_dir}


def _whole(key: str, value, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(key, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _number(key: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(key, f"expected a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _text(key: str, value, choices=None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"expected text, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _replicas(value) -> Replicas:
    if type(value) is int:
        n = _whole("replicas", value, 1, 1024)
        return Replicas(n, n, n)
    if not isinstance(value, dict):
        raise ConfigError("replicas", f"expected a number or {{min, max, initial, target_jobs}}, got {value!r}")
    unknown = set(value) - {"min", "max", "initial", "target_jobs"}
    if unknown:
        raise ConfigError(f"replicas.{sorted(unknown)[0]}", "unknown key (known: min, max, initial, target_jobs)")
    low = _whole("replicas.min", value.get("min", 1), 0, 1024)
    high = _whole("replicas.max", value.get("max", max(low, 1)), max(low, 1), 1024)
    initial = _whole("replicas.initial", value.get("initial", low), low, high)
    target = _number("replicas.target_jobs", value.get("target_jobs", 1.0), 0.1, 64)
    return Replicas(low, high, initial, target)


def from_dict(d) -> ClusterConfig:
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError("(top level)", "expected a mapping of keys to values")
    known = {f.name for f in fields(ClusterConfig)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(str(sorted(unknown)[0]), f"unknown key (known: {', '.join(sorted(known))})")
    models = d.get("models", list(ClusterConfig.models))
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError("models", f"expected a list of catalogue keys, got {models!r}")
    for m in models:
        if m not in CATALOG:
            raise ConfigError("models", f"{m!r} is not a catalogue model (known: {', '.join(CATALOG)})")
    runtime_env = d.get("runtime_env") or {}
    if not isinstance(runtime_env, dict):
        raise ConfigError("runtime_env", f"expected a mapping (Ray's runtime_env), got {runtime_env!r}")
    return ClusterConfig(
        address=_text("address", d.get("address", "auto")) or "auto",
        app=_text("app", d.get("app", "diffusion-dock")) or "diffusion-dock",
        replicas=_replicas(d.get("replicas", 2)),
        num_gpus=_number("num_gpus", d.get("num_gpus", 1), 0, 64),
        num_cpus=_number("num_cpus", d.get("num_cpus", 1), 0, 1024),
        device=_text("device", d.get("device"), ("cuda", "cpu", "mps")),
        dtype=_text("dtype", d.get("dtype"), ("float32", "float16", "bfloat16")),
        models=tuple(models),
        max_models_per_replica=_whole("max_models_per_replica", d.get("max_models_per_replica", 2), 1, 64),
        models_dir=_text("models_dir", d.get("models_dir")),
        max_queued_per_artist=_whole("max_queued_per_artist", d.get("max_queued_per_artist", 20), 1, 100000),
        retries=_whole("retries", d.get("retries", 1), 0, 10),
        runtime_env=runtime_env,
    )


def load(path) -> ClusterConfig:
    """The config in ``path`` (YAML, or JSON), or the defaults when ``path`` is None."""
    if path is None:
        return ClusterConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("(file)", f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        import yaml
    except ImportError:
        import json

        try:
            return from_dict(json.loads(text))
        except ValueError:
            raise ConfigError("(file)", "PyYAML is missing: write the config as JSON or install the "
                                        "cluster extra") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("(file)", f"{path} is not valid YAML{where}") from None
    return from_dict(data)
