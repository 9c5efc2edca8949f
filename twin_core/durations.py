"""Parse human durations such as ``24h``, ``1s``, ``90m``, ``7d`` into seconds."""

from __future__ import annotations

import math
import re

from twin_core.inputs import clip

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 100 * 365 * 86400.0  # a century: beyond any run, still exact in float64
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|min|m|h|d)?\s*$")


def parse_duration(text: str | float | int, allow_zero: bool = False) -> float:
    """Seconds for ``text``; a bare number is seconds. Raises ValueError (only) naming
    the text, clipped to 80 characters."""
    shown = clip(str(text))
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r} (expected e.g. 1s, 90m, 24h, 7d)")
    if isinstance(text, int | float):
        value = float(text) if isinstance(text, float) or abs(text) < 2**53 else math.inf
    else:
        match = _PATTERN.match(str(text))
        if not match:
            raise ValueError(f"invalid duration {shown!r} (expected e.g. 1s, 90m, 24h, 7d)")
        value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not value <= MAX_DURATION_S:  # NaN and infinity too
        raise ValueError(f"invalid duration {shown!r} (must be finite, at most 100 years)")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"invalid duration {shown!r} (must be positive)")
    return value
