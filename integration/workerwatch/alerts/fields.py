"""Field types and checks shared by the alert and dashboard models.

Limits enforced in the models come from New Relic's documented limits (see the notes on each
field); catching them locally gives a message naming the file and the key instead of a
NerdGraph validation error halfway through an apply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from workerwatch.output.catalogue import CATALOGUE
from workerwatch.units import parse_duration

METRIC_NAME = re.compile(r"workerwatch\.[A-Za-z.]+")


def metric_names(nrql: str) -> set[str]:
    """Every ``workerwatch.*`` metric name an NRQL string mentions."""
    return {match.rstrip(".") for match in METRIC_NAME.findall(nrql)}


def _seconds(value: Any) -> int:
    """Whole seconds from ``300``, ``'90s'`` or ``'5m'``: NerdGraph's Seconds scalar is an Int."""
    seconds = parse_duration(value)
    if not float(seconds).is_integer():
        raise ValueError(f"must be a whole number of seconds, got {value!r}")
    return int(seconds)


def _threshold(value: Any) -> float:
    # A duration string is allowed so thresholds on *Seconds metrics read as "15m".
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = float(parse_duration(value))
    else:
        raise ValueError(f"expected a number or a duration such as '15m', got {value!r}")
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


Seconds = Annotated[int, BeforeValidator(_seconds)]
Threshold = Annotated[float, BeforeValidator(_threshold)]


def upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


SELECT_CLAUSE = re.compile(r"^\s*SELECT\b", re.I)
FROM_METRIC = re.compile(r"\bFROM\s+Metric\b", re.I)


def check_metrics(nrql: str) -> str:
    names = metric_names(nrql)
    unknown = sorted(names - set(CATALOGUE))
    if unknown:
        raise ValueError(
            f"queries metric(s) the integration does not emit: {', '.join(unknown)} "
            "(see definitions/metrics.yml)"
        )
    if not names:
        raise ValueError("must query at least one workerwatch.* metric")
    return nrql


# Threshold duration per condition type, in seconds. The limits page (docs
# alerts/admin/rules-limits-alerts, "Duration for condition alert event") caps it at 2 hours;
# the terraform provider's schema (website/docs/r/nrql_alert_condition) accepts up to 24 h and
# sets the floor at 60 s (static) and 120 s (baseline). The intersection of both is used, so a


def unique_by(items: Iterable[Any], key: Any, what: str) -> None:
    seen: set[Any] = set()
    for item in items:
        value = key(item)
        if value in seen:
            raise ValueError(f"{what} {value!r} is used twice")
        seen.add(value)
