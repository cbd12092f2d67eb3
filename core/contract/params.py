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
            raise ValidationError(self.name, f"{self.name} must be a number in {self.describe()}, got {value!r}")
        if self.integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValidationError(
                    self.name, f"{self.name} must be a whole number in {self.describe()}, got {value!r}"
                )
        elif not isinstance(value, (int, float)) or value != value:  # NaN fails too
            raise ValidationError(self.name, f"{self.name} must be a number in {self.describe()}, got {value!r}")
        if not (self.low <= value <= self.high):
            raise ValidationError(self.name, f"{self.name} must be in {self.describe()}, got {value!r}")
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
    )
}

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
    if value not in choices:
        raise ValidationError(name, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"{name} must be text, got {type(value).__name__}")
    if len(value) > PROMPT_MAX_CHARS:
        raise ValidationError(name, f"{name} must be at most {PROMPT_MAX_CHARS} characters, got {len(value)}")
    return value
