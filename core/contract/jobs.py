"""Job requests and results: plain data, standard library only.

A request says *what* to do (mode, parameters, options, region of the canvas, pixels); the translation
(``core.contract.plan``) turns it into a plan, and one pipeline module per mode executes it.  The same objects
travel over the wire protocol as JSON-ready dicts; pixel buffers travel beside the JSON as raw bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from . import controls as C
from . import expand as E
from . import params as P
from .geometry import Rect
from .modes import IMAGE_REQUIRED, MODE_SPECS, MODES, SELECTION_REQUIRED, spec
from .params import ValidationError
from .samplers import SAMPLER_CHOICES

MASKED_CONTENT = ("original", "fill", "noise")
DEPTH_SOURCES = ("auto", "given")
FILL_BACKENDS = ("auto", "patch", "opencv", "lama")
FILL_NAMES = {"lama": "LaMa", "patch": "Patches", "opencv": "OpenCV"}   # result layer names by model label
# Which autoencoder turns pixels into latents and back: the model's own VAE, or the tiny one (TAESD,
# when installed: much faster, a little softer; without it the full VAE is used and a warning says so).
VAES = ("full", "tiny")

# Pixel layouts.  The editor's own (Krita, little-endian): BGRA U8/U16 and RGBA F16/F32.
# RGBA_U8/RGB_U8/GRAY_* are used for files and masks.  ``linear`` marks linear-light data.
PIXEL_FORMATS = {
    # name: (channels, bytes per channel)
    "BGRA_U8": (4, 1),
    "BGRA_U16": (4, 2),
    "RGBA_F16": (4, 2),
    "RGBA_F32": (4, 4),
    "RGBA_U8": (4, 1),
    "RGBA_U16": (4, 2),
    "GRAY_U8": (1, 1),
    "GRAY_U16": (1, 2),
}
EDITOR_FORMATS = ("BGRA_U8", "BGRA_U16", "RGBA_F16", "RGBA_F32")
MASK_FORMATS = ("GRAY_U8",)
DEPTH_FORMATS = ("GRAY_U8", "GRAY_U16")
# A depth map may also come as a layer in the editor's own layout (gray in R = G = B, as the depth job
# writes it): the engine reads its red channel, decoded from linear light where the layer is linear.
DEPTH_INPUT_FORMATS = DEPTH_FORMATS + EDITOR_FORMATS
MAX_SIDE = 16384
MODEL_MAX_CHARS = 4096
# Request fields that name a file or folder on the engine's machine (a model today; LoRAs, embeddings or
# control images would be listed here too).  A remote client may only give names of installed things
# there (core.models.resolver.check_remote_model), never paths.
NAMED_FILE_FIELDS = ("model",)


@dataclass(frozen=True)
class ImageBuffer:
    """Raw pixels, rows top to bottom, no padding."""

    width: int
    height: int
    format: str
    data: bytes = field(repr=False)
    linear: bool = False

    @property
    def channels(self) -> int:
        return PIXEL_FORMATS[self.format][0]

    @property
    def bytes_per_pixel(self) -> int:
        c, b = PIXEL_FORMATS[self.format]
        return c * b

    def expected_nbytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel

    def header(self) -> dict:
        return {"width": self.width, "height": self.height, "format": self.format, "linear": self.linear}

    @classmethod
    def from_header(cls, header: dict, data, name: str = "image") -> ImageBuffer:
        """The buffer a JSON header describes (``header()``'s inverse); ValidationError naming the buffer
        and the field for anything else."""
        check_buffer_header(name, header)
        return cls(header["width"], header["height"], header["format"], data, header.get("linear", False))

    def check(self, name: str, formats=None) -> None:
        if not isinstance(self.format, str) or self.format not in PIXEL_FORMATS:
            raise ValidationError(name, f"{name}: unknown pixel format {P.shown(self.format)}; "
                                        f"use one of {', '.join(PIXEL_FORMATS)}")
        if formats is not None and self.format not in formats:
            raise ValidationError(name, f"{name} must be in format {', '.join(formats)}, got {self.format}")
        for side, v in (("width", self.width), ("height", self.height)):
            if type(v) is not int or not (1 <= v <= MAX_SIDE):
                raise ValidationError(name, f"{name} {side} must be in 1–{MAX_SIDE} px, got {P.shown(v)}")
        if len(self.data) != self.expected_nbytes():
            raise ValidationError(
                name, f"{name}: {self.width}x{self.height} {self.format} needs {self.expected_nbytes()} bytes, "
                      f"got {len(self.data)}")


BUFFER_FIELDS = ("width", "height", "format", "linear")


def check_buffer_header(name: str, header) -> int:
    """Check a buffer's JSON description ({"width", "height", "format", "linear"}) and return how many
    bytes its pixels take.  ValidationError (parameter ``name``) naming the field and what it must be."""
    where = f"buffer {name!r}"
    if not isinstance(header, dict):
        raise ValidationError(name, f"{where} must be described by an object with {', '.join(BUFFER_FIELDS)}, "
                                    f"got {P.shown(header)}")
    unknown = [k for k in header if k not in BUFFER_FIELDS]
    if unknown:
        raise ValidationError(name, f"{where}: unknown field {P.shown(unknown[0])}; a buffer has "
                                    f"{', '.join(BUFFER_FIELDS)}")
    for side in ("width", "height"):
        v = header.get(side)
        if type(v) is not int or not 1 <= v <= MAX_SIDE:
            raise ValidationError(name, f"{where}: {side!r} must be a whole number of pixels in 1–{MAX_SIDE}, "
                                        f"got {P.shown(v)}")
    fmt = header.get("format")
    if not isinstance(fmt, str) or fmt not in PIXEL_FORMATS:
        raise ValidationError(name, f"{where}: 'format' must be one of {', '.join(PIXEL_FORMATS)}, "
                                    f"got {P.shown(fmt)}")
    if not isinstance(header.get("linear", False), bool):
        raise ValidationError(name, f"{where}: 'linear' must be true or false, got {P.shown(header['linear'])}")
    channels, size = PIXEL_FORMATS[fmt]
    return header["width"] * header["height"] * channels * size


@dataclass(frozen=True)
class Params:
    """The product's common parameters.  ``seed=None`` means random (the seed used is reported)."""

    prompt: str = ""
    negative_prompt: str = ""
    num_images: int = 1
    steps: int = 25
    guidance: float = 7.5
    strength: float = 0.8
    seed: int | None = None
    weighted: bool = False
    # LoRAs and textual-inversion embeddings for this job (``params.check_loras``/``check_embeddings``):
    # ``((file, weight), ...)`` and ``(file, ...)``.  Each file is PLAIN TEXT: a path (the local engine,
    # the command line) or the name of a file in the engine's models folder (``loras/``, ``embeddings/``),
    # the only form a shared ``serve`` engine accepts.  The engine resolves and checks them.
    loras: tuple = ()
    embeddings: tuple = ()


@dataclass(frozen=True)
class Options:
    """Mode-specific options (``modes.ModeSpec.options`` says which mode reads which)."""

    grow: int = 8                    # px the model repaints beyond the selection
    feather: int = 8                 # px of soft edge inside the selection
    color_match: bool = True         # match mean/std to the ring around the selection
    masked_content: str = "original"  # inpaint: original | fill | noise
    depth_source: str = "auto"       # restyle: auto (DPT-hybrid) | given (request.depth)
    noise_level: int = 20            # upscale
    tile: int = 96                   # upscale: tile side in input px (tuned by the benchmark)
    width: int | None = None         # generate: target size when there is no selection
    height: int | None = None
    backend: str = "auto"            # fill: auto | patch | opencv | lama
    expand_left: int = 0             # expand: px the canvas grows on each side (contract.expand)
    expand_top: int = 0
    expand_right: int = 0
    expand_bottom: int = 0
    sampler: str = "auto"            # samplers.SAMPLER_CHOICES; auto = the model's catalogue default
    vae: str = "full"                # full | tiny (TAESD encodes and decodes; Live's default)
    control_type: str = "canny"      # preprocess: the control picture to make (controls.PREPROCESS_TYPES)
    # The layout of the patches when the request has no image (text-to-image): the editor's layer
    # format, so that the editor never converts pixels.  None = RGBA_U8.
    output_format: str | None = None
    output_linear: bool = False


def default_options(mode: str) -> Options:
    """The options a mode starts from (the dock's form, the command line's defaults)."""
    return Options(**spec(mode).option_defaults)


@dataclass(frozen=True)
class JobRequest:
    mode: str
    params: Params = field(default_factory=Params)
    options: Options = field(default_factory=Options)
    model: str | None = None          # folder, hub id or catalogue key; None = the mode's default
    image: ImageBuffer | None = None  # the layer's pixels (or the part of it the region needs)
    mask: ImageBuffer | None = None   # soft selection, GRAY_U8, same size as image; None = no selection
    depth: ImageBuffer | None = None  # restyle with depth_source="given": GRAY_U8/U16, same size as image
    origin: tuple[int, int] = (0, 0)  # where image's top-left pixel sits on the canvas
    canvas: tuple[int, int] | None = None  # canvas size; None = image size
    controls: tuple[C.Control, ...] = ()   # control layers (modes with ``ModeSpec.controls``)

    @property
    def canvas_size(self) -> tuple[int, int]:
        if self.canvas is not None:
            return self.canvas
        if self.image is not None:
            return (self.origin[0] + self.image.width, self.origin[1] + self.image.height)
        return (self.options.width or 512, self.options.height or 512)

    def buffers(self) -> dict[str, ImageBuffer]:
        bufs = {k: v for k, v in (("image", self.image), ("mask", self.mask), ("depth", self.depth)) if v}
        bufs.update((C.buffer_name(i), c.image) for i, c in enumerate(self.controls))
        return bufs

    def to_dict(self) -> dict:
        """JSON-ready description; pixel buffers are described by their headers only."""
        return {
            "mode": self.mode,
            "params": asdict(self.params),
            "options": asdict(self.options),
            "model": self.model,
            "origin": list(self.origin),
            "canvas": list(self.canvas) if self.canvas else None,
            "buffers": {k: b.header() for k, b in self.buffers().items()},
            **({"controls": [c.header(C.buffer_name(i)) for i, c in enumerate(self.controls)]}
               if self.controls else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, data: dict[str, bytes] | None = None) -> JobRequest:
        """Inverse of ``to_dict``; ``data`` maps buffer name to its bytes.  Unknown keys are refused, and
        every refusal is a ValidationError naming the field and what it must be."""
        if not isinstance(d, dict):
            raise ValidationError("request", f"request must be an object, got {P.shown(d)}")
        unknown = [k for k in d if k not in REQUEST_FIELDS]
        if unknown:
            raise ValidationError("request", f"request: unknown field {P.shown(unknown[0])}; a request has "
                                             f"{', '.join(REQUEST_FIELDS)}")
        data = data or {}
        params = _dataclass_from(Params, d.get("params"), "params")
        options = _dataclass_from(Options, d.get("options"), "options")
        described = d.get("buffers")
        if described is None:
            described = {}
        if not isinstance(described, dict):
            raise ValidationError("buffers", f"buffers must be an object naming image, mask or depth, "
                                             f"got {P.shown(described)}")
        bufs = {}
        control_dicts = C.listed(d.get("controls"))
        names = (*BUFFER_NAMES, *(C.buffer_name(i) for i in range(len(control_dicts))))
        for name, header in described.items():
            if name not in names:
                raise ValidationError("buffers", f"unknown buffer {P.shown(name)}; buffers are "
                                                 f"{', '.join(names)}")
            if name not in data:
                raise ValidationError(name, f"buffer {name!r} is described but its bytes are missing")
            bufs[name] = ImageBuffer.from_header(header, data[name], name)
        origin = _pair(d.get("origin"), "origin", "[x, y]: two whole numbers", -MAX_SIDE, MAX_SIDE, (0, 0))
        canvas = _pair(d.get("canvas"), "canvas", f"[width, height]: two whole numbers in 1–{MAX_SIDE}", 1,
                       MAX_SIDE, None)
        controls = C.from_headers(control_dicts, bufs)     # takes the controls' buffers out of bufs
        return cls(mode=d.get("mode", ""), params=params, options=options, model=d.get("model"),
                   origin=origin, canvas=canvas, controls=controls, **bufs)


REQUEST_FIELDS = ("mode", "params", "options", "model", "origin", "canvas", "buffers", "controls")
BUFFER_NAMES = ("image", "mask", "depth")


def _pair(value, name: str, what: str, low: int, high: int, default):
    if value is None:
        return default
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(type(v) is int and low <= v <= high for v in value)):
        raise ValidationError(name, f"{name} must be {what}, got {P.shown(value)}")
    return (value[0], value[1])


def _dataclass_from(klass, d, name):
    if d is None:
        return klass()
    if not isinstance(d, dict):
        raise ValidationError(name, f"{name} must be an object, got {P.shown(d)}")
    known = [f.name for f in fields(klass)]
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValidationError(name, f"{name}: unknown field {P.shown(unknown[0])}; {name} has "
                                    f"{', '.join(known)}")
    defaults = klass()      # JSON lists become the tuples of tuple fields (loras, embeddings)
    return klass(**{k: _frozen(v) if isinstance(v, list) and isinstance(getattr(defaults, k), tuple) else v
                    for k, v in d.items()})


def _frozen(value):
    return tuple(_frozen(v) if isinstance(v, list) else v for v in value)


def validate(req: JobRequest) -> JobRequest:
    """Check every parameter the mode uses; return the request with numbers normalised.  Raises
    ``ValidationError`` naming the first bad parameter and its allowed range.  What a mode needs (image,
    selection, strength, size, scale) comes from its ``modes.ModeSpec``."""
    P.check_choice("mode", req.mode, MODES)
    mode = MODE_SPECS[req.mode]
    if req.model is not None:
        if not isinstance(req.model, str):
            raise ValidationError("model", f"model must be text: a folder, a .safetensors file, a hub id or a "
                                           f"catalogue key, got {P.shown(req.model)}")
        P.check_text("model", req.model, MODEL_MAX_CHARS)
    params = _valid_params(req, mode)
    options = _valid_options(req, mode)
    _check_buffers(req, mode, options)
    controls = C.validate(req.controls, EDITOR_FORMATS + ("RGBA_U8", "RGBA_U16"), req.mode, mode.controls)
    return replace(req, params=params, options=options, controls=controls)


def _valid_params(req: JobRequest, mode) -> Params:
    p = req.params
    P.check_text("prompt", p.prompt)
    P.check_text("negative_prompt", p.negative_prompt)
    num_images = P.check("num_images", p.num_images) if "num_images" in mode.params else 1
    steps = P.check("steps", p.steps)
    guidance = P.check("guidance", p.guidance)
    strength = P.check("strength", p.strength)
    for name, low, high in mode.param_ranges:
        value = {"steps": steps, "strength": strength}.get(name, getattr(p, name))
        if not (low <= value <= high):
            rng = P.Range(name, low, high, P.RANGES[name].integer)
            raise ValidationError(name, f"{name} must be in {rng.describe()} for {mode.title} "
                                        f"({', '.join(mode.models) or 'this mode'}), got {value!r}")
    seed = None if p.seed is None or p.seed == "" else P.check("seed", p.seed)
    loras, embeddings = P.check_loras(p.loras), P.check_embeddings(p.embeddings)
    for name, given in (("loras", loras), ("embeddings", embeddings)):
        if given and name not in mode.params:
            raise ValidationError(name, f"{name}: {req.mode} takes no {name} (only the SD2 prompt modes do)")
    return replace(p, num_images=num_images, steps=steps, guidance=guidance, strength=strength,
                   seed=seed, weighted=P.check_flag("weighted", p.weighted), loras=loras, embeddings=embeddings)


def _valid_options(req: JobRequest, mode) -> Options:
    o = req.options
    grow = P.check("grow", o.grow)
    feather = P.check("feather", o.feather)
    P.check_choice("masked_content", o.masked_content, MASKED_CONTENT)
    P.check_choice("depth_source", o.depth_source, DEPTH_SOURCES)
    P.check_choice("backend", o.backend, FILL_BACKENDS)
    P.check_choice("sampler", o.sampler, SAMPLER_CHOICES)
    P.check_choice("vae", o.vae, VAES)
    P.check_choice("control_type", o.control_type, C.PREPROCESS_TYPES)
    if o.output_format is not None:
        P.check_choice("output_format", o.output_format, EDITOR_FORMATS + ("RGBA_U8",))
    noise_level = P.check("noise_level", o.noise_level)
    tile = P.check("tile", o.tile)
    sides = {f: P.check(f, getattr(o, f)) for f in E.FIELDS}
    width, height = o.width, o.height
    if "width" in mode.options and req.image is None and req.mask is None:
        if width is None or height is None:
            raise ValidationError("width", f"{req.mode} needs width and height (or an image/selection)")
    if width is not None:
        width = P.check_multiple_of("width", width, 8)
    if height is not None:
        height = P.check_multiple_of("height", height, 8)
    return replace(o, grow=grow, feather=feather, noise_level=noise_level, tile=tile, width=width,
                   height=height, color_match=P.check_flag("color_match", o.color_match),
                   output_linear=P.check_flag("output_linear", o.output_linear), **sides)


def _check_buffers(req: JobRequest, mode, options: Options) -> None:
    if mode.image == IMAGE_REQUIRED and req.image is None:
        raise ValidationError("image", f"{req.mode} needs an input image")
    if mode.selection == SELECTION_REQUIRED and req.mask is None:
        raise ValidationError("mask", f"{req.mode} needs a selection (mask): {mode.selection_hint}")
    if req.image is not None:
        req.image.check("image", EDITOR_FORMATS + ("RGBA_U8", "RGBA_U16"))
    for name, buf, formats in (("mask", req.mask, MASK_FORMATS), ("depth", req.depth, DEPTH_INPUT_FORMATS)):
        if buf is None:
            continue
        buf.check(name, formats)
        if req.image is not None and (buf.width, buf.height) != (req.image.width, req.image.height):
            raise ValidationError(name, f"{name} must be the size of the image "
                                        f"({req.image.width}x{req.image.height}), got {buf.width}x{buf.height}")
    if req.image is None and req.mask is not None:
        cw, ch = req.canvas_size
        if req.origin[0] + req.mask.width > cw or req.origin[1] + req.mask.height > ch:
            raise ValidationError("mask", f"the mask ({req.mask.width}x{req.mask.height}) must lie inside the "
                                          f"canvas ({cw}x{ch})")
    if mode.scale > 1 and req.image is not None:
        limit = MAX_SIDE // mode.scale
        if max(req.image.width, req.image.height) > limit:
            raise ValidationError("image", f"{req.mode} input must be at most {limit} px a side (the result is "
                                           f"{mode.scale}× and at most {MAX_SIDE}), got "
                                           f"{req.image.width}x{req.image.height}")
    if "depth_source" in mode.options and options.depth_source == "given" and req.depth is None:
        raise ValidationError("depth", "depth_source 'given' needs a depth image")
    cw, ch = req.canvas_size
    for side, v in (("canvas width", cw), ("canvas height", ch)):
        if not (1 <= v <= MAX_SIDE):
            raise ValidationError("canvas", f"{side} must be in 1–{MAX_SIDE} px, got {v}")
    if req.image is not None:
        ox, oy = req.origin
        if ox < 0 or oy < 0 or ox + req.image.width > cw or oy + req.image.height > ch:
            raise ValidationError("origin", f"the image ({req.image.width}x{req.image.height} at {ox},{oy}) "
                                            f"must lie inside the canvas ({cw}x{ch})")
    if mode.grows_canvas:
        _check_growth(req, options)


def _check_growth(req: JobRequest, options: Options) -> None:
    """Expand: something grows, the new canvas stays within MAX_SIDE, and the image holds the context
    the job reads beside each grown side (``expand.context_rect``: what the dock sends)."""
    growth = E.Growth.of(options)
    if growth.empty:
        raise ValidationError("expand", E.NOTHING)
    size = req.canvas_size
    nw, nh = growth.canvas(size)
    if nw > MAX_SIDE or nh > MAX_SIDE:
        raise ValidationError("expand", f"the expanded canvas would be {nw}x{nh} px; it must be at most "
                                        f"{MAX_SIDE} px a side")
    need = E.context_rect(size, growth)
    if req.image is not None:
        have = Rect(req.origin[0], req.origin[1], req.image.width, req.image.height)
        if not have.contains(need):
            raise ValidationError("image", f"expand needs the image over {need.w}x{need.h} at {need.x},{need.y} "
                                           f"(the context beside each grown side), got {have.w}x{have.h} at "
                                           f"{have.x},{have.y}")


@dataclass(frozen=True)
class Patch:
    """One result: pixels to stack as a new layer at (x, y) of the canvas.  For image modes the alpha is 0
    wherever the selection is 0, so stacking the patch over the source leaves every pixel outside the
    selection bit-identical."""

    x: int
    y: int
    image: ImageBuffer
    seed: int | None

    def header(self) -> dict:
        return {"x": self.x, "y": self.y, "seed": self.seed, "image": self.image.header()}


@dataclass(frozen=True)
class JobResult:
    mode: str
    patches: tuple[Patch, ...]
    model: str | None = None
    params: Params = field(default_factory=Params)
    options: Options = field(default_factory=Options)
    warnings: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)
    controls: tuple[dict, ...] = ()    # the control layers used (``controls.record``), in the request's order

    def provenance(self, index: int) -> dict:
        """What produced patch ``index``: enough to re-run it."""
        patch = self.patches[index]
        return {
            "mode": self.mode,
            "model": self.model,
            "seed": patch.seed,
            "params": {**asdict(self.params), "seed": patch.seed, "num_images": 1},
            "options": asdict(self.options), **self._controls(),
        }

    def _controls(self) -> dict:
        return {"controls": [dict(c) for c in self.controls]} if self.controls else {}

    def header(self) -> dict:
        return {
            "mode": self.mode,
            "model": self.model,
            "params": asdict(self.params),
            "options": asdict(self.options),
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            "patches": [p.header() for p in self.patches], **self._controls(),
        }

    @classmethod
    def from_header(cls, h: dict, datas: list[bytes]) -> JobResult:
        patches = tuple(
            Patch(int(p["x"]), int(p["y"]), ImageBuffer.from_header(p["image"], d), p.get("seed"))
            for p, d in zip(h["patches"], datas, strict=True)
        )
        return cls(mode=h["mode"], patches=patches, model=h.get("model"),
                   params=_dataclass_from(Params, h.get("params") or {}, "params"),
                   options=_dataclass_from(Options, h.get("options") or {}, "options"),
                   warnings=tuple(h.get("warnings") or ()), timings=dict(h.get("timings") or {}),
                   controls=C.records_from(h.get("controls")))


def result_name(mode: str, prompt: str, seed: int | None, model: str | None = None, limit: int = 48) -> str:
    """The name of a result layer, e.g. ``[Inpaint] red scarf (seed 1234)``.  A mode that names its
    backend instead of a prompt (Fill) gives ``[Fill] LaMa``, ``[Fill] Patches`` or ``[Fill] OpenCV`` and no seed."""
    known = MODE_SPECS.get(mode)
    if known is not None and known.names_backend:
        prompt, seed = FILL_NAMES.get((model or "").split(":")[0].split("-")[0], "Patches"), None
    text = " ".join(prompt.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    parts = [f"[{known.title if known else mode}]"]
    if text:
        parts.append(text)
    if seed is not None:
        parts.append(f"(seed {seed})")
    return " ".join(parts)
