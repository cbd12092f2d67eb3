"""The plugin's actions: ids, texts, default shortcuts and what each one asks the dock for.

``plugin/diffusion_dock.action`` (Krita's shortcut file) lists the same ids and shortcuts; a test
keeps the two in step.  Shortcuts use Ctrl+Alt+Shift, which Krita's default shortcut schemes leave
free except for C and I.  (Ctrl+Enter, which runs the job, belongs to the dock panel itself.)
"""

from __future__ import annotations

from dataclasses import dataclass

DOCK_ID = "diffusion_dock"          # Krita docker id (and objectName of its dock window)
DOCK_TITLE = "Diffusion Dock"


@dataclass(frozen=True)
class ActionSpec:
    id: str
    text: str
    shortcut: str              # Krita/Qt portable text, "" for none
    mode: str | None           # the dock mode it opens; None = just show the dock
    tooltip: str
    layer_menu: bool = False   # also offered in the Layers docker's right-click menu
    # Krita's activation flags (KisAction::ActivationFlag), written in binary as Krita parses them:
    # 0 = always, 1 = a document is open, 100000 = the active node is a layer (paint, group, vector…).
    activation: str = "100000"


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("diffusion_dock_show", "Diffusion Dock", "Ctrl+Alt+Shift+D", None,
               "Show the Diffusion Dock panel", activation="0"),
    ActionSpec("diffusion_dock_inpaint", "Inpaint selection…", "Ctrl+Alt+Shift+P", "inpaint",
               "Repaint the selected part of the layer from a prompt, on a new layer", layer_menu=True),
    ActionSpec("diffusion_dock_restyle", "Restyle layer…", "Ctrl+Alt+Shift+R", "restyle",
               "Repaint the layer (or the selection) keeping its depth, on a new layer", layer_menu=True),
    ActionSpec("diffusion_dock_depth", "Depth map of layer", "", "depth",
               "Estimate a depth map of the layer, on a new layer"),
    ActionSpec("diffusion_dock_upscale", "Upscale layer ×4", "Ctrl+Alt+Shift+U", "upscale",
               "Upscale the layer four times with the Stable Diffusion x4 upscaler", layer_menu=True),
    ActionSpec("diffusion_dock_generate", "Generate image…", "Ctrl+Alt+Shift+G", "generate",
               "Generate an image from a prompt, on a new layer", activation="1"),
    ActionSpec("diffusion_dock_fill", "Fill selection", "Ctrl+Alt+Shift+F", "fill",
               "Fill the selection from its surroundings (removes objects), on a new layer",
               layer_menu=True),
)

BY_ID = {a.id: a for a in ACTIONS}
LAYER_MENU = tuple(a for a in ACTIONS if a.layer_menu)
