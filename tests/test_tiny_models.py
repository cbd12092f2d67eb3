"""The model factory: tiny models are faithful to SD2's layouts; full-size ones match the published sizes."""

import json

import pytest

from core.devtools import tiny_models
from core.models.resolver import resolve

PUBLISHED_MILLIONS = {  # ../shared/reference/sd2/model-index.json
    ("unet", "inpaint"): 865.93, ("unet", "depth"): 865.91, ("unet", "v"): 865.91, ("unet", "base"): 865.91,
    ("unet", "x4"): 473.40, ("vae", False): 83.65, ("vae", True): 55.33, ("text_encoder", None): 340.39,
    ("dpt", None): 122.38,
    ("unet", "turbo"): 865.91,       # SD-Turbo: the 2.1-base UNet
    ("taesd", None): 2.445,          # TAESD: 1.22M encoder + 1.22M decoder (madebyollin/taesd)
}
UNET_KINDS = ("inpaint", "depth", "x4", "v", "base", "turbo")


@pytest.mark.skipif(not tiny_models.default_configs_dir().is_dir(), reason="needs ../shared/reference/sd2")
def test_full_size_architectures_match_published_parameter_counts(tmp_path):
    import torch

    cfg = tiny_models.default_configs_dir()
    tok = tiny_models.byte_tokenizer(tmp_path / "tok")
    with torch.device("meta"):  # no memory: shapes only
        built = {("unet", k): tiny_models._unet(k, True, cfg) for k in UNET_KINDS}
        built[("taesd", None)] = tiny_models._tiny_vae(True)
        built[("vae", False)] = tiny_models._vae(False, True, cfg)
        built[("vae", True)] = tiny_models._vae(True, True, cfg)
        built[("text_encoder", None)] = tiny_models._text_encoder(True, cfg, tok)
        built[("dpt", None)] = tiny_models._depth_estimator(True, cfg)
    for key, module in built.items():
        millions = sum(p.numel() for p in module.parameters()) / 1e6
        assert abs(millions - PUBLISHED_MILLIONS[key]) < 0.01, (key, millions)


@pytest.mark.skipif(not tiny_models.default_configs_dir().is_dir(), reason="needs ../shared/reference/sd2")
def test_full_size_random_weights_are_real_numbers():
    import torch

    vae = tiny_models._build_module(lambda: tiny_models._vae(True, True, tiny_models.default_configs_dir()),
                                    True, seed=0)
    w = torch.cat([p.detach().flatten() for p in vae.parameters() if p.ndim > 1])
    assert torch.isfinite(w).all()
    assert 0.015 < w.std().item() < 0.025


def _config(folder, comp):
    return json.loads((folder / comp / "config.json").read_text())


def test_tiny_models_are_faithful(tiny_root):
    inp, depth, x4, v, base, turbo, taesd = (tiny_root / tiny_models.KIND_KEYS[k] for k in tiny_models.KINDS)
    assert _config(inp, "unet")["in_channels"] == 9
    assert _config(depth, "unet")["in_channels"] == 5
    assert (depth / "depth_estimator" / "config.json").is_file()
    ux4 = _config(x4, "unet")
    assert ux4["in_channels"] == 7 and ux4["num_class_embeds"] >= 351
    assert _config(x4, "vae")["scaling_factor"] == 0.08333 and len(_config(x4, "vae")["block_out_channels"]) == 3
    assert len(_config(inp, "vae")["block_out_channels"]) == 4  # ×8 like SD's VAE
    assert json.loads((x4 / "model_index.json").read_text())["max_noise_level"] == 350
    assert resolve(str(v)).prediction == "v_prediction" and _config(v, "unet")["upcast_attention"] is True
    assert resolve(str(base)).prediction == "epsilon"
    for folder in (inp, depth, x4, v, base, turbo):
        assert (folder / "tokenizer" / "tokenizer_config.json").is_file()
        assert not list(folder.rglob("*.bin")) and list(folder.rglob("*.safetensors"))
    # SD-Turbo: 2.1-base's layout with Euler on trailing timesteps, told apart from 2.1-base by that.
    assert _config(turbo, "unet")["in_channels"] == 4 and _config(turbo, "unet")["sample_size"] == _config(base, "unet")["sample_size"]
    sched = json.loads((turbo / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["_class_name"], sched["timestep_spacing"]) == ("EulerDiscreteScheduler", "trailing")
    assert resolve(str(turbo)).spec.key == "sd-turbo" and resolve(str(base)).spec.key == "sd2-1-base"
    # TAESD: one model, config.json and weights at the folder's root, ×8 with 4 latent channels.
    cfg = json.loads((taesd / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["latent_channels"] == 4
    assert len(cfg["encoder_block_out_channels"]) == 4 and (taesd / "diffusion_pytorch_model.safetensors").is_file()
    assert resolve(str(taesd)).spec.key == "taesd" and not (taesd / "model_index.json").exists()


def test_byte_tokenizer_is_offline_and_pads_with_bang(tmp_path):
    tok = tiny_models.byte_tokenizer(tmp_path)
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and tok.pad_token == "!"
    assert tok.decode(tok("hello world").input_ids, skip_special_tokens=True).strip() == "hello world"
