"""What a single-file checkpoint is, from its header's tensor names and shapes (installer/checkpoint.py), and
the `models import` command's answer for each kind (exit 4 and the question when it must ask)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from installer import checkpoint

from .conftest import ROOT

UNET = "model.diffusion_model."
SD2_TEXT = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SD1_TEXT = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight"
SDXL_TEXT = "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"


def write(path, in_channels=4, width=1024, text=SD2_TEXT, meta=None):
    from safetensors.numpy import save_file

    tensors = {checkpoint.CONV_IN: np.zeros((2, in_channels, 3, 3), np.float16),
               UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": np.zeros((2, width), np.float16),
               text: np.zeros((2, 2), np.float16)}
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("channels,key", [(9, "sd2-inpainting"), (7, "sd2-x4-upscaler")])
def test_channels_place_inpainting_and_upscaler(tmp_path, channels, key):
    c = checkpoint.detect(write(tmp_path / "x.safetensors", channels))
    assert (c.in_channels, c.context_width, c.family) == (channels, 1024, "sd2")
    assert checkpoint.catalogue_key(c) == key


def test_depth_is_recognised_and_sent_to_the_folder_import(tmp_path):
    c = checkpoint.detect(write(tmp_path / "d.safetensors", 5))
    assert "depth" in c.describe()
    with pytest.raises(checkpoint.Unknown, match="depth model.*diffusers folder"):
        checkpoint.catalogue_key(c)


@pytest.mark.parametrize("meta,key", [
    ({"modelspec.prediction_type": "v"}, "sd2-1"),
    ({"prediction_type": "epsilon"}, "sd2-1-base"),
    ({"ss_v_parameterization": "True"}, "sd2-1"),
    ({"modelspec.architecture": "stable-diffusion-v2-768-v"}, "sd2-1"),
])
def test_text_to_image_prediction_from_the_metadata(tmp_path, meta, key):
    assert checkpoint.catalogue_key(checkpoint.detect(write(tmp_path / "t.safetensors", meta=meta))) == key


def test_text_to_image_without_metadata_asks_and_takes_the_answer(tmp_path):
    c = checkpoint.detect(write(tmp_path / "t.safetensors"))
    with pytest.raises(checkpoint.Unknown) as e:
        checkpoint.catalogue_key(c)
    assert e.value.ask == "prediction" and e.value.choices == ("v", "epsilon")
    assert checkpoint.catalogue_key(c, "v") == "sd2-1" and checkpoint.catalogue_key(c, "epsilon") == "sd2-1-base"


@pytest.mark.parametrize("width,text,base", [(768, SD1_TEXT, "Stable Diffusion 1.x"), (2048, SDXL_TEXT, "SDXL")])
def test_other_base_models_are_refused_by_shape(tmp_path, width, text, base):
    c = checkpoint.detect(write(tmp_path / "o.safetensors", 4, width, text))
    with pytest.raises(checkpoint.Unknown, match=f"is a {base} checkpoint"):
        checkpoint.catalogue_key(c)


def test_not_a_checkpoint(tmp_path):
    f = tmp_path / "junk.safetensors"
    f.write_bytes((5 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(checkpoint.Unknown, match="not a .safetensors file"):
        checkpoint.detect(f)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(checkpoint.Unknown, match="no Stable Diffusion UNet"):
        checkpoint.catalogue_key(checkpoint.detect(tmp_path / "lora.safetensors"))


def test_cli_asks_with_exit_4_and_refuses_sd1_in_one_line(tmp_path):
    def run(f, *extra):
        return subprocess.run([sys.executable, "-m", "installer", "models", "import", str(f), "--models-dir",
                               str(tmp_path / "m"), *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)

    r = run(write(tmp_path / "t.safetensors"))
    assert r.returncode == 4 and "--prediction v or --prediction epsilon" in r.stderr and "Traceback" not in r.stderr
    r = run(tmp_path / "t.safetensors", "--prediction", "v")   # answered: now it wants the 2-1 configs
    assert r.returncode == 3 and "models download sd2-1 --config-only" in r.stderr
    r = run(write(tmp_path / "sd15.safetensors", 4, 768, SD1_TEXT))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Stable Diffusion 1.x" in r.stderr
    assert not (tmp_path / "m").exists()
