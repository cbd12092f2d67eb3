"""What a single-file checkpoint is, from its safetensors header alone (names and shapes; no tensor is read).

- The UNet's first convolution (``model.diffusion_model.input_blocks.0.0.weight``, out × in × 3 × 3)
  gives its input channels: 9 inpainting (4 latent + 1 mask + 4 masked image), 5 depth (4 + depth),
  7 the x4 upscaler (4 + the low-resolution RGB), 4 text-to-image.
- The cross-attention's ``to_k`` input width is the text encoder's: 1024 for Stable Diffusion 2, 768 for
  1.x, 2048 for SDXL; the text encoder's keys say the same (OpenCLIP ``cond_stage_model.model.`` for SD2,
  CLIP ``cond_stage_model.transformer.`` for 1.x, ``conditioner.embedders.`` for SDXL).
- A 4-channel SD2 model is 2-1 (768 px, v-prediction) or 2-1-base (512 px, epsilon): the shapes are the
  same, so the prediction type comes from the file's metadata when it says (``modelspec.prediction_type``,
  ``prediction_type``, kohya's ``ss_v_parameterization``, ``modelspec.architecture``), else the user is
  asked (``--prediction v|epsilon``; the dock asks in a dialog).
Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
KIND_BY_CHANNELS = {9: "inpainting", 5: "depth", 7: "x4 upscaler", 4: "text-to-image"}
BASE_BY_WIDTH = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2", 2048: "SDXL"}
PREDICTIONS = {"v": "v_prediction", "epsilon": "epsilon"}


class Unknown(Exception):
    """The file cannot be placed; ``ask`` names what the user may tell instead (``prediction``)."""

    def __init__(self, message: str, ask: str | None = None, choices: tuple[str, ...] = ()):
        super().__init__(message)
        self.ask = ask
        self.choices = choices


@dataclass(frozen=True)
class Checkpoint:
    name: str
    in_channels: int | None
    context_width: int | None
    family: str               # sd2 | sd1 | sdxl | unknown (by the text encoder's keys)
    prediction: str | None    # v_prediction | epsilon, from the metadata; None when it does not say

    def describe(self) -> str:
        kind = KIND_BY_CHANNELS.get(self.in_channels or 0, f"{self.in_channels}-channel")
        pred = {"v_prediction": ", v-prediction", "epsilon": ", epsilon"}.get(self.prediction or "", "")
        return f"{BASE_BY_WIDTH.get(self.context_width or 0, self.family)} {kind} UNet{pred}"


def header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 200 << 20:
            raise Unknown(f"{Path(path).name} is not a .safetensors file (its header length is {n})")
        try:
            data = json.loads(f.read(n))
        except ValueError:
            raise Unknown(f"{Path(path).name} has a damaged .safetensors header") from None
    if not isinstance(data, dict):
        raise Unknown(f"{Path(path).name} has a damaged .safetensors header")
    return data


def _prediction(meta: dict) -> str | None:
    for key in ("modelspec.prediction_type", "prediction_type"):
        v = str(meta.get(key, "")).lower()
        if v in ("v", "v_prediction", "v-prediction"):
            return "v_prediction"
        if v in ("epsilon", "eps"):
            return "epsilon"
    if str(meta.get("ss_v_parameterization", "")).lower() == "true":
        return "v_prediction"
    arch = str(meta.get("modelspec.architecture", "")).lower()
    if arch.endswith(("768-v", "-v")) or "v-768" in arch:
        return "v_prediction"
    return None


def detect(path: Path) -> Checkpoint:
    h = header(path)
    meta = h.get("__metadata__") if isinstance(h.get("__metadata__"), dict) else {}
    shapes = {k: v.get("shape") for k, v in h.items() if k != "__metadata__" and isinstance(v, dict)}
    conv = shapes.get(CONV_IN)
    in_ch = int(conv[1]) if conv and len(conv) == 4 else None
    width = next((int(s[1]) for k, s in shapes.items() if k.startswith("model.diffusion_model.")
                  and "attn2.to_k.weight" in k and s and len(s) == 2), None)
    if any(k.startswith("conditioner.embedders.") for k in shapes):
        family = "sdxl"
    elif any(k.startswith("cond_stage_model.model.") for k in shapes):
        family = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in shapes):
        family = "sd1"
    else:
        family = "unknown"
    return Checkpoint(Path(path).name, in_ch, width, family, _prediction(meta))


def catalogue_key(c: Checkpoint, prediction: str | None = None) -> str:
    """The catalogue model whose configs fit ``c`` (``prediction``: "v" or "epsilon", when asked)."""
    if c.in_channels is None:
        raise Unknown(f"{c.name} has no Stable Diffusion UNet ({CONV_IN} is missing): not a single-file SD2 "
                      f"checkpoint")
    if c.family in ("sd1", "sdxl") or (c.context_width in (768, 2048) and c.family != "sd2"):
        base = "SDXL" if c.family == "sdxl" or c.context_width == 2048 else "Stable Diffusion 1.x"
        raise Unknown(f"{c.name} is a {base} checkpoint (text encoder and {c.context_width}-wide cross-attention); "
                      f"Diffusion Dock runs the Stable Diffusion 2 family only")
    if c.in_channels == 9:
        return "sd2-inpainting"
    if c.in_channels == 7:
        return "sd2-x4-upscaler"
    if c.in_channels == 5:
        raise Unknown(f"{c.name} is a depth model: diffusers has no single-file loader for the depth pipeline; "
                      f"import its diffusers folder instead")
    if c.in_channels != 4:
        raise Unknown(f"{c.name} has a UNet with {c.in_channels} input channels: not an SD2 model")
    chosen = PREDICTIONS.get(prediction or "") or c.prediction
    if prediction and prediction not in PREDICTIONS:
        raise Unknown(f"--prediction must be v or epsilon, got {prediction!r}", "prediction", ("v", "epsilon"))
    if chosen is None:
        raise Unknown(f"{c.name} is an SD2 text-to-image model, but the file does not say whether it predicts v "
                      f"(2-1, 768 px) or epsilon (2-1-base, 512 px): pass --prediction v or --prediction epsilon "
                      f"(the model's page says which)", "prediction", ("v", "epsilon"))
    return "sd2-1" if chosen == "v_prediction" else "sd2-1-base"


def misfit(c: Checkpoint, config: Path) -> str | None:
    """What about ``c`` does not match the UNet config in the diffusers folder ``config`` (None: it fits)."""
    try:
        ucfg = json.loads((Path(config) / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    want_in, want_width = ucfg.get("in_channels"), ucfg.get("cross_attention_dim")
    if c.in_channels is not None and want_in is not None and c.in_channels != want_in:
        return f"its UNet has {c.in_channels} input channels, the configs {want_in}"
    if c.context_width is not None and isinstance(want_width, int) and c.context_width != want_width:
        return (f"its cross-attention is {c.context_width} wide ({BASE_BY_WIDTH.get(c.context_width, 'another model')}), "
                f"the configs' {want_width}")
    return None
