"""``models import``: diffusers folders, single-file checkpoints in the original LDM layout, pickles, LaMa."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer import importer
from installer.importer import ImportRefused, import_model

from .conftest import ROOT
from .ldm_layout import pipeline_to_ldm

WEIGHTS = (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
           ("text_encoder", "model.safetensors"))


@pytest.fixture(scope="module")
def single_file(tiny_root, tmp_path_factory) -> Path:
    """The tiny inpainting model as an original single-file checkpoint (LDM UNet/VAE, OpenCLIP text tower)."""
    from safetensors.torch import save_file

    sd = pipeline_to_ldm(tiny_root / "sd2-inpainting")
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in sd)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in sd)
    assert any(k.endswith("attn.in_proj_weight") and k.startswith("cond_stage_model.model.transformer.") for k in sd)
    out = tmp_path_factory.mktemp("single") / "512-inpainting-ema.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out))
    return out


def assert_same_weights(a: Path, b: Path):
    import torch
    from safetensors.torch import load_file

    for comp, name in WEIGHTS:
        x, y = load_file(str(a / comp / name)), load_file(str(b / comp / name))
        assert x.keys() == y.keys(), comp
        bad = [k for k in x if not torch.equal(x[k], y[k])]
        assert not bad, (comp, bad[:5])


def test_single_file_round_trips_to_identical_weights_and_runs(single_file, tiny_root, tmp_path, policy):
    from core.models.manager import ModelManager
    from core.pipelines import run_job

    from .helpers import inpaint_request, rect_mask, rgba_u8

    models = tmp_path / "models"
    out = import_model(single_file, config=tiny_root / "sd2-inpainting", models_dir=models)
    assert out == models / "sd2-inpainting"  # named by the catalogue (the file is 512-inpainting-ema)
    assert_same_weights(tiny_root / "sd2-inpainting", out)
    assert (out / "diffusion_dock.json").is_file()
    assert not list(models.glob(".*importing*"))
    mm = ModelManager(policy, models_dir=models, hub_cache=tmp_path / "no-cache")
    assert mm.resolve("inpaint").path == out
    img = rgba_u8(64, 80, seed=2)
    res = run_job(inpaint_request(img, rect_mask(64, 80, 20, 16, 50, 40), steps=2), mm)
    assert len(res.patches) == 1 and res.patches[0].image.width > 0


def test_single_file_finds_the_configs_the_downloader_puts_in_configs(single_file, tiny_root, tmp_path):
    models = tmp_path / "models"
    cfg = models / "configs" / "sd2-inpainting"
    shutil.copytree(tiny_root / "sd2-inpainting", cfg, ignore=shutil.ignore_patterns("*.safetensors", ".*"))
    out = import_model(single_file, models_dir=models)
    assert_same_weights(tiny_root / "sd2-inpainting", out)
    with pytest.raises(ImportRefused, match="already exists: pass --force"):
        import_model(single_file, models_dir=models)
    assert import_model(single_file, models_dir=models, force=True) == out


def test_single_file_without_configs_says_how_to_get_them(single_file, tmp_path):
    with pytest.raises(ImportRefused, match="models download sd2-inpainting --config-only"):
        import_model(single_file, models_dir=tmp_path / "models")
    other = tmp_path / "my-finetune.safetensors"   # no catalogue name: its tensors say it is an inpainting model
    shutil.copyfile(single_file, other)
    with pytest.raises(ImportRefused, match="models download sd2-inpainting --config-only"):
        import_model(other, models_dir=tmp_path / "models")


def test_a_fine_tune_is_placed_by_its_tensors_and_keeps_its_own_name(single_file, tiny_root, tmp_path):
    """A community fine-tune with no catalogue file name: the 9-channel UNet makes it an inpainting model, it
    takes the configs the downloader put in configs/, is stored under its own name and is found by it."""
    from core.models.resolver import resolve

    models = tmp_path / "models"
    shutil.copytree(tiny_root / "sd2-inpainting", models / "configs" / "sd2-inpainting",
                    ignore=shutil.ignore_patterns("*.safetensors", ".*"))
    other = tmp_path / "dreamy-inpaint-v3.safetensors"
    shutil.copyfile(single_file, other)
    said: list[str] = []
    out = import_model(other, models_dir=models, log=said.append)
    assert out == models / "dreamy-inpaint-v3" and not (models / "sd2-inpainting").exists()
    assert any("inpainting UNet" in line and "Stable Diffusion 2 inpainting" in line for line in said), said
    assert_same_weights(tiny_root / "sd2-inpainting", out)
    assert resolve("dreamy-inpaint-v3", models_dir=models, hub_cache=tmp_path / "none").path == out
    with pytest.raises(ImportRefused, match="is Stable Diffusion 2 inpainting by its tensors"):
        import_model(other, name="sd2-1-base", models_dir=models)


def test_diffusers_folder_is_copied_without_pickles_and_links_resolved(tiny_root, tmp_path):
    src = tmp_path / "hub-snapshot"
    shutil.copytree(tiny_root / "sd2-inpainting", src)
    (src / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    link_target = tmp_path / "blob"
    shutil.move(src / "vae" / "diffusion_pytorch_model.safetensors", link_target)
    (src / "vae" / "diffusion_pytorch_model.safetensors").symlink_to(link_target)
    out = import_model(src, name="my-inpaint", models_dir=tmp_path / "models")
    assert out == tmp_path / "models" / "my-inpaint"
    assert not (out / "unet" / "diffusion_pytorch_model.bin").exists()
    vae = out / "vae" / "diffusion_pytorch_model.safetensors"
    assert not vae.is_symlink() and vae.read_bytes() == link_target.read_bytes()
    assert_same_weights(tiny_root / "sd2-inpainting", out)


@pytest.mark.parametrize("name", ["512-inpainting-ema.ckpt", "model.pt", "pytorch_model.bin"])
def test_pickles_are_refused_with_the_reason(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(ImportRefused, match="pickle file .*arbitrary code"):
        import_model(f, models_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_big_lama_is_converted_by_the_engines_lama_converter(tmp_path, monkeypatch):
    """`models import big-lama.ckpt` writes safetensors the Fill job loads; a malicious one is refused
    in one line and its code never runs."""
    import builtins

    import torch

    from core.lama.weights import build_tiny, load_generator

    model = load_generator(build_tiny(tmp_path / "tiny.safetensors", seed=3))
    state = {"generator." + k: v for k, v in model.state_dict().items()}
    good = tmp_path / "big-lama.ckpt"
    torch.save({"state_dict": state}, good)
    out = import_model(good, models_dir=tmp_path / "models")
    assert out.name == "big-lama.safetensors" and out.parent.parent == tmp_path / "models"
    converted = load_generator(out)
    for k, v in model.state_dict().items():
        assert torch.equal(converted.state_dict()[k], v), k

    class RunsCode:
        def __reduce__(self):
            return (builtins.exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    evil = tmp_path / "evil" / "big-lama.ckpt"
    evil.parent.mkdir()
    torch.save({"state_dict": state, "hparams": RunsCode()}, evil)
    r = subprocess.run([sys.executable, "-m", "installer", "models", "import", str(evil), "--models-dir",
                        str(tmp_path / "m2")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 3 and "Traceback" not in r.stderr and "exec" in r.stderr
    assert not (tmp_path / "pwned").exists()
    # without the engine's converter the installer says so instead of unpickling anything
    monkeypatch.setattr(importer, "LAMA_CONVERTER", "tests.no_such_module")
    with pytest.raises(ImportRefused, match="no LaMa converter yet"):
        import_model(good, models_dir=tmp_path / "models3")


def test_cli_import_refusal_is_one_line(tmp_path):
    f = tmp_path / "v2-1_768-ema-pruned.ckpt"
    f.write_bytes(b"\x80\x04")
    out = subprocess.run([sys.executable, "-m", "installer", "models", "import", str(f), "--models-dir",
                          str(tmp_path / "m")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "pickle" in out.stderr
