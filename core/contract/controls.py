"""Control layers: one plain ``Control`` per ControlNet that steers a job.  Standard library only.

A control is a picture (a scribble, line art, edges, a depth map, a pose skeleton) that the model follows
with a ControlNet trained for SD 2.1, at a strength, over a part of the denoising steps.  Its pixels
travel like the source layer's: raw bytes in the editor's own layout, placed on the canvas at
``origin``; the engine takes from it exactly the region the job works on, so the control must cover
that region (it is never stretched to fit).  Which ControlNet each type uses is ``catalog.CONTROLNETS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import params as P
from .params import Range, ValidationError

ImageBuffer = Any   # a ``jobs.ImageBuffer`` (jobs imports this module, so not the other way round)

# What the artist picks in the dock and on the command line, in the dock's order: the ControlNet types,
# then the reference image, which needs no ControlNet (its appearance through the UNet's self-attention:
# ``core/pipelines/reference.py``), at most one per job, on the ``REFERENCE_MODES`` only.
CONTROLNET_TYPES = ("scribble", "lineart", "softedge", "canny", "depth", "pose")
REFERENCE = "reference"
REFERENCE_MODES = ("generate", "inpaint", "restyle", "expand")
CONTROL_TYPES = (*CONTROLNET_TYPES, REFERENCE)
CONTROL_LABELS = {"scribble": "Scribble", "lineart": "Line art", "softedge": "Soft edge", "canny": "Canny edges",
                  "depth": "Depth", "pose": "Pose", REFERENCE: "Reference image"}
# What "Make control layer" (the ``preprocess`` mode) makes from a photo or painting: every type but the
# pose (no pose estimator is included: the artist draws the skeleton).
PREPROCESS_TYPES = ("scribble", "lineart", "softedge", "canny", "depth")
MAX_CONTROLS = 4
MODEL_MAX_CHARS = 4096    # as a request's model (jobs.MODEL_MAX_CHARS)
RANGES = {
    "strength": Range("strength", 0.0, 2.0, integer=False, default=1.0),
    "start": Range("start", 0.0, 1.0, integer=False, default=0.0),
    "end": Range("end", 0.0, 1.0, integer=False, default=1.0),
}


@dataclass(frozen=True)
class Control:
    """One control: ``type`` (``CONTROL_TYPES``), its picture, how strongly it steers (0–2) and over
    which fraction of the denoising steps that run (``start`` < ``end``, 0–1)."""

    type: str
    image: ImageBuffer
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    origin: tuple[int, int] = (0, 0)   # where the picture's top-left pixel sits on the canvas
    model: str | None = None            # a ControlNet file or folder; None = the catalogue's for the type

    def header(self, buffer: str) -> dict:
        return {"type": self.type, "strength": self.strength, "start": self.start, "end": self.end,
                "origin": list(self.origin), "model": self.model, "buffer": buffer}


RECORD_FIELDS = ("type", "controlnet", "strength", "start", "end")


def record(control: Control, controlnet: str | None) -> dict:
    """What a result's provenance says of a control it used (``controlnet``: the ControlNet's name as found,
    None for a reference image); the dock adds the control layer's name (``layer``)."""
    return {"type": control.type, "controlnet": controlnet, "strength": control.strength, "start": control.start,
            "end": control.end}


def records_from(value) -> tuple[dict, ...]:
    """A result header's ``controls`` (a list of records; anything else counts as none)."""
    if not isinstance(value, list):
        return ()
    return tuple({k: c[k] for k in (*RECORD_FIELDS, "layer") if k in c} for c in value if isinstance(c, dict))


def buffer_name(index: int) -> str:
    return f"control{index}"


def field(index: int, name: str = "") -> str:
    """How errors name a control's field: ``controls[1].strength``."""
    return f"controls[{index}]" + (f".{name}" if name else "")


def from_header(index: int, d, image: ImageBuffer) -> Control:
    """Inverse of ``Control.header`` (the buffer already decoded).  Unknown keys are refused."""
    if not isinstance(d, dict):
        raise ValidationError(field(index), f"{field(index)} must be an object")
    unknown = set(d) - {"type", "strength", "start", "end", "origin", "model", "buffer"}
    if unknown:
        raise ValidationError(field(index), f"unknown {field(index)} fields: {', '.join(sorted(unknown))}")
    try:
        origin = d.get("origin") or (0, 0)
        origin = (int(origin[0]), int(origin[1]))
    except (TypeError, ValueError, IndexError):
        raise ValidationError(field(index, "origin"), f"{field(index, 'origin')} must be a pair of integers") from None
    return Control(d.get("type", ""), image, d.get("strength", 1.0), d.get("start", 0.0), d.get("end", 1.0),
                   origin, d.get("model"))


def listed(value) -> list:
    """A request dict's ``controls``: a list of at most ``MAX_CONTROLS`` (none when absent)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CONTROLS:
        raise ValidationError("controls", f"controls must be a list of at most {MAX_CONTROLS} control layers, "
                                          f"got {P.shown(value)}")
    return value


def from_headers(dicts: list, bufs: dict) -> tuple[Control, ...]:
    """The controls ``dicts`` describe, each taking its decoded buffer (``buffer_name``) out of ``bufs``."""
    out = []
    for i, d in enumerate(dicts):
        if buffer_name(i) not in bufs:
            raise ValidationError(field(i, "image"), f"{field(i, 'image')}: the control's pixels are missing")
        out.append(from_header(i, d, bufs.pop(buffer_name(i))))
    return tuple(out)


def validate(controls, formats, mode: str = "", takes: bool = True) -> tuple[Control, ...]:
    """Check every control (type, strength, start/end, pixels in one of ``formats``); return them with
    numbers normalised.  Raises ValidationError naming the field (``controls[0].end``), or "controls"
    when the job's ``mode`` takes none (``takes``: its ``ModeSpec.controls``)."""
    from dataclasses import replace

    if controls and not takes:
        raise ValidationError("controls", f"{mode} takes no control layers")
    if not isinstance(controls, (tuple, list)):
        raise ValidationError("controls", "controls must be a list")
    if len(controls) > MAX_CONTROLS:
        raise ValidationError("controls", f"at most {MAX_CONTROLS} controls at once, got {len(controls)}")
    out = []
    for i, c in enumerate(controls):
        if c.type not in CONTROL_TYPES:
            raise ValidationError(field(i, "type"), f"{field(i, 'type')} must be one of {', '.join(CONTROL_TYPES)}, "
                                                    f"got {P.shown(c.type)}")
        values = {}
        for name, rng in RANGES.items():
            try:
                values[name] = rng.check(getattr(c, name))
            except ValidationError as e:
                raise ValidationError(field(i, name), f"{field(i, name)}: {e}") from None
        if values["start"] >= values["end"]:
            raise ValidationError(field(i, "end"), f"{field(i, 'end')} must be above its start "
                                                   f"({values['start']:g}), got {values['end']:g}")
        if c.type == REFERENCE:
            _check_reference(i, c, controls, mode)
        if c.model is not None and not isinstance(c.model, str):
            raise ValidationError(field(i, "model"), f"{field(i, 'model')} must be text: a ControlNet file or folder")
        if c.model is not None:
            P.check_text(field(i, "model"), c.model, MODEL_MAX_CHARS)
        c.image.check(field(i, "image"), formats)
        out.append(replace(c, **values))
    return tuple(out)


def _listing(words) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _check_reference(index: int, c: Control, controls, mode: str) -> None:
    if mode and mode not in REFERENCE_MODES:
        raise ValidationError(field(index, "type"), f"{field(index, 'type')}: a reference image works on "
                                                    f"{_listing(REFERENCE_MODES)} only, not on {mode}")
    if any(o.type == REFERENCE for o in controls[:index]):
        raise ValidationError(field(index, "type"), f"{field(index, 'type')}: at most one reference image per job")
    if c.model is not None:
        raise ValidationError(field(index, "model"), f"{field(index, 'model')}: a reference image uses no "
                                                     f"ControlNet, so it takes no model")


def check_covers(index: int, control: Control, region: tuple[int, int, int, int]) -> None:
    """Refuse a control whose picture does not cover the canvas region ``(x, y, w, h)`` the job works
    on: a control layer of another size is never stretched to fit."""
    x, y, w, h = region
    ox, oy = control.origin
    cw, ch = control.image.width, control.image.height
    if x < ox or y < oy or x + w > ox + cw or y + h > oy + ch:
        raise ValidationError(field(index, "image"),
                              f"{field(index, 'image')} ({control.type}, {cw}x{ch} at {ox},{oy}) does not cover the "
                              f"area the job works on ({w}x{h} at {x},{y}); a control must be the size of the source "
                              f"image (it is never stretched)")


def parse_spec(text: str) -> tuple[str, str, float, float, float]:
    """The command line's ``TYPE:IMAGE[:STRENGTH[:START:END]]`` as (type, image path, strength, start,
    end); the numbers are checked with the request.  Raises ValueError with one readable line."""
    parts = text.split(":")
    # A Windows drive letter ("C:\\x.png") belongs to the path.
    if len(parts) >= 3 and len(parts[1]) == 1 and parts[2].startswith(("\\", "/")):
        parts = [parts[0], parts[1] + ":" + parts[2], *parts[3:]]
    if len(parts) not in (2, 3, 5) or not parts[0] or not parts[1]:
        raise ValueError(f"expected TYPE:IMAGE[:STRENGTH[:START:END]], got {text!r}")
    kind = parts[0].strip().lower().replace("_", "").replace("-", "")
    if kind not in CONTROL_TYPES:
        raise ValueError(f"control type must be one of {', '.join(CONTROL_TYPES)}, got {parts[0]!r}")
    try:
        numbers = [float(p) for p in parts[2:]]
    except ValueError:
        raise ValueError(f"strength, start and end must be numbers, got {':'.join(parts[2:])!r}") from None
    strength = numbers[0] if numbers else 1.0
    start, end = (numbers[1], numbers[2]) if len(numbers) == 3 else (0.0, 1.0)
    return kind, parts[1], strength, start, end
