"""The AWS side of the queue probes: kept clients, one call runtime, and fault handling.

boto3 and botocore are imported inside :func:`aws_client` and ``ProbeRun._classify``, in
the probe's own thread, so a run without ``swf:``/``sqs:`` sections never imports them.

Faults are classified once here for both probes: throttling, unreachable endpoints and
rejected credentials stop the probe for this sample (the remaining calls would fail the
same way and, when throttled, make it worse); an unknown SWF domain or SQS queue stops that
domain or queue; anything else fails one call. Each failing probe gives exactly one
``(probe, message)`` error per run (``ProbeRun.summary``), which the collector counts and
logs as one ``[ERR]`` line; the credentials the client uses are redacted from it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from workerwatch import __version__
from workerwatch.config import Sqs, Swf
from workerwatch.judge.memory import UNSUPPORTED_RECHECK_S
from workerwatch.observations import MetricSample
from workerwatch.records import dump
from workerwatch.sanitize import clean_text, redact
from workerwatch.units import human_duration

T = TypeVar("T")

# Do not start a call with less time than this left: it could not finish anyway.
MIN_CALL_S = 0.2
MAX_MESSAGE = 1000
MAX_CAUSES = 4

# Error codes after which the rest of the sample would fail the same way.
_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
}
_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "OperationNotPermittedFault"}
# An unknown SWF domain, or an SQS queue that does not exist (JSON and query spellings).
_NO_SUCH_SCOPE = {
    "UnknownResourceFault",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
}

_CALL, _SCOPE, _PROBE = "call", "scope", "probe"

# Clients are kept between samples of a long-running process (building one loads the
# service model: ~0.2 s of CPU), but not for long, so rotated credentials in the shared
# files are read again; a probe-stopping fault drops the client at once.
CLIENT_TTL_S = 900.0
_CLIENTS: dict[str, tuple[float, Any, tuple[str, ...]]] = {}
_CLIENTS_LOCK = threading.Lock()


def aws_client(service: str, section: Swf | Sqs) -> tuple[Any, tuple[str, ...]]:
    """A boto3 client with bounded timeouts and retries, and the secrets to redact.

    The standard credential chain applies (env, shared files, container or instance role);
    only timeouts, retries, region and endpoint come from our config.
    """
    key = _client_key(service, section)
    with _CLIENTS_LOCK:
        cached = _CLIENTS.get(key)
    if cached is not None and time.monotonic() - cached[0] < CLIENT_TTL_S:
        return cached[1], cached[2]

    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session()
    client = session.client(
        service,
        region_name=section.region,
        endpoint_url=section.endpoint_url,
        config=BotoConfig(
            connect_timeout=section.timeout,
            read_timeout=section.timeout,
            # total_max_attempts counts the first try: one retry, with standard mode's
            # jittered backoff (botocore/retries/standard.py).
            retries={"mode": "standard", "total_max_attempts": 2},
            user_agent_extra=f"nri-workerwatch/{__version__}",
            max_pool_connections=2,
        ),
    )
    secrets: tuple[str, ...] = ()
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        secrets = tuple(s for s in (frozen.secret_key, frozen.token) if s)
    with _CLIENTS_LOCK:
        _CLIENTS[key] = (time.monotonic(), client, secrets)
    return client, secrets


def fingerprint(data: Any) -> str:
    """A short stable hash of plain data (config sections, endpoints)."""
    raw = json.dumps(dump(data), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _client_key(service: str, section: Swf | Sqs) -> str:
    return fingerprint([service, section.region, section.endpoint_url, section.timeout])


def forget_clients() -> None:
    """Drop every kept client (tests that change credentials between runs call this)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


def forget_client(service: str, section: Swf | Sqs) -> None:
    with _CLIENTS_LOCK:
        _CLIENTS.pop(_client_key(service, section), None)


def _snake(api: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", api).lower()


class ProbeRun:
    """One sample of one probe: its client, deadline, fault rules and what it has read.

    The probe's thread writes through the methods below; once the collector stops waiting
    (``cancel``), further writes are ignored so the snapshot it took stays consistent.
    """

    def __init__(
        self,
        probe: str,
        make_client: Callable[[], tuple[Any, tuple[str, ...]]],
        deadline: float,
        cache: dict[str, str] | None = None,
        unsupported: set[str] | None = None,
    ) -> None:
        self.probe = probe
        self.deadline = deadline
        self.cache: dict[str, str] = dict(cache or {})
        self.unsupported = set(unsupported or ())
        self.samples: list[MetricSample] = []
        self.failures: list[tuple[str, str]] = []  # (what was asked, cause)
        self.attempted = 0
        self.succeeded: set[str] = set()  # operations that answered at least once
        self.skipped: Counter[str] = Counter()  # reason -> calls not made for it
        self.not_asked = 0  # calls left out because the endpoint does not implement them
        self.planned = 0
        self.stop_reason: str | None = None
        self.dead_scopes: set[str] = set()
        self.suspect_unsupported: dict[str, str] = {}
        self.current: str | None = None
        self.cancelled = False
        self.lock = threading.Lock()
        self._make_client = make_client
        self._client: Any = None
        self._secrets: tuple[str, ...] = ()

    # -- used by the probes -------------------------------------------------------------

    def call(
        self,
        api: str,
        target: str,
        parse: Callable[[dict[str, Any]], T],
        scope: str | None = None,
        **params: Any,
    ) -> T | None:
        """Call ``api`` (e.g. ``"CountPendingActivityTasks"``); None when it failed or was skipped.

        ``target`` names what is asked about in messages; ``scope`` (a domain or queue) is
        abandoned for the rest of the sample when the service says it does not exist.
        """
        with self.lock:
            if self.cancelled:
                return None
            if api in self.unsupported:
                self.not_asked += 1
                return None
            if self.stop_reason is None and time.monotonic() > self.deadline - MIN_CALL_S:
                self.stop_reason = "the run's deadline was near"
            if self.stop_reason is not None:
                self.skipped[self.stop_reason] += 1
                return None
            if scope is not None and scope in self.dead_scopes:
                self.skipped[f"{scope} does not exist"] += 1
                return None
        client = self._client_or_none()
        if client is None:
            with self.lock:
                self.skipped[self.stop_reason or "no client"] += 1
            return None
        with self.lock:
            self.current = f"{api} {target}"
            self.attempted += 1
        try:
            response = getattr(client, _snake(api))(**params)
        except Exception as exc:  # every failure is classified; none may escape the thread
            self._failed(api, target, scope, exc)
            return None
        finally:
            with self.lock:
                self.current = None
        try:
            value = parse(response)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.fail(f"{api} {target}", f"malformed response ({type(exc).__name__}: {exc})")
            return None
        with self.lock:
            self.succeeded.add(api)
        return value

    def add(self, sample: MetricSample) -> None:
        with self.lock:
            if not self.cancelled:
                self.samples.append(sample)

    def remember(self, key: str, value: str) -> None:
        with self.lock:
            if not self.cancelled:
                self.cache[key] = value

    def forget(self, key: str) -> None:
        with self.lock:
            if not self.cancelled:
                self.cache.pop(key, None)

    # -- internals ----------------------------------------------------------------------

    def _client_or_none(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            self._client, self._secrets = self._make_client()
        except ImportError as exc:
            self._stop(f"boto3 is not installed ({exc.name}); install nri-workerwatch[aws]")
        except Exception as exc:
            self._stop(f"cannot create the {self.probe} client: {self.describe(exc)}")
        return self._client

    def _stop(self, reason: str) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    def fail(self, what: str, cause: str) -> None:
        with self.lock:
            if not self.cancelled:
                self.failures.append((what, cause))

    def _failed(self, api: str, target: str, scope: str | None, exc: Exception) -> None:
        effect, cause = self._classify(api, exc)
        self.fail(f"{api} {target}", cause)
        if effect == _PROBE:
            self._stop(f"{cause.split(':')[0]} on {api}")
        elif effect == _SCOPE and scope is not None:
            with self.lock:
                self.dead_scopes.add(scope)

    def _classify(self, api: str, exc: Exception) -> tuple[str, str]:
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = str(error.get("Code") or "unknown error")
            meta = (
                exc.response.get("ResponseMetadata", {}) if isinstance(exc.response, dict) else {}
            )
            status = meta.get("HTTPStatusCode")
            message = self._short(error.get("Message") or "")
            http = f"HTTP {status}" if status else "no HTTP status"
            if code in _THROTTLED:
                return _PROBE, f"throttled: {code} ({http}){message}"
            if code in _BAD_CREDENTIALS:
                return _PROBE, f"credentials rejected: {code} ({http}){message}"
            if code in _ACCESS_DENIED:
                action = f"{self.probe}:{api}"
                return _CALL, f"access denied: {code}; the IAM policy needs {action}{message}"
            if code in _NO_SUCH_SCOPE:
                return _SCOPE, f"does not exist: {code}{message}"
            if code.isdigit():
                # botocore uses the bare status as the code when the body carried no AWS
                # error type (botocore/parsers.py, generic error parsing): not an AWS answer.
                if status == 500:
                    with self.lock:
                        self.suspect_unsupported[api] = http
                return _CALL, f"{http} without an AWS error body"
            return _CALL, f"{code} ({http}){message}"
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return _PROBE, f"no usable AWS credentials: {self.describe(exc)}"
        if isinstance(exc, (bx.CredentialRetrievalError, bx.NoRegionError)):
            return _PROBE, f"credentials or region: {self.describe(exc)}"
        if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            return _PROBE, f"timed out: {type(exc).__name__}, {self.describe(exc)}"
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError)):
            return _PROBE, f"endpoint unreachable: {self.describe(exc)}"
        if isinstance(exc, bx.HTTPClientError):
            return _PROBE, f"connection failed: {type(exc).__name__}, {self.describe(exc)}"
        if isinstance(exc, bx.ResponseParserError):
            return _CALL, f"malformed response ({type(exc).__name__})"
        if isinstance(exc, bx.BotoCoreError):
            return _CALL, f"{type(exc).__name__}: {self.describe(exc)}"
        return _CALL, f"unexpected {type(exc).__name__}: {self.describe(exc)}"

    def describe(self, exc: BaseException) -> str:
        return self.redact(clean_text(exc, 300))

    def _short(self, message: str) -> str:
        text = " ".join(str(message).split())
        return f": {self.redact(clean_text(text, 200))}" if text else ""

    def redact(self, text: str) -> str:
        """Remove the client's secrets, and any user:password of a URL, from a message."""
        return redact(text, self._secrets)

    # -- used by the collector ----------------------------------------------------------

    def cancel(self) -> str | None:
        """Stop accepting results; returns the call still in flight, if any."""
        with self.lock:
            self.cancelled = True
            return self.current

    def summary(self, in_flight: str | None, newly_unsupported: list[str]) -> str | None:
        """One line naming the cause(s) of this sample's failures, or None if all went well."""
        with self.lock:
            failures = list(self.failures)
            skipped = Counter(self.skipped)
            attempted, planned = self.attempted, self.planned - self.not_asked
        if in_flight:
            # The thread stopped counting when it was abandoned: what it never reached.
            unreached = planned - attempted - sum(skipped.values())
            if unreached > 0:
                skipped["the run's deadline was reached"] += unreached
        not_made = sum(skipped.values())
        if not failures and not in_flight and not not_made:
            return None
        parts: list[str] = []
        if in_flight:
            parts.append(f"run deadline reached while waiting for {in_flight}")
        failed = len(failures) + (1 if in_flight else 0)
        counts = f"{failed} of {max(planned, attempted)} calls failed"
        if not_made:
            why = ", ".join(reason for reason, _ in skipped.most_common())
            counts += f", {not_made} not made ({why})"
        parts.append(counts)
        if newly_unsupported:
            parts.append(
                f"the endpoint does not implement {', '.join(newly_unsupported)} (HTTP 500 "
                "without an AWS error body while other calls succeeded, as moto answers): not "
                f"asked again for {human_duration(UNSUPPORTED_RECHECK_S)}"
            )
        # One entry per distinct cause, naming (a few of) the calls it hit.
        by_cause: dict[str, list[str]] = {}
        for what, cause in failures:
            if what.split(" ", 1)[0] not in newly_unsupported:
                by_cause.setdefault(cause, []).append(what)
        for cause, whats in list(by_cause.items())[:MAX_CAUSES]:
            more = f" (+{len(whats) - 2} more)" if len(whats) > 2 else ""
            parts.append(f"{', '.join(whats[:2])}{more}: {cause}")
        if len(by_cause) > MAX_CAUSES:
            parts.append(f"and {len(by_cause) - MAX_CAUSES} other causes")
        text = f"{self.probe} backlog probe: " + "; ".join(parts)
        return self.redact(clean_text(text, MAX_MESSAGE))
