"""Tiny LoRA and textual-inversion files with the shapes of a given diffusers model folder (the tiny test
models, or a real SD2 folder), in the formats artists' files come in: LoRA in diffusers/PEFT layout
(``unet.<module>.lora_A.weight`` / ``lora_B``, ``text_encoder.<module>...``), embeddings in the
A1111 safetensors layout (``emb_params``: vectors × width).  Random values; for tests and demos.

``context_width``/``text_width`` override the widths to make a file "for another base model" (768 for
SD1.x, 2048 for SDXL), which the engine must refuse by shape.

    python -m core.devtools.tiny_adapters MODEL_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ATTN_LINEARS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _config(folder: Path, comp: str) -> dict:
    return json.loads((Path(folder) / comp / "config.json").read_text())


def lora_state(folder: Path, *, rank: int = 4, seed: int = 0, scale: float = 0.3, text_encoder: bool = True,
               context_width: int | None = None, text_width: int | None = None, sdxl: bool = False) -> dict:
    """A LoRA's tensors for the UNet (and text encoder) of the diffusers model in ``folder``."""
    import torch
    from diffusers import UNet2DConditionModel

    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_config(folder, "unet"))
    out = {}

    def pair(prefix: str, fan_in: int, fan_out: int):
        out[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * scale
        out[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * scale

    for name, module in unet.named_modules():
        if ".attn" in name and any(name.endswith("." + lin) for lin in ATTN_LINEARS):
            fan_in = module.in_features
            if context_width and ".attn2." in name and (name.endswith("to_k") or name.endswith("to_v")):
                fan_in = context_width
            pair(f"unet.{name}", fan_in, module.out_features)
    if text_encoder:
        te = _config(folder, "text_encoder")
        width, layers = text_width or te["hidden_size"], te["num_hidden_layers"]
        for i in range(layers):
            for lin in TEXT_LINEARS:
                pair(f"text_encoder.text_model.encoder.layers.{i}.self_attn.{lin}", width, width)
    if sdxl:
        out["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(rank, 1280)
        out["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(1280, rank)
    return out


def embedding_state(folder: Path, *, vectors: int = 2, seed: int = 0, width: int | None = None) -> dict:
    import torch

    width = width or _config(folder, "text_encoder")["hidden_size"]
    g = torch.Generator().manual_seed(seed)
    return {"emb_params": torch.randn(vectors, width, generator=g)}


def save(state: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    model, out = Path(args[0]), Path(args[1])
    print(save(lora_state(model), out / "loras" / "tiny-lora.safetensors"))
    print(save(embedding_state(model), out / "embeddings" / "tiny-style.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
