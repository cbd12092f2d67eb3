"""The plugin's actions: ids, texts, default shortcuts and what each one asks the dock for.

One action shows the dock; every mode of the mode table (``core.contract.modes``) has one more.
``plugin/diffusion_dock.action`` (Krita's shortcut file) lists the same ids and shortcuts; a test
keeps the two in step, and ``python -m plugin.diffusion_dock.panel.actions > plugin/diffusion_dock.action``
writes it anew after a mode was added.  Shortcuts use Ctrl+Alt+Shift, which Krita's default shortcut schemes leave
free except for C and I.  (Ctrl+Enter, which runs the job, belongs to the dock panel itself.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.coreapi import modes

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


SHOW = ActionSpec("diffusion_dock_show", "Diffusion Dock", "Ctrl+Alt+Shift+D", None,
                  "Show the Diffusion Dock panel", activation="0")
# One action per mode, from the mode table (``core.contract.modes``).
ACTIONS: tuple[ActionSpec, ...] = (SHOW, *(
    ActionSpec(f"diffusion_dock_{m.key}", m.action.text, m.action.shortcut, m.key, m.action.tooltip,
               m.action.layer_menu, m.action.activation) for m in modes.MODE_TABLE))

BY_ID = {a.id: a for a in ACTIONS}
LAYER_MENU = tuple(a for a in ACTIONS if a.layer_menu)


def action_file() -> str:
    """Krita's action file for ``ACTIONS`` (the text of ``plugin/diffusion_dock.action``)."""
    from xml.sax.saxutils import escape

    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           "<!-- Diffusion Dock: actions and default shortcuts.  Installed into Krita's resource folder as",
           "     actions/diffusion_dock.action (beside pykrita/).  Written by",
           "     `python -m plugin.diffusion_dock.panel.actions` from diffusion_dock/panel/actions.py (a test",
           "     checks).  activationFlags are binary: 0 always, 1 a document is open, 100000 the active",
           "     node is a layer. -->",
           '<ActionCollection version="2" name="Scripts">',
           '  <Actions category="Scripts">',
           f"    <text>{DOCK_TITLE}</text>"]
    for a in ACTIONS:
        out += [f'    <Action name="{a.id}">', "      <icon></icon>", f"      <text>{escape(a.text)}</text>",
                "      <whatsThis></whatsThis>", f"      <toolTip>{escape(a.tooltip)}</toolTip>",
                "      <iconText></iconText>", f"      <activationFlags>{a.activation}</activationFlags>",
                "      <activationConditions>0</activationConditions>", f"      <shortcut>{a.shortcut}</shortcut>",
                "      <isCheckable>false</isCheckable>", "      <statusTip></statusTip>", "    </Action>"]
    out += ["  </Actions>", "</ActionCollection>", ""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(action_file())
