"""Field-by-field comparison of live and desired state, as flat ``path -> value`` maps.

Diffs compare only the fields the definitions set, normalised (numbers as floats, terms by
priority, widgets by row then column, rawConfiguration as JSON restricted to the keys we
write) so that a second apply right after the first finds nothing to do.
"""

from __future__ import annotations

import json
from typing import Any


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Lists of objects are labelled by their ``_key``
    (or ``priority``, for terms) so a diff names ``terms[CRITICAL]`` rather than a position."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            key = str(key)
            path = f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"
            out.update(flatten(inner, path if prefix else key))
        return out
    if isinstance(value, list) and not value:
        return {}
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        out = {}
        for index, inner in enumerate(value):
            label = inner.get("_key", inner.get("priority", index))
            body = {k: v for k, v in inner.items() if k not in ("_key", "priority")}
            out.update(flatten(body, f"{prefix}[{label}]"))
        return out
    return {prefix: value}


def diff(live: Any, desired: Any) -> list[tuple[str, Any, Any]]:
    left, right = flatten(live), flatten(desired)
    changes = []
    for path in sorted(set(left) | set(right), key=lambda p: (p not in right, p)):
        old, new = left.get(path), right.get(path)
        if old != new:
            changes.append((path, old, new))
    return changes


def show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def project(live: Any, desired: Any) -> Any:
    """``live`` restricted to the shape of ``desired``: keys the server adds are not drift."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return live
        return {k: project(live.get(k), v) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(live, list):
        return [
            project(item, desired[i]) if i < len(desired) else item for i, item in enumerate(live)
        ]
    if isinstance(desired, float) and isinstance(live, (int, float)) and not isinstance(live, bool):
        return float(live)
    return live
