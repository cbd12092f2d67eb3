"""The standalone editor: a small PyQt6 image editor hosting the Diffusion Dock when Krita is absent.

Launch from the repository root: ``.venv/bin/python -m plugin.diffusion_dock.editor [IMAGE]``.
"""
