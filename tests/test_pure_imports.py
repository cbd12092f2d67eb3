"""The pure parts of core import with the standard library alone (the editor reuses them in Krita)."""

import subprocess
import sys

from core import PURE_MODULES

from .conftest import ROOT


def test_pure_modules_import_without_site_packages():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import importlib\n"
        "for m in %r: importlib.import_module('core.' + m)\n"
        "bad = [m for m in ('numpy', 'torch', 'PIL', 'diffusers', 'cv2') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    ) % (str(ROOT), PURE_MODULES)
    # -S: no site-packages at all, -E: ignore PYTHON* variables.
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
