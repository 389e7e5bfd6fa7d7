"""Make strings from untrusted sources safe to put in attributes and log lines.

Also the one place secrets leave text: :func:`redact` removes given secrets and the
``user:password@`` of any URL, for log lines, error messages and cached or reported URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_TEXT = 255
# Metric API attribute values are capped at 4,096 characters; reasons stay well inside it.
MAX_ATTRIBUTE = 4095
REDACTED = "<redacted>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# scheme://user:password@host: everything up to the last "@" before the path is userinfo.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
MIN_SECRET = 4  # shorter "secrets" would blank out ordinary words


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """Replace control characters and truncate, marking the cut with an ellipsis."""
    text = _CONTROL.sub("?", str(value))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without ``secrets`` and without the userinfo of any URL in it."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return _USERINFO.sub(r"\1", text) if "@" in text else text
