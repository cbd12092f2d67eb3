"""Common parameters a mode narrows or starts elsewhere (``ModeSpec.param_ranges``/``param_defaults``:
Live's 1–4 steps and strength 0.5).  Such a mode keeps its own values of them; every other mode shares
one set (key ""), so that switching to Live and back gives each its own steps again."""

from __future__ import annotations

from typing import Any

from ..runtime.coreapi import modes, params
from ..runtime.qt import QtWidgets


class ModeParams:
    def __init__(self):
        self._kept: dict[tuple[str, str], Any] = {}

    def switch(self, bindings: dict, old: str, new: str) -> None:
        """Save the form's values (``bindings``: name → Binding) of the parameters ``old`` or ``new``
        keeps apart under ``old``, set their range for ``new`` and put back its values (or defaults)."""
        before, after = modes.spec(old), modes.spec(new)

        def own(ms, name):
            return ms.param_range(name) is not None or name in dict(ms.param_defaults)

        names = {n for n, *_ in (*before.param_ranges, *after.param_ranges)} | \
            {n for n, _ in (*before.param_defaults, *after.param_defaults)}
        for name in sorted(names):
            binding = bindings[name]
            if old != new:
                self._kept[(old if own(before, name) else "", name)] = binding.get()
            low, high = after.param_range(name) or (params.RANGES[name].low, params.RANGES[name].high)
            widget = binding.widget
            if isinstance(widget, QtWidgets.QSpinBox):
                widget.setRange(int(low), int(high))
            elif isinstance(widget, QtWidgets.QDoubleSpinBox):
                widget.setRange(float(low), float(high))
            key = (new if own(after, name) else "", name)
            value = self._kept.get(key, dict(after.param_defaults).get(name) if key[0] else None)
            if value is not None:
                binding.put(value)
