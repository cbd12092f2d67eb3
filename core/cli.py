"""Command line: ``python -m core <job> ...`` and ``python -m core models``.

Conventions for every job: the paths written go to stdout (one per line), progress goes to stderr,
and bad input exits non-zero with one clear line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE, EXIT_MODEL, EXIT_CANCELLED, EXIT_FAILED = 2, 3, 4, 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _add_common(p: argparse.ArgumentParser, *, prompt: bool = True, images: bool = True,
                strength: bool = True, model: bool = True) -> None:
    if model:
        p.add_argument("--model", help="model folder, .safetensors file, hub id or catalogue key "
                                       "(default: the mode's catalogue model)")
        p.add_argument("--config", help="config folder for a single-file .safetensors model")
    if prompt:
        p.add_argument("--prompt", default="", help="what to paint")
        p.add_argument("--negative", default="", help="negative prompt")
        p.add_argument("--weighted", action="store_true", help="parse compel weights: (word)1.3, word++")
        p.add_argument("--steps", type=int, default=25, help="denoising steps, 1–512 (default 25)")
        p.add_argument("--guidance", type=float, default=7.5, help="guidance scale, 1–20 (default 7.5)")
        p.add_argument("--seed", type=int, default=None, help="seed ≥ 0 (default: random, reported)")
    if images:
        p.add_argument("--num-images", type=int, default=1, help="images to make, 1–4 (image i uses seed + i)")
    if strength:
        p.add_argument("--strength", type=float, default=None, help="0–1: how much to change (default 0.8)")
    p.add_argument("--out", required=True, type=Path, help="output image (extra images: OUT_2.png, ...)")
    p.add_argument("--device", choices=("cuda", "mps", "cpu"), help="override the device choice")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="override the dtype choice")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grow", type=int, default=8, help="px the model repaints beyond the selection (default 8)")
    p.add_argument("--feather", type=int, default=8, help="px of soft edge inside the selection (default 8)")
    p.add_argument("--no-color-match", action="store_true", help="do not match colours to the surroundings")


def build_parser() -> argparse.ArgumentParser:
    from .contract.jobs import MODE_DEFAULTS

    ap = argparse.ArgumentParser(prog="python -m core", description="Diffusion Dock engine: SD2 jobs on images.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inpaint", help="repaint the selected part of an image (stable-diffusion-2-inpainting)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size (white = repaint); default: whole image")
    _add_common(p)
    _add_region(p)
    p.add_argument("--masked-content", choices=("original", "fill", "noise"), default="original",
                   help="what the model starts from inside the selection (default original)")

    p = sub.add_parser("fill", help="remove the selection and fill it from its surroundings (LaMa or OpenCV)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", required=True, help="selection mask, same size (white = remove)")
    p.add_argument("--backend", choices=("auto", "opencv", "lama"), default="auto",
                   help="auto (default): LaMa when its weights are installed, else OpenCV")
    p.add_argument("--model", help="LaMa weights (.safetensors file or folder); implies --backend lama")
    p.add_argument("--grow", type=int, default=MODE_DEFAULTS["fill"]["grow"],
                   help="px beyond the selection the fill ignores, so no fringe of the object is copied (default 4)")
    p.add_argument("--feather", type=int, default=MODE_DEFAULTS["fill"]["feather"],
                   help="px of soft edge inside the selection (default 0)")
    _add_common(p, prompt=False, images=False, strength=False, model=False)

    p = sub.add_parser("restyle", help="repaint the image or the selection, keeping its depth (stable-diffusion-2-depth)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size (white = restyle); default: whole image")
    p.add_argument("--depth", help="depth image, same size (white = near); default: estimated with DPT-hybrid")
    _add_common(p)
    _add_region(p)

    p = sub.add_parser("depth", help="estimate the depth of an image (white = near), as a 16-bit grayscale PNG")
    p.add_argument("--image", required=True, help="input image")
    _add_common(p, prompt=False, images=False, strength=False)

    p = sub.add_parser("upscale", help="upscale an image 4x, in tiles (stable-diffusion-x4-upscaler)")
    p.add_argument("--image", required=True, help="input image (at most 4096 px a side)")
    p.add_argument("--mask", help="selection mask, same size: only the selection is upscaled by the model, the "
                                  "rest is a plain Lanczos 4x")
    _add_common(p, images=False, strength=False)
    p.add_argument("--noise-level", type=int, default=20, help="noise added to the input, 0–350 (default 20)")
    p.add_argument("--tile", type=int, default=128, help="tile side in input px, 64–512 (default 128)")
    p.add_argument("--feather", type=int, default=8, help="input px of soft edge inside the selection (default 8)")

    p = sub.add_parser("generate", help="text-to-image, or image-to-image with --image "
                                        "(stable-diffusion-2-1 or 2-1-base)")
    p.add_argument("--width", type=int, help="width in px, a multiple of 8 in 64–8192 (default with --image: its)")
    p.add_argument("--height", type=int, help="height in px, a multiple of 8 in 64–8192 (default with --image: its)")
    p.add_argument("--image", help="start from this image (image-to-image, with --strength)")
    _add_common(p)

    p = sub.add_parser("models", help="list the models the resolver finds")
    p.add_argument("--models-dir", type=Path, help="app models folder to search (default: platformdirs)")

    p = sub.add_parser("serve", help="share one engine over the network (remote mode: token, optional TLS)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on, e.g. 127.0.0.1:7860")
    p.add_argument("--cert", help="TLS certificate (PEM); with --key the connection is encrypted")
    p.add_argument("--key", help="TLS private key (PEM)")
    from .engine.stdio import add_engine_options

    add_engine_options(p)

    p = sub.add_parser("demo", help="inpaint the sample image in resources/ (tiny smoke models if SD2 is absent)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 25, 4 with smoke models)")
    return ap


def _progress_bar(quiet: bool):
    """A (callback, close) pair drawing a tqdm bar on stderr, created at the first report."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    state = {}

    def on_progress(step, total, phase):
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total or None, file=sys.stderr, unit="step", dynamic_ncols=True,
                                      leave=False)
        if total and bar.total != total:
            bar.reset(total=total)
        bar.set_description(phase, refresh=False)
        bar.n = step
        bar.refresh()

    def close():
        if "bar" in state:
            state["bar"].close()

    return on_progress, close


def request_from_args(args, mode: str):
    """Build a JobRequest from parsed arguments (files are read here)."""
    from .contract.jobs import JobRequest, Options, Params
    from .raster.files import read_depth, read_image, read_mask

    image = mask = depth = None
    has_alpha = mode != "generate"  # text-to-image paints opaque pictures
    if getattr(args, "image", None):
        image, has_alpha = read_image(args.image, "image")
        if mode == "depth" and image.format == "RGBA_U8":  # widen, so the depth keeps 16 bits
            image = _widen(image)
        if mode == "generate":
            for name, given, own in (("width", args.width, image.width), ("height", args.height, image.height)):
                if given is not None and given != own:
                    raise CliError(f"--{name} {given} differs from the image's {name} {own}: image-to-image "
                                   f"keeps the image's size; leave --{name} out")
            args.width = args.height = None
    size = (image.width, image.height) if image else None
    if getattr(args, "mask", None):
        if image is None:
            raise CliError("--mask needs --image")
        mask = read_mask(args.mask, size)
    if getattr(args, "depth", None):
        depth = read_depth(args.depth, size)
    params = Params(
        prompt=getattr(args, "prompt", "") or "", negative_prompt=getattr(args, "negative", "") or "",
        num_images=getattr(args, "num_images", 1), steps=getattr(args, "steps", 25),
        guidance=getattr(args, "guidance", 7.5),
        strength=args.strength if getattr(args, "strength", None) is not None else 0.8,
        seed=getattr(args, "seed", None), weighted=getattr(args, "weighted", False))
    opt = {}
    for name in ("grow", "feather", "masked_content", "noise_level", "tile", "width", "height", "backend"):
        if getattr(args, name, None) is not None:
            opt[name] = getattr(args, name)
    if getattr(args, "no_color_match", False):
        opt["color_match"] = False
    if depth is not None:
        opt["depth_source"] = "given"
    req = JobRequest(mode, params, Options(**opt), model=getattr(args, "model", None), image=image, mask=mask,
                     depth=depth)
    return req, has_alpha


def _widen(image):
    """An RGBA_U8 buffer as RGBA_U16 (exact: v × 257)."""
    import numpy as np

    from .contract.jobs import ImageBuffer

    a = np.frombuffer(image.data, np.uint8).astype("<u2") * 257
    return ImageBuffer(image.width, image.height, "RGBA_U16", a.tobytes(), image.linear)


def run_request(req, args, has_alpha: bool, models=None) -> list[Path]:
    """Run a job in this process and write its outputs; returns the paths written."""
    from .contract.jobcontrol import JobControl
    from .models.manager import ModelManager
    from .pipelines import regionjob
    from .pipelines.runner import run_job
    from .raster.files import numbered, write_image

    if models is None:
        from .models.device import choose_policy, probe

        try:
            policy = choose_policy(probe(), args.device, args.dtype)
        except ValueError as e:
            raise CliError(str(e)) from None
        models = ModelManager(policy, config=getattr(args, "config", None))
    on_progress, close = _progress_bar(getattr(args, "quiet", False))
    try:
        result = run_job(req, models, JobControl(on_progress=on_progress))
    finally:
        close()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    written = []
    for i, patch in enumerate(result.patches):
        out = numbered(args.out, i)
        if req.mode == "depth":
            from .raster.pixels import as_array

            write_image(out, as_array(patch.image)[..., :1], "GRAY_U16")
        elif req.mode == "upscale":
            from .pipelines.upscale import composite
            from .raster.pixels import as_array

            arr = composite(req, patch) if req.mask is not None else as_array(patch.image)
            write_image(out, arr, req.image.format, keep_alpha=has_alpha)
        elif req.image is not None and patch.image.format != "GRAY_U16":
            arr = regionjob.composite(req, patch)
            write_image(out, arr, req.image.format, keep_alpha=has_alpha)
        else:
            from .raster.pixels import as_array

            write_image(out, as_array(patch.image), patch.image.format, keep_alpha=has_alpha)
        written.append(out)
        print(f"seed {patch.seed}: {out}" if patch.seed is not None else f"{result.model}: {out}", file=sys.stderr)
    return written


def cmd_models(args) -> int:
    from .contract import paths
    from .contract.catalog import CATALOG
    from .models.resolver import ModelError, find_installed, resolve

    models_dir = args.models_dir or paths.models_dir()
    print(f"models folder: {models_dir}")
    print(f"Hugging Face cache: {paths.hf_hub_cache()}")
    for spec in CATALOG.values():
        try:
            r = resolve(spec.key, models_dir=models_dir)
            print(f"  found    {spec.key:<16} {r.path}  [{r.source}, {r.prediction}, {r.native}px]")
        except ModelError as e:
            print(f"  missing  {spec.key:<16} {spec.repo_id}  -> {spec.install_hint()}")
            del e
    from .lama.weights import find_weights, install_hint

    try:
        print(f"  found    {'big-lama':<16} {find_weights(None, models_dir)}  [fill]")
    except ModelError:
        print(f"  missing  {'big-lama':<16} (fill works with OpenCV without it)  -> {install_hint()}")
    others = [r for r in find_installed(models_dir) if r.spec is None or r.name not in CATALOG]
    for r in others:
        print(f"  found    {r.name:<16} {r.path}  [{r.source}, {r.pipeline}, {r.prediction}]")
    return 0


def main(argv=None) -> int:
    from .engine import env

    env.apply()
    args = build_parser().parse_args(argv)
    from .contract.jobcontrol import Cancelled
    from .contract.params import ValidationError
    from .models.resolver import ModelError

    try:
        if args.command == "models":
            return cmd_models(args)
        if args.command == "serve":
            from .engine.serve import run

            return run(args)
        if args.command == "demo":
            from .devtools.demo import run_demo

            for path in run_demo(args.out, steps=args.steps):
                print(path)
            return 0
        req, has_alpha = request_from_args(args, args.command)
        for path in run_request(req, args, has_alpha):
            print(path)
        return 0
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_MODEL
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
