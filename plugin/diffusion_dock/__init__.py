"""Diffusion Dock: Stable Diffusion 2 in a dock panel for Krita 5/6 and a standalone editor.

Inside Krita, importing this package registers the plugin (docker, actions, layer menu entries);
anywhere else it only makes the package's modules importable (the standalone editor, tests).
"""

from .runtime.qt import INSIDE_KRITA

if INSIDE_KRITA:
    from .krita import plugin

    plugin.register()
