"""Plan and apply: compare the definitions with what the account holds, then make exactly
the changes the plan lists.

Ownership rules (what "managed by this tool" means):
- an NRQL condition or a dashboard is managed when its description carries ``MANAGED_MARKER``;
  one that is not is never updated or deleted, and a definition whose name it already uses is
  not created next to it (the plan says so and skips it);
- ``AlertsPolicy`` has neither a description nor, in the schema this tool validates against,
  an entity GUID to hang a tag on. A policy is therefore treated as managed when it holds no
  conditions or at least one managed condition; a same-named policy holding only other
  people's conditions is left alone as a whole.

Diffs compare only the fields the definitions set, normalised (numbers as floats, terms by
priority, widgets by row then column, rawConfiguration as JSON restricted to the keys we
write) so that a second apply right after the first finds nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workerwatch.alerts import MANAGED_MARKER, is_managed
from workerwatch.alerts import nerdgraph as ng
from workerwatch.alerts.models import AlertsDocument, Condition, Dashboard, DashboardDocument

MAX_PAGES = 50  # cursor pages followed before giving up; 50 x 200 results is far past limits

CREATE, UPDATE, REPLACE, DELETE, SKIP, NOOP = (
    "create",
    "update",
    "replace",
    "delete",
    "skip",
    "noop",
)
_SYMBOL = {CREATE: "+", UPDATE: "~", REPLACE: "-/+", DELETE: "-", SKIP: "!", NOOP: "="}
_MUTATING = {CREATE, UPDATE, REPLACE, DELETE}


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
        return self.action in _MUTATING


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


# ----------------------------------------------------------------------------- helpers


def _pages(fetch: Callable[[str | None], tuple[list, str | None]]) -> Iterable[Any]:
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        items, cursor = fetch(cursor)
        yield from items
        if not cursor:
            return
    raise ng.NerdGraphError(f"more than {MAX_PAGES} pages of results; narrow the search")


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
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _i(value: Any) -> int | None:
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- conditions


def condition_state(c: Condition) -> dict[str, Any]:
    """The comparable state of a definition, in NerdGraph's field names."""
    s = c.signal
    return {
        "name": c.name,
        "enabled": c.enabled,
        "description": c.full_description,
        "runbookUrl": c.runbook_url,
        "nrql": {"query": c.nrql},
        "violationTimeLimitSeconds": c.violation_time_limit,
        "terms": [
            {
                "_key": priority,
                "operator": t.operator,
                "threshold": float(t.threshold),
                "thresholdDuration": t.duration,
                "thresholdOccurrences": t.occurrences,
            }
            for priority, t in c.terms
        ],
        "signal": {
            "aggregationWindow": s.aggregation_window,
            "aggregationMethod": s.aggregation_method,
            "aggregationDelay": s.aggregation_delay,
            "aggregationTimer": s.aggregation_timer,
            "fillOption": s.fill_option,
            "fillValue": _f(s.fill_value),
            "slideBy": s.slide_by,
            "evaluationDelay": s.evaluation_delay,
        },
        "expiration": {
            "expirationDuration": c.expiration.duration if c.expiration else None,
            "openViolationOnExpiration": bool(c.expiration and c.expiration.open_incident),
            "closeViolationsOnExpiration": bool(c.expiration and c.expiration.close_incidents),
            "ignoreOnExpectedTermination": bool(
                c.expiration and c.expiration.ignore_on_expected_termination
            ),
        },
    }


# Signal fields that are unset in a definition are compared only when a person can set them in
# the UI without the server defaulting them; the others (timer with event_flow, fill value
# without static fill) come back with server defaults and would show as perpetual drift.
_COMPARE_WHEN_UNSET = {"slideBy", "evaluationDelay"}


def live_condition_state(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    signal = live.get("signal") or {}
    expiration = live.get("expiration") or {}
    terms = sorted(
        live.get("terms") or [], key=lambda t: (t.get("priority") != "CRITICAL", t.get("priority"))
    )
    state = {
        "name": live.get("name"),
        "enabled": live.get("enabled"),
        "description": live.get("description"),
        "runbookUrl": live.get("runbookUrl"),
        "nrql": {"query": (live.get("nrql") or {}).get("query")},
        "violationTimeLimitSeconds": _i(live.get("violationTimeLimitSeconds")),
        "terms": [
            {
                "_key": t.get("priority"),
                "operator": t.get("operator"),
                "threshold": _f(t.get("threshold")),
                "thresholdDuration": _i(t.get("thresholdDuration")),
                "thresholdOccurrences": t.get("thresholdOccurrences"),
            }
            for t in terms
        ],
        "signal": {
            "aggregationWindow": _i(signal.get("aggregationWindow")),
            "aggregationMethod": signal.get("aggregationMethod"),
            "aggregationDelay": _i(signal.get("aggregationDelay")),
            "aggregationTimer": _i(signal.get("aggregationTimer")),
            "fillOption": signal.get("fillOption"),
            "fillValue": _f(signal.get("fillValue")),
            "slideBy": _i(signal.get("slideBy")),
            "evaluationDelay": _i(signal.get("evaluationDelay")),
        },
        "expiration": {
            "expirationDuration": _i(expiration.get("expirationDuration")),
            "openViolationOnExpiration": bool(expiration.get("openViolationOnExpiration")),
            "closeViolationsOnExpiration": bool(expiration.get("closeViolationsOnExpiration")),
            "ignoreOnExpectedTermination": bool(expiration.get("ignoreOnExpectedTermination")),
        },
    }
    for key, wanted in desired["signal"].items():
        if wanted is None and key not in _COMPARE_WHEN_UNSET:
            state["signal"][key] = None
    return state


def condition_input(state: Mapping[str, Any], keys: Iterable[str], *, create: bool) -> dict:
    """The NerdGraph input for the given top-level keys of a comparable state.

    Create omits unset values; update sends them as explicit nulls, because an update changes
    only the fields it is given (docs nerdgraph-api-nrql-condition-alerts, update mutations).
    """
    payload: dict[str, Any] = {}
    for key in keys:
        value = state[key]
        if key == "terms":
            if create and not value:
                continue
            value = [
                {"priority": t["_key"], **{k: v for k, v in t.items() if k != "_key"}}
                for t in value
            ]
        elif isinstance(value, dict) and create:
            value = {k: v for k, v in value.items() if v is not None}
        if key == "expiration" and not state["expiration"]["expirationDuration"]:
            # Loss of signal off: what the docs' example update sends to switch it off.
            value = {
                "expirationDuration": None,
                "openViolationOnExpiration": False,
                "closeViolationsOnExpiration": False,
            }
            if create:
                continue
        payload[key] = value
    return payload


def plan_alerts(client: ng.NerdGraphClient, account_id: int, docs: list[AlertsDocument]) -> Plan:
    plan = Plan(account_id)
    for doc in docs:
        _plan_policy(client, plan, doc)
    return plan


def _find_policies(client: ng.NerdGraphClient, account_id: int, name: str) -> list[dict]:
    def fetch(cursor: str | None) -> tuple[list, str | None]:
        data = client.query(
            ng.POLICIES_SEARCH,
            {"accountId": account_id, "cursor": cursor, "criteria": {"name": name}},
        )
        result = data["actor"]["account"]["alerts"]["policiesSearch"] or {}
        return result.get("policies") or [], result.get("nextCursor")

    # The name criterion is case-insensitive and, per the docs, exact; check equality anyway.
    return [p for p in _pages(fetch) if str(p.get("name", "")).casefold() == name.casefold()]


def _find_conditions(client: ng.NerdGraphClient, account_id: int, policy_id: str) -> list[dict]:
    def fetch(cursor: str | None) -> tuple[list, str | None]:
        data = client.query(
            ng.CONDITIONS_SEARCH,
            {"accountId": account_id, "cursor": cursor, "criteria": {"policyId": policy_id}},
        )
        result = data["actor"]["account"]["alerts"]["nrqlConditionsSearch"] or {}
        return result.get("nrqlConditions") or [], result.get("nextCursor")

    return [c for c in _pages(fetch) if str(c.get("policyId")) == str(policy_id)]


def _plan_policy(client: ng.NerdGraphClient, plan: Plan, doc: AlertsDocument) -> None:
    wanted = doc.policy
    policy_state = {"name": wanted.name, "incidentPreference": wanted.incident_preference}
    found = _find_policies(client, plan.account_id, wanted.name)
    if len(found) > 1:
        ids = ", ".join(str(p.get("id")) for p in found)
        raise ng.NerdGraphError(
            f"{len(found)} policies are named {wanted.name!r} in account {plan.account_id} "
            f"(ids {ids}); rename or delete the extra ones, or choose another name with "
            "--set policy_name=..."
        )
    desired = [(c, condition_state(c)) for c in doc.conditions]
    if not found:
        plan.changes.append(
            Change(
                CREATE, "policy", wanted.name, fields=_created(policy_state), payload=policy_state
            )
        )
        for c, state in desired:
            plan.changes.append(_create_condition(wanted.name, c, state))
        return

    policy = found[0]
    policy_id = str(policy["id"])
    plan.policy_ids[wanted.name] = policy_id
    live = _find_conditions(client, plan.account_id, policy_id)
    if live and not any(is_managed(c.get("description")) for c in live):
        plan.changes.append(
            Change(
                SKIP,
                "policy",
                wanted.name,
                id=policy_id,
                note=(
                    f"exists and holds {len(live)} condition(s), none marked {MANAGED_MARKER!r}: "
                    "not managed by this tool, left alone with everything in it. Choose another "
                    "name with --set policy_name=..., or add the marker to a condition's "
                    "description to adopt the policy."
                ),
            )
        )
        return

    live_policy = {
        "name": policy.get("name"),
        "incidentPreference": policy.get("incidentPreference"),
    }
    changed = diff(live_policy, policy_state)
    if changed:
        payload = {path: new for path, _old, new in changed}
        plan.changes.append(
            Change(UPDATE, "policy", wanted.name, id=policy_id, fields=changed, payload=payload)
        )
    else:
        plan.changes.append(Change(NOOP, "policy", wanted.name, id=policy_id))

    by_name: dict[str, list[dict]] = {}
    for item in live:
        by_name.setdefault(str(item.get("name", "")).casefold(), []).append(item)

    for c, state in desired:
        same = by_name.pop(c.name.casefold(), [])
        managed = [x for x in same if is_managed(x.get("description"))]
        _skip_unmanaged(
            plan,
            "condition",
            same,
            managed,
            "id",
            "" if managed else f"; the definition {c.key!r} is not created",
        )
        if not managed:
            if not same:
                plan.changes.append(_create_condition(wanted.name, c, state))
            continue
        current, extras = managed[0], managed[1:]
        if current.get("type") not in (None, "STATIC"):
            created = condition_input(state, state.keys(), create=True)
            # A condition's type cannot be changed by an update (docs: delete and re-create).
            plan.changes.append(
                Change(
                    REPLACE,
                    "condition",
                    c.name,
                    id=str(current["id"]),
                    fields=[("type", current.get("type"), "STATIC"), *_created(created)],
                    note="type differs; deleted and created again (open incidents close)",
                    payload={"policy": wanted.name, "condition": created},
                )
            )
        else:
            changed = diff(live_condition_state(current, state), state)
            if changed:
                keys = []
                for path, _old, _new in changed:
                    top = path.split(".")[0].split("[")[0]
                    if top not in keys:
                        keys.append(top)
                plan.changes.append(
                    Change(
                        UPDATE,
                        "condition",
                        c.name,
                        id=str(current["id"]),
                        fields=changed,
                        payload=condition_input(state, keys, create=False),
                    )
                )
            else:
                plan.changes.append(Change(NOOP, "condition", c.name, id=str(current["id"])))
        for extra in extras:
            plan.changes.append(
                Change(
                    DELETE,
                    "condition",
                    str(extra.get("name")),
                    id=str(extra["id"]),
                    note="duplicate of a managed condition with the same name",
                )
            )

    for leftovers in by_name.values():
        for item in leftovers:
            if is_managed(item.get("description")):
                plan.changes.append(
                    Change(
                        DELETE,
                        "condition",
                        str(item.get("name")),
                        id=str(item.get("id")),
                        note="managed by this tool and no longer defined",
                    )
                )
            else:
                plan.notes.append(
                    f"condition {item.get('name')!r} (id {item.get('id')}) in policy "
                    f"{wanted.name!r} is not managed by this tool: left alone"
                )


def _created(payload: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    return [
        (path, None, value) for path, value in flatten(dict(payload)).items() if value is not None
    ]


def _create_condition(policy_name: str, c: Condition, state: Mapping[str, Any]) -> Change:
    condition = condition_input(state, state.keys(), create=True)
    return Change(
        CREATE,
        "condition",
        c.name,
        fields=_created(condition),
        payload={"policy": policy_name, "condition": condition},
    )


def apply_alerts(client: ng.NerdGraphClient, plan: Plan, out: Callable[[str], None]) -> None:
    done: list[str] = []
    pending = plan.pending
    account = plan.account_id
    for index, change in enumerate(pending):
        try:
            if change.kind == "policy" and change.action == CREATE:
                data = client.mutate(
                    ng.POLICY_CREATE, {"accountId": account, "policy": change.payload}
                )
                created = data["alertsPolicyCreate"]
                plan.policy_ids[change.name] = str(created["id"])
                message = f"created policy {change.name!r} (id {created['id']})"
            elif change.kind == "policy" and change.action == UPDATE:
                client.mutate(
                    ng.POLICY_UPDATE,
                    {"accountId": account, "id": change.id, "policy": change.payload},
                )
                message = f"updated policy {change.name!r} (id {change.id})"
            elif change.action == DELETE:
                client.mutate(ng.CONDITION_DELETE, {"accountId": account, "id": change.id})
                message = f"deleted condition {change.name!r} (id {change.id})"
            elif change.action in (CREATE, REPLACE):
                if change.action == REPLACE:
                    client.mutate(ng.CONDITION_DELETE, {"accountId": account, "id": change.id})
                    done.append(f"deleted condition {change.name!r} (id {change.id})")
                policy_id = plan.policy_ids[change.payload["policy"]]
                data = client.mutate(
                    ng.CONDITION_CREATE,
                    {
                        "accountId": account,
                        "policyId": policy_id,
                        "condition": change.payload["condition"],
                    },
                )
                created = data["alertsNrqlConditionStaticCreate"]
                message = f"created condition {change.name!r} (id {created['id']})"
            else:
                client.mutate(
                    ng.CONDITION_UPDATE,
                    {"accountId": account, "id": change.id, "condition": change.payload},
                )
                message = f"updated condition {change.name!r} (id {change.id})"
        except ng.NerdGraphError as exc:
            raise ApplyError(exc, done, len(pending) - index) from exc
        done.append(message)
        out(message)


# ----------------------------------------------------------------------------- dashboards

_VIZ = {
    "area": "viz.area",
    "bar": "viz.bar",
    "billboard": "viz.billboard",
    "line": "viz.line",
    "markdown": "viz.markdown",
    "pie": "viz.pie",
    "table": "viz.table",
}


def dashboard_input(d: Dashboard, account_id: int, page_guids: Mapping[str, str]) -> dict:
    """The complete DashboardInput: dashboardUpdate replaces the whole dashboard."""
    pages = []
    for page in d.pages:
        widgets = []
        for w in page.sorted_widgets():
            raw: dict[str, Any]
            if w.visualization == "markdown":
                raw = {"text": w.text}
            else:
                raw = {"nrqlQueries": [{"accountIds": [account_id], "query": w.query}]}
                thresholds = [
                    {"alertSeverity": severity, "value": value}
                    for severity, value in (("CRITICAL", w.critical), ("WARNING", w.warning))
                    if value is not None
                ]
                if thresholds:
                    raw["thresholds"] = thresholds
            widgets.append(
                {
                    "title": w.title,
                    "visualization": {"id": _VIZ[w.visualization]},
                    "layout": {
                        "column": w.column,
                        "row": w.row,
                        "width": w.width,
                        "height": w.height,
                    },
                    "rawConfiguration": raw,
                }
            )
        entry: dict[str, Any] = {"name": page.name, "widgets": widgets}
        if page.description:
            entry["description"] = page.description
        guid = page_guids.get(page.name.casefold())
        if guid:
            entry["guid"] = guid
        pages.append(entry)
    return {
        "name": d.name,
        "description": d.full_description,
        "permissions": d.permissions,
        "pages": pages,
    }


def _project(live: Any, desired: Any) -> Any:
    """``live`` restricted to the shape of ``desired``: keys the server adds are not drift."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return live
        return {k: _project(live.get(k), v) for k, v in desired.items()}
    if isinstance(desired, list) and isinstance(live, list):
        return [
            _project(item, desired[i]) if i < len(desired) else item for i, item in enumerate(live)
        ]
    if isinstance(desired, float) and isinstance(live, int | float) and not isinstance(live, bool):
        return float(live)
    return live


def dashboard_state(payload: Mapping[str, Any]) -> dict[str, Any]:
    pages = []
    for page in payload.get("pages") or []:
        widgets = []
        for w in page.get("widgets") or []:
            layout = w.get("layout") or {}
            raw = w.get("rawConfiguration") or {}
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raw = {"unparsed": raw}
            widgets.append(
                {
                    "_key": f"row {layout.get('row')}, column {layout.get('column')}",
                    "title": w.get("title"),
                    "visualization": (w.get("visualization") or {}).get("id"),
                    "width": layout.get("width"),
                    "height": layout.get("height"),
                    "rawConfiguration": json.loads(json.dumps(raw)),
                    "_sort": (layout.get("row") or 0, layout.get("column") or 0),
                }
            )
        widgets.sort(key=lambda item: item.pop("_sort"))
        pages.append(
            {
                "_key": page.get("name"),
                "description": page.get("description") or None,
                "widgets": widgets,
            }
        )
    return {
        "name": payload.get("name"),
        "description": payload.get("description"),
        "permissions": payload.get("permissions"),
        "pages": pages,
    }


def _dashboard_diff(live: Mapping[str, Any], desired_input: Mapping[str, Any]) -> list:
    want = dashboard_state(desired_input)
    have = dashboard_state(live)
    # Project each live widget's rawConfiguration onto the keys we write, matched by position.
    want_widgets = {
        (p["_key"], w["_key"]): w["rawConfiguration"] for p in want["pages"] for w in p["widgets"]
    }
    for page in have["pages"]:
        for widget in page["widgets"]:
            target = want_widgets.get((page["_key"], widget["_key"]))
            if target is not None:
                widget["rawConfiguration"] = _project(widget["rawConfiguration"], target)
    # Pages and widgets are keyed by name and position, so compare them as keyed maps.
    return diff(_keyed(have), _keyed(want))


def _keyed(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in state.items() if k != "pages"}
    out["pages"] = {
        f"[{page['_key']}]": {
            "description": page["description"],
            "widgets": {
                f"[{w['_key']}]": {k: v for k, v in w.items() if k != "_key"}
                for w in page["widgets"]
            },
        }
        for page in state["pages"]
    }
    out["pages.order"] = [page["_key"] for page in state["pages"]]
    return out


def _find_dashboards(client: ng.NerdGraphClient, account_id: int, name: str) -> list[dict]:
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    search = f"type = 'DASHBOARD' AND accountId = {int(account_id)} AND name = '{escaped}'"

    def fetch(cursor: str | None) -> tuple[list, str | None]:
        data = client.query(ng.DASHBOARD_SEARCH, {"query": search, "cursor": cursor})
        results = ((data["actor"] or {}).get("entitySearch") or {}).get("results") or {}
        return results.get("entities") or [], results.get("nextCursor")

    # entitySearch matches names loosely (newrelic-as-code _find_entity checks equality itself);
    # pages of a multi-page dashboard are entities too and carry their parent's GUID.
    return [
        e
        for e in _pages(fetch)
        if str(e.get("name", "")).casefold() == name.casefold()
        and int(e.get("accountId") or account_id) == int(account_id)
        and not e.get("dashboardParentGuid")
    ]


def _get_dashboard(client: ng.NerdGraphClient, guid: str) -> dict[str, Any]:
    data = client.query(ng.DASHBOARD_GET, {"guid": guid})
    entity = (data.get("actor") or {}).get("entity")
    if not entity:
        raise ng.NerdGraphError(f"dashboard {guid} was found by search but cannot be read")
    return entity


def plan_dashboards(
    client: ng.NerdGraphClient, account_id: int, docs: list[DashboardDocument]
) -> Plan:
    plan = Plan(account_id)
    for doc in docs:
        d = doc.dashboard
        found = [
            _get_dashboard(client, e["guid"]) for e in _find_dashboards(client, account_id, d.name)
        ]
        managed = [e for e in found if is_managed(e.get("description"))]
        _skip_unmanaged(
            plan,
            "dashboard",
            found,
            managed,
            "guid",
            ""
            if managed
            else "; not created next to it (choose another name with --set dashboard_name=...)",
        )
        if len(managed) > 1:
            guids = ", ".join(str(e.get("guid")) for e in managed)
            raise ng.NerdGraphError(
                f"{len(managed)} managed dashboards are named {d.name!r} ({guids}); "
                "delete the extra ones in the UI"
            )
        if not managed:
            if not found:
                payload = dashboard_input(d, account_id, {})
                plan.changes.append(
                    Change(
                        CREATE,
                        "dashboard",
                        d.name,
                        fields=_created(_keyed(dashboard_state(payload))),
                        payload=payload,
                    )
                )
            continue
        live = managed[0]
        page_guids = {
            str(p.get("name", "")).casefold(): p["guid"]
            for p in live.get("pages") or []
            if p.get("guid")
        }
        payload = dashboard_input(d, account_id, page_guids)
        changed = _dashboard_diff(live, payload)
        guid = str(live.get("guid"))
        if changed:
            plan.changes.append(
                Change(UPDATE, "dashboard", d.name, id=guid, fields=changed, payload=payload)
            )
        else:
            plan.changes.append(Change(NOOP, "dashboard", d.name, id=guid))
    return plan


def apply_dashboards(client: ng.NerdGraphClient, plan: Plan, out: Callable[[str], None]) -> None:
    done: list[str] = []
    pending = plan.pending
    for index, change in enumerate(pending):
        try:
            if change.action == CREATE:
                data = client.mutate(
                    ng.DASHBOARD_CREATE,
                    {"accountId": plan.account_id, "dashboard": change.payload},
                )
                result = data["dashboardCreate"].get("entityResult") or {}
                message = f"created dashboard {change.name!r} (guid {result.get('guid')})"
            else:
                client.mutate(ng.DASHBOARD_UPDATE, {"guid": change.id, "dashboard": change.payload})
                message = f"updated dashboard {change.name!r} (guid {change.id})"
        except ng.NerdGraphError as exc:
            raise ApplyError(exc, done, len(pending) - index) from exc
        done.append(message)
        out(message)


# ----------------------------------------------------------------------------- rendering


def render(plan: Plan, what: str) -> list[str]:
    lines = [f"Account {plan.account_id}: {what}"]
    for change in plan.changes:
        ident = (
            f" ({'guid' if change.kind == 'dashboard' else 'id'} {change.id})" if change.id else ""
        )
        if change.action == NOOP:
            lines.append(f"  = {change.kind} {change.name!r}{ident}: unchanged")
            continue
        head = f"  {_SYMBOL[change.action]} {change.action} {change.kind} {change.name!r}{ident}"
        lines.append(f"{head}: {change.note}" if change.note else head)
        for path, old, new in change.fields:
            if change.action in (CREATE, REPLACE) and old is None:
                lines.append(f"      {path}: {show(new)}")
            else:
                lines.append(f"      {path}: {show(old)} -> {show(new)}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    counts = ", ".join(
        f"{plan.count(a)} to {a}" for a in (CREATE, UPDATE, REPLACE, DELETE) if plan.count(a)
    )
    unchanged, skipped = plan.count(NOOP), plan.count(SKIP)
    summary = counts or "no changes"
    lines.append(f"Plan: {summary}; {unchanged} unchanged, {skipped} skipped (not managed).")
    return lines


def _skip_unmanaged(
    plan: Any, kind: str, same_name: list[dict], managed: list[dict], id_key: str, extra: str
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
