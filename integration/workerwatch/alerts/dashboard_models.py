"""The dashboard, its pages, widgets and template variables, from ``definitions/dashboards/``."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from workerwatch.alerts import MANAGED_NOTE, with_marker
from workerwatch.alerts.fields import (
    SELECT_CLAUSE,
    Strict,
    Threshold,
    check_metrics,
    unique_by,
    upper,
)
from workerwatch.alerts.params import Parameter, Value

Visualization = Literal["area", "bar", "billboard", "line", "markdown", "pie", "table"]
Permissions = Literal["PRIVATE", "PUBLIC_READ_ONLY", "PUBLIC_READ_WRITE"]
# Charts whose series are told apart by a legend (terraform one_dashboard: legend_enabled).
CHARTS = {"area", "bar", "line", "pie"}
_VARIABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_UNIQUES = re.compile(r"\buniques\s*\(", re.I)


class Widget(Strict):
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
    # Charts show their legend unless a definition says otherwise: with one series per host and
    # worker, the legend is what names them.
    legend: bool = True

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not SELECT_CLAUSE.match(value) and not value.upper().startswith("FROM "):
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


class Page(Strict):
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


class Variable(Strict):
    """A template variable (docs dashboard-template-variables): a query-type dropdown whose
    values a widget uses as ``{{name}}``; multi-select, defaulting to every value (``*``, the
    "select all" default value in the terraform one_dashboard docs)."""

    name: str = Field(min_length=1, max_length=255)
    title: str | None = None
    query: str = Field(min_length=1)
    multi: bool = True
    default_all: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # "Variable names must start with a letter and can contain letters, numbers, and
        # underscores" (docs dashboard-template-variables).
        if not _VARIABLE_NAME.match(value):
            raise ValueError("a variable name starts with a letter; letters, digits, _")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        value = " ".join(value.split())
        # "Queries must use the uniques syntax" (docs dashboard-template-variables).
        if not _UNIQUES.search(value):
            raise ValueError("a variable's query must select uniques(attribute)")
        return check_metrics(value)


class Dashboard(Strict):
    key: str | None = None
    name: str = Field(min_length=1, max_length=255)
    description: str = ""
    permissions: Annotated[Permissions, BeforeValidator(upper)] = "PUBLIC_READ_ONLY"
    pages: list[Page] = Field(min_length=1, max_length=20)
    variables: list[Variable] = Field(default_factory=list)

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
        unique_by(self.pages, lambda p: p.name.casefold(), "page name")
        unique_by(self.variables, lambda v: v.name, "variable name")
        known = {v.name for v in self.variables}
        for page in self.pages:
            for widget in page.widgets:
                used = set(re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", widget.query or ""))
                if used - known:
                    raise ValueError(
                        f"widget {widget.title!r} uses undefined variable(s) "
                        f"{', '.join(sorted(used - known))}"
                    )
        return self

    @property
    def full_description(self) -> str:
        return with_marker(self.description)

    @property
    def resource_key(self) -> str:
        return self.key or re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "dashboard"


class DashboardDocument(Strict):
    source: str
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    values: dict[str, Value] = Field(default_factory=dict)
    dashboard: Dashboard
