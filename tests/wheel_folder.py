"""Wheel folders for the installer's offline step (``--wheels DIR``), built at test time without network.

- ``tiny_wheel``: a small pure-Python wheel written from source text.
- ``repack``: a wheel of a distribution installed in this test environment, made from its RECORD (the files
  pip put in place, with the original WHEEL tags; ``__pycache__`` and console scripts left out: pip makes
  the scripts again from ``entry_points.txt``).  What pip installs from it is what the original wheel held.
- ``layer``: a folder of symbolic links to some installed distributions (their packages and dist-info), for
  a ``.pth`` file: what a test does not repack (too large to copy in a test) is visible as installed.
- ``torch_wheel_on_disk``: this machine's torch wheel, where pip's configuration finds wheels (find-links).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

SKIP_META = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write(path: Path, entries: list[tuple[str, bytes]], dist_info: str) -> Path:
    record = [_record_line(a, d) for a, d in entries] + [f"{dist_info}/RECORD,,"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:      # stored: quick to write and to unpack
        for arcname, data in entries:
            z.writestr(arcname, data)
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def tiny_wheel(out: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """``name-version-py3-none-any.whl`` in ``out`` holding ``files`` (path inside site-packages: text)."""
    dist_info = f"{_normalise(name)}-{version}.dist-info"
    meta = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                    *(f"Requires-Dist: {r}\n" for r in requires)])
    entries = [(p, t.encode()) for p, t in files.items()]
    entries += [(f"{dist_info}/METADATA", meta.encode()),
                (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
    out.mkdir(parents=True, exist_ok=True)
    return _write(out / f"{_normalise(name)}-{version}-py3-none-any.whl", entries, dist_info)


def _dist_info(dist: md.Distribution) -> str:
    for f in dist.files or []:
        if len(f.parts) == 2 and f.parts[0].endswith(".dist-info") and f.parts[1] == "METADATA":
            return f.parts[0]
    raise LookupError(f"{dist.metadata['Name']}: no dist-info in its RECORD")


def repack(name: str, out: Path) -> Path:
    """A wheel of the installed distribution ``name`` in ``out``."""
    dist = md.distribution(name)
    dist_info = _dist_info(dist)
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    entries = []
    for f in dist.files or []:
        parts = f.parts
        if parts[0] == ".." or "__pycache__" in parts or f.suffix == ".pyc":
            continue
        if parts[0] == dist_info and parts[-1] in SKIP_META:
            continue
        entries.append((f.as_posix(), Path(str(dist.locate_file(f))).read_bytes()))
    # the compressed tag set of the file name (py2.py3-none-any, cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64)
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)] if tags else [["py3"], ["none"], ["any"]]
    tag = "-".join(".".join(p) for p in parts)
    out.mkdir(parents=True, exist_ok=True)
    return _write(out / f"{_normalise(dist.metadata['Name'])}-{dist.version}-{tag}.whl", entries, dist_info)


def layer(names: list[str], out: Path) -> Path:
    """``out`` holding links to the installed distributions ``names`` (each top-level entry of their RECORD)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        dist = md.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (out / top).exists():
                (out / top).symlink_to(target)
    return out


def requirements_closure(roots: list[str]) -> list[str]:
    """The installed distributions ``roots`` and everything they need here (their names, sorted)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = _normalise(name)
        if key in seen:
            continue
        dist = md.distribution(name)
        seen[key] = dist.metadata["Name"]
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=str.lower)


def torch_wheel_on_disk() -> Path | None:
    """The wheel of this environment's torch in a folder pip's configuration names (``find-links``)."""
    version = md.version("torch")
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         timeout=60).stdout
    folders = re.findall(r"find-links='([^']+)'", out) + os.environ.get("PIP_FIND_LINKS", "").split()
    for folder in folders:
        for path in Path(folder).glob(f"torch-{version}-*.whl") if Path(folder).is_dir() else []:
            return path
    return None


def offline_pip_env(env: dict | None = None) -> dict:
    """An environment where pip has no configuration (no index or find-links of this machine's) and any
    network access fails (a proxy that refuses), except to localhost (the fake hub)."""
    env = {k: v for k, v in (os.environ if env is None else env).items()
           if not k.upper().startswith("PIP_") and "PROXY" not in k.upper()}
    env.update(PIP_CONFIG_FILE=os.devnull, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


# What ``engine_wheel_folder`` leaves out: the largest compiled packages (PyQt6 with its Qt, OpenCV, NumPy,
# SymPy: about 600 MB unpacked), linked beside the new environment instead (``layered_venv``), so that a test
# stays within a few minutes.  Everything else the engine needs is a wheel pip installs.
NOT_REPACKED = ["PyQt6", "opencv-python-headless", "numpy", "sympy"]


def engine_wheel_folder(out: Path) -> tuple[Path, Path, list[str]]:
    """A wheel folder for ``installer setup --wheels``, built from this test environment without network:
    torch is this machine's own wheel (``torch_wheel_on_disk``), the engine's other requirements
    (pyproject.toml's, and what they need) are repacked from their installed files, with setuptools for
    the engine's build.  Returns (the folder, the folder of links to ``NOT_REPACKED``, the wheels' names)."""
    import tomllib
    from packaging.requirements import Requirement

    torch_wheel = torch_wheel_on_disk()
    if torch_wheel is None:
        raise LookupError("no torch wheel of this environment's version where pip's find-links point")
    root = Path(__file__).resolve().parent.parent
    deps = [Requirement(r).name for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]]
    layered = requirements_closure(NOT_REPACKED)
    skip = {_normalise(n) for n in layered} | {"torch"}
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    (wheels / torch_wheel.name).symlink_to(torch_wheel)
    names = [torch_wheel.name]
    for name in requirements_closure(deps) + ["setuptools"]:
        if _normalise(name) not in skip:
            names.append(repack(name, wheels).name)
    return wheels, layer(layered, out / "layer"), names


def layered_venv(venv: Path, links: Path) -> Path:
    """Before the setup creates ``venv``: its site-packages with a ``.pth`` naming ``links`` (``python -m venv``
    keeps what is there), so the new environment's Python and pip see those packages as installed."""
    site = venv / Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    site.mkdir(parents=True)
    (site / "dd_test_layer.pth").write_text(f"{links}\n")
    return site
