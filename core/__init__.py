"""Diffusion Dock engine.

The layers (DEVELOPERS.md has the map): ``contract`` (requests, parameters, modes, plans, events) and
``link`` (the wire protocol, shared-memory payloads, the client) need only the standard library, so the
editor plugin reuses them inside Krita's Python; ``models``, ``raster``, ``pipelines`` and ``engine``
need numpy, torch or diffusers and run only in the engine process.
"""

__version__ = "0.1.0"

# The standard-library-only packages: checked by tests/test_pure_imports.py and copied whole into the
# installed Krita plugin (as ``diffusion_dock/_core/``).
PURE_PACKAGES = ("contract", "link")
