"""Jobs on image files: a request from files on disk, and a result's images written back to disk.

The command line (``core.cli``) and the headless demo (``core.devtools.demo``) both use it.  How a
mode's result is written comes from its ``ModeSpec.output``: the input with the patch stacked over it,
16-bit grey (depth maps), the plain upscale with the patch over it, or the input on the grown canvas
with the patch over it (expand).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .contract import atomic
from .contract.expand import FIELDS as EXPAND_FIELDS
from .contract.expand import Growth, to_aspect
from .contract.jobs import ImageBuffer, JobRequest, JobResult, Options, Params
from .contract.modes import IMAGE_OPTIONAL, OUTPUT_EXPANDED, OUTPUT_GRAY16, OUTPUT_SCALED, spec
from .contract.params import ValidationError
from .contract.samplers import label
from .raster.files import encode_image, numbered, output_format, read_depth, read_image, read_mask
from .raster.pixels import as_array


@dataclass(frozen=True)
class FileRequest:
    """A request and how its outputs are written (``keep_alpha``: the input had transparency)."""

    request: JobRequest
    keep_alpha: bool


def request_from_files(mode: str, params: Params, options: Options, *, image: str | Path | None = None,
                       mask: str | Path | None = None, depth: str | Path | None = None,
                       model: str | None = None, controls=(), to_aspect: tuple[int, int] | None = None) -> FileRequest:
    """Read the files a job needs and build its request.  Raises ValidationError naming the file.
    ``to_aspect`` (expand): grow the image to that aspect ratio instead of the options' sizes per side."""
    ms = spec(mode)
    buf = mask_buf = depth_buf = None
    keep_alpha = ms.image != IMAGE_OPTIONAL   # text-to-image paints opaque pictures
    if image is not None:
        buf, keep_alpha = read_image(image, "image")
        if ms.output == OUTPUT_GRAY16 and buf.format == "RGBA_U8":   # widen, so the depth keeps 16 bits
            buf = widen(buf)
        if "width" in ms.options:     # image-to-image keeps the image's size
            for name, given, own in (("width", options.width, buf.width), ("height", options.height, buf.height)):
                if given is not None and given != own:
                    raise ValidationError(name, f"--{name} {given} differs from the image's {name} {own}: "
                                                f"image-to-image keeps the image's size; leave --{name} out")
            options = replace(options, width=None, height=None)
    size = (buf.width, buf.height) if buf else None
    if mask is not None:
        if buf is None:
            raise ValidationError("mask", "--mask needs --image")
        mask_buf = read_mask(mask, size)
    if depth is not None:
        depth_buf = read_depth(depth, size)
        options = replace(options, depth_source="given")
    grown = None
    if mode == "expand" and size is not None:
        options = expanded_options(options, size, to_aspect)
        grown = Growth.of(options)
    req = JobRequest(mode, params, options, model=model, image=buf, mask=mask_buf, depth=depth_buf,
                     controls=read_controls(controls, size or (options.width, options.height), grown))
    return FileRequest(req, keep_alpha)


def expanded_options(options: Options, size: tuple[int, int], aspect: tuple[int, int] | None) -> Options:
    """Expand's options with the growth ``--to-aspect`` asks for (it excludes the sizes per side)."""
    if aspect is None:
        return options
    if any(getattr(options, f) for f in EXPAND_FIELDS):
        raise ValidationError("to_aspect", "--to-aspect and --left/--right/--top/--bottom exclude each other: give "
                                           "one or the other")
    growth = to_aspect(size, aspect)
    if growth.empty:
        raise ValidationError("to_aspect", f"--to-aspect {aspect[0]}:{aspect[1]}: the image ({size[0]}x{size[1]}) "
                                           f"already has that aspect ratio; nothing to expand")
    return replace(options, **dict(zip(EXPAND_FIELDS, growth.as_tuple())))


def read_controls(specs, size, grown: Growth | None = None) -> tuple:
    """Controls from ``(type, path, strength, start, end)`` (``controls.parse_spec``): each picture must be
    ``size`` (the image's, or width × height without one); one of another size is refused, never stretched.
    For expand (``grown``: its growth) a picture may also be the grown canvas's size: it then covers the new
    border too (its origin is the grown canvas's top-left corner on the old canvas)."""
    from .contract.controls import Control, field

    out = []
    canvas = grown.canvas(size) if grown is not None else None
    for i, (kind, path, strength, start, end) in enumerate(specs):
        buf, _alpha = read_image(path, field(i, "image"))
        own = (buf.width, buf.height)
        if grown is not None and own == canvas:
            out.append(Control(kind, buf, strength, start, end, origin=(-grown.left, -grown.top)))
            continue
        if size[0] is not None and own != tuple(size):
            also = f" or the grown canvas's {canvas[0]}x{canvas[1]}" if canvas else ""
            raise ValidationError(field(i, "image"), f"control {path} is {buf.width}x{buf.height}, the image is "
                                                     f"{size[0]}x{size[1]}: a control must be the image's size{also} "
                                                     f"(it is never stretched)")
        out.append(Control(kind, buf, strength, start, end))
    return tuple(out)


def widen(image: ImageBuffer) -> ImageBuffer:
    """An RGBA_U8 buffer as RGBA_U16 (exact: v × 257)."""
    a = np.frombuffer(image.data, np.uint8).astype("<u2") * 257
    return ImageBuffer(image.width, image.height, "RGBA_U16", a.tobytes(), image.linear)


def write_outputs(job: FileRequest, result: JobResult, out: Path) -> list[Path]:
    """Write every image of ``result``: ``out`` for the first, ``out_2``... for the others (image i
    was made with seed + i).  All or nothing: each is encoded into a temporary file beside its name and
    they are renamed into place once every one is complete (``contract.atomic``).  Returns the paths."""
    from .pipelines import regionjob

    req, ms = job.request, spec(job.request.mode)
    written = []
    with contextlib.ExitStack() as files:
        for i, patch in enumerate(result.patches):
            path = numbered(Path(out), i)
            kind = output_format(path)
            f = files.enter_context(atomic.open_atomic(path, parents=True))
            if ms.output == OUTPUT_GRAY16:
                encode_image(f, kind, as_array(patch.image)[..., :1], "GRAY_U16")
            elif ms.output == OUTPUT_SCALED:
                from .pipelines.upscale import composite

                arr = composite(req, patch) if req.mask is not None else as_array(patch.image)
                encode_image(f, kind, arr, req.image.format, keep_alpha=job.keep_alpha)
            elif ms.output == OUTPUT_EXPANDED:
                from .pipelines import expand

                encode_image(f, kind, expand.composite(req, patch), req.image.format, keep_alpha=job.keep_alpha)
            elif req.image is not None:
                encode_image(f, kind, regionjob.composite(req, patch), req.image.format, keep_alpha=job.keep_alpha)
            else:
                encode_image(f, kind, as_array(patch.image), patch.image.format, keep_alpha=job.keep_alpha)
            written.append(path)
    return written


def run_files(job, out: Path, models, *, quiet: bool = False, as_json: bool = False) -> list[Path]:
    """Run a job in this process with a progress bar on stderr and write its outputs; returns the
    paths written (each also reported on stderr with its seed).  ``as_json``: each output's path and
    provenance (``JobResult.provenance``: mode, model, seed, params, options, controls) as a JSON line
    on stdout."""
    from .contract.jobcontrol import JobControl
    from .pipelines import run_job

    on_progress, close = _progress_bar(quiet)
    try:
        result = run_job(job.request, models, JobControl(on_progress=on_progress))
    finally:
        close()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    written = write_outputs(job, result, out)
    sampler = f", {label(result.options.sampler)}" if "sampler" in spec(result.mode).options else ""
    for i, (patch, path) in enumerate(zip(result.patches, written)):
        print(f"seed {patch.seed}{sampler}: {path}" if patch.seed is not None else f"{result.model}: {path}",
              file=sys.stderr)
        if as_json:
            print(json.dumps({"path": os.fsdecode(path), **result.provenance(i)}), flush=True)
    return written


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
