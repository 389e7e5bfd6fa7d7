"""The plan vocabulary shared by alerts and dashboards: what one change is, a whole plan, and
the error that says how far an apply got.

Ownership rules (what "managed by this tool" means):
- an NRQL condition or a dashboard is managed when its description carries ``MANAGED_MARKER``;
  one that is not is never updated or deleted, and a definition whose name it already uses is
  not created next to it (the plan says so and skips it);
- an alert policy has no description. A policy is treated as managed when it holds no
  conditions or at least one managed condition; a same-named policy holding only other
  people's conditions is left alone as a whole (docs/alerts.md says why the policy's entity
  GUID is read but not tagged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workerwatch.alerts import MANAGED_MARKER
from workerwatch.alerts import nerdgraph as ng
from workerwatch.alerts.diff import flatten

MAX_PAGES = 50  # cursor pages followed before giving up; 50 x 200 results is far past limits

CREATE, UPDATE, REPLACE, DELETE, SKIP, NOOP = (
    "create",
    "update",
    "replace",
    "delete",
    "skip",
    "noop",
)
SYMBOL = {CREATE: "+", UPDATE: "~", REPLACE: "-/+", DELETE: "-", SKIP: "!", NOOP: "="}
MUTATING = {CREATE, UPDATE, REPLACE, DELETE}


@dataclass
class Change:
    action: str
    kind: str  # "policy", "condition", "dashboard"
    name: str
    id: str | None = None
    fields: list[tuple[str, Any, Any]] = field(default_factory=list)  # path, live, desired
    note: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def mutating(self) -> bool:
        return self.action in MUTATING


@dataclass
class Plan:
    account_id: int
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Filled while applying: the policy id conditions are created in.
    policy_ids: dict[str, str] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.mutating]


class ApplyError(Exception):
    """Apply stopped part-way; ``done`` lists what was already changed."""

    def __init__(self, cause: Exception, done: list[str], remaining: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.done = done
        self.remaining = remaining


def pages(fetch: Callable[[str | None], tuple[list, str | None]]) -> Iterable[Any]:
    """Every item of a cursor-paged NerdGraph search, following ``nextCursor``."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        items, cursor = fetch(cursor)
        yield from items
        if not cursor:
            return
    raise ng.NerdGraphError(f"more than {MAX_PAGES} pages of results; narrow the search")


def created_fields(payload: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    return [
        (path, None, value) for path, value in flatten(dict(payload)).items() if value is not None
    ]


def skip_unmanaged(
    plan: Plan, kind: str, same_name: list[dict], managed: list[dict], id_key: str, extra: str
) -> None:
    """Say, for each same-named resource not marked as ours, that it is left alone."""
    for other in same_name:
        if other in managed:
            continue
        plan.changes.append(
            Change(
                SKIP,
                kind,
                str(other.get("name")),
                id=str(other.get(id_key)),
                note=(
                    f"exists but is not managed by this tool (no {MANAGED_MARKER!r} in its "
                    "description): left alone" + extra
                ),
            )
        )
