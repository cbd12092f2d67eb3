"""Installer: the Krita plugin, the engine environment, model downloads and doctor (issue 6)."""
