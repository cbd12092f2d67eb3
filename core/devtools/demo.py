"""The headless demo on the sample image shipped in resources/: first Fill removes the red ball (a real
result with no SD2 weights: LaMa when installed, else OpenCV), then inpainting repaints it.

Inpainting uses the real stable-diffusion-2-inpainting when the resolver finds it; otherwise it builds
the tiny smoke-test models and says so plainly (their images are noise: they prove the pipeline runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..contract import paths

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
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
    from argparse import Namespace

    from ..cli import request_from_args, run_request
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
    args = Namespace(image=str(RESOURCES / "sample.png"), mask=str(RESOURCES / "sample_mask.png"), prompt=PROMPT,
                     negative="blurry, low quality", num_images=1, steps=steps, guidance=7.5, strength=1.0,
                     seed=1234, weighted=False, grow=8, feather=8, masked_content=None, model=None,
                     out=out_dir / "inpaint.png", quiet=False, device=None, dtype=None)
    req, has_alpha = request_from_args(args, "inpaint")
    say(f"inpainting the red ball in {RESOURCES / 'sample.png'}: \"{PROMPT}\"")
    return written + run_request(req, args, has_alpha, models=models)


def run_fill_step(out_dir: Path, models) -> list[Path]:
    """Fill: remove the red ball with no prompt (auto backend: LaMa if installed, else OpenCV)."""
    from argparse import Namespace

    from ..cli import request_from_args, run_request
    from ..contract.jobs import MODE_DEFAULTS
    from ..lama.weights import lama_installed

    backend = "LaMa" if lama_installed(models.models_dir) else "OpenCV (LaMa weights not installed)"
    say(f"fill: removing the red ball in {RESOURCES / 'sample.png'} with {backend}")
    args = Namespace(image=str(RESOURCES / "sample.png"), mask=str(RESOURCES / "sample_mask.png"),
                     backend="auto", model=None, out=out_dir / "fill.png", quiet=False, device=None, dtype=None,
                     **MODE_DEFAULTS["fill"])
    req, has_alpha = request_from_args(args, "fill")
    return run_request(req, args, has_alpha, models=models)
