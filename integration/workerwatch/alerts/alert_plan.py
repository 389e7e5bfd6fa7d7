"""Plan and apply for the alert policy and its NRQL conditions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workerwatch.alerts import MANAGED_MARKER, is_managed
from workerwatch.alerts import nerdgraph as ng
from workerwatch.alerts.diff import as_float, as_int, diff
from workerwatch.alerts.models import AlertsDocument, Condition
from workerwatch.alerts.plan import (
    CREATE,
    DELETE,
    NOOP,
    REPLACE,
    SKIP,
    UPDATE,
    ApplyError,
    Change,
    Plan,
    created_fields,
    pages,
    skip_unmanaged,
)


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
            "fillValue": as_float(s.fill_value),
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
        "violationTimeLimitSeconds": as_int(live.get("violationTimeLimitSeconds")),
        "terms": [
            {
                "_key": t.get("priority"),
                "operator": t.get("operator"),
                "threshold": as_float(t.get("threshold")),
                "thresholdDuration": as_int(t.get("thresholdDuration")),
                "thresholdOccurrences": t.get("thresholdOccurrences"),
            }
            for t in terms
        ],
        "signal": {
            "aggregationWindow": as_int(signal.get("aggregationWindow")),
            "aggregationMethod": signal.get("aggregationMethod"),
            "aggregationDelay": as_int(signal.get("aggregationDelay")),
            "aggregationTimer": as_int(signal.get("aggregationTimer")),
            "fillOption": signal.get("fillOption"),
            "fillValue": as_float(signal.get("fillValue")),
            "slideBy": as_int(signal.get("slideBy")),
            "evaluationDelay": as_int(signal.get("evaluationDelay")),
        },
        "expiration": {
            "expirationDuration": as_int(expiration.get("expirationDuration")),
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
            # Loss of signal off: the docs' example update (nerdgraph-api-loss-signal-gap-
            # filling) sends the first three; an update changes only the fields it is given,
            # so ignoreOnExpectedTermination must be switched off too or it stays true and
            # every later plan shows it again.
            value = {
                "expirationDuration": None,
                "openViolationOnExpiration": False,
                "closeViolationsOnExpiration": False,
                "ignoreOnExpectedTermination": False,
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
    return [p for p in pages(fetch) if str(p.get("name", "")).casefold() == name.casefold()]


def _find_conditions(client: ng.NerdGraphClient, account_id: int, policy_id: str) -> list[dict]:
    def fetch(cursor: str | None) -> tuple[list, str | None]:
        data = client.query(
            ng.CONDITIONS_SEARCH,
            {"accountId": account_id, "cursor": cursor, "criteria": {"policyId": policy_id}},
        )
        result = data["actor"]["account"]["alerts"]["nrqlConditionsSearch"] or {}
        return result.get("nrqlConditions") or [], result.get("nextCursor")

    return [c for c in pages(fetch) if str(c.get("policyId")) == str(policy_id)]


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
                CREATE,
                "policy",
                wanted.name,
                fields=created_fields(policy_state),
                payload=policy_state,
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
        skip_unmanaged(
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
                    fields=[("type", current.get("type"), "STATIC"), *created_fields(created)],
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


def _create_condition(policy_name: str, c: Condition, state: Mapping[str, Any]) -> Change:
    condition = condition_input(state, state.keys(), create=True)
    return Change(
        CREATE,
        "condition",
        c.name,
        fields=created_fields(condition),
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
                message = (
                    f"created policy {change.name!r} (id {created['id']}, "
                    f"entity GUID {created.get('entityGuid')})"
                )
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
