"""Parameter ranges and validation.  Standard library only.

Every range the product defines lives here once; the engine validates with it and the dock builds its
widgets from it, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

SEED_MAX = 2**32 - 1


class ValidationError(ValueError):
    """A parameter is out of range.  ``parameter`` names it; the message gives the allowed range."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Range:
    name: str
    low: float
    high: float
    integer: bool = True
    default: float | None = None
    unit: str = ""

    def describe(self) -> str:
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        return f"{fmt(self.low)}–{fmt(self.high)}{(' ' + self.unit) if self.unit else ''}"

    def check(self, value):
        """Return ``value`` (as int or float) if it is in range, else raise ValidationError."""
        if isinstance(value, bool) or value is None:
            raise ValidationError(self.name, f"{self.name} must be a number in {self.describe()}, got {shown(value)}")
        if self.integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValidationError(
                    self.name, f"{self.name} must be a whole number in {self.describe()}, got {shown(value)}"
                )
        elif not isinstance(value, (int, float)) or value != value:  # NaN fails too
            raise ValidationError(self.name, f"{self.name} must be a number in {self.describe()}, got {shown(value)}")
        if not (self.low <= value <= self.high):
            raise ValidationError(self.name, f"{self.name} must be in {self.describe()}, got {shown(value)}")
        return int(value) if self.integer else float(value)


RANGES: dict[str, Range] = {
    r.name: r
    for r in (
        Range("num_images", 1, 4, default=1),
        Range("steps", 1, 512, default=25),
        Range("guidance", 1.0, 20.0, integer=False, default=7.5),
        Range("strength", 0.0, 1.0, integer=False, default=0.8),
        Range("seed", 0, SEED_MAX),
        Range("grow", 0, 512, default=8, unit="px"),
        Range("feather", 0, 512, default=8, unit="px"),
        Range("noise_level", 0, 350, default=20),
        Range("width", 64, 8192, default=512, unit="px"),
        Range("height", 64, 8192, default=512, unit="px"),
        Range("tile", 64, 512, default=96, unit="px"),
        *(Range(f"expand_{side}", 0, 8192, default=0, unit="px") for side in ("left", "top", "right", "bottom")),
        Range("lora_weight", -2.0, 2.0, integer=False, default=1.0),
    )
}

MAX_LORAS = 8
MAX_EMBEDDINGS = 16
ADAPTER_SUFFIX = ".safetensors"

PROMPT_MAX_CHARS = 20_000


def check(name: str, value):
    return RANGES[name].check(value)


def check_multiple_of(name: str, value: int, multiple: int) -> int:
    value = check(name, value)
    if value % multiple:
        raise ValidationError(
            name, f"{name} must be a multiple of {multiple} in {RANGES[name].describe()}, got {value}"
        )
    return value


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValidationError(name, f"{name} must be one of {', '.join(map(str, choices))}, got {shown(value)}")
    return value


def check_text(name: str, value, limit: int = PROMPT_MAX_CHARS) -> str:
    """``value`` if it is text of at most ``limit`` characters that UTF-8 can carry (no lone surrogate:
    JSON's "\\ud800" escapes make one, and it cannot be encoded, logged or sent back)."""
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be text, got {shown(value)}")
    if len(value) > limit:
        raise ValidationError(name, f"{name} must be at most {limit} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValidationError(name, f"{name} must be valid Unicode text: character {e.start + 1} is a lone "
                                    f"surrogate (U+{ord(value[e.start]):04X})") from None
    return value


def _adapter_file(name: str, value, what: str) -> str:
    """One LoRA or embedding file as the request names it: a path (local engine, command line) or the
    plain name of a file in the engine's models folder (``loras/``, ``embeddings/``: the only form a
    shared ``serve`` engine accepts).  Plain text ending in ``.safetensors``; the engine checks it exists."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, f"{name}: each {what} must be a .safetensors file name or path, got {value!r}")
    if not value.lower().endswith(ADAPTER_SUFFIX):
        raise ValidationError(name, f"{name}: {value!r} is not a .safetensors file; {what}s are read from "
                                    f".safetensors files only (pickles such as .pt/.ckpt/.bin can run code)")
    return value


def check_loras(value) -> tuple[tuple[str, float], ...]:
    """``[[file, weight], ...]``: at most ``MAX_LORAS`` different files, each weight in −2–2."""
    name = "loras"
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValidationError(name, f"{name} must be a list of [file, weight] pairs, got {type(value).__name__}")
    if len(value) > MAX_LORAS:
        raise ValidationError(name, f"{name}: at most {MAX_LORAS} LoRAs at once, got {len(value)}")
    out: list[tuple[str, float]] = []
    for entry in value:
        if isinstance(entry, str):
            entry = (entry, 1.0)
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValidationError(name, f"{name}: each LoRA must be a [file, weight] pair, got {entry!r}")
        file = _adapter_file(name, entry[0], "LoRA")
        r = RANGES["lora_weight"]
        weight = entry[1]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != weight \
                or not (r.low <= weight <= r.high):
            raise ValidationError(name, f"{name}: the weight of {file} must be a number in {r.describe()}, "
                                        f"got {weight!r}")
        if any(f == file for f, _ in out):
            raise ValidationError(name, f"{name}: {file} is given twice")
        out.append((file, float(weight)))
    return tuple(out)


def check_embeddings(value) -> tuple[str, ...]:
    """``[file, ...]``: textual-inversion embeddings; each is called in the prompt by its file name
    without ``.safetensors`` (``my-style.safetensors`` → ``my-style``), which must be one word."""
    name = "embeddings"
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValidationError(name, f"{name} must be a list of .safetensors files, got {type(value).__name__}")
    if len(value) > MAX_EMBEDDINGS:
        raise ValidationError(name, f"{name}: at most {MAX_EMBEDDINGS} embeddings at once, got {len(value)}")
    out: list[str] = []
    for entry in value:
        file = _adapter_file(name, entry, "embedding")
        word = embedding_token(file)
        if not word or any(c.isspace() for c in word):
            raise ValidationError(name, f"{name}: {file!r}: the file name (without .safetensors) is the word that "
                                        f"calls the embedding in the prompt, so it must be one word without spaces")
        if any(embedding_token(f) == word for f in out):
            raise ValidationError(name, f"{name}: two embeddings are called {word!r}")
        out.append(file)
    return tuple(out)


def embedding_token(file: str) -> str:
    """The prompt word of an embedding file: its name without folders and ``.safetensors``."""
    base = file.replace("\\", "/").rsplit("/", 1)[-1]
    return base[: -len(ADAPTER_SUFFIX)] if base.lower().endswith(ADAPTER_SUFFIX) else base


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"{name} must be true or false, got {shown(value)}")
    return value


def shown(value, limit: int = 40) -> str:
    """A short, printable description of a value a client sent, in the terms of JSON (for messages):
    ``'abc'``, ``12``, ``true``, ``null``, ``a list``, ``an object``.  Never longer than about ``limit``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else f"a number of {len(text)} digits"
    if isinstance(value, str):
        text = repr(value[:limit])   # escapes control characters and lone surrogates
        return text + ("…" if len(value) > limit else "")
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a value of another kind"
