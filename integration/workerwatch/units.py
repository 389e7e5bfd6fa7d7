"""Durations and numbers: ``'5m'`` in, ``'5 min'`` out, and the one finite-number check."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a real, finite number (a bool is not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        return None
    return number if math.isfinite(number) else None


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``'90s'``, ``'5m'``, ``'1.5h'``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, '90s' or '5m', got a boolean")
    if isinstance(value, (int, float)):
        seconds = finite(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 300, '90s' or '5m', got {value!r}")
        seconds = finite(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    else:
        raise ValueError(f"expected a duration such as 300, '90s' or '5m', got {value!r}")
    if seconds is None:
        raise ValueError("duration must be a finite number")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def human_duration(seconds: float) -> str:
    """A duration the way an operator reads it: ``312 s``, ``14 min``, ``2.5 h``.

    Every text for people uses it: reasons, events, ``status``, ``diagnose``, log lines.
    """
    seconds = max(0.0, seconds)
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
