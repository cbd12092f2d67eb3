"""The Hugging Face cache is found as huggingface_hub finds it: each of its variables, ``~`` expanded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

CODE = "from core.models.hub import hf_hub_cache; print(hf_hub_cache())"


def cache_with(env: dict, home: Path) -> Path:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")}
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**clean, "HOME": str(home), **env})
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.mark.parametrize("env, expected", [
    ({}, "{home}/.cache/huggingface/hub"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/huggingface/hub"),
    ({"HF_HOME": "{tmp}/hf"}, "{tmp}/hf/hub"),
    ({"HF_HOME": "~/x"}, "{home}/x/hub"),
    ({"HF_HUB_CACHE": "{tmp}/hub-cache"}, "{tmp}/hub-cache"),
    ({"HUGGINGFACE_HUB_CACHE": "{tmp}/old-name"}, "{tmp}/old-name"),
    ({"HF_HUB_CACHE": "~/new", "HF_HOME": "{tmp}/ignored"}, "{home}/new"),
])
def test_each_variable(tmp_path, env, expected):
    home = tmp_path / "home"
    fill = {"home": str(home), "tmp": str(tmp_path)}
    got = cache_with({k: v.format(**fill) for k, v in env.items()}, home)
    assert got == Path(expected.format(**fill))
    assert "~" not in str(got)
