"""The headless demo on the sample image shipped in resources/: first Fill removes the red ball (a real
result with no SD2 weights: LaMa when installed, else the patch fill), then inpainting repaints it.

Inpainting uses the real stable-diffusion-2-inpainting when the resolver finds it; otherwise it builds
the tiny smoke-test models and says so plainly (their images are noise: they prove the pipeline runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..contract import paths

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
SAMPLE, SAMPLE_MASK = RESOURCES / "sample.png", RESOURCES / "sample_mask.png"
PROMPT = "a wooden bench in a green meadow, soft afternoon light"


def smoke_models_dir() -> Path:
    return paths.cache_dir() / "smoke-models"


def ensure_smoke_models(kinds=("inpaint",)) -> Path:
    from .tiny_models import build_all

    root = smoke_models_dir()
    build_all(root, kinds=kinds)
    return root


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out_dir: Path, steps: int | None = None) -> list[Path]:
    from ..contract.jobs import Options, Params
    from ..jobfiles import request_from_files, run_files
    from ..models.device import current_policy
    from ..models.manager import ModelManager
    from ..models.resolver import ModelNotFound, resolve

    out_dir = Path(out_dir)
    policy = current_policy()
    say(f"device: {policy.device}, dtype {policy.dtype} ({policy.reason})")
    written = run_fill_step(out_dir, ModelManager(policy))
    try:
        model = resolve(None, "inpaint")
        models = ModelManager(policy)
        say(f"using {model.describe()}")
        steps = steps or 25
    except ModelNotFound:
        say("=" * 78)
        say("SD2 inpainting weights are not installed, so this demo uses TINY RANDOM SMOKE-TEST MODELS:")
        say("the pipeline really runs, but the images it paints are NOISE.")
        say("Install the real model with: python -m installer models download sd2-inpainting")
        say("=" * 78)
        models = ModelManager(policy, models_dir=ensure_smoke_models(), hub_cache=Path("/nonexistent"))
        steps = steps or 4
    params = Params(prompt=PROMPT, negative_prompt="blurry, low quality", steps=steps, strength=1.0, seed=1234)
    job = request_from_files("inpaint", params, Options(), image=SAMPLE, mask=SAMPLE_MASK)
    say(f"inpainting the red ball in {SAMPLE}: \"{PROMPT}\"")
    return written + run_files(job, out_dir / "inpaint.png", models)


def run_fill_step(out_dir: Path, models) -> list[Path]:
    """Fill: remove the red ball with no prompt (auto backend: LaMa if installed, else the patch fill)."""
    from ..contract.jobs import Params, default_options
    from ..jobfiles import request_from_files, run_files
    from ..lama.weights import lama_installed

    backend = "LaMa" if lama_installed(models.models_dir) else "the patch fill (LaMa weights not installed)"
    say(f"fill: removing the red ball in {SAMPLE} with {backend}")
    job = request_from_files("fill", Params(), default_options("fill"), image=SAMPLE, mask=SAMPLE_MASK)
    return run_files(job, out_dir / "fill.png", models)
