"""Command line: ``python -m core <job> ...`` and ``python -m core models``.

Every job: the paths written go to stdout (one per line), progress to stderr, bad input exits non-zero with one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .contract.controls import PREPROCESS_TYPES, parse_spec

EXIT_USAGE, EXIT_MODEL, EXIT_CANCELLED, EXIT_FAILED = 2, 3, 4, 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``error: ...``, exit 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def whole_number(text: str) -> int:
    """An argparse type: a whole number (one clear line when it is not one)."""
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {_shown(text)}") from None


def number(text: str) -> float:
    """An argparse type: a number (its range is checked with the other parameters; NaN fails there)."""
    try:
        return float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {_shown(text)}") from None


def aspect_ratio(text: str) -> tuple[int, int]:
    """An argparse type: W:H, two whole numbers above 0."""
    parts = text.strip().split(":")
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        w = h = 0
    if len(parts) != 2 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"expected W:H with two whole numbers above 0 (e.g. 16:9), got {_shown(text)}")
    return w, h


def lora_arg(text: str) -> tuple[str, float]:
    """``PATH[:WEIGHT]``: the weight follows the last colon when it is a number (``C:\\x.safetensors`` stays a path)."""
    path, sep, weight = text.rpartition(":")
    if sep and path and not weight.lower().endswith(".safetensors"):
        return path, number(weight)
    return text, 1.0


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
        p.add_argument("--steps", type=whole_number, default=25, help="denoising steps, 1–512 (default 25)")
        p.add_argument("--guidance", type=number, default=7.5, help="guidance scale, 1–20 (default 7.5)")
        p.add_argument("--seed", type=whole_number, default=None, help="seed ≥ 0 (default: random, reported)")
        p.add_argument("--lora", action="append", type=lora_arg, default=[], metavar="PATH[:WEIGHT]",
                       help="a LoRA .safetensors file (or the name of one in <models>/loras), weight −2–2 "
                            "(default 1); repeat for several")
        p.add_argument("--embedding", action="append", default=[], metavar="PATH",
                       help="a textual-inversion .safetensors file (or the name of one in <models>/embeddings); "
                            "its file name is the word that calls it in the prompt; repeat for several")
    if images:
        p.add_argument("--num-images", type=whole_number, default=1, help="images to make, 1–4 (image i uses seed + i)")
    if strength:
        p.add_argument("--strength", type=number, default=None, help="0–1: how much to change (default 0.8)")
    p.add_argument("--out", required=True, type=Path, help="output image (extra images: OUT_2.png, ...)")
    p.add_argument("--device", choices=("cuda", "mps", "cpu"), help="override the device choice")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="override the dtype choice")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="each output as a JSON line (path and provenance) on stdout")


def _add_controls(p: argparse.ArgumentParser) -> None:
    def control_spec(text: str):    # TYPE:IMAGE[:STRENGTH[:START:END]] (contract.controls.parse_spec)
        try:
            return parse_spec(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    p.add_argument("--control", action="append", type=control_spec, default=[], metavar="TYPE:IMAGE[:S[:START:END]]",
                   help="a control picture (the image's size, for expand also the grown canvas's; repeatable): TYPE "
                        "scribble, lineart, softedge, canny, depth, pose (SD 2.1 ControlNets) or reference (its look through attention, one); strength "
                        "S 0–2 (default 1); START:END the fraction of the steps it acts on (default 0:1)")


def _add_region(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grow", type=whole_number, default=8, help="px the model repaints beyond the selection (default 8)")
    p.add_argument("--feather", type=whole_number, default=8, help="px of soft edge inside the selection (default 8)")
    p.add_argument("--no-color-match", action="store_true", help="do not match colours to the surroundings")


def _add_sampler(p: argparse.ArgumentParser) -> None:
    from .contract.samplers import SAMPLER_CHOICES

    p.add_argument("--sampler", choices=SAMPLER_CHOICES, default="auto",
                   help="the diffusers scheduler to denoise with (default auto: the model's catalogue choice, "
                        "DPM++ 2M for SD2; 'model' is the one the model ships with)")


def _add_vae(p: argparse.ArgumentParser, default: str = "full") -> None:
    p.add_argument("--vae", choices=("full", "tiny"), default=default,
                   help=f"full: the model's VAE; tiny: TAESD encodes and decodes (faster; when installed, else the "
                        f"full VAE with a warning) (default {default})")


def build_parser() -> argparse.ArgumentParser:
    from .contract.jobs import FILL_BACKENDS, default_options

    fill = default_options("fill")

    ap = Parser(prog="python -m core", description="Diffusion Dock engine: SD2 jobs on images.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inpaint", help="repaint the selected part of an image (stable-diffusion-2-inpainting)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size (white = repaint); default: whole image")
    _add_common(p)
    _add_region(p)
    _add_sampler(p)
    p.add_argument("--masked-content", choices=("original", "fill", "noise"), default="original",
                   help="what the model starts from inside the selection (default original)")
    _add_vae(p)
    _add_controls(p)

    p = sub.add_parser("fill", help="remove the selection and fill it from its surroundings (LaMa, or patches without weights)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", required=True, help="selection mask, same size (white = remove)")
    p.add_argument("--backend", choices=FILL_BACKENDS, default="auto",
                   help="auto (default): LaMa when its weights are installed, else patch (texture-aware, no weights); opencv: Telea, smooth")
    p.add_argument("--model", help="LaMa weights (.safetensors file or folder); implies --backend lama")
    p.add_argument("--grow", type=whole_number, default=fill.grow,
                   help="px beyond the selection the fill ignores, so no fringe of the object is copied (default 4)")
    p.add_argument("--feather", type=whole_number, default=fill.feather,
                   help="px of soft edge inside the selection (default 0)")
    _add_common(p, prompt=False, images=False, strength=False, model=False)

    p = sub.add_parser("restyle", help="repaint the image or the selection, keeping its depth (stable-diffusion-2-depth)")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size (white = restyle); default: whole image")
    p.add_argument("--depth", help="depth image, same size (white = near); default: estimated with DPT-hybrid")
    _add_common(p)
    _add_region(p)
    _add_sampler(p)
    _add_controls(p)

    p = sub.add_parser("depth", help="estimate the depth of an image (white = near), as a 16-bit grayscale PNG")
    p.add_argument("--image", required=True, help="input image")
    _add_common(p, prompt=False, images=False, strength=False)

    p = sub.add_parser("upscale", help="upscale an image 4x, in tiles (stable-diffusion-x4-upscaler)")
    p.add_argument("--image", required=True, help="input image (at most 4096 px a side)")
    p.add_argument("--mask", help="selection mask, same size: only the selection is upscaled by the model, the "
                                  "rest is a plain Lanczos 4x")
    _add_common(p, images=False, strength=False)
    p.add_argument("--noise-level", type=whole_number, default=20, help="noise added to the input, 0–350 (default 20)")
    p.add_argument("--tile", type=whole_number, default=128, help="tile side in input px, 64–512 (default 128)")
    p.add_argument("--feather", type=whole_number, default=8, help="input px of soft edge inside the selection (default 8)")

    p = sub.add_parser("generate", help="text-to-image, or image-to-image with --image "
                                        "(stable-diffusion-2-1 or 2-1-base)")
    p.add_argument("--width", type=whole_number, help="width in px, a multiple of 8 in 64–8192 (default with --image: its)")
    p.add_argument("--height", type=whole_number, help="height in px, a multiple of 8 in 64–8192 (default with --image: its)")
    p.add_argument("--image", help="start from this image (image-to-image, with --strength)")
    _add_common(p)
    _add_sampler(p)
    _add_vae(p)
    _add_controls(p)

    p = sub.add_parser("preprocess", help="make a control picture from an image: edges, line art, scribble "
                                          "(OpenCV) or depth (DPT-hybrid of stable-diffusion-2-depth)")
    p.add_argument("control_type", choices=PREPROCESS_TYPES, metavar="TYPE", help=", ".join(PREPROCESS_TYPES))
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size: only the selection is made into a control picture")
    _add_common(p, prompt=False, images=False, strength=False, model=False)

    p = sub.add_parser("live", help="one Live frame: the image (or the selection) repainted by SD-Turbo in 1–4 steps, "
                                    "no guidance")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--mask", help="selection mask, same size (white = repaint); default: whole image")
    p.add_argument("--prompt", default="", help="what to paint")
    p.add_argument("--weighted", action="store_true", help="parse compel weights: (word)1.3, word++")
    p.add_argument("--steps", type=whole_number, default=1, help="steps that run, 1–4 (default 1)")
    p.add_argument("--strength", type=number, default=0.5, help="0–1: how much to change (default 0.5)")
    p.add_argument("--seed", type=whole_number, default=None, help="seed ≥ 0 (default: random, reported)")
    _add_common(p, prompt=False, images=False, strength=False)
    _add_region(p)
    _add_vae(p, "tiny")

    p = sub.add_parser("expand", help="grow the canvas and paint the new border (stable-diffusion-2-inpainting)",
                       description="Grow the image's canvas and paint the new border from the prompt, "
                                   "continuing the scene. The original pixels are kept bit for bit.")
    p.add_argument("--image", required=True, help="input image")
    sizes = p.add_argument_group("how far (px per side, or --to-aspect)")
    for side in ("left", "right", "top", "bottom"):
        sizes.add_argument(f"--{side}", type=whole_number, default=None, metavar="PX",
                           help=f"px added on the {side}, 0–8192 (default 0)")
    sizes.add_argument("--to-aspect", type=aspect_ratio, metavar="W:H",
                       help="grow the shorter way to this aspect ratio, evenly on both sides (e.g. 16:9)")
    _add_common(p)
    _add_sampler(p)
    p.add_argument("--no-color-match", action="store_true", help="do not match colours to the surroundings")
    _add_controls(p)

    p = sub.add_parser("models", help="list the models the resolver finds")
    p.add_argument("--models-dir", type=Path, help="app models folder to search (default: platformdirs)")

    p = sub.add_parser("serve", help="share one engine over the network (remote mode: token, optional TLS)")
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on, e.g. 127.0.0.1:7860")
    p.add_argument("--cert", help="TLS certificate (PEM); with --key the connection is encrypted")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--cluster", metavar="ADDRESS|auto",
                   help="run the jobs on a Ray Serve cluster (the 'cluster' extra): its address, or 'auto' for "
                        "the one this machine belongs to; clients then use per-artist tokens (serve tokens ...)")
    p.add_argument("--cluster-config", metavar="cluster.yaml", help="replicas, GPUs, models, limits (docs/cluster.md)")
    p.add_argument("--tokens", metavar="FILE", help="the per-artist tokens file (default: tokens.json in the "
                                                    "app's config folder)")
    from .engine.serve import add_network_options
    from .engine.stdio import add_engine_options

    add_network_options(p)
    add_engine_options(p)

    p = sub.add_parser("demo", help="inpaint the sample image in resources/ (tiny smoke models if SD2 is absent)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--steps", type=whole_number, default=None, help="denoising steps (default 25, 4 with smoke models)")
    return ap


def request_from_args(args, mode: str):
    """The job of the parsed arguments: its request (files are read here) and how to write it."""
    from .contract.jobs import Options, Params, default_options
    from .jobfiles import request_from_files

    params = Params(
        prompt=getattr(args, "prompt", "") or "", negative_prompt=getattr(args, "negative", "") or "",
        num_images=getattr(args, "num_images", 1), steps=getattr(args, "steps", 25),
        guidance=getattr(args, "guidance", 7.5),
        strength=args.strength if getattr(args, "strength", None) is not None else 0.8,
        seed=getattr(args, "seed", None), weighted=getattr(args, "weighted", False),
        loras=tuple(getattr(args, "lora", None) or ()), embeddings=tuple(getattr(args, "embedding", None) or ()))
    opt = dict(default_options(mode).__dict__)
    for name in ("grow", "feather", "masked_content", "noise_level", "tile", "width", "height", "backend", "sampler",
                 "vae", "control_type"):
        if getattr(args, name, None) is not None:
            opt[name] = getattr(args, name)
    if getattr(args, "no_color_match", False):
        opt["color_match"] = False
    if mode == "expand":
        sides = ("left", "top", "right", "bottom")
        if args.to_aspect is not None and any(getattr(args, side) is not None for side in sides):   # even 0
            raise CliError("--to-aspect and --left/--right/--top/--bottom exclude each other: give one or the other")
        opt.update({f"expand_{side}": getattr(args, side) or 0 for side in sides})
    job = request_from_files(mode, params, Options(**opt), image=getattr(args, "image", None),
                             mask=getattr(args, "mask", None), depth=getattr(args, "depth", None),
                             model=getattr(args, "model", None), controls=getattr(args, "control", ()),
                             to_aspect=getattr(args, "to_aspect", None))
    return job


def make_models(args):
    """The model manager for the device and dtype the arguments ask for."""
    from .models.device import choose_policy, probe
    from .models.manager import ModelManager

    try:
        policy = choose_policy(probe(), args.device, args.dtype)
    except ValueError as e:
        raise CliError(str(e)) from None
    return ModelManager(policy, config=getattr(args, "config", None))


def cmd_models(args) -> int:
    from .contract import paths
    from .contract.catalog import CATALOG
    from .models.hub import hf_hub_cache
    from .models.resolver import ModelError, find_installed, resolve

    models_dir = args.models_dir or paths.models_dir()
    print(f"models folder: {models_dir}")
    print(f"Hugging Face cache: {hf_hub_cache()}")
    for spec in CATALOG.values():
        try:
            r = resolve(spec.key, models_dir=models_dir)
            print(f"  found    {spec.key:<16} {r.path}  [{r.source}, {r.prediction}, {r.native}px]")
        except ModelError:
            print(f"  missing  {spec.key:<16} {spec.repo_id}  -> {spec.install_hint()}")
    from .lama.weights import find_weights, install_hint

    try:
        print(f"  found    {'big-lama':<16} {find_weights(None, models_dir)}  [fill]")
    except ModelError:
        print(f"  missing  {'big-lama':<16} (fill works without it, with patches)  -> {install_hint()}")
    others = [r for r in find_installed(models_dir) if r.spec is None or r.name not in CATALOG]
    for r in others:
        print(f"  found    {r.name:<16} {r.path}  [{r.source}, {r.pipeline}, {r.prediction}]")
    return 0


def check_adapters(job) -> None:
    """The LoRA and embedding files exist (before any model is loaded); ValidationError names the flag."""
    from .contract.jobs import validate
    from .contract.params import ValidationError
    from .models import adapters

    req = job.request if hasattr(job, "request") else job
    params = validate(req).params
    for field, flag, names in (("loras", "--lora", [n for n, _w in params.loras]),
                               ("embeddings", "--embedding", list(params.embeddings))):
        for name in names:
            try:
                adapters.find(name, field, None)
            except ValidationError as e:
                raise ValidationError(field, f"{flag}: {str(e).split(': ', 1)[-1]}") from None


def check_text_args(args) -> None:
    """Text given on the command line must be UTF-8: Python keeps the bytes of any other encoding as
    lone surrogates, which the tokenizer cannot take."""
    for flag in ("prompt", "negative"):
        value = getattr(args, flag, None)
        if not value:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CliError(f"--{flag} is not valid UTF-8 text (an undecodable byte at character {e.start + 1}); "
                           f"expected UTF-8 text (set a UTF-8 locale, or convert the text)") from None


def check_config(args) -> None:
    """``--config`` names a diffusers config folder: a folder holding model_index.json."""
    config = getattr(args, "config", None)
    if config is None:
        return
    folder = Path(config).expanduser()
    if not folder.exists():
        problem = "it does not exist"
    elif not folder.is_dir():
        problem = "it is a file"
    elif not (folder / "model_index.json").is_file():
        problem = "it has no model_index.json"
    else:
        return
    raise CliError(f"--config {config}: {problem}; expected a diffusers config folder (with model_index.json), "
                   f"e.g. from `python -m installer models download KEY --config-only`")


def check_outputs(args) -> list[Path]:
    """Before any work: every output name has an image type, none is an input, each can be created; returns them."""
    from .contract import atomic
    from .raster.files import numbered, output_format

    out = Path(args.out)
    count = getattr(args, "num_images", 1) or 1
    outs = [numbered(out, i) for i in range(max(1, min(count, 4)))]
    inputs = {flag: Path(getattr(args, flag)) for flag in ("image", "mask", "depth") if getattr(args, flag, None)}
    inputs.update((f"control #{i + 1}", Path(c[1])) for i, c in enumerate(getattr(args, "control", None) or ()))
    for path in outs:
        if path.is_dir():
            raise atomic.WriteError(path, "it is a folder; give a file name such as out.png")
        output_format(path)
        for flag, given in inputs.items():
            if _same_file(path, given):
                raise CliError(f"--out {path} is the --{flag} file: choose another output file (inputs are "
                               f"never overwritten)")
        atomic.check_writable(path)
    return outs


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def say_path(path) -> None:
    """A written path on stdout, byte for byte even when it is not UTF-8."""
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        print(os.fsencode(path).decode("utf-8", "replace"))
        return
    out.flush()
    buffer.write(os.fsencode(path) + b"\n")
    buffer.flush()


def main(argv=None) -> int:
    from .models import env

    env.apply()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["serve", "tokens"]:     # per-artist tokens of the cluster gateway
        from .cluster.tokens import main as tokens_main

        return tokens_main(argv[2:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:           # --help, or a usage error already printed on one line
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    from .contract.atomic import WriteError
    from .contract.jobcontrol import Cancelled
    from .contract.params import ValidationError
    from .models.resolver import ModelError

    try:
        if args.command == "models":
            return cmd_models(args)
        if args.command == "serve" and (args.cluster or args.cluster_config):
            from .cluster.main import run as run_gateway

            return run_gateway(args)
        if args.command == "serve":
            from .engine.serve import run

            return run(args)
        if args.command == "demo":
            from .devtools.demo import run_demo

            for path in run_demo(args.out, steps=args.steps):
                say_path(path)
            return 0
        from .jobfiles import run_files

        check_text_args(args)
        check_config(args)
        check_outputs(args)
        job = request_from_args(args, args.command)
        check_adapters(job)
        written = run_files(job, args.out, make_models(args), quiet=args.quiet, as_json=args.json)
        for path in [] if args.json else written:
            say_path(path)
        return 0
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except WriteError as e:
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
