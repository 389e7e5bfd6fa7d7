"""Plan and apply for dashboards: each is sent whole (dashboardUpdate replaces it)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from workerwatch.alerts import is_managed
from workerwatch.alerts import nerdgraph as ng
from workerwatch.alerts.dashboard_models import CHARTS, Dashboard, DashboardDocument, Variable
from workerwatch.alerts.diff import diff, project
from workerwatch.alerts.plan import (
    CREATE,
    NOOP,
    UPDATE,
    ApplyError,
    Change,
    Plan,
    created_fields,
    pages,
    skip_unmanaged,
)

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
                if w.visualization == "billboard":
                    # Always sent, empty when none: a threshold removed from the definition
                    # must show up as a change, and the projection compares sent keys only.
                    raw["thresholds"] = [
                        {"alertSeverity": severity, "value": value}
                        for severity, value in (("CRITICAL", w.critical), ("WARNING", w.warning))
                        if value is not None
                    ]
                if w.visualization in CHARTS:
                    raw["legend"] = {"enabled": w.legend}
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
        # Always sent: an empty list removes variables a definition no longer has.
        "variables": [variable_input(v, account_id) for v in d.variables],
    }


def variable_input(v: Variable, account_id: int) -> dict[str, Any]:
    """DashboardVariableInput for a query-type variable whose values replace ``{{name}}``."""
    return {
        "name": v.name,
        "title": v.title or v.name,
        "type": "NRQL",
        "nrqlQuery": {"accountIds": [account_id], "query": v.query},
        "isMultiSelection": v.multi,
        "defaultValues": [{"value": {"string": "*"}}] if v.default_all else [],
        # Values are strings (host and group names): quoted when substituted.
        "replacementStrategy": "STRING",
    }


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
        "variables": {
            str(v.get("name")): {key: v.get(key) for key in _VARIABLE_KEYS}
            for v in payload.get("variables") or []
        },
    }


# The variable fields this tool writes and reads back (DashboardVariableInput / DashboardVariable).
_VARIABLE_KEYS = (
    "title",
    "type",
    "nrqlQuery",
    "isMultiSelection",
    "defaultValues",
    "replacementStrategy",
)


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
                widget["rawConfiguration"] = project(widget["rawConfiguration"], target)
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
        for e in pages(fetch)
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
        skip_unmanaged(
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
                        fields=created_fields(_keyed(dashboard_state(payload))),
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
