"""An in-memory NerdGraph for pytest-httpserver.

Every request is parsed and validated against the NerdGraph schema (tests/nerdgraph/
schema.graphql) and then executed by graphql-core against resolvers that keep policies, NRQL
conditions, tags and dashboards in memory. So a document or variable the real API would reject
for its shape (unknown field, wrong input type, missing non-null field) fails here too, and
the answer has exactly the shape the query selected.

Server behaviour mirrored from NerdGraph's documented behaviour:
- conditions are paged (small pages here, to exercise cursors);
- an update changes only the fields it is given;
- the server fills signal defaults (aggregation window 60, delay 120, EVENT_FLOW, fill NONE);
- dashboards get page GUIDs and widget ids, and rawConfiguration gains keys we never sent;
- errors come as top-level ``errors`` with HTTP 200, typed ``errors`` on dashboard mutations,
  HTTP 401 / BAD_API_KEY, and HTTP 429 or TOO_MANY_REQUESTS with HTTP 200.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from graphql import OperationDefinitionNode, execute, parse, validate
from werkzeug.wrappers import Request, Response

from .schema import nerdgraph_schema

PAGE_SIZE = 4


@dataclass
class Seen:
    operation: str  # "query" or "mutation"
    fields: list[str]
    name: str | None
    variables: dict[str, Any]


@dataclass
class Canned:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeNerdGraph:
    def __init__(self, api_key: str, account_id: int) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.policies: dict[str, dict[str, Any]] = {}
        self.conditions: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self.invalid: list[str] = []
        self.canned: list[Canned] = []
        self.mutation_errors: dict[str, list[dict[str, Any]]] = {}
        self.dashboard_errors: list[dict[str, Any]] = []
        self._ids = itertools.count(41_000_000)
        self._lock = threading.Lock()

    # -- test API

    @property
    def mutations(self) -> list[Seen]:
        return [s for s in self.seen if s.operation == "mutation"]

    def mutation_fields(self) -> list[str]:
        return [f for s in self.mutations for f in s.fields]

    def reply_next(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer the next request with this, whatever it asks."""
        self.canned.append(Canned(status, body, headers or {}))

    def fail_mutation(self, field_name: str, message: str, **extensions: Any) -> None:
        """Answer the next mutation of this field with a top-level error and null data."""
        error = {"message": message, "path": [field_name], "extensions": extensions}
        self.mutation_errors.setdefault(field_name, []).append(error)

    def add_policy(self, name: str, preference: str = "PER_POLICY") -> str:
        policy_id = str(next(self._ids))
        self.policies[policy_id] = {
            "id": policy_id,
            "name": name,
            "incidentPreference": preference,
            "accountId": self.account_id,
            "entityGuid": self._new_guid("POLICY"),
        }
        return policy_id

    def add_condition(self, policy_id: str, **fields: Any) -> str:
        condition = {"name": "hand-made", "enabled": True, "nrql": {"query": "SELECT 1"}}
        condition.update(fields)
        return self._store_condition(policy_id, condition)["id"]

    def add_dashboard(self, name: str, description: str | None = None) -> str:
        guid = self._new_guid("DASHBOARD")
        self.dashboards[guid] = {
            "__typename": "DashboardEntity",
            "guid": guid,
            "name": name,
            "accountId": self.account_id,
            "type": "DASHBOARD",
            "description": description,
            "permissions": "PUBLIC_READ_WRITE",
            "pages": [],
            "variables": [],
        }
        return guid

    def policy_named(self, name: str) -> dict[str, Any]:
        return next(p for p in self.policies.values() if p["name"] == name)

    def conditions_in(self, policy_id: str) -> list[dict[str, Any]]:
        return [c for c in self.conditions.values() if c["policyId"] == policy_id]

    # -- HTTP

    def handle(self, request: Request) -> Response:
        with self._lock:
            return self._handle(request)

    def _handle(self, request: Request) -> Response:
        if self.canned:
            canned = self.canned.pop(0)
            return _json(canned.body, canned.status, canned.headers)
        if request.headers.get("API-Key") != self.api_key:
            # The real API answers an unknown key this way (client-go looks for both signs).
            return _json(
                {
                    "errors": [
                        {"message": "Invalid API key", "extensions": {"error_code": "BAD_API_KEY"}}
                    ]
                },
                401,
            )
        try:
            body = json.loads(request.get_data())
            document = parse(body["query"])
        except (ValueError, KeyError, TypeError) as exc:
            self.invalid.append(f"unparseable request: {exc}")
            return _json({"errors": [{"message": f"Syntax error: {exc}"}]}, 200)
        errors = validate(nerdgraph_schema(), document)
        if errors:
            self.invalid.extend(e.message for e in errors)
            return _json({"errors": [{"message": e.message} for e in errors]}, 200)
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        kind = operation.operation.value
        fields = [s.name.value for s in operation.selection_set.selections]  # type: ignore[attr-defined]
        variables = body.get("variables") or {}
        self.seen.append(
            Seen(kind, fields, operation.name.value if operation.name else None, variables)
        )
        for name in fields:
            queued = self.mutation_errors.get(name)
            if kind == "mutation" and queued:
                return _json({"data": {name: None}, "errors": [queued.pop(0)]}, 200)
        result = execute(nerdgraph_schema(), document, _Root(self), variable_values=variables)
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            # Variable coercion failures (a wrong input type) land here: record them as invalid.
            self.invalid.extend(e.message for e in result.errors)
            out["errors"] = [e.formatted for e in result.errors]
        return _json(out, 200)

    # -- store

    def _new_guid(self, kind: str) -> str:
        return f"MXx{kind}{next(self._ids)}"

    def _store_condition(self, policy_id: str, given: dict[str, Any]) -> dict[str, Any]:
        condition_id = str(next(self._ids))
        signal = {
            "aggregationWindow": 60,
            "aggregationMethod": "EVENT_FLOW",
            "aggregationDelay": 120,
            "aggregationTimer": None,
            "fillOption": "NONE",
            "fillValue": None,
            "slideBy": None,
            "evaluationDelay": None,
        }
        signal.update(given.get("signal") or {})
        expiration = {
            "expirationDuration": None,
            "openViolationOnExpiration": False,
            "closeViolationsOnExpiration": False,
            "ignoreOnExpectedTermination": False,
        }
        expiration.update(given.get("expiration") or {})
        condition = {
            "__typename": "AlertsNrqlStaticCondition",
            "id": condition_id,
            "entityGuid": self._new_guid("CONDITION"),
            "policyId": policy_id,
            "type": "STATIC",
            "description": None,
            "runbookUrl": None,
            "violationTimeLimitSeconds": 259_200,
            "terms": [],
            **{k: v for k, v in given.items() if k not in ("signal", "expiration")},
            "signal": signal,
            "expiration": expiration,
        }
        condition["nrql"] = {"query": given["nrql"]["query"], "dataAccountId": None}
        condition["terms"] = [_term(t) for t in condition.get("terms") or []]
        self.conditions[condition_id] = condition
        return condition


def _term(term: dict[str, Any]) -> dict[str, Any]:
    return {"__typename": "AlertsNrqlConditionTerms", **term}


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


def _page(items: list[Any], cursor: str | None) -> tuple[list[Any], str | None]:
    start = int(cursor or 0)
    chunk = items[start : start + PAGE_SIZE]
    following = start + PAGE_SIZE
    return chunk, (str(following) if following < len(items) else None)


class GraphQLFailure(Exception):
    """Raised inside a resolver: graphql-core turns it into a top-level error."""


class _Root:
    """Resolvers: graphql-core's default resolver calls these with (info, **arguments)."""

    def __init__(self, fake: FakeNerdGraph) -> None:
        self.fake = fake

    # -- queries

    @property
    def actor(self) -> dict[str, Any]:
        fake = self.fake

        def account(_info: Any, id: int) -> dict[str, Any]:
            if id != fake.account_id:
                raise GraphQLFailure(f"Access denied to account {id}")
            return {
                "alerts": {
                    "policiesSearch": self._policies_search,
                    "nrqlConditionsSearch": self._conditions_search,
                }
            }

        def entity(_info: Any, guid: str) -> dict[str, Any] | None:
            dashboard = fake.dashboards.get(guid)
            return copy.deepcopy(dashboard) if dashboard else None

        def entity_search(_info: Any, query: str | None = None, **_: Any) -> dict[str, Any]:
            match = re.search(r"name = '((?:[^'\\]|\\.)*)'", query or "")
            wanted = (match.group(1).replace("\\'", "'") if match else "").casefold()
            # Loose, like the real search: a name containing the wanted text matches too.
            found = [
                {
                    "__typename": "DashboardEntityOutline",
                    "guid": d["guid"],
                    "name": d["name"],
                    "accountId": d["accountId"],
                    "type": "DASHBOARD",
                    "dashboardParentGuid": None,
                }
                for d in fake.dashboards.values()
                if wanted in d["name"].casefold()
            ]

            def results(_info: Any, cursor: str | None = None) -> dict[str, Any]:
                entities, following = _page(found, cursor)
                return {"entities": entities, "nextCursor": following}

            return {"results": results}

        return {"account": account, "entity": entity, "entitySearch": entity_search}

    def _policies_search(
        self,
        _info: Any,
        cursor: str | None = None,
        searchCriteria: dict | None = None,
    ) -> dict[str, Any]:
        name = ((searchCriteria or {}).get("name") or "").casefold()
        found = [
            copy.deepcopy(p)
            for p in self.fake.policies.values()
            if not name or p["name"].casefold() == name
        ]
        policies, following = _page(found, cursor)
        return {"policies": policies, "nextCursor": following, "totalCount": len(found)}

    def _conditions_search(
        self,
        _info: Any,
        cursor: str | None = None,
        searchCriteria: dict | None = None,
    ) -> dict[str, Any]:
        policy_id = (searchCriteria or {}).get("policyId")
        found = [
            copy.deepcopy(c)
            for c in self.fake.conditions.values()
            if policy_id is None or c["policyId"] == str(policy_id)
        ]
        items, following = _page(found, cursor)
        return {"nrqlConditions": items, "nextCursor": following, "totalCount": len(found)}

    # -- mutations

    def _account(self, account_id: int) -> None:
        if account_id != self.fake.account_id:
            raise GraphQLFailure(f"Access denied to account {account_id}")

    def alertsPolicyCreate(self, _info: Any, accountId: int, policy: dict) -> dict:
        self._account(accountId)
        if not 1 <= len(policy["name"]) <= 128:
            raise GraphQLFailure("name must be 1-128 characters")
        policy_id = self.fake.add_policy(policy["name"], policy["incidentPreference"])
        return copy.deepcopy(self.fake.policies[policy_id])

    def alertsPolicyUpdate(self, _info: Any, accountId: int, id: str, policy: dict) -> dict:
        self._account(accountId)
        stored = self.fake.policies.get(str(id))
        if stored is None:
            raise GraphQLFailure(f"Policy {id} not found")
        stored.update({k: v for k, v in policy.items() if v is not None})
        return copy.deepcopy(stored)

    def alertsNrqlConditionStaticCreate(
        self,
        _info: Any,
        accountId: int,
        policyId: str,
        condition: dict,
    ) -> dict:
        self._account(accountId)
        if str(policyId) not in self.fake.policies:
            raise GraphQLFailure(f"Policy {policyId} not found")
        _check_condition(condition)
        return copy.deepcopy(self.fake._store_condition(str(policyId), condition))

    def alertsNrqlConditionStaticUpdate(
        self,
        _info: Any,
        accountId: int,
        id: str,
        condition: dict,
    ) -> dict:
        self._account(accountId)
        stored = self.fake.conditions.get(str(id))
        if stored is None:
            raise GraphQLFailure(f"Condition {id} not found")
        # "Only fields that you provide in the update are changed", nested objects included.
        for key, value in condition.items():
            if isinstance(value, dict) and isinstance(stored.get(key), dict):
                stored[key].update(value)
            elif key == "terms":
                stored["terms"] = [_term(t) for t in value or []]
            else:
                stored[key] = value
        _check_condition(stored)
        return copy.deepcopy(stored)

    def alertsConditionDelete(self, _info: Any, accountId: int, id: str) -> dict:
        self._account(accountId)
        if self.fake.conditions.pop(str(id), None) is None:
            raise GraphQLFailure(f"Condition {id} not found")
        return {"id": str(id)}

    def dashboardCreate(self, _info: Any, accountId: int, dashboard: dict) -> dict:
        self._account(accountId)
        if self.fake.dashboard_errors:
            return {"entityResult": None, "errors": [self.fake.dashboard_errors.pop(0)]}
        guid = self.fake.add_dashboard(dashboard["name"])
        self._store_dashboard(guid, dashboard)
        return {"entityResult": {"guid": guid, "name": dashboard["name"]}, "errors": None}

    def dashboardUpdate(self, _info: Any, guid: str, dashboard: dict) -> dict:
        if guid not in self.fake.dashboards:
            return {
                "entityResult": None,
                "errors": [
                    {"type": "FORBIDDEN_OPERATION", "description": f"dashboard {guid} not found"}
                ],
            }
        if self.fake.dashboard_errors:
            return {"entityResult": None, "errors": [self.fake.dashboard_errors.pop(0)]}
        self._store_dashboard(guid, dashboard)
        return {"entityResult": {"guid": guid, "name": dashboard["name"]}, "errors": None}

    def _store_dashboard(self, guid: str, dashboard: dict) -> None:
        stored = self.fake.dashboards[guid]
        stored.update(
            name=dashboard["name"],
            description=dashboard.get("description"),
            permissions=dashboard["permissions"],
            variables=copy.deepcopy(dashboard.get("variables") or []),
        )
        pages = []
        for page in dashboard["pages"]:
            widgets = []
            for widget in page["widgets"]:
                raw = copy.deepcopy(widget.get("rawConfiguration") or {})
                # The real service adds options of its own; a correct diff ignores them.
                raw.setdefault("platformOptions", {"ignoreTimeRange": False})
                widgets.append(
                    {
                        "id": str(next(self.fake._ids)),
                        "title": widget.get("title"),
                        "visualization": widget.get("visualization"),
                        "layout": widget.get("layout"),
                        "rawConfiguration": raw,
                    }
                )
            pages.append(
                {
                    "guid": page.get("guid") or self.fake._new_guid("PAGE"),
                    "name": page["name"],
                    "description": page.get("description"),
                    "widgets": widgets,
                }
            )
        stored["pages"] = pages


def _check_condition(condition: dict) -> None:
    """A few of the server-side rules, so a wrong payload fails here as it would for real."""
    if "valueFunction" in condition:
        raise GraphQLFailure("valueFunction is deprecated and must not be sent")
    terms = condition.get("terms") or []
    expiration = condition.get("expiration") or {}
    if not terms and not expiration.get("openViolationOnExpiration"):
        raise GraphQLFailure("At least one of terms or expiration must be provided")
    window = (condition.get("signal") or {}).get("aggregationWindow") or 60
    for term in terms:
        if term["thresholdDuration"] % window:
            raise GraphQLFailure("thresholdDuration must be a multiple of aggregationWindow")
    priorities = [t["priority"] for t in terms]
    if len(priorities) != len(set(priorities)):
        raise GraphQLFailure("at most one term per priority")
