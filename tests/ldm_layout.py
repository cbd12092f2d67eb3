"""Test helper: write a diffusers SD2 pipeline as an ORIGINAL single-file checkpoint (LDM/OpenCLIP keys).

The inverse of diffusers' single-file conversion (``diffusers/loaders/single_file_utils.py``:
``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``), written
from the layouts those functions read:
- UNet under ``model.diffusion_model.``: ``input_blocks.N.{0 resnet|1 attention|0.op downsampler}``,
  ``middle_block.{0,1,2}``, ``output_blocks.N.{0 resnet|1 attention|1 or 2 .conv upsampler}``, resnets
  with ``in_layers.{0,2}``/``out_layers.{0,3}``/``emb_layers.1``/``skip_connection``;
- VAE under ``first_stage_model.``: ``encoder.down.I.block.J``, ``decoder.up.(n-1-I).block.J``,
  ``mid.block_{1,2}``, ``mid.attn_1.{norm,q,k,v,proj_out}`` as 1×1 convolutions, ``nin_shortcut``;
- OpenCLIP text tower under ``cond_stage_model.model.``: ``transformer.resblocks.I`` with fused
  ``attn.in_proj_{weight,bias}`` (q, k, v stacked), ``ln_1/ln_2``, ``mlp.c_fc/c_proj``,
  ``positional_embedding``, ``token_embedding``, ``ln_final``, ``text_projection``.
"""

from __future__ import annotations

import re


def _resnet_to_ldm(rest: str) -> str:
    return (rest.replace("norm1", "in_layers.0").replace("conv1", "in_layers.2").replace("norm2", "out_layers.0")
            .replace("conv2", "out_layers.3").replace("time_emb_proj", "emb_layers.1")
            .replace("conv_shortcut", "skip_connection"))


def unet_to_ldm(sd: dict, config: dict) -> dict:
    lpb = config["layers_per_block"]
    n_up = len(config["up_block_types"])
    out = {}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "class_embedding": "label_emb"}
    for key, t in sd.items():
        new = None
        for d, ldm in fixed.items():
            if key.startswith(d + "."):
                new = ldm + key[len(d):]
        if new is None and (m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)):
            b, kind, layer, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            i = 1 + b * (lpb + 1) + layer
            new = (f"input_blocks.{i}.0.{_resnet_to_ldm(rest)}" if kind == "resnets"
                   else f"input_blocks.{i}.1.{rest}")
        elif new is None and (m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)):
            b = int(m.group(1))
            new = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op.{m.group(2)}"
        elif new is None and (m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)):
            kind, idx, rest = m.groups()
            pos = {("resnets", "0"): 0, ("attentions", "0"): 1, ("resnets", "1"): 2}[(kind, idx)]
            new = f"middle_block.{pos}." + (_resnet_to_ldm(rest) if kind == "resnets" else rest)
        elif new is None and (m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)):
            b, kind, layer, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            i = b * (lpb + 1) + layer
            new = (f"output_blocks.{i}.0.{_resnet_to_ldm(rest)}" if kind == "resnets"
                   else f"output_blocks.{i}.1.{rest}")
        elif new is None and (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)):
            b = int(m.group(1))
            i = b * (lpb + 1) + lpb
            has_attn = "CrossAttn" in config["up_block_types"][b]
            new = f"output_blocks.{i}.{2 if has_attn else 1}.conv.{m.group(2)}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = t
    assert n_up >= 1
    return out


def vae_to_ldm(sd: dict, config: dict) -> dict:
    n_up = len(config["up_block_types"])
    out = {}
    for key, t in sd.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
            new = f"{m.group(1)}.norm_out.{m.group(2)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = (f"decoder.up.{n_up - 1 - int(m.group(1))}.block.{m.group(2)}."
                   f"{m.group(3).replace('conv_shortcut', 'nin_shortcut')}")
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            rest = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
            part, _, leaf = m.group(2).rpartition(".")
            new = f"{m.group(1)}.mid.attn_1.{rest[part]}.{leaf}"
            if leaf == "weight" and t.ndim == 2:
                t = t[:, :, None, None]  # the original attention uses 1×1 convolutions
        out["first_stage_model." + new] = t
    return out


def text_encoder_to_open_clip(sd: dict, seed: int = 0) -> dict:
    import torch

    p = "cond_stage_model.model."
    out = {}
    layers: dict[int, dict] = {}
    for key, t in sd.items():
        key = key if key.startswith("text_model.") else "text_model." + key  # transformers 5 drops the prefix
        if key == "text_model.embeddings.token_embedding.weight":
            out[p + "token_embedding.weight"] = t
        elif key == "text_model.embeddings.position_embedding.weight":
            out[p + "positional_embedding"] = t
        elif key.startswith("text_model.final_layer_norm."):
            out[p + "ln_final." + key.rsplit(".", 1)[1]] = t
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            i, rest = int(m.group(1)), m.group(2)
            if mm := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                layers.setdefault(i, {})[(mm.group(2), mm.group(1))] = t
                continue
            rest = (rest.replace("self_attn.", "attn.").replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[f"{p}transformer.resblocks.{i}.{rest}"] = t
        elif key.endswith("position_ids"):
            continue
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key}")
    for i, parts in layers.items():
        for kind in ("weight", "bias"):
            out[f"{p}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [parts[(kind, "q")], parts[(kind, "k")], parts[(kind, "v")]], 0)
    hidden = out[p + "token_embedding.weight"].shape[1]
    g = torch.Generator().manual_seed(seed)
    # In the original checkpoint, ignored by the diffusers conversion (CLIPTextModel has no projection).
    out[p + "text_projection"] = torch.randn(hidden, hidden, generator=g)
    return out


def pipeline_to_ldm(folder) -> dict:
    """State dict of an original single-file checkpoint holding the diffusers pipeline in ``folder``."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)

    def load(comp, name):
        return load_file(str(folder / comp / name)), json.loads((folder / comp / "config.json").read_text())

    unet, ucfg = load("unet", "diffusion_pytorch_model.safetensors")
    vae, vcfg = load("vae", "diffusion_pytorch_model.safetensors")
    te, _ = load("text_encoder", "model.safetensors")
    return {**unet_to_ldm(unet, ucfg), **vae_to_ldm(vae, vcfg), **text_encoder_to_open_clip(te)}
