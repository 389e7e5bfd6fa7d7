"""Make strings from untrusted sources safe to put in attributes and log lines."""

from __future__ import annotations

import re

MAX_TEXT = 255
# Metric API attribute values are capped at 4,096 characters; reasons stay well inside it.
MAX_ATTRIBUTE = 4095
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """Replace control characters and truncate, marking the cut with an ellipsis."""
    text = _CONTROL.sub("?", str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
