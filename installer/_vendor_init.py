"""Pure-Python packages vendored into the Krita plugin by the installer (qasync)."""
