"""LoRA and textual-inversion files: where they are, and whether they fit a model, from their headers.

A request names each file as plain text (``contract.params.check_loras``): a path, or the name of a
file in the models folder's ``loras/`` or ``embeddings/`` (the only form a shared ``serve`` engine
accepts).  ``find`` turns that into an existing ``.safetensors`` file.

``inspect_lora``/``inspect_embedding`` read the safetensors header only (8 bytes of length, then JSON:
names, dtypes and shapes; no tensor is loaded) and say which base model the file was made for: the
width of the UNet's cross-attention (its ``to_k`` input) is 768 for Stable Diffusion 1.x, 1024 for SD2
and 2048 for SDXL, and the text encoder's width 768 (SD1.x), 1024 (SD2) or two encoders (SDXL).  A file
made for another model is refused before anything is loaded, with a message that says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..contract.params import ADAPTER_SUFFIX, ValidationError

FOLDERS = {"loras": "loras", "embeddings": "embeddings"}   # field -> subfolder of the models folder
HEADER_LIMIT = 100 << 20
BASES = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL", 1280: "SDXL"}


@dataclass(frozen=True)
class AdapterShape:
    cross_attention: int | None    # the UNet context width the LoRA was made for (None: no UNet part)
    text_width: int | None         # the text encoder width it was made for (None: no text encoder part)
    sdxl: bool = False             # keys only SDXL files have (a second text encoder)


def folder(models_dir: Path | None, field: str) -> Path:
    from ..contract import paths

    return Path(models_dir or paths.models_dir()) / FOLDERS[field]


def is_plain_name(name: str) -> bool:
    return "/" not in name and "\\" not in name and not name.startswith(("~", "."))


def find(name: str, field: str, models_dir: Path | None) -> Path:
    """The file a request names (``field``: "loras" or "embeddings"); ValidationError when it is missing."""
    where = folder(models_dir, field)
    cands = [where / name] if is_plain_name(name) else []
    cands.append(Path(name).expanduser())
    for c in cands:
        if c.is_file():
            if c.suffix.lower() != ADAPTER_SUFFIX:
                break
            return c
    what = "LoRA" if field == "loras" else "embedding"
    raise ValidationError(field, f"{field}: {name} was not found: expected an existing .safetensors {what} file, "
                                 f"or the name of one in {where}")


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file; ValidationError when it is not one."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= HEADER_LIMIT:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (OSError, ValueError) as e:
        raise ValidationError("file", f"{path.name} is not a readable .safetensors file ({type(e).__name__})") from None
    return header


def _shapes(header: dict) -> dict[str, list]:
    return {k: v.get("shape") or [] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


_DOWN = re.compile(r"(lora_down|lora_A|lora\.down)(\.[^.]+)?\.weight$")


def inspect_lora(path: Path) -> AdapterShape:
    shapes = _shapes(read_header(path))
    downs = {k: s for k, s in shapes.items() if _DOWN.search(k) and len(s) >= 2}
    if not downs:
        raise ValidationError("loras", f"loras: {path.name} holds no LoRA weights (no lora_down/lora_A tensors)")
    sdxl = any(k.startswith(("lora_te2_", "text_encoder_2.", "te2.")) or "text_encoder_2" in k for k in shapes)
    cross = next((s[1] for k, s in downs.items() if "attn2" in k and ("to_k" in k or "to.k" in k)), None)
    text = next((s[1] for k, s in downs.items()
                 if k.startswith(("lora_te_", "lora_te1_", "text_encoder.", "te.", "te1."))
                 and ("q_proj" in k or "self_attn" in k)), None)
    return AdapterShape(cross, text, sdxl)


def inspect_embedding(path: Path) -> AdapterShape:
    shapes = _shapes(read_header(path))
    if not shapes:
        raise ValidationError("embeddings", f"embeddings: {path.name} holds no tensors")
    sdxl = "clip_g" in shapes or ("clip_l" in shapes and len(shapes) > 1)
    widths = {s[-1] for s in shapes.values() if s}
    if len(shapes) != 1 and not sdxl:
        raise ValidationError("embeddings", f"embeddings: {path.name} is not a textual-inversion embedding (one "
                                            f"tensor expected, it has {len(shapes)})")
    return AdapterShape(None, max(widths) if widths else None, sdxl)


def _base(width: int | None) -> str:
    return BASES.get(width or 0, f"a model with {width}-wide attention")


def check_fits(path: Path, field: str, shape: AdapterShape, cross_attention: int, text_width: int) -> None:
    """Refuse a file made for another base model (by its tensor shapes), naming what it was made for."""
    what = "LoRA" if field == "loras" else "embedding"
    if shape.sdxl:
        raise ValidationError(field, f"{field}: {path.name} is an SDXL {what} (it has a second text encoder); "
                                     f"this model is Stable Diffusion 2, which needs an SD2 {what}")
    for got, want, part in ((shape.cross_attention, cross_attention, "cross-attention"),
                            (shape.text_width, text_width, "text encoder")):
        if got is not None and got != want:
            raise ValidationError(field, f"{field}: {path.name} was made for {_base(got)} ({got}-wide {part}); "
                                         f"this model needs {want}-wide ({_base(want)}): use an SD2 {what}")


def stamp(path: Path) -> tuple:
    """Identity of a file's content as far as caches care: path, size and modification time."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def installed(models_dir: Path | None) -> dict[str, list[dict]]:
    """The LoRA and embedding files in the models folder: {"loras": [{"name", "bytes"}], "embeddings": [...]}."""
    out: dict[str, list[dict]] = {}
    for field in FOLDERS:
        d = folder(models_dir, field)
        files = sorted(p for p in d.glob("*") if p.is_file() and p.suffix.lower() == ADAPTER_SUFFIX) \
            if d.is_dir() else []
        out[field] = [{"name": p.name, "bytes": p.stat().st_size} for p in files]
    return out


REMOTE_ADAPTER_RULE = ("a shared server takes LoRA and embedding files installed in its models folder (loras/, "
                       "embeddings/), named by their file name only")


def check_remote(field: str, names, models_dir: Path | None) -> None:
    """What a remote client may give as LoRA or embedding files: the plain name of a file installed in the
    models folder.  Anything else (a path, a name that is not installed) gets the same ValidationError,
    which says nothing about the server's files."""
    where = folder(models_dir, field)
    for name in names:
        if not (isinstance(name, str) and is_plain_name(name) and name.strip() and (where / name).is_file()):
            raise ValidationError(field, f"{field}: {REMOTE_ADAPTER_RULE}")
