"""A small NerdGraph (GraphQL) client: one POST per operation, every failure made loud.

Error handling follows what the official Go client does (newrelic-client-go
``internal/http/graphql.go`` and ``retry.go``): a request fails when the HTTP status is not
2xx, when the body carries top-level ``errors`` (NerdGraph answers most errors, throttling
included, with HTTP 200), or when a mutation's result carries typed ``errors`` (dashboards,
tagging). Only throttling is retried for mutations, because a throttled request was never
executed; queries are also retried on server errors and timeouts.

``requests`` is imported when the first client is built, never at module import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from workerwatch.output.retry import backoff, retry_after, within
from workerwatch.sanitize import redact

ENDPOINTS = {
    "us": "https://api.newrelic.com/graphql",
    "eu": "https://api.eu.newrelic.com/graphql",
}

# The whole command's budget (--timeout): every request, retry and wait of one plan or apply
# fits in it. An attempt may use a third of it, so a silent endpoint still leaves room to retry.
DEFAULT_BUDGET = 30.0
MIN_ATTEMPT_TIMEOUT = 2.0
MAX_RETRIES = 3
MAX_RESPONSE_BYTES = 50_000_000

# errorClass values client-go treats as transient (internal/http/graphql.go).
_RETRYABLE_QUERY_CLASSES = {"TIMEOUT", "INTERNAL_SERVER_ERROR", "SERVER_ERROR"}
_THROTTLED = "TOO_MANY_REQUESTS"

# Looked up at call time so tests can make retries instant.
_sleep = time.sleep

# ----------------------------------------------------------------------------- documents
# Only fields the account is sure to expose are selected: selecting a field the schema does
# not have fails the whole request (terraform-provider-newrelic issue #2953, targetEntity).
# AlertsPolicy.entityGuid is selected as newrelic-client-go does since v2.x (commit 96057ab3,
# "add policy entity guid", pkg/alerts/policies.go).

POLICIES_SEARCH = """
query PoliciesSearch(
  $accountId: Int!, $cursor: String, $criteria: AlertsPoliciesSearchCriteriaInput
) {
  actor {
    account(id: $accountId) {
      alerts {
        policiesSearch(cursor: $cursor, searchCriteria: $criteria) {
          nextCursor
          policies { id name incidentPreference accountId entityGuid }
        }
      }
    }
  }
}
"""

CONDITION_FIELDS = """
fragment ConditionFields on AlertsNrqlCondition {
  id
  name
  type
  enabled
  policyId
  description
  runbookUrl
  violationTimeLimitSeconds
  nrql { query }
  terms { priority operator threshold thresholdDuration thresholdOccurrences }
  signal {
    aggregationWindow aggregationMethod aggregationDelay aggregationTimer
    fillOption fillValue slideBy evaluationDelay
  }
  expiration {
    expirationDuration openViolationOnExpiration closeViolationsOnExpiration
    ignoreOnExpectedTermination
  }
}
"""

CONDITIONS_SEARCH = (
    """
query ConditionsSearch(
  $accountId: Int!, $cursor: String, $criteria: AlertsNrqlConditionsSearchCriteriaInput
) {
  actor {
    account(id: $accountId) {
      alerts {
        nrqlConditionsSearch(cursor: $cursor, searchCriteria: $criteria) {
          nextCursor
          nrqlConditions { ...ConditionFields }
        }
      }
    }
  }
}
"""
    + CONDITION_FIELDS
)

POLICY_CREATE = """
mutation PolicyCreate($accountId: Int!, $policy: AlertsPolicyInput!) {
  alertsPolicyCreate(accountId: $accountId, policy: $policy) {
    id
    name
    incidentPreference
    entityGuid
  }
}
"""

POLICY_UPDATE = """
mutation PolicyUpdate($accountId: Int!, $id: ID!, $policy: AlertsPolicyUpdateInput!) {
  alertsPolicyUpdate(accountId: $accountId, id: $id, policy: $policy) { id name incidentPreference }
}
"""

CONDITION_CREATE = """
mutation ConditionCreate(
  $accountId: Int!, $policyId: ID!, $condition: AlertsNrqlConditionStaticInput!
) {
  alertsNrqlConditionStaticCreate(
    accountId: $accountId, policyId: $policyId, condition: $condition
  ) {
    id
    name
  }
}
"""

CONDITION_UPDATE = """
mutation ConditionUpdate(
  $accountId: Int!, $id: ID!, $condition: AlertsNrqlConditionUpdateStaticInput!
) {
  alertsNrqlConditionStaticUpdate(accountId: $accountId, id: $id, condition: $condition) {
    id
    name
  }
}
"""

CONDITION_DELETE = """
mutation ConditionDelete($accountId: Int!, $id: ID!) {
  alertsConditionDelete(accountId: $accountId, id: $id) { id }
}
"""

DASHBOARD_SEARCH = """
query DashboardSearch($query: String!, $cursor: String) {
  actor {
    entitySearch(query: $query) {
      results(cursor: $cursor) {
        nextCursor
        entities {
          guid
          name
          accountId
          type
          ... on DashboardEntityOutline { dashboardParentGuid }
        }
      }
    }
  }
}
"""

DASHBOARD_GET = """
query DashboardGet($guid: EntityGuid!) {
  actor {
    entity(guid: $guid) {
      guid
      name
      ... on DashboardEntity {
        description
        permissions
        variables {
          name
          title
          type
          isMultiSelection
          replacementStrategy
          nrqlQuery { accountIds query }
          defaultValues { value { string } }
        }
        pages {
          guid
          name
          description
          widgets {
            title
            visualization { id }
            layout { column row width height }
            rawConfiguration
          }
        }
      }
    }
  }
}
"""

DASHBOARD_CREATE = """
mutation DashboardCreate($accountId: Int!, $dashboard: DashboardInput!) {
  dashboardCreate(accountId: $accountId, dashboard: $dashboard) {
    entityResult { guid name }
    errors { description type }
  }
}
"""

DASHBOARD_UPDATE = """
mutation DashboardUpdate($guid: EntityGuid!, $dashboard: DashboardInput!) {
  dashboardUpdate(guid: $guid, dashboard: $dashboard) {
    entityResult { guid name }
    errors { description type }
  }
}
"""

QUERIES = (POLICIES_SEARCH, CONDITIONS_SEARCH, DASHBOARD_SEARCH, DASHBOARD_GET)
MUTATIONS = (
    POLICY_CREATE,
    POLICY_UPDATE,
    CONDITION_CREATE,
    CONDITION_UPDATE,
    CONDITION_DELETE,
    DASHBOARD_CREATE,
    DASHBOARD_UPDATE,
)
DOCUMENTS = QUERIES + MUTATIONS


# ----------------------------------------------------------------------------- errors


class NerdGraphError(Exception):
    """A request that did not succeed; the message is safe to print (no API key in it)."""


class AuthError(NerdGraphError):
    pass


class ThrottledError(NerdGraphError):
    pass


class AmbiguousMutationError(NerdGraphError):
    """A mutation whose outcome is unknown (timeout, 5xx): it may or may not have applied."""


# ----------------------------------------------------------------------------- client


class NerdGraphClient:
    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        budget: float = DEFAULT_BUDGET,
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] | None = None,
        log: Callable[[str], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        import requests

        self._requests = requests
        self._session = requests.Session()
        self._session.headers.update(
            {"Content-Type": "application/json", "API-Key": api_key, "User-Agent": _agent()}
        )
        self.endpoint = endpoint
        self._secret = api_key
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.attempt_timeout = max(MIN_ATTEMPT_TIMEOUT, budget / 3)
        self.max_retries = max_retries
        self.retries = 0
        self._sleep = sleep
        self._log = log or (lambda _message: None)
        # Retries are said as they happen (stderr), not only with --verbose.
        self._say = say or self._log
        self.mutations_sent = 0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> NerdGraphClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def query(self, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        return self._execute(document, variables, mutation=False)

    def mutate(self, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        self.mutations_sent += 1
        return self._execute(document, variables, mutation=True)

    # -- internals

    def _execute(
        self, document: str, variables: Mapping[str, Any], *, mutation: bool
    ) -> dict[str, Any]:
        operation = _operation_name(document)
        attempt = 0
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise NerdGraphError(self._out_of_time(operation))
            try:
                return self._attempt(document, variables, operation, mutation, left)
            except _Retry as retry:
                attempt += 1
                if attempt > self.max_retries:
                    raise NerdGraphError(
                        f"{retry.final}; gave up after {self.max_retries} retries"
                    ) from None
                wanted = retry.delay if retry.delay is not None else backoff(attempt)
                delay = within(wanted, self.deadline)
                if delay is None:
                    raise NerdGraphError(f"{retry.final}; {self._out_of_time(operation)}") from None
                self.retries += 1
                self._say(
                    f"{operation}: {retry.final}; retry {attempt}/{self.max_retries} in {delay:g} s"
                )
                (self._sleep or _sleep)(delay)

    def _out_of_time(self, operation: str | None = None) -> str:
        what = f"{operation}: " if operation else ""
        return (
            f"{what}the --timeout budget of {self.budget:g} s for the whole command ran out "
            f"(retries made: {self.retries} of at most {self.max_retries} per request)"
        )

    def _attempt(
        self,
        document: str,
        variables: Mapping[str, Any],
        operation: str,
        mutation: bool,
        left: float,
    ) -> dict[str, Any]:
        requests = self._requests
        body = {"query": document, "variables": dict(variables)}
        wait = min(self.attempt_timeout, left)
        try:
            # requests applies the read timeout to each socket read, so a server that trickles
            # bytes could exceed it; NerdGraph answers in one piece, and the budget is checked
            # again before any retry.
            response = self._session.post(self.endpoint, json=body, timeout=(wait, wait))
        except requests.Timeout:
            error = f"{operation}: no answer from {self.endpoint} within {wait:g} s"
            if mutation:
                raise AmbiguousMutationError(_unknown_outcome(error)) from None
            raise _Retry(NerdGraphError(error)) from None
        except requests.RequestException as exc:
            error = self._scrub(f"{operation}: cannot reach {self.endpoint}: {_short(exc)}")
            # A refused connection never reached the server; anything else might have.
            if mutation and not isinstance(exc, requests.ConnectionError):
                raise AmbiguousMutationError(_unknown_outcome(error)) from None
            raise _Retry(NerdGraphError(error)) from None

        status = response.status_code
        payload = self._json(response, operation)
        errors = payload.get("errors") if isinstance(payload, dict) else None
        error_text = self._describe(errors) if errors else ""

        if status == 401 or _has_code(errors, "BAD_API_KEY"):
            raise AuthError(
                f"{operation}: NerdGraph rejected the API key (HTTP {status}"
                f"{', BAD_API_KEY' if _has_code(errors, 'BAD_API_KEY') else ''}). "
                "NEW_RELIC_API_KEY must be a User key (NRAK-...) with access to this account, "
                "for the region you chose (--region us|eu)."
            )
        if status == 429 or _has_class(errors, _THROTTLED):
            raise _Retry(
                ThrottledError(
                    f"{operation}: NerdGraph is throttling this user (HTTP {status}"
                    f"{', ' + _THROTTLED if status != 429 else ''}); "
                    "at most 25 concurrent requests per user are allowed"
                ),
                delay=retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500 or _has_class(errors, _RETRYABLE_QUERY_CLASSES):
            error = f"{operation}: NerdGraph server error (HTTP {status})"
            if error_text:
                error += f": {error_text}"
            if mutation:
                raise AmbiguousMutationError(_unknown_outcome(self._scrub(error)))
            raise _Retry(NerdGraphError(self._scrub(error)))
        if not 200 <= status < 300:
            detail = f": {error_text}" if error_text else ""
            raise NerdGraphError(self._scrub(f"{operation}: HTTP {status}{detail}"))
        if errors:
            raise NerdGraphError(self._scrub(f"{operation} failed: {error_text}"))
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise NerdGraphError(f"{operation}: the answer has no data")
        for field, value in data.items():
            if value is None and mutation:
                raise NerdGraphError(f"{operation}: {field} returned nothing")
            typed = value.get("errors") if isinstance(value, dict) else None
            if typed:
                raise NerdGraphError(self._scrub(f"{operation} failed: {self._describe(typed)}"))
        return data

    def _json(self, response: Any, operation: str) -> Any:
        raw = response.content
        if len(raw) > MAX_RESPONSE_BYTES:
            raise NerdGraphError(f"{operation}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            if response.status_code >= 400:
                return {}
            raise NerdGraphError(
                f"{operation}: HTTP {response.status_code} with a body that is not JSON"
            ) from None

    def _describe(self, errors: Any) -> str:
        if not isinstance(errors, list):
            return self._scrub(str(errors))
        parts = []
        for error in errors[:10]:
            if not isinstance(error, dict):
                parts.append(str(error))
                continue
            text = str(error.get("message") or error.get("description") or "")
            kind = error.get("type")
            ext = error.get("extensions") if isinstance(error.get("extensions"), dict) else {}
            code = ext.get("errorClass") or ext.get("error_code") or ext.get("code")
            label = kind or code
            path = error.get("path")
            where = f" at {'.'.join(map(str, path))}" if isinstance(path, list) and path else ""
            details = [
                f"{v.get('name')}: {v.get('reason')}"
                for v in ext.get("validationErrors") or []
                if isinstance(v, dict)
            ]
            extra = f" ({'; '.join(details)})" if details else ""
            parts.append(f"{label + ': ' if label else ''}{text}{where}{extra}")
        if len(errors) > 10:
            parts.append(f"and {len(errors) - 10} more")
        return self._scrub("; ".join(parts))

    def _scrub(self, text: str) -> str:
        # Belt and braces: the key is only ever sent as a header, but an echoing proxy or
        # server message must not be able to put it on a terminal or into a CI log.
        return redact(text, [self._secret] if self._secret else [])


class _Retry(Exception):
    def __init__(self, final: NerdGraphError, delay: float | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.delay = delay


def _operation_name(document: str) -> str:
    for token_line in document.split("\n"):
        words = token_line.replace("(", " ").replace("{", " ").split()
        if len(words) >= 2 and words[0] in {"query", "mutation"}:
            return words[1]
    return "request"


def _has_code(errors: Any, code: str) -> bool:
    return any(
        isinstance(e, dict)
        and isinstance(e.get("extensions"), dict)
        and code in (e["extensions"].get("error_code"), e["extensions"].get("code"))
        for e in errors or []
    )


def _has_class(errors: Any, classes: str | set[str]) -> bool:
    wanted = {classes} if isinstance(classes, str) else classes
    return any(
        isinstance(e, dict)
        and isinstance(e.get("extensions"), dict)
        and e["extensions"].get("errorClass") in wanted
        for e in errors or []
    )


def _unknown_outcome(error: str) -> str:
    return (
        f"{error}. The change may or may not have been made: "
        "run plan to see the account's current state before applying again."
    )


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _agent() -> str:
    from workerwatch import __version__

    return f"nri-workerwatch/{__version__} (alerts-as-code)"
