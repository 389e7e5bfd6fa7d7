"""The alert policy and its NRQL conditions, as read from ``definitions/alerts/*.yml``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from workerwatch.alerts import with_marker
from workerwatch.alerts.fields import (
    FROM_METRIC,
    SELECT_CLAUSE,
    Seconds,
    Strict,
    Threshold,
    check_metrics,
    unique_by,
    upper,
)
from workerwatch.alerts.params import Parameter, Value

Operator = Literal["ABOVE", "ABOVE_OR_EQUALS", "BELOW", "BELOW_OR_EQUALS", "EQUALS", "NOT_EQUALS"]
Occurrences = Literal["ALL", "AT_LEAST_ONCE"]
AggregationMethod = Literal["EVENT_FLOW", "EVENT_TIMER", "CADENCE"]
FillOption = Literal["NONE", "LAST_VALUE", "STATIC"]
IncidentPreference = Literal["PER_POLICY", "PER_CONDITION", "PER_CONDITION_AND_TARGET"]

# NRQL clauses an alert condition rejects (docs create-nrql-alert-conditions: the condition
# evaluates its own windows, so the query must not set a time range or a series).
_FORBIDDEN_ALERT_CLAUSES = re.compile(r"\b(SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|LIMIT)\b", re.I)
_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# definition that passes here is accepted by either path.
THRESHOLD_DURATION_LIMITS = {"STATIC": (60, 7200), "BASELINE": (120, 7200)}


class Term(Strict):
    """One threshold; terraform's critical/warning block, NerdGraph's terms[] entry."""

    operator: Annotated[Operator, BeforeValidator(upper)]
    threshold: Threshold
    duration: Seconds
    occurrences: Annotated[Occurrences, BeforeValidator(upper)] = "ALL"

    @field_validator("duration")
    @classmethod
    def _duration_within_limits(cls, value: int) -> int:
        low, high = THRESHOLD_DURATION_LIMITS["STATIC"]
        if not low <= value <= high:
            raise ValueError(
                f"threshold duration must be {low} s to {high} s ({high // 3600} h) for a static "
                f"NRQL condition, got {value} s: New Relic's alerting limits allow "
                "2 hours at most (docs.newrelic.com/docs/alerts/admin/rules-limits-alerts)"
            )
        return value


class Signal(Strict):
    # NR docs: 30 s to 120 min in 15 s steps; terraform allows more, so stay within both.
    aggregation_window: Seconds = Field(default=60, ge=30, le=7200)
    aggregation_method: Annotated[AggregationMethod, BeforeValidator(upper)] = "EVENT_FLOW"
    aggregation_delay: Seconds | None = None
    aggregation_timer: Seconds | None = None
    fill_option: Annotated[FillOption, BeforeValidator(upper)] = "NONE"
    fill_value: float | None = None
    slide_by: Seconds | None = None
    evaluation_delay: Seconds | None = Field(default=None, le=7200)

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        # Written out rather than left to the server so that a read-back compares equal:
        # NR defaults the delay to 120 s (flow, cadence) and the timer to 60 s (event timer).
        if not isinstance(data, dict):
            return data
        data = dict(data)
        method = upper(data.get("aggregation_method", "EVENT_FLOW"))
        if method == "EVENT_TIMER":
            data.setdefault("aggregation_timer", 60)
        else:
            data.setdefault("aggregation_delay", 120)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Signal:
        if self.aggregation_window % 15:
            raise ValueError("aggregation_window must be a multiple of 15 seconds")
        if self.aggregation_method == "EVENT_TIMER":
            if self.aggregation_delay is not None:
                raise ValueError("aggregation_delay applies to event_flow and cadence only")
            if self.aggregation_timer is None or not 5 <= self.aggregation_timer <= 1200:
                raise ValueError("aggregation_timer must be between 5 s and 20 min")
        else:
            if self.aggregation_timer is not None:
                raise ValueError("aggregation_timer applies to event_timer only")
            limit = 1200 if self.aggregation_method == "EVENT_FLOW" else 3600
            if self.aggregation_delay is None or self.aggregation_delay > limit:
                raise ValueError(f"aggregation_delay must be at most {limit} s")
        if (self.fill_option == "STATIC") != (self.fill_value is not None):
            raise ValueError("fill_value is required with fill_option static, and only then")
        if self.slide_by is not None and (
            self.slide_by >= self.aggregation_window or self.aggregation_window % self.slide_by
        ):
            raise ValueError("slide_by must be smaller than aggregation_window and divide it")
        return self


class Expiration(Strict):
    """Loss of signal (docs nerdgraph-api-loss-signal-gap-filling)."""

    duration: Seconds = Field(ge=30, le=172_800)
    open_incident: bool = True
    close_incidents: bool = False
    ignore_on_expected_termination: bool = False

    @model_validator(mode="after")
    def _ignore_needs_open(self) -> Expiration:
        if self.ignore_on_expected_termination and not self.open_incident:
            raise ValueError("ignore_on_expected_termination requires open_incident: true")
        return self


class Condition(Strict):
    key: str
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(min_length=1)
    runbook_url: str = Field(min_length=1)
    enabled: bool = True
    nrql: str = Field(min_length=1)
    critical: Term | None = None
    warning: Term | None = None
    signal: Signal = Field(default_factory=Signal)
    expiration: Expiration | None = None
    violation_time_limit: Seconds = Field(default=259_200, ge=300, le=2_592_000)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("key must be lower-case words joined by '-', e.g. worker-stalled")
        return value

    @field_validator("nrql")
    @classmethod
    def _nrql(cls, value: str) -> str:
        value = " ".join(value.split())
        if not SELECT_CLAUSE.match(value):
            raise ValueError("NRQL must start with SELECT")
        if not FROM_METRIC.search(value):
            raise ValueError("NRQL must query FROM Metric (the integration's dimensional metrics)")
        clause = _FORBIDDEN_ALERT_CLAUSES.search(value)
        if clause:
            raise ValueError(f"alert NRQL cannot use {clause.group(1).upper()}")
        return check_metrics(value)

    @model_validator(mode="after")
    def _terms(self) -> Condition:
        opens_on_loss = self.expiration is not None and self.expiration.open_incident
        if self.critical is None and self.warning is None and not opens_on_loss:
            raise ValueError(
                "give a critical or warning threshold, or an expiration with "
                "open_incident: true (a loss-of-signal condition)"
            )
        for label, term in (("critical", self.critical), ("warning", self.warning)):
            if term is not None and term.duration % self.signal.aggregation_window:
                raise ValueError(
                    f"{label}.duration ({term.duration} s) must be a multiple of "
                    f"aggregation_window ({self.signal.aggregation_window} s)"
                )
        return self

    @property
    def terms(self) -> list[tuple[str, Term]]:
        return [(p, t) for p, t in (("CRITICAL", self.critical), ("WARNING", self.warning)) if t]

    @property
    def full_description(self) -> str:
        return with_marker(self.description)


class Policy(Strict):
    # Names are 1-128 characters (docs alerts/admin/rules-limits-alerts).
    name: str = Field(min_length=1, max_length=128)
    incident_preference: Annotated[IncidentPreference, BeforeValidator(upper)] = (
        "PER_CONDITION_AND_TARGET"
    )


class AlertsDocument(Strict):
    source: str
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    values: dict[str, Value] = Field(default_factory=dict)
    policy: Policy
    conditions: list[Condition] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique(self) -> AlertsDocument:
        unique_by(self.conditions, lambda c: c.key, "condition key")
        unique_by(self.conditions, lambda c: c.name.casefold(), "condition name")
        return self
