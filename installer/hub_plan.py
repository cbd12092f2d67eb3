"""Which files of a hub repo a pipeline needs: a pure decision from the repo's file list.

Only ``model_index.json``, the configs of the pipeline's components (scheduler, tokenizer, feature
extractor, each model's ``config.json``) and the safetensors weights of the model components; the fp16
variant of a component's weights where the repo has one.  Never a pickle (``.ckpt``, ``.bin``,
``.pt``), never the original single-file checkpoints at the repo root, never README or images.

A single model (``COMPONENT_CLASSES``: TAESD's ``AutoencoderTiny``) is a repo with ``config.json``
and its diffusers weights (``diffusion_pytorch_model[.fp16].safetensors``) at the root: those two
only, never the original ``taesd_*.pth`` files beside them.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
OTHER_WEIGHT_SUFFIXES = (".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".gguf")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "depth_estimator")
_COMMON = ("scheduler", "tokenizer", "text_encoder", "unet", "vae")
PIPELINE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "StableDiffusionInpaintPipeline": (*_COMMON, "feature_extractor"),
    "StableDiffusionPipeline": (*_COMMON, "feature_extractor"),
    "StableDiffusionImg2ImgPipeline": (*_COMMON, "feature_extractor"),
    "StableDiffusionDepth2ImgPipeline": (*_COMMON, "depth_estimator", "feature_extractor"),
    "StableDiffusionUpscalePipeline": (*_COMMON, "low_res_scheduler"),
}

# Single diffusers models downloaded on their own (no model_index.json): config.json + weights at the root.
COMPONENT_CLASSES = ("AutoencoderTiny",)
COMPONENT_WEIGHTS = "diffusion_pytorch_model"


@dataclass(frozen=True)
class RemoteFile:
    path: str                    # path in the repo, "/"-separated
    size: int | None = None      # bytes, from the hub's metadata
    sha256: str | None = None    # LFS files: sha256 of the content
    blob_id: str | None = None   # git blob id (sha1 of "blob <size>\0" + content) for files in git

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def is_weight(self) -> bool:
        return self.path.endswith(".safetensors")


class PlanError(Exception):
    pass


def allow_patterns(pipeline: str, weights: bool = True) -> list[str]:
    """The hub allow patterns of a pipeline (what ``--dry-run`` shows); ``plan_files`` refines them by variant."""
    if pipeline in COMPONENT_CLASSES:
        return ["config.json", "diffusion_dock.json"] + ([f"{COMPONENT_WEIGHTS}*.safetensors"] if weights else [])
    comps = PIPELINE_COMPONENTS.get(pipeline)
    if comps is None:
        raise PlanError(f"no download recipe for pipeline {pipeline}")
    pats = ["model_index.json", "diffusion_dock.json"]
    for c in comps:
        pats += [f"{c}/*.json", f"{c}/*.txt"]
        if weights and c in WEIGHT_COMPONENTS:
            pats.append(f"{c}/*.safetensors")
    return pats


def is_fp16(name: str) -> bool:
    """``model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors``, ``*.index.fp16.json``."""
    return bool(re.search(r"\.fp16[.-]", name))


def _is_weight_index(name: str) -> bool:
    return ".safetensors.index" in name


def _unsafe(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES + OTHER_WEIGHT_SUFFIXES)


def plan_files(pipeline: str, files: list[RemoteFile], *, weights: bool = True, prefer_fp16: bool = True,
               only: tuple[str, ...] = ()) -> list[RemoteFile]:
    """The files to fetch for ``pipeline`` from a repo listing ``files``, configs first.  ``only``: a
    single-file model (a ControlNet), exactly these safetensors files of the repo (its config is the
    engine's own), nothing else.

    Raises PlanError when the repo lacks model_index.json or safetensors weights for a component.
    """
    if only:
        return plan_single_files(files, only, weights)
    if pipeline in COMPONENT_CLASSES:
        return _plan_component(pipeline, files, weights=weights, prefer_fp16=prefer_fp16)
    pats = allow_patterns(pipeline, weights)
    chosen = [f for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in pats) and not _unsafe(f.path)
              and f.path.count("/") <= 1]
    # diffusion_dock.json: this project's notes on a model (native resolution of a fine-tune).
    if not any(f.path == "model_index.json" for f in chosen):
        raise PlanError("the repo has no model_index.json: it is not a diffusers pipeline")
    configs = [f for f in chosen if not (f.is_weight or _is_weight_index(f.path))]
    out = sorted(configs, key=lambda f: f.path)
    if not weights:
        return out
    present = {f.path.split("/")[0] for f in files if "/" in f.path}
    for comp in PIPELINE_COMPONENTS[pipeline]:
        if comp not in WEIGHT_COMPONENTS:
            continue
        comp_files = [f for f in chosen if f.path.startswith(comp + "/") and (f.is_weight or _is_weight_index(f.path))]
        if not any(f.is_weight for f in comp_files):
            if comp not in present:
                raise PlanError(f"the repo has no {comp}/ folder, which {pipeline} needs")
            pickles = [f.path for f in files if f.path.startswith(comp + "/") and _unsafe(f.path)]
            raise PlanError(f"the repo has no safetensors weights for {comp}"
                            + (f" (only {', '.join(pickles)}, pickle files that are refused)" if pickles else ""))
        half = [f for f in comp_files if is_fp16(f.path)]
        full = [f for f in comp_files if not is_fp16(f.path)]
        use = half if (prefer_fp16 and any(f.is_weight for f in half)) or not any(f.is_weight for f in full) else full
        # A sharded set needs its index; a single file must not drag the other variant's index along.
        shards = [f for f in use if f.is_weight]
        if len(shards) == 1:
            use = shards
        out += sorted(use, key=lambda f: f.path)
    return out


def plan_single_files(files: list[RemoteFile], only: tuple[str, ...], weights: bool = True) -> list[RemoteFile]:
    """The files named in ``only`` (safetensors only), or PlanError naming the one the repo lacks."""
    by_path = {f.path: f for f in files}
    out = []
    for name in only:
        if _unsafe(name) or not name.endswith(".safetensors"):
            raise PlanError(f"{name} is not a safetensors file; only safetensors are fetched")
        if name not in by_path:
            raise PlanError(f"the repo has no {name}")
        out.append(by_path[name])
    return out if weights else []


def _plan_component(model_class: str, files: list[RemoteFile], *, weights: bool, prefer_fp16: bool
                    ) -> list[RemoteFile]:
    """config.json (+ diffusion_dock.json) and one set of root weights of a single-model repo."""
    pats = allow_patterns(model_class, weights)
    chosen = [f for f in files if "/" not in f.path and not _unsafe(f.path)
              and any(fnmatch.fnmatchcase(f.path, p) for p in pats)]
    if not any(f.path == "config.json" for f in chosen):
        raise PlanError(f"the repo has no config.json at its root: it is not a diffusers {model_class}")
    out = sorted((f for f in chosen if not f.is_weight), key=lambda f: f.path)
    if not weights:
        return out
    found = [f for f in chosen if f.is_weight]
    if not found:
        pickles = [f.path for f in files if "/" not in f.path and _unsafe(f.path)]
        raise PlanError(f"the repo has no safetensors weights for {model_class}"
                        + (f" (only {', '.join(pickles)}, pickle files that are refused)" if pickles else ""))
    half = [f for f in found if is_fp16(f.path)]
    full = [f for f in found if not is_fp16(f.path)]
    return out + sorted(half if (prefer_fp16 and half) or not full else full, key=lambda f: f.path)


def total_size(files: list[RemoteFile]) -> int:
    return sum(f.size or 0 for f in files)


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"
