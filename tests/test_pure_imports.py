"""The pure layers of core import with the standard library alone (the editor reuses them in Krita)."""

import subprocess
import sys

from core import PURE_PACKAGES

from .conftest import ROOT


def test_pure_packages_import_without_site_packages():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import importlib, pkgutil\n"
        "names = []\n"
        "for p in %r:\n"
        "    pkg = importlib.import_module('core.' + p)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name); names.append(m.name)\n"
        "bad = [m for m in ('numpy', 'torch', 'PIL', 'diffusers', 'cv2', 'platformdirs') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    ) % (str(ROOT), PURE_PACKAGES)
    # -S: no site-packages at all, -E: ignore PYTHON* variables.
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 10


def test_pure_packages_import_nothing_from_the_rest_of_core():
    """contract and link import only each other (relatively): the plugin copies just these two."""
    import ast

    for name in PURE_PACKAGES:
        for path in (ROOT / "core" / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level:
                    depth = len(path.relative_to(ROOT / "core").parts) - 1
                    if node.level > depth:   # reaches core/ itself: must name a pure package
                        top = (node.module or "").split(".")[0]
                        assert top in PURE_PACKAGES, f"{path}: from {'.' * node.level}{node.module} import ..."
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    assert not (mod or "").startswith("core"), f"{path}: absolute import of {mod}"
