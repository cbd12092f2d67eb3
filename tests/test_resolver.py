"""Finding models on disk: explicit folders, the app models folder, the HF cache, single files."""

import hashlib
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from core.contract.catalog import CATALOG
from core.models.manager import ModelManager
from core.models.resolver import ModelNotFound, UnsafeModelFile, find_installed, resolve
from core.pipelines import run_job

from .helpers import inpaint_request, rect_mask, rgba_u8


def hf_cache_copy(src: Path, hub: Path, repo_id: str, revision: str = "0123456789abcdef") -> Path:
    """Lay ``src`` out as the Hugging Face cache does: blobs named by hash, snapshot symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    for f in src.rglob("*"):
        if f.is_file() and not f.name.startswith("."):
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snap / f.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


def test_explicit_folder(tiny_root):
    r = resolve(str(tiny_root / "sd2-inpainting"), models_dir=tiny_root / "none")
    assert r.source == "explicit"
    assert r.pipeline == "StableDiffusionInpaintPipeline" and r.spec.key == "sd2-inpainting"
    assert r.prediction == "epsilon"


def test_mode_default_in_models_dir(tiny_root):
    r = resolve(None, "inpaint", models_dir=tiny_root, hub_cache=tiny_root / "none")
    assert r.source == "models-dir" and r.path == tiny_root / "sd2-inpainting"


def test_hf_cache_layout_found_and_runs(tiny_root, tmp_path, policy):
    hub = tmp_path / "hub"
    snap = hf_cache_copy(tiny_root / "sd2-inpainting", hub, "stabilityai/stable-diffusion-2-inpainting")
    r = resolve("sd2-inpainting", models_dir=tmp_path / "empty", hub_cache=hub)
    assert r.source == "hf-cache" and r.path == snap
    r2 = resolve(None, "inpaint", models_dir=tmp_path / "empty", hub_cache=hub)
    assert r2.path == snap
    # without a cache passed, the one huggingface_hub finds is searched (tests/test_hub_cache.py: its variables)
    with mock.patch("huggingface_hub.constants.HF_HUB_CACHE", str(hub)):
        assert resolve("stabilityai/stable-diffusion-2-inpainting", models_dir=tmp_path / "empty").path == snap
    mm = ModelManager(policy, models_dir=tmp_path / "empty", hub_cache=hub)
    img, mask = rgba_u8(64, 64), rect_mask(64, 64, 16, 16, 40, 40)
    res = run_job(inpaint_request(img, mask, steps=2), mm)
    assert len(res.patches) == 1 and res.model == "sd2-inpainting"


def test_models_dir_wins_over_hf_cache(tiny_root, tmp_path):
    hub = tmp_path / "hub"
    hf_cache_copy(tiny_root / "sd2-inpainting", hub, "stabilityai/stable-diffusion-2-inpainting")
    r = resolve("sd2-inpainting", models_dir=tiny_root, hub_cache=hub)
    assert r.source == "models-dir"


def test_missing_model_names_it_and_how_to_get_it(tmp_path):
    with pytest.raises(ModelNotFound) as e:
        resolve(None, "inpaint", models_dir=tmp_path, hub_cache=tmp_path)
    msg = str(e.value)
    assert "stabilityai/stable-diffusion-2-inpainting" in msg
    assert "python -m installer models download sd2-inpainting" in msg
    with pytest.raises(ModelNotFound, match="sd2-1-base"):
        resolve(None, "generate", models_dir=tmp_path, hub_cache=tmp_path)
    with pytest.raises(ModelNotFound, match="never download"):
        resolve("someone/unknown-model", models_dir=tmp_path, hub_cache=tmp_path)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_files_are_refused(tmp_path, suffix):
    f = tmp_path / ("model" + suffix)
    f.write_bytes(b"\x80\x04not really")
    with pytest.raises(UnsafeModelFile) as e:
        resolve(str(f), models_dir=tmp_path)
    assert "pickle" in str(e.value) and "arbitrary code" in str(e.value)
    assert "installer models import FILE.safetensors" in str(e.value)


def test_folder_with_only_pickle_weights_is_refused(tiny_root, tmp_path):
    dst = tmp_path / "pickled"
    shutil.copytree(tiny_root / "sd2-inpainting", dst)
    w = dst / "unet" / "diffusion_pytorch_model.safetensors"
    w.rename(w.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(UnsafeModelFile, match="pickle"):
        resolve(str(dst), models_dir=tmp_path)


def test_prediction_type_comes_from_the_scheduler_config_not_the_name(tiny_root, tmp_path):
    # a folder called like the 768 v-model, holding an epsilon model, is the epsilon one
    dst = tmp_path / "models" / "sd2-1"
    shutil.copytree(tiny_root / "sd2-1-base", dst)
    r = resolve("sd2-1", models_dir=tmp_path / "models", hub_cache=tmp_path)
    assert r.prediction == "epsilon" and r.spec.key == "sd2-1-base"
    v = resolve(str(tiny_root / "sd2-1"), models_dir=tmp_path)
    assert v.prediction == "v_prediction" and v.spec.key == "sd2-1"


def test_fp16_variant_is_detected(tiny_root, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(tiny_root / "sd2-inpainting", dst)
    for f in dst.rglob("*.safetensors"):
        f.rename(f.with_name(f.name.replace(".safetensors", ".fp16.safetensors")))
    assert resolve(str(dst), models_dir=tmp_path).variant == "fp16"


def test_single_file_needs_a_config_folder(tiny_root, tmp_path):
    f = tmp_path / "512-inpainting-ema.safetensors"
    f.write_bytes(b"{}")
    with pytest.raises(ModelNotFound, match="config folder"):
        resolve(str(f), models_dir=tmp_path / "empty", hub_cache=tmp_path / "empty")
    # with the catalogue model's configs in the models folder it resolves
    cfg = tmp_path / "models" / "configs" / "sd2-inpainting"
    shutil.copytree(tiny_root / "sd2-inpainting", cfg, ignore=shutil.ignore_patterns("*.safetensors"))
    r = resolve(str(f), models_dir=tmp_path / "models", hub_cache=tmp_path / "empty")
    assert r.single_file and r.config == cfg and r.pipeline == "StableDiffusionInpaintPipeline"
    # and the models folder's single file is found by name, after folders
    shutil.copy(f, tmp_path / "models" / "sd2-inpainting.safetensors")
    r = resolve("sd2-inpainting", models_dir=tmp_path / "models", hub_cache=tmp_path / "empty")
    assert r.source == "single-file"


def test_native_resolution_note(tiny_root):
    r = resolve(str(tiny_root / "sd2-inpainting"))
    assert r.native == 128  # the tiny models' diffusion_dock.json
    assert json.loads((tiny_root / "sd2-inpainting" / "diffusion_dock.json").read_text())["native_resolution"] == 128


def test_find_installed_lists_all_tiny_models(tiny_root):
    found = {r.name for r in find_installed(tiny_root, tiny_root / "none")}
    assert {k for k, s in CATALOG.items() if not s.optional} <= found   # ControlNets: tests/test_controls.py


def test_loaded_pipelines_never_touch_the_network(tiny_root, policy, monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access during a job")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    mm = ModelManager(policy, models_dir=tiny_root, hub_cache=tiny_root / "none")
    res = run_job(inpaint_request(rgba_u8(48, 48), rect_mask(48, 48, 8, 8, 30, 30), steps=2), mm)
    assert np.asarray(res.patches[0].image.width) > 0


def test_a_model_installed_in_the_models_folder_is_found_by_its_name(tiny_root, tmp_path, monkeypatch):
    shutil.copytree(tiny_root / "sd2-inpainting", tmp_path / "my-finetune")
    monkeypatch.chdir(tmp_path / "my-finetune" / "unet")        # not a path relative to where the engine runs
    r = resolve("my-finetune", models_dir=tmp_path)
    assert r.path == tmp_path / "my-finetune" and r.source == "models-dir" and r.name == "my-finetune"


def test_a_remote_client_may_name_installed_models_only(tiny_root, tmp_path):
    from core.contract.params import ValidationError
    from core.models.resolver import REMOTE_MODEL_RULE, check_remote_model

    shutil.copytree(tiny_root / "sd2-inpainting", tmp_path / "my-finetune")
    for ok in (None, "sd2-inpainting", "sd2-x4-upscaler", "big-lama", "my-finetune"):
        check_remote_model(ok, tmp_path)
    refused = ["/etc", "~/.bashrc", "../../etc/passwd", "/proc/self/environ", str(tmp_path / "my-finetune"),
               "my-finetune/unet", "..", ".hidden", "not-installed", "stabilityai/stable-diffusion-2-inpainting",
               "C:\\models\\x", "", 3, ["a"]]
    for bad in refused:
        with pytest.raises(ValidationError) as e:
            check_remote_model(bad, tmp_path)
        assert e.value.parameter == "model" and str(e.value) == REMOTE_MODEL_RULE
