"""Model factory: small but faithful SD2 pipelines for tests, and full-size random-weight ones for
benchmarks.  Everything is built offline and saved in diffusers format, so it loads through the same
resolver and loader as real models.

Kinds (see ``KINDS``): ``inpaint`` (9-channel UNet), ``depth`` (5-channel UNet + DPT-hybrid depth
estimator), ``x4`` (7-channel UNet with noise-level class embeddings + the x4 VAE), ``v`` (2-1 style,
v-prediction), ``base`` (2-1-base style, epsilon), ``turbo`` (SD-Turbo: the 2-1-base architecture with
its Euler scheduler on trailing timesteps) and ``taesd`` (the tiny autoencoder, diffusers'
``AutoencoderTiny``: a single model, not a pipeline).

Full size reads the published architectures from ``../shared/reference/sd2/*.json`` (or
``DD_SD2_CONFIGS``); speed and memory do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

KINDS = ("inpaint", "depth", "x4", "v", "base", "turbo", "taesd")
KIND_KEYS = {"inpaint": "sd2-inpainting", "depth": "sd2-depth", "x4": "sd2-x4-upscaler",
             "v": "sd2-1", "base": "sd2-1-base", "turbo": "sd-turbo", "taesd": "taesd"}
# SD-Turbo's scheduler as its repo saves it: Euler, trailing timesteps (one step starts at t = 999).
TURBO_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                       prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1,
                       interpolation_type="linear", use_karras_sigmas=False)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
X4_SCHEDULER = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
X4_LOW_RES_SCHEDULER = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear",
                            num_train_timesteps=1000, clip_sample=True, prediction_type="epsilon",
                            variance_type="fixed_small")
MAX_NOISE_LEVEL = 350


def default_configs_dir() -> Path:
    env = os.environ.get("DD_SD2_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "reference" / "sd2"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def byte_tokenizer(folder: Path):
    """An offline CLIP tokenizer whose vocabulary is the 256 byte symbols (plus ``</w>`` forms)."""
    from transformers import CLIPTokenizer

    syms = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(syms)}
    vocab.update({s + "</w>": len(syms) + i for i, s in enumerate(syms)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token="!")


def _load_config(configs: Path, name: str) -> dict:
    path = configs / name
    if not path.is_file():
        raise FileNotFoundError(f"full-size config {path} not found (set DD_SD2_CONFIGS to the sd2 config folder)")
    return json.loads(path.read_text())


def _text_encoder(full: bool, configs: Path, tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    if full:
        cfg = _load_config(configs, "text-encoder-openclip-vit-h.json")
        cfg.pop("architectures", None)
        cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return CLIPTextModel(CLIPTextConfig(**cfg))
    return CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=max(1000, len(tok)), projection_dim=32, max_position_embeddings=77, hidden_act="gelu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def _unet(kind: str, full: bool, configs: Path):
    from diffusers import UNet2DConditionModel

    if full:
        name = {"inpaint": "unet-2-inpainting.json", "depth": "unet-2-depth.json", "x4": "unet-x4-upscaler.json",
                "v": "unet-2-1-768v.json", "base": "unet-2-1-base.json", "turbo": "unet-2-1-base.json"}[kind]
        return UNet2DConditionModel(**_load_config(configs, name))
    if kind == "x4":
        return UNet2DConditionModel(
            block_out_channels=(32, 32, 64), layers_per_block=2, sample_size=32, in_channels=7, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True,
            only_cross_attention=(True, True, False), num_class_embeds=1000)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=TINY_NATIVE // 8,
        in_channels={"inpaint": 9, "depth": 5}.get(kind, 4), out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
        upcast_attention=(kind == "v"))


def _vae(x4: bool, full: bool, configs: Path):
    from diffusers import AutoencoderKL

    if full:
        return AutoencoderKL(**_load_config(configs, "vae-x4-upscaler.json" if x4 else "vae-sd2.json"))
    # Same downsampling as the real ones: ×8 (4 blocks) for SD, ×4 (3 blocks) for the x4 VAE.
    n = 3 if x4 else 4
    return AutoencoderKL(
        block_out_channels=[32, 32, 64] if x4 else [32, 32, 64, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=4, sample_size=128, scaling_factor=0.08333 if x4 else 0.18215, force_upcast=True)


def _tiny_vae(full: bool):
    """TAESD: at full size diffusers' default ``AutoencoderTiny`` (TAESD's architecture); tiny, the same
    four stages (×8, 4 latent channels) with 8 channels and one block each."""
    from diffusers import AutoencoderTiny

    if full:
        return AutoencoderTiny()
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))


def _depth_estimator(full: bool, configs: Path):
    from transformers import DPTConfig, DPTForDepthEstimation

    if full:
        cfg = _load_config(configs, "dpt-hybrid-midas.json")
        return DPTForDepthEstimation(DPTConfig(**cfg))
    backbone = {"global_padding": "same", "layer_type": "bottleneck", "depths": [1, 1, 1],
                "embedding_dynamic_padding": True, "hidden_sizes": [16, 32, 64, 128], "num_groups": 2,
                "out_features": ["stage1", "stage2", "stage3"], "model_type": "bit", "embedding_size": 16}
    return DPTForDepthEstimation(DPTConfig(
        image_size=32, patch_size=16, num_channels=3, hidden_size=32, num_hidden_layers=4,
        backbone_out_indices=(0, 1, 2, 3), num_attention_heads=4, intermediate_size=37, hidden_act="gelu",
        is_hybrid=True, backbone_config=backbone, backbone_featmap_shape=[1, 64, 2, 2],
        neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32, reassemble_factors=[1, 1, 1, 0.5],
        neck_ignore_stages=[0, 1], readout_type="project"))


def _fill_random(module, seed: int) -> None:
    """Fill every parameter with N(0, 0.02) (norm weights 1, biases 0); deterministic per seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # norm scales
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)


def _build_module(factory, full: bool, seed: int):
    """Build a module; full size is made on the meta device and filled with random weights, which is fast."""
    import torch

    torch.manual_seed(seed)
    if not full:
        return factory()
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu")
    _fill_random(module, seed)
    # Buffers created on the meta device (position ids etc.) must be recomputed.
    for mod in module.modules():
        if hasattr(mod, "position_ids") and isinstance(mod.position_ids, torch.Tensor):
            mod.position_ids.copy_(torch.arange(mod.position_ids.shape[-1]).expand_as(mod.position_ids))
    return module


def build_pipeline(kind: str, *, full: bool = False, seed: int = 0, configs: Path | None = None,
                   tokenizer_dir: Path | None = None):
    """Build a pipeline object in memory (random weights); for ``taesd`` the one model."""
    import tempfile

    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        PNDMScheduler,
        StableDiffusionDepth2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionUpscalePipeline,
    )

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "taesd":
        return _build_module(lambda: _tiny_vae(full), full, seed + 4).eval()
    configs = configs or default_configs_dir()
    tok = byte_tokenizer(tokenizer_dir or Path(tempfile.mkdtemp(prefix="dd-tok-")))
    te = _build_module(lambda: _text_encoder(full, configs, tok), full, seed)
    unet = _build_module(lambda: _unet(kind, full, configs), full, seed + 1)
    vae = _build_module(lambda: _vae(kind == "x4", full, configs), full, seed + 2)
    for m in (te, unet, vae):
        m.eval()
    common = dict(vae=vae, text_encoder=te, tokenizer=tok, unet=unet)
    if kind == "x4":
        return StableDiffusionUpscalePipeline(
            **common, low_res_scheduler=DDPMScheduler.from_config(X4_LOW_RES_SCHEDULER),
            scheduler=DDIMScheduler.from_config(X4_SCHEDULER), max_noise_level=MAX_NOISE_LEVEL)
    if kind == "depth":
        from transformers import DPTImageProcessor

        dpt = _build_module(lambda: _depth_estimator(full, configs), full, seed + 3).eval()
        size = 384 if full else 32
        fe = DPTImageProcessor(do_resize=True, size={"height": size, "width": size}, keep_aspect_ratio=False,
                               do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return StableDiffusionDepth2ImgPipeline(**common, scheduler=PNDMScheduler.from_config(SCHEDULER),
                                                depth_estimator=dpt, feature_extractor=fe)
    if kind == "inpaint":
        return StableDiffusionInpaintPipeline(**common, scheduler=PNDMScheduler.from_config(SCHEDULER),
                                              safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    if kind == "turbo":
        from diffusers import EulerDiscreteScheduler

        sched = EulerDiscreteScheduler.from_config(TURBO_SCHEDULER)
    elif kind == "v":
        sched = DDIMScheduler.from_config({**SCHEDULER, "prediction_type": "v_prediction"})
    else:
        sched = PNDMScheduler.from_config({**SCHEDULER, "prediction_type": "epsilon"})
    return StableDiffusionPipeline(**common, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _fix_model_index(folder: Path) -> None:
    """Name the standard image-processor classes in model_index.json (without torchvision,
    transformers writes ``*ImageProcessorPil``, which other installs may not know)."""
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    changed = False
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str) and value[1].endswith("Pil"):
            index[key] = [value[0], value[1][:-3]]
            changed = True
    if changed:
        path.write_text(json.dumps(index, indent=2, sort_keys=True))
    pre = folder / "feature_extractor" / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        if str(cfg.get("image_processor_type", "")).endswith("Pil"):
            cfg["image_processor_type"] = cfg["image_processor_type"][:-3]
            pre.write_text(json.dumps(cfg, indent=2, sort_keys=True))


TINY_NATIVE = 128  # the tiny models work at 128 px (16×16 latents), so tests run in seconds


def save_pipeline(pipe, folder: Path, native: int | None = None, variant: str | None = None) -> Path:
    """Save in diffusers format; ``variant="fp16"`` writes half-precision ``*.fp16.safetensors`` files,
    as the installer downloads them."""
    folder = Path(folder)
    if variant == "fp16":
        import torch

        pipe.to(torch.float16)
    elif variant is not None:
        raise ValueError(f"variant must be None or 'fp16', got {variant!r}")
    pipe.save_pretrained(folder, safe_serialization=True, variant=variant)
    if (folder / "model_index.json").is_file():
        _fix_model_index(folder)
    if native:
        from ..models.resolver import MODEL_NOTES

        (folder / MODEL_NOTES).write_text(json.dumps({"native_resolution": native}) + "\n")
    return folder


def build(kind: str, folder: Path, *, full: bool = False, seed: int = 0, configs: Path | None = None,
          variant: str | None = None) -> Path:
    """Build and save one pipeline as a diffusers folder; returns the folder."""
    folder = Path(folder)
    if (folder / ".complete").is_file():
        return folder
    pipe = build_pipeline(kind, full=full, seed=seed, configs=configs, tokenizer_dir=folder / ".tok")
    save_pipeline(pipe, folder, native=None if full else TINY_NATIVE, variant=variant)
    (folder / ".complete").write_text("ok\n")
    return folder


def build_controlnet(folder: Path, *, full: bool = False, seed: int = 0, configs: Path | None = None,
                     cross_attention_dim: int | None = None) -> Path:
    """A ControlNet with the shapes of the tiny (or, ``full``, the SD 2.1) 4-channel UNet, random weights,
    saved as a diffusers ControlNet folder.  ``cross_attention_dim`` makes one for another base model
    (the shape check must refuse it)."""
    from diffusers import ControlNetModel

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / ".complete").is_file():
        return folder
    configs = configs or default_configs_dir()

    def make():
        unet = _unet("v" if full else "base", full, configs)
        net = ControlNetModel.from_unet(unet)
        if cross_attention_dim is None:
            return net
        return ControlNetModel.from_config({**net.config, "cross_attention_dim": cross_attention_dim})

    net = _build_module(make, full, seed + 4).eval()
    if not full:   # its output convolutions start at zero (a fresh ControlNet adds nothing): give them weights
        _fill_random(net, seed + 4)
    net.save_pretrained(folder, safe_serialization=True)
    (folder / ".complete").write_text("ok\n")
    return folder


def build_all(root: Path, *, full: bool = False, kinds=KINDS, seed: int = 0, variant: str | None = None
              ) -> dict[str, Path]:
    """Build every kind into ``root/<catalogue key>`` (the app models-folder layout)."""
    root = Path(root)
    return {k: build(k, root / KIND_KEYS[k], full=full, seed=seed, variant=variant) for k in kinds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.devtools.tiny_models", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write <catalogue key>/ model folders into")
    ap.add_argument("--kind", choices=KINDS, action="append", help="kinds to build (default: all)")
    ap.add_argument("--full", action="store_true", help="full-size architectures with random weights")
    ap.add_argument("--configs", type=Path, default=None, help="folder of the sd2 *.json configs")
    ap.add_argument("--fp16", action="store_true", help="save fp16 weight files (*.fp16.safetensors), as downloaded")
    args = ap.parse_args(argv)
    if args.configs:
        os.environ["DD_SD2_CONFIGS"] = str(args.configs)
    for kind, path in build_all(args.out, full=args.full, kinds=tuple(args.kind or KINDS),
                                 variant="fp16" if args.fp16 else None).items():
        print(f"{kind}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
