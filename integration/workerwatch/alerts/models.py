"""Pydantic models for the alert and dashboard definitions, and the loaders that read them.

Limits enforced here come from New Relic's documented limits (see the notes on each field);
catching them locally gives a message naming the file and the key instead of a NerdGraph
validation error halfway through an apply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from workerwatch.alerts import MANAGED_NOTE, with_marker
from workerwatch.alerts.params import (
    DefinitionError,
    Parameter,
    Value,
    check_overrides_known,
    resolve,
    substitute,
)
from workerwatch.output.catalogue import CATALOGUE
from workerwatch.units import parse_duration

METRIC_NAME = re.compile(r"workerwatch\.[A-Za-z.]+")
MAX_DEFINITION_BYTES = 1_000_000


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
    if isinstance(value, int | float):
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


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ----------------------------------------------------------------------------- alerts

Operator = Literal["ABOVE", "ABOVE_OR_EQUALS", "BELOW", "BELOW_OR_EQUALS", "EQUALS", "NOT_EQUALS"]
Occurrences = Literal["ALL", "AT_LEAST_ONCE"]
AggregationMethod = Literal["EVENT_FLOW", "EVENT_TIMER", "CADENCE"]
FillOption = Literal["NONE", "LAST_VALUE", "STATIC"]
IncidentPreference = Literal["PER_POLICY", "PER_CONDITION", "PER_CONDITION_AND_TARGET"]

# NRQL clauses an alert condition rejects (docs create-nrql-alert-conditions: the condition
# evaluates its own windows, so the query must not set a time range or a series).
_FORBIDDEN_ALERT_CLAUSES = re.compile(r"\b(SINCE|UNTIL|TIMESERIES|COMPARE\s+WITH|LIMIT)\b", re.I)
_SELECT = re.compile(r"^\s*SELECT\b", re.I)
_FROM_METRIC = re.compile(r"\bFROM\s+Metric\b", re.I)
_KEY = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


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


class Term(_Strict):
    """One threshold; terraform's critical/warning block, NerdGraph's terms[] entry."""

    operator: Annotated[Operator, BeforeValidator(_upper)]
    threshold: Threshold
    # Static conditions: 60 s to 24 h (terraform docs nrql_alert_condition).
    duration: Seconds = Field(ge=60, le=86_400)
    occurrences: Annotated[Occurrences, BeforeValidator(_upper)] = "ALL"


class Signal(_Strict):
    # NR docs: 30 s to 120 min in 15 s steps; terraform allows more, so stay within both.
    aggregation_window: Seconds = Field(default=60, ge=30, le=7200)
    aggregation_method: Annotated[AggregationMethod, BeforeValidator(_upper)] = "EVENT_FLOW"
    aggregation_delay: Seconds | None = None
    aggregation_timer: Seconds | None = None
    fill_option: Annotated[FillOption, BeforeValidator(_upper)] = "NONE"
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
        method = _upper(data.get("aggregation_method", "EVENT_FLOW"))
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


class Expiration(_Strict):
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


class Condition(_Strict):
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
        if not _SELECT.match(value):
            raise ValueError("NRQL must start with SELECT")
        if not _FROM_METRIC.search(value):
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


class Policy(_Strict):
    # Names are 1-128 characters (docs alerts/admin/rules-limits-alerts).
    name: str = Field(min_length=1, max_length=128)
    incident_preference: Annotated[IncidentPreference, BeforeValidator(_upper)] = (
        "PER_CONDITION_AND_TARGET"
    )


class AlertsDocument(_Strict):
    source: str
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    values: dict[str, Value] = Field(default_factory=dict)
    policy: Policy
    conditions: list[Condition] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _unique(self) -> AlertsDocument:
        _unique_by(self.conditions, lambda c: c.key, "condition key")
        _unique_by(self.conditions, lambda c: c.name.casefold(), "condition name")
        return self


# ----------------------------------------------------------------------------- dashboards

Visualization = Literal["area", "bar", "billboard", "line", "markdown", "pie", "table"]
Permissions = Literal["PRIVATE", "PUBLIC_READ_ONLY", "PUBLIC_READ_WRITE"]


class Widget(_Strict):
    title: str = Field(min_length=1, max_length=255)
    visualization: Visualization
    # Columns 1-12; height kept to 1-12 (client-go and terraform docstrings say so).
    row: int = Field(ge=1, le=500)
    column: int = Field(ge=1, le=12)
    width: int = Field(default=4, ge=1, le=12)
    height: int = Field(default=3, ge=1, le=12)
    query: str | None = None
    text: str | None = None
    critical: Threshold | None = None
    warning: Threshold | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not _SELECT.match(value) and not value.upper().startswith("FROM "):
            raise ValueError("query must be NRQL (SELECT ... or FROM ...)")
        return check_metrics(value)

    @model_validator(mode="after")
    def _shape(self) -> Widget:
        if self.visualization == "markdown":
            if not self.text or self.query:
                raise ValueError("a markdown widget needs text and no query")
        elif not self.query or self.text:
            raise ValueError(f"a {self.visualization} widget needs a query and no text")
        if (self.critical is not None or self.warning is not None) and (
            self.visualization != "billboard"
        ):
            raise ValueError("critical/warning thresholds apply to billboard widgets only")
        if self.column + self.width - 1 > 12:
            raise ValueError(f"column {self.column} + width {self.width} goes past column 12")
        return self

    def cells(self) -> list[tuple[int, int]]:
        return [
            (r, c)
            for r in range(self.row, self.row + self.height)
            for c in range(self.column, self.column + self.width)
        ]


class Page(_Strict):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1024)
    widgets: list[Widget] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _no_overlap(self) -> Page:
        taken: dict[tuple[int, int], str] = {}
        for widget in self.widgets:
            for cell in widget.cells():
                if cell in taken:
                    raise ValueError(
                        f"widgets {taken[cell]!r} and {widget.title!r} overlap at "
                        f"row {cell[0]}, column {cell[1]}"
                    )
                taken[cell] = widget.title
        return self

    def sorted_widgets(self) -> list[Widget]:
        # Terraform docs: widgets not sorted by row then column cause perpetual drift.
        return sorted(self.widgets, key=lambda w: (w.row, w.column))


class Dashboard(_Strict):
    key: str | None = None
    name: str = Field(min_length=1, max_length=255)
    description: str = ""
    permissions: Annotated[Permissions, BeforeValidator(_upper)] = "PUBLIC_READ_ONLY"
    pages: list[Page] = Field(min_length=1, max_length=20)

    @field_validator("description")
    @classmethod
    def _fits_with_marker(cls, value: str) -> str:
        # Dashboard descriptions are capped at 1024 characters (docs nerdgraph-dashboards).
        room = 1024 - len(MANAGED_NOTE) - 2
        if len(value.strip()) > room:
            raise ValueError(f"description must be at most {room} characters")
        return value

    @model_validator(mode="after")
    def _unique_pages(self) -> Dashboard:
        _unique_by(self.pages, lambda p: p.name.casefold(), "page name")
        return self

    @property
    def full_description(self) -> str:
        return with_marker(self.description)

    @property
    def resource_key(self) -> str:
        return self.key or re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "dashboard"


class DashboardDocument(_Strict):
    source: str
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    values: dict[str, Value] = Field(default_factory=dict)
    dashboard: Dashboard


def _unique_by(items: Iterable[Any], key: Any, what: str) -> None:
    seen: set[Any] = set()
    for item in items:
        value = key(item)
        if value in seen:
            raise ValueError(f"{what} {value!r} is used twice")
        seen.add(value)


# ----------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:
            raise DefinitionError(f"{path}: larger than {MAX_DEFINITION_BYTES} bytes")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"{path}: invalid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    return data


def _definition_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DefinitionError(f"{directory}: no such directory")
    files = sorted(
        p for p in directory.iterdir() if p.suffix in {".yml", ".yaml", ".json"} and p.is_file()
    )
    if not files:
        raise DefinitionError(f"{directory}: no definition files (*.yml, *.yaml, *.json)")
    return files


def _format_validation(path: Path, exc: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        label = _loc_label(loc, data)
        message = error.get("msg", "invalid")
        message = message.removeprefix("Value error, ")
        lines.append(f"{path}: {label}: {message}" if label else f"{path}: {message}")
    return "\n".join(lines)


def _loc_label(loc: list[Any], data: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            named = ""
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("key") or node[item].get("name") or node[item].get("title")
                named = f" ({ident})" if ident else ""
            parts.append(f"[{item}]{named}")
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            # pydantic reports union/tagged branches as extra loc items; skip the type names.
            if isinstance(node, dict) and item not in node and parts:
                continue
            parts.append(f".{item}" if parts else str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _parameters(path: Path, raw: Any) -> dict[str, Parameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: parameters: expected a mapping of name to definition")
    params: dict[str, Parameter] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise DefinitionError(f"{path}: parameters: {name!r} is not a valid parameter name")
        if not isinstance(spec, dict):
            spec = {"default": spec}
        try:
            params[name] = Parameter.model_validate(spec)
        except ValidationError as exc:
            raise DefinitionError(
                _format_validation(path, exc, spec).replace(f"{path}: ", f"{path}: {name}: ", 1)
            ) from None
    return params


def _load(
    directory: Path, overrides: Mapping[str, str], build: Any
) -> list[tuple[Path, dict[str, Parameter], dict[str, Any]]]:
    raw_docs = []
    for path in _definition_files(directory):
        data = _read_yaml(path)
        params = _parameters(path, data.pop("parameters", None))
        raw_docs.append((path, params, data))
    check_overrides_known(overrides, {name for _, params, _ in raw_docs for name in params})
    docs = []
    for path, params, data in raw_docs:
        values = resolve(params, overrides)
        try:
            resolved = substitute(data, values, "")
        except DefinitionError as exc:
            raise DefinitionError(f"{path}: {exc}") from None
        try:
            docs.append(build(path, params, values, resolved))
        except ValidationError as exc:
            raise DefinitionError(_format_validation(path, exc, resolved)) from None
    return docs


def _merge(defaults: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(defaults)
    for key, value in item.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_alerts(directory: Path, overrides: Mapping[str, str]) -> list[AlertsDocument]:
    """Every alert policy defined under ``directory`` (one per file), parameters applied."""

    def build(path: Path, params: dict[str, Parameter], values: dict[str, Value], data: Any):
        defaults = data.pop("defaults", None) or {}
        if not isinstance(defaults, dict):
            raise DefinitionError(f"{path}: defaults: expected a mapping")
        conditions = data.get("conditions")
        if isinstance(conditions, list):
            data["conditions"] = [
                _merge(defaults, c) if isinstance(c, dict) else c for c in conditions
            ]
        return AlertsDocument.model_validate(
            {**data, "source": str(path), "parameters": params, "values": values}
        )

    docs = _load(directory, overrides, build)
    try:
        _unique_by(docs, lambda d: d.policy.name.casefold(), "policy name")
    except ValueError as exc:
        raise DefinitionError(f"{directory}: {exc}") from None
    return docs


def load_dashboards(directory: Path, overrides: Mapping[str, str]) -> list[DashboardDocument]:
    """Every dashboard defined under ``directory`` (one per file), parameters applied."""

    def build(path: Path, params: dict[str, Parameter], values: dict[str, Value], data: Any):
        return DashboardDocument.model_validate(
            {**data, "source": str(path), "parameters": params, "values": values}
        )

    docs = _load(directory, overrides, build)
    try:
        _unique_by(docs, lambda d: d.dashboard.name.casefold(), "dashboard name")
    except ValueError as exc:
        raise DefinitionError(f"{directory}: {exc}") from None
    return docs
