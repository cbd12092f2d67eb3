"""Diffusion Dock engine.

Pure modules (standard library only, reused by the editor plugin inside Krita's Python):
``params``, ``jobs``, ``geometry``, ``catalog``, ``control``, ``translate``, ``events``, ``protocol``
and ``client``.  Everything that needs numpy, torch or diffusers lives in other modules and is
imported only by the engine process.
"""

__version__ = "0.1.0"

# Modules that must import with the standard library alone (checked by tests/test_pure_imports.py
# and copied into the installed Krita plugin).
PURE_MODULES = ("params", "jobs", "geometry", "catalog", "control", "translate", "events", "protocol", "bulk", "client")
