"""The job kinds: one frozen ``ModeSpec`` per mode, the only place a mode's facts are written.

Validation (``jobs.validate``), the plan (``plan``), the engine's pipeline registry
(``core.pipelines``), the command line, the dock's form and job builder, the session's labels and the
plugin's actions all read this table.  Adding a mode is one row here, one pipeline module
(``core/pipelines/<key>.py``, registered in ``core.pipelines.PIPELINES``) and its tests
(DEVELOPERS.md has the recipe).  Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a mode's request must carry, and what the dock asks for before building it.
IMAGE_REQUIRED, IMAGE_OPTIONAL = "required", "optional"
# selection: "required" = the request must carry a mask (the engine refuses one without);
# "asked" = the dock asks the artist to select first, the command line works on the whole image;
# "optional" = the whole layer without one.
SELECTION_REQUIRED, SELECTION_ASKED, SELECTION_OPTIONAL = "required", "asked", "optional"
# strength: read always, only when the request has an input image (image-to-image), or never.
STRENGTH_ALWAYS, STRENGTH_WITH_IMAGE, STRENGTH_NEVER = "always", "with_image", "never"
# Where a result goes in the editor: a new layer above its source, or a new document.
TARGET_LAYER, TARGET_DOCUMENT = "layer", "document"
# What the command line writes: the input with the patch stacked over it; the patch alone as 16-bit
# grey (depth); the plain ``scale``× resize of the input with the patch over it (upscale); the input on
# the grown canvas with the patch over it (expand).
OUTPUT_COMPOSITE, OUTPUT_GRAY16, OUTPUT_SCALED, OUTPUT_EXPANDED = "composite", "gray16", "scaled", "expanded"
# What a selection's job reads around the selection: its box grown by ``grow`` plus context (the model
# repaints beyond the selection), or its box plus context only (the model changes only the selection).
REGION_GROWN, REGION_CONTEXT = "grown", "context"

COMMON_PARAMS = ("prompt", "negative_prompt", "num_images", "steps", "guidance", "strength", "seed", "weighted",
                 "loras", "embeddings")
# The working size of Live frames: the model's native size at most, smaller on the CPU (speed first).
LIVE_SIZE, LIVE_SIZE_CPU = 512, 384

# What the dock calls each phase of a job (the engine's phases: ``jobcontrol.PHASES``); a mode may
# rename some (``ModeSpec.phase_labels``).
PHASE_LABELS = {"queued": "Queued", "loading": "Loading the model", "encoding": "Preparing",
                "denoising": "Denoising", "decoding": "Decoding", "finishing": "Finishing",
                "retrying": "Retrying on another GPU"}


@dataclass(frozen=True)
class ModeAction:
    """The editor action that opens (or runs) a mode: Krita's action file and menus are made from it."""

    text: str
    shortcut: str              # Krita/Qt portable text, "" for none
    tooltip: str
    layer_menu: bool = False   # also offered in the Layers docker's right-click menu
    activation: str = "100000"  # Krita's activation flags in binary: 0 always, 1 a document, 100000 a layer


@dataclass(frozen=True)
class ModeSpec:
    key: str
    title: str                      # in result layer names: "[Inpaint] red scarf (seed 1234)"
    label: str                      # in the dock's list of modes
    run_label: str                  # the dock's run button
    action: ModeAction
    params: tuple[str, ...] = ()    # the common parameters (``jobs.Params`` fields) the mode reads
    options: tuple[str, ...] = ()   # the ``jobs.Options`` fields the mode reads
    defaults: tuple[tuple[str, object], ...] = ()   # Options defaults that differ for this mode
    image: str = IMAGE_REQUIRED
    selection: str = SELECTION_OPTIONAL
    selection_hint: str = ""        # what the dock asks the artist to select
    strength: str = STRENGTH_NEVER
    run_at_once: bool = False       # its action runs the job at once (no prompt to type first)
    target: str = TARGET_LAYER
    output: str = OUTPUT_COMPOSITE
    scale: int = 1                  # result px per input px
    region: str = REGION_GROWN
    models: tuple[str, ...] = ()    # catalogue keys the mode tries, best first (none: needs no model)
    phase_labels: tuple[tuple[str, str], ...] = ()
    names_backend: bool = False     # the result is named after the backend used, not the prompt
    # The result needs the canvas grown by the ``expand_*`` options (``contract.expand``): its patch is in
    # the grown canvas's coordinates, and applying it resizes the canvas before adding the layer.
    grows_canvas: bool = False
    # Common parameters whose range or default differs for this mode: (name, low, high) and (name, value).
    param_ranges: tuple[tuple[str, float, float], ...] = ()
    param_defaults: tuple[tuple[str, object], ...] = ()
    live: bool = False              # the dock can run it continuously (its Live switch)
    controls: bool = False          # takes control layers (``contract.controls``: SD 2.1 ControlNets)

    @property
    def option_defaults(self) -> dict:
        return dict(self.defaults)

    def uses_strength(self, has_image: bool) -> bool:
        return self.strength == STRENGTH_ALWAYS or (self.strength == STRENGTH_WITH_IMAGE and has_image)

    @property
    def uses_prompt(self) -> bool:
        return "prompt" in self.params

    @property
    def uses_guidance(self) -> bool:
        """False for a distilled model's mode: no classifier-free guidance (no negative prompt pass)."""
        return "guidance" in self.params

    def param_range(self, name: str) -> tuple[float, float] | None:
        """(low, high) of a common parameter when this mode narrows it, else None (the product's range)."""
        return next(((lo, hi) for n, lo, hi in self.param_ranges if n == name), None)

    def phase_label(self, phase: str) -> str:
        return dict(self.phase_labels).get(phase) or PHASE_LABELS.get(phase, phase.capitalize())


_IMAGE_PARAMS = COMMON_PARAMS
_REGION_OPTIONS = ("grow", "feather", "color_match")
# SD-Turbo (adversarial diffusion distillation of SD 2.1): 1 to 4 steps, no classifier-free guidance.
_LIVE_PARAMS = ("prompt", "steps", "strength", "seed", "weighted")

MODE_TABLE: tuple[ModeSpec, ...] = (
    ModeSpec(
        "inpaint", "Inpaint", "Inpaint", "Generate",
        ModeAction("Inpaint selection…", "Ctrl+Alt+Shift+P",
                   "Repaint the selected part of the layer from a prompt, on a new layer", layer_menu=True),
        params=_IMAGE_PARAMS, options=(*_REGION_OPTIONS, "masked_content", "sampler", "vae"),
        selection=SELECTION_ASKED, selection_hint="select the area to repaint",
        strength=STRENGTH_ALWAYS, models=("sd2-inpainting",), controls=True),
    ModeSpec(
        "restyle", "Restyle", "Restyle (depth)", "Generate",
        ModeAction("Restyle layer…", "Ctrl+Alt+Shift+R",
                   "Repaint the layer (or the selection) keeping its depth, on a new layer", layer_menu=True),
        params=_IMAGE_PARAMS, options=(*_REGION_OPTIONS, "depth_source", "sampler"),
        strength=STRENGTH_ALWAYS, models=("sd2-depth",), controls=True),
    ModeSpec(
        "depth", "Depth map", "Depth map", "Make depth map",
        ModeAction("Depth map of layer", "", "Estimate a depth map of the layer, on a new layer"),
        run_at_once=True, output=OUTPUT_GRAY16, models=("sd2-depth",),
        phase_labels=(("encoding", "Estimating depth"),)),
    ModeSpec(
        "upscale", "Upscale x4", "Upscale ×4", "Upscale ×4",
        ModeAction("Upscale layer ×4", "Ctrl+Alt+Shift+U",
                   "Upscale the layer four times with the Stable Diffusion x4 upscaler", layer_menu=True),
        params=("prompt", "negative_prompt", "steps", "guidance", "seed", "weighted"),
        options=("feather", "noise_level", "tile"),
        run_at_once=True, target=TARGET_DOCUMENT, output=OUTPUT_SCALED, scale=4, region=REGION_CONTEXT,
        models=("sd2-x4-upscaler",),
        phase_labels=(("denoising", "Upscaling"),)),
    ModeSpec(
        "generate", "Generate", "Generate", "Generate",
        ModeAction("Generate image…", "Ctrl+Alt+Shift+G", "Generate an image from a prompt, on a new layer",
                   activation="1"),
        params=_IMAGE_PARAMS, options=(*_REGION_OPTIONS, "width", "height", "sampler", "vae"),
        image=IMAGE_OPTIONAL, strength=STRENGTH_WITH_IMAGE, models=("sd2-1", "sd2-1-base"), controls=True),
    ModeSpec(
        "fill", "Fill", "Fill (remove object)", "Fill selection",
        ModeAction("Fill selection", "Ctrl+Alt+Shift+F",
                   "Fill the selection from its surroundings (removes objects), on a new layer", layer_menu=True),
        options=("grow", "feather", "backend"),
        # An inward feather would let the removed object show through its soft edge, and growing the
        # hole keeps the object's anti-aliased fringe out of what the fill copies from
        # (docs/benchmarks.md).
        defaults=(("grow", 4), ("feather", 0)),
        selection=SELECTION_REQUIRED, selection_hint="select the object to remove",
        run_at_once=True, names_backend=True, phase_labels=(("denoising", "Filling"),)),
    ModeSpec(
        "expand", "Expand", "Expand (outpaint)", "Expand",
        ModeAction("Expand canvas…", "Ctrl+Alt+Shift+E",
                   "Grow the canvas and paint the new border from a prompt, on a new layer", layer_menu=True),
        params=_IMAGE_PARAMS,
        options=("expand_left", "expand_top", "expand_right", "expand_bottom", "color_match", "sampler"),
        defaults=(("expand_right", 256),),
        selection_hint="the selection is not used: the sizes say how far each side grows",
        strength=STRENGTH_ALWAYS, output=OUTPUT_EXPANDED, grows_canvas=True, models=("sd2-inpainting",),
        phase_labels=(("encoding", "Pre-filling the border"),), controls=True),
    ModeSpec(
        "preprocess", "Control layer", "Make control layer", "Make control layer",
        ModeAction("Make control layer…", "Ctrl+Alt+Shift+K",
                   "Turn the layer (or the selection) into a control picture (edges, line art, depth…) on a new "
                   "layer, to edit and use as a control", layer_menu=True),
        options=("control_type",),
        phase_labels=(("encoding", "Making the control picture"),)),
    ModeSpec(
        "live", "Live", "Live (SD-Turbo)", "Generate",
        ModeAction("Live painting (SD-Turbo)…", "",
                   "Repaint the layer (or the selection) in 1–4 steps with SD-Turbo; with Live on, the dock "
                   "repaints it after every change"),
        params=_LIVE_PARAMS, options=(*_REGION_OPTIONS, "vae"), defaults=(("vae", "tiny"),),
        strength=STRENGTH_ALWAYS, models=("sd-turbo",),
        param_ranges=(("steps", 1, 4),), param_defaults=(("steps", 1), ("strength", 0.5)), live=True),
)

MODE_SPECS: dict[str, ModeSpec] = {m.key: m for m in MODE_TABLE}
MODES: tuple[str, ...] = tuple(MODE_SPECS)


def spec(mode: str) -> ModeSpec:
    """The mode's spec; KeyError for an unknown mode (validation refuses those first)."""
    return MODE_SPECS[mode]
