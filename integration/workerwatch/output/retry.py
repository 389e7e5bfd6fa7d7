"""One retry vocabulary for every HTTP client we have (Metric/Event API, NerdGraph).

Each client keeps its own rule for *whether* to retry (NerdGraph never repeats a mutation
whose outcome is unknown; the ingest APIs drop a 4xx other than 408/429); *how long* to wait
is decided here once: the server's ``Retry-After`` when it gives one (RFC 9110 section
10.2.3: delta-seconds or an HTTP date), else capped exponential backoff, and never past the
caller's deadline.
"""

from __future__ import annotations

import email.utils
import time

MAX_RETRY_AFTER = 60.0  # the Metric API's 429 lasts "for the rest of the minute"
BACKOFF_BASE = 1.0
BACKOFF_MAX = 16.0


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, capped; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Wait before the next attempt after ``failures`` failed ones (1, 2, 4 ... capped)."""
    return min(cap, base * 2 ** max(0, failures - 1))


def within(wait: float, deadline: float | None, now: float | None = None) -> float | None:
    """``wait`` if sleeping that long still leaves the deadline ahead, else ``None`` (give up)."""
    if deadline is None:
        return wait
    left = deadline - (time.monotonic() if now is None else now)
    return wait if wait < left else None
