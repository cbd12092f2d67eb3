"""The installer and SD-Turbo and TAESD: which files it fetches from their repos (never a pickle, never
the single-file checkpoint), a real download of the tiny TAESD from the fake hub that the engine then
loads, and ``models list``/``doctor`` naming both."""

from __future__ import annotations

import hashlib

import pytest

from core.contract.catalog import CATALOG
from installer.download import download_model
from installer.hub_plan import PlanError, RemoteFile, allow_patterns, plan_files

from .fake_hub import FakeHub, Repo


def _files(*paths):
    return [RemoteFile(p, 10, hashlib.sha256(p.encode()).hexdigest() if p.endswith(".safetensors") else None)
            for p in paths]


def test_taesd_plan_takes_config_and_safetensors_only():
    files = _files(".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.bin",
                   "diffusion_pytorch_model.safetensors", "taesd_decoder.pth", "taesd_encoder.pth",
                   "images/preview.jpg")
    spec = CATALOG["taesd"]
    assert spec.component and spec.optional and spec.pipeline == "AutoencoderTiny"
    assert [f.path for f in plan_files(spec.pipeline, files)] == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert [f.path for f in plan_files(spec.pipeline, files, weights=False)] == ["config.json"]
    half = _files("config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
    assert [f.path for f in plan_files(spec.pipeline, half)][-1] == "diffusion_pytorch_model.fp16.safetensors"
    assert "config.json" in allow_patterns(spec.pipeline)


def test_taesd_plan_refuses_pickles_only_and_a_repo_without_config():
    with pytest.raises(PlanError, match="only diffusion_pytorch_model.bin"):
        plan_files("AutoencoderTiny", _files("config.json", "diffusion_pytorch_model.bin"))
    with pytest.raises(PlanError, match="no config.json"):
        plan_files("AutoencoderTiny", _files("diffusion_pytorch_model.safetensors"))


def test_sd_turbo_plan_is_the_pipeline_without_its_single_file():
    files = _files("model_index.json", "README.md", "sd_turbo.safetensors", "scheduler/scheduler_config.json",
                   "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
                   "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
                   "tokenizer/tokenizer_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                   "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
                   "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors")
    spec = CATALOG["sd-turbo"]
    got = [f.path for f in plan_files(spec.pipeline, files)]
    assert "sd_turbo.safetensors" not in got and "README.md" not in got
    assert got[-3:] == ["text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                        "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert "scheduler/scheduler_config.json" in got and spec.distilled and spec.modes == ("live",)


@pytest.fixture
def taesd_hub(tiny_root, monkeypatch):
    from huggingface_hub import constants

    src = tiny_root / "taesd"
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file() and not p.name.startswith(".")}
    files["diffusion_pytorch_model.bin"] = b"\x80\x04pickle" * 32
    files["taesd_decoder.pth"] = b"\x80\x04pickle" * 32
    files["README.md"] = b"# taesd\n"
    h = FakeHub()
    h.repos["madebyollin/taesd"] = Repo(hashlib.sha1(b"taesd").hexdigest(), files)
    handle = h.start()
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", handle.url)
    h.files = files
    yield h
    handle.stop()


def test_taesd_downloads_verified_and_the_engine_loads_it(taesd_hub, tmp_path, policy):
    from core.models.manager import ModelManager
    from core.models.resolver import resolve

    cache = tmp_path / "hf"
    rep = download_model(CATALOG["taesd"], cache_dir=cache, log=lambda m: None)
    got = sorted(p.name for p in rep.folder.iterdir())
    assert got == ["config.json", "diffusion_dock.json", "diffusion_pytorch_model.safetensors"]
    for name in got:
        assert (rep.folder / name).read_bytes() == taesd_hub.files[name]
    asked = " ".join(r.path for r in taesd_hub.log)
    assert ".bin" not in asked and ".pth" not in asked and "README" not in asked
    r = resolve("taesd", models_dir=tmp_path / "empty", hub_cache=cache)
    assert r.source == "hf-cache" and r.path == rep.folder
    mm = ModelManager(policy, models_dir=tmp_path / "empty", hub_cache=cache)
    tiny = mm.tiny_vae()
    assert type(tiny).__name__ == "AutoencoderTiny" and mm.tiny_vae() is tiny
    import torch

    convs = [m.weight for m in tiny.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == policy.vae_channels_last
                         for w in convs if w.shape[-1] > 1)


def test_models_list_and_doctor_name_sd_turbo_and_taesd(tiny_root, tmp_path):
    from installer import doctor
    from installer.model_list import format_table, rows

    table = {r.key: r for r in rows(tiny_root, tmp_path / "none")}
    assert table["sd-turbo"].installed and table["taesd"].installed
    text = format_table(list(table.values()))
    assert "sd-turbo" in text and "taesd" in text
    missing = {r.key: r for r in rows(tmp_path / "empty", tmp_path / "none")}
    assert not missing["taesd"].installed and "installer models download taesd" in missing["taesd"].note
    found = doctor.Findings()
    doctor._models_section(found, tiny_root, False, None)
    lines = "\n".join(found.lines)
    assert "sd-turbo" in lines and "taesd" in lines and "found" in lines
