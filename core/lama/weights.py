"""LaMa weights on disk: where they live, how they are read (safetensors only) and written.

A weights file holds exactly ``LamaGenerator.state_dict()`` (keys ``model.<i>....``) plus header
metadata naming the format and the architecture's configuration.  Files from elsewhere with the same
tensors (e.g. the official checkpoint's ``generator.`` keys, or ``model.model.`` keys) are accepted
too: the key prefix is recognised and the configuration is read off the tensor shapes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..contract import paths
from ..models.resolver import PICKLE_SUFFIXES, ModelNotFound, UnsafeModelFile, pickle_refusal
from .model import LamaConfig

log = logging.getLogger(__name__)

FORMAT = "diffusion-dock-lama"
FOLDER = "big-lama"
FILENAME = "big-lama.safetensors"
# Key prefixes in front of the generator's ``model.<i>`` seen in the wild, most specific first:
# our own files (none), Lightning checkpoints (generator.), the TorchScript export's wrapper
# (model.generator.), spandrel-style wrappers (model.).
PREFIXES = ("", "generator.", "model.generator.", "model.")
_PROBE = "model.1.ffc.convl2l.weight"


def default_weights_path(models_dir: Path | None = None) -> Path:
    """Where the app keeps LaMa: ``<models folder>/big-lama/big-lama.safetensors``."""
    return Path(models_dir or paths.models_dir()) / FOLDER / FILENAME


def install_hint() -> str:
    return (f"convert the official big-lama checkpoint once with `python -m installer models import big-lama.pt` "
            f"(or `python -m core.lama convert SRC {default_weights_path()}`)")


def find_weights(explicit: str | Path | None = None, models_dir: Path | None = None) -> Path:
    """The LaMa weights file: ``explicit`` (a .safetensors file or a folder holding one), else the
    app's models folder.  Raises ModelNotFound (with what to do) or UnsafeModelFile for pickles."""
    if explicit == FOLDER:    # the catalogue's key for LaMa: the models folder's copy
        explicit = None
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            if p.suffix.lower() in PICKLE_SUFFIXES:
                raise pickle_refusal(p)
            if p.suffix.lower() != ".safetensors":
                raise ModelNotFound(f"{p} is not a .safetensors file of LaMa weights")
            return p
        if p.is_dir():
            for cand in (p / FILENAME, p / FOLDER / FILENAME):
                if cand.is_file():
                    return cand
            singles = sorted(p.glob("*.safetensors"))
            if len(singles) == 1:
                return singles[0]
            pickles = [q for q in sorted(p.iterdir()) if q.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                raise pickle_refusal(pickles[0])
            raise ModelNotFound(f"{p} holds no {FILENAME}")
        raise ModelNotFound(f"LaMa weights {p} do not exist")
    base = Path(models_dir or paths.models_dir())
    for cand in (base / FOLDER / FILENAME, base / FILENAME):
        if cand.is_file():
            return cand
    raise ModelNotFound(f"LaMa weights are not installed (looked for {base / FOLDER / FILENAME}); "
                        f"{install_hint()}")


def lama_installed(models_dir: Path | None = None) -> bool:
    try:
        find_weights(None, models_dir)
        return True
    except ModelNotFound:
        return False


def generator_state(tensors: dict) -> dict:
    """The generator's tensors with keys ``model.<i>...``, whatever prefix the source used."""
    for prefix in PREFIXES:
        if prefix + _PROBE in tensors:
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items()
                    if k.startswith(prefix + "model.") and k[n + 6: n + 7].isdigit()}
    raise ValueError(f"no LaMa generator found: none of the keys looks like "
                     f"{' or '.join(p + _PROBE for p in PREFIXES)}")


def infer_config(state: dict) -> LamaConfig:
    """Read the architecture off the tensor shapes of a generator state dict (keys ``model.<i>...``)."""
    def shape(key):
        if key not in state:
            raise ValueError(f"LaMa weights lack {key}")
        return tuple(state[key].shape)

    ngf, input_nc = shape("model.1.ffc.convl2l.weight")[:2]
    indices = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.", k))}
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv1\.ffc\.", k))})
    if not blocks:
        raise ValueError("LaMa weights have no residual blocks (model.<i>.conv1.ffc...)")
    n_down = blocks[0] - 2
    if n_down < 1 or blocks != list(range(blocks[0], blocks[0] + len(blocks))):
        raise ValueError("LaMa weights: unexpected layer layout")
    last_down = 1 + n_down
    local = shape(f"model.{last_down}.ffc.convl2l.weight")[0]
    glob = shape(f"model.{last_down}.ffc.convl2g.weight")[0]
    output_nc = shape(f"model.{max(indices)}.weight")[0]
    width = local + glob
    # Channel widths are capped at max_features; an uncapped bottleneck keeps the default cap.
    capped = width != ngf * 2 ** n_down
    cfg = LamaConfig(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_downsampling=n_down,
                     n_blocks=len(blocks), ratio_global=glob / width,
                     max_features=width if capped else max(width, LamaConfig.max_features))
    # int(channels * ratio) must give back the same split (0.75 of 512 → 384)
    if int(cfg.bottleneck * cfg.ratio_global) != glob:
        raise ValueError("LaMa weights: cannot recover the global channel ratio")
    return cfg


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file (no pickle involved)."""
    from safetensors import safe_open

    tensors, meta = {}, {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def load_generator(path: str | Path, device: str = "cpu"):
    """A ``LamaGenerator`` in eval mode with the weights of ``path`` (.safetensors only)."""
    import torch

    from .model import LamaGenerator

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refusal(path)
    if path.suffix.lower() != ".safetensors":
        raise UnsafeModelFile(f"{path}: LaMa weights are read from .safetensors files only")
    try:
        tensors, meta = read_safetensors(path)
    except Exception as e:  # a truncated or foreign file (the library's words go to the log only)
        log.warning("reading %s failed: %s", path, e)
        raise ModelNotFound(f"{path} is not a readable safetensors file (damaged, cut short or of another "
                            f"format): download the LaMa weights again") from None
    try:
        state = generator_state(tensors)
        config = (LamaConfig.from_dict(json.loads(meta["config"])) if meta.get("format") == FORMAT
                  else infer_config(state))
        with torch.device("meta"):
            model = LamaGenerator(config)
        for key in model.state_dict():  # counters that some exports drop; unused at inference
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros((), dtype=torch.long)
        model.load_state_dict(state, strict=True, assign=True)
    except (ValueError, RuntimeError, KeyError) as e:
        log.warning("%s: not big-lama generator weights: %s", path, e)
        raise ModelNotFound(f"{path} does not hold big-lama generator weights (its tensors have other names or "
                            f"shapes): download the LaMa weights again") from None
    model.float().eval().requires_grad_(False)
    return model.to(device)


def save_generator(state: dict, config: LamaConfig, path: str | Path, source: str = "") -> Path:
    """Write a generator state dict (keys ``model.<i>...``) as safetensors, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": FORMAT, "architecture": "lama-ffc-resnet", "config": json.dumps(config.to_dict())}
    if source:
        meta["source"] = source
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def build_tiny(path: str | Path, seed: int = 0, config: LamaConfig | None = None) -> Path:
    """A tiny random-weight LaMa of the same architecture (fewer channels and blocks) for tests.

    Batch-norm statistics are randomised too, so that every layer (including the Fourier units)
    shapes the output and a wrongly loaded tensor shows.
    """
    import torch

    from .model import LamaGenerator

    config = config or TINY
    torch.manual_seed(seed)
    model = LamaGenerator(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return save_generator(model.state_dict(), config, path, source=f"tiny random weights, seed {seed}")


TINY = LamaConfig(ngf=8, n_downsampling=3, n_blocks=2)
