"""ControlNets: find one on disk, check that it fits the loaded base model, load it.

Two forms are read, safetensors only:

- a single ``.safetensors`` file in the original ControlNet layout (thibaud/controlnet-sd21 publishes
  these), loaded with diffusers' ``ControlNetModel.from_single_file`` and the SD 2.1 ControlNet config
  below (written to a temporary folder: nothing is fetched);
- a diffusers folder (``config.json`` + ``diffusion_pytorch_model[.fp16].safetensors``), as
  ``ControlNetModel.save_pretrained`` writes it (the test models).

Before any weight is read, the file's shapes are compared with the base model's UNet: a ControlNet
made for another base model (SD 1.5's 768-wide cross-attention, SDXL's) is refused with a message
naming the file.  Loaded ControlNets live in the model manager's LRU (``get_other``), so they are
unloaded under memory pressure like every other model; on a GPU they are fp16 like the UNet.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from ..contract import paths
from ..contract.catalog import CATALOG, CONTROLNETS
from ..contract.params import ValidationError
from .hub import hf_hub_cache
from .resolver import (
    PICKLE_SUFFIXES,
    ModelNotFound,
    ResolvedModel,
    controlnet_path,
    pickle_refusal,
    search_controlnet,
)

# ``ControlNetModel.from_unet`` of the SD 2.1 UNet (shared/reference/sd2/unet-2-1-768v.json): what the
# thibaud/controlnet-sd21 files are (tested against from_unet in tests/test_controls.py).
SD21_CONFIG = {
    "_class_name": "ControlNetModel", "in_channels": 4, "conditioning_channels": 3, "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn", "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-05,
    "cross_attention_dim": 1024, "transformer_layers_per_block": 1, "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True, "upcast_attention": True, "resnet_time_scale_shift": "default",
    "controlnet_conditioning_channel_order": "rgb", "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "global_pool_conditions": False,
}


def resolve(control_type: str, model: str | None = None, *, models_dir: Path | None = None,
            hub_cache: Path | None = None) -> ResolvedModel:
    """The ControlNet for a control: ``model`` (a file, a folder or a catalogue key) or the catalogue's
    for the type.  ModelNotFound names the install command."""
    models_dir = Path(models_dir) if models_dir else paths.models_dir()
    if model:
        spec = CATALOG.get(model)
        if spec is None or spec.pipeline != "ControlNetModel":
            path = Path(model).expanduser()
            if path.suffix.lower() in PICKLE_SUFFIXES:
                raise pickle_refusal(path)
            found = controlnet_path(path)
            if found is None:
                raise ModelNotFound(f"{path} is not a ControlNet: expected a .safetensors file or a folder with "
                                    f"config.json and diffusion_pytorch_model.safetensors")
            return ResolvedModel(path.name, None, found, "explicit", "ControlNetModel", "")
    else:
        spec = CATALOG[CONTROLNETS[control_type]]
    found = search_controlnet(spec, models_dir, hub_cache)
    if found is None:
        raise ModelNotFound(f"The {control_type} ControlNet ({spec.repo_id}, {spec.files[0]}) is not installed. "
                            f"Looked in {models_dir} and the Hugging Face cache {hub_cache or hf_hub_cache()}. "
                            f"Get it with: {spec.install_hint()}")
    return found


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError("implausible safetensors header")
        return json.loads(f.read(n))


def shapes(path: Path) -> dict:
    """What decides whether a ControlNet fits a UNet, read without loading any weight: the latent
    channels it takes, its first block's width and its cross-attention (text embedding) width."""
    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text())
        return {"in_channels": cfg.get("in_channels"), "width": (cfg.get("block_out_channels") or [None])[0],
                "cross_attention_dim": cfg.get("cross_attention_dim")}
    header = _header(path)
    out: dict = {"in_channels": None, "width": None, "cross_attention_dim": None}
    for key, t in header.items():
        if not isinstance(t, dict):
            continue
        shape = t.get("shape") or []
        if key.endswith("input_blocks.0.0.weight") and len(shape) == 4:     # original layout: conv_in
            out["width"], out["in_channels"] = shape[0], shape[1]
        elif key == "conv_in.weight" and len(shape) == 4:                  # diffusers layout
            out["width"], out["in_channels"] = shape[0], shape[1]
        elif key.endswith("attn2.to_k.weight") and len(shape) == 2 and out["cross_attention_dim"] is None:
            out["cross_attention_dim"] = shape[1]
    return out


def check_fits(resolved: ResolvedModel, unet_config, base_name: str, field: str) -> None:
    """Refuse a ControlNet whose shapes differ from the base model's UNet (it was made for another
    base model), naming the file.  ``field`` names the control in the error (``controls[0].model``)."""
    try:
        have = shapes(resolved.path)
    except (OSError, ValueError) as e:
        raise ValidationError(field, f"{resolved.path} is not a readable ControlNet file ({e})") from None
    want = {"in_channels": 4, "width": unet_config.block_out_channels[0],
            "cross_attention_dim": unet_config.cross_attention_dim}
    wrong = [k for k in want if have.get(k) != want[k]]
    if wrong:
        what = ", ".join(f"{k} {have.get(k)} (the base needs {want[k]})" for k in wrong)
        hint = " — it looks like an SD 1.x ControlNet" if have.get("cross_attention_dim") == 768 else ""
        raise ValidationError(field, f"the ControlNet {resolved.path} was made for another base model than "
                                     f"{base_name}: {what}{hint}; use an SD 2.1 ControlNet (thibaud/controlnet-sd21)")


def load(resolved: ResolvedModel, policy):
    """The ControlNetModel of ``resolved`` on the policy's device, in the UNet's dtype."""
    import torch
    from diffusers import ControlNetModel

    from .device import torch_dtype
    from .loader import attention_kernel, quiet_libraries

    quiet_libraries()
    dtype = torch_dtype(policy.dtype)
    path = resolved.path
    if path.is_dir():
        variant = {} if (path / "diffusion_pytorch_model.safetensors").is_file() else {"variant": "fp16"}
        net = ControlNetModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True, dtype=dtype,
                                              **variant)
    else:
        with tempfile.TemporaryDirectory(prefix="dd-controlnet-") as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(SD21_CONFIG))
            net = ControlNetModel.from_single_file(str(path), config=tmp, local_files_only=True, torch_dtype=dtype)
    net.to(policy.device).eval().requires_grad_(False)
    attention_kernel(policy, net)
    assert isinstance(net, torch.nn.Module)
    return net
