"""The queue side: SWF and SQS backlog samples, on their own cadence and inside the run's deadline.

``collect.Collector`` calls :func:`collect` only when the config has an ``swf:`` or ``sqs:``
section, so a run without them never imports boto3 or botocore (they are imported inside
:func:`aws_client`, in the probe's own thread).

Per probe and run:

* **not due** (less than ``sample_every`` since the last sample): no API call; the values of
  the last sample are emitted again, with ``sampleAgeSeconds`` saying how old they are;
* **due**: the probe runs in a daemon thread that the run waits for until its deadline (minus
  a margin for emitting). Whatever the thread has read by then is used; a call still in
  flight is abandoned, counted, and named in the ``[ERR]`` line. A sample that was attempted
  replaces the last values, so a metric whose call failed is absent (not stale) until a
  later sample reads it again.

Faults are classified once here for both probes: throttling, unreachable endpoints and
rejected credentials stop the probe for this sample (the remaining calls would fail the
same way and, when throttled, make it worse); an unknown SWF domain or SQS queue stops that
domain or queue; anything else fails one call. Each failing probe gives exactly one
``(probe, message)`` error per run, which the collector counts and logs as one ``[ERR]``
line; the credentials the client uses are redacted from it.

``backlogStuckSeconds`` comes from the state: per task list or queue, the time since the
count rose above zero or last went down, as of the last sample.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workerwatch import __version__, log
from workerwatch.catalogue import CATALOGUE
from workerwatch.config import Config, Sqs, Swf, sqs_queue_name
from workerwatch.observations import MetricSample
from workerwatch.probes import sqs as sqs_probe
from workerwatch.probes import swf as swf_probe
from workerwatch.sanitize import clean_text
from workerwatch.verdict import ago

T = TypeVar("T")

# Leave this much of the run for judging groups, saving state and writing the payload.
EMIT_MARGIN_S = 0.25
# Do not start a call with less time than this left: it could not finish anyway.
MIN_CALL_S = 0.2
# Agent intervals jitter by a little; without slack a 60 s cadence on a 30 s agent interval
# would sample every third run instead of every second.
CADENCE_SLACK = 0.1
# An operation the endpoint turned out not to implement is asked again after this long.
UNSUPPORTED_RECHECK_S = 6 * 3600.0
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
_USERINFO = re.compile(r"(\w+://)[^/@\s]*@")


@dataclass
class BacklogOutcome:
    """What one run of the queue-side probes gives the collector."""

    metrics: list[MetricSample] = field(default_factory=list)
    group_notes: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (probe, one-line message)


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


def _client_key(service: str, section: Swf | Sqs) -> str:
    return _fingerprint([service, section.region, section.endpoint_url, section.timeout])


def forget_clients() -> None:
    """Drop every kept client (tests that change credentials between runs call this)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


def _forget_client(service: str, section: Swf | Sqs) -> None:
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
            self._fail(f"{api} {target}", f"malformed response ({type(exc).__name__}: {exc})")
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
            self._stop(f"cannot create the {self.probe} client: {self._describe(exc)}")
        return self._client

    def _stop(self, reason: str) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    def _fail(self, what: str, cause: str) -> None:
        with self.lock:
            if not self.cancelled:
                self.failures.append((what, cause))

    def _failed(self, api: str, target: str, scope: str | None, exc: Exception) -> None:
        effect, cause = self._classify(api, exc)
        self._fail(f"{api} {target}", cause)
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
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return _PROBE, f"no usable AWS credentials: {self._describe(exc)}"
        if isinstance(exc, bx.CredentialRetrievalError | bx.NoRegionError):
            return _PROBE, f"credentials or region: {self._describe(exc)}"
        if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
            return _PROBE, f"timed out: {type(exc).__name__}, {self._describe(exc)}"
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError):
            return _PROBE, f"endpoint unreachable: {self._describe(exc)}"
        if isinstance(exc, bx.HTTPClientError):
            return _PROBE, f"connection failed: {type(exc).__name__}, {self._describe(exc)}"
        if isinstance(exc, bx.ResponseParserError):
            return _CALL, f"malformed response ({type(exc).__name__})"
        if isinstance(exc, bx.BotoCoreError):
            return _CALL, f"{type(exc).__name__}: {self._describe(exc)}"
        return _CALL, f"unexpected {type(exc).__name__}: {self._describe(exc)}"

    def _describe(self, exc: BaseException) -> str:
        return self.redact(clean_text(exc, 300))

    def _short(self, message: str) -> str:
        text = " ".join(str(message).split())
        return f": {self.redact(clean_text(text, 200))}" if text else ""

    def redact(self, text: str) -> str:
        """Remove the client's secrets, and any user:password of a URL, from a message."""
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "<redacted>")
        return _USERINFO.sub(r"\1", text)

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
                f"asked again for {ago(UNSUPPORTED_RECHECK_S)}"
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


# -- state -------------------------------------------------------------------------------


def _fingerprint(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _probe_state(state: dict[str, Any], name: str, section: Swf | Sqs) -> dict[str, Any]:
    """This probe's entry of the persisted state, checked field by field.

    Everything keyed to the endpoint (backlog history, queue URLs, unsupported operations)
    is dropped when region or endpoint change; the last values also when anything in the
    section changes, so a new domain or queue is sampled at once.
    """
    raw = state.get(name)
    raw = raw if isinstance(raw, dict) else {}
    endpoint = _fingerprint([section.region, section.endpoint_url])
    config = _fingerprint(section.model_dump(mode="json"))
    same_endpoint = raw.get("endpoint") == endpoint
    same_config = same_endpoint and raw.get("config") == config
    out: dict[str, Any] = {"endpoint": endpoint, "config": config}

    def mapping(key: str) -> dict[str, Any]:
        value = raw.get(key) if same_endpoint else None
        return value if isinstance(value, dict) else {}

    out["levels"] = {k: v for k, v in mapping("levels").items() if isinstance(v, dict)}
    out["urls"] = {k: v for k, v in mapping("urls").items() if isinstance(v, str)}
    out["unsupported"] = {k: v for k, v in mapping("unsupported").items() if _number(v) is not None}
    if same_config:
        out["sampled_at"] = _number(raw.get("sampled_at"))
        values = raw.get("values")
        out["values"] = values if isinstance(values, list) else []
        units = raw.get("units")
        out["units"] = [u for u in units if isinstance(u, str)] if isinstance(units, list) else []
    else:
        out.update(sampled_at=None, values=[], units=[])
    state[name] = out
    return out


def _due(pstate: dict[str, Any], now: float, every: float) -> bool:
    last = pstate.get("sampled_at")
    if last is None or now < last:
        return True  # never sampled, or the clock went backwards
    return now - last >= every * (1 - CADENCE_SLACK)


def _to_json(sample: MetricSample) -> dict[str, Any]:
    return {"name": sample.name, "value": sample.value, "attributes": dict(sample.attributes)}


def _from_json(raw: Any) -> MetricSample | None:
    """A stored value, only if it is still a valid metric (the state file is untrusted)."""
    if not isinstance(raw, dict):
        return None
    spec = CATALOGUE.get(raw.get("name"))  # type: ignore[arg-type]
    value = _number(raw.get("value"))
    attrs = raw.get("attributes")
    if spec is None or value is None or not isinstance(attrs, dict):
        return None
    if not set(attrs) <= set(spec.attributes):
        return None
    if not all(isinstance(v, str | int | float | bool) for v in attrs.values()):
        return None
    return MetricSample(spec.name, value, dict(attrs))


# -- backlog levels and how long they have not gone down ---------------------------------

# The count that is "the backlog" for each probe, and the metric saying how long it has not
# gone down.
_LEVELS: dict[str, tuple[str, dict[str, str]]] = {
    swf_probe.PENDING_ACTIVITY: (swf_probe.STUCK, {"swf.taskKind": swf_probe.ACTIVITY}),
    swf_probe.PENDING_DECISION: (swf_probe.STUCK, {"swf.taskKind": swf_probe.DECISION}),
    sqs_probe.VISIBLE: (sqs_probe.STUCK, {}),
}


def stuck_update(
    previous: dict[str, Any] | None, count: float, at: float
) -> tuple[dict[str, Any], float]:
    """The new level record and backlogStuckSeconds for a count read at ``at``.

    The clock starts when the count rises above zero and restarts whenever it goes down;
    a count that stays equal or grows keeps it running. A first reading has no history,
    so it starts at 0.
    """
    if count <= 0:
        return {"count": count, "since": None, "seen": at}, 0.0
    prev_count = _number((previous or {}).get("count"))
    since = _number((previous or {}).get("since"))
    seen = _number((previous or {}).get("seen"))
    if prev_count is None or since is None or seen is None or at < seen or count < prev_count:
        return {"count": count, "since": at, "seen": at}, 0.0
    return {"count": count, "since": since, "seen": at}, max(0.0, at - since)


def _level_key(name: str, attrs: dict[str, Any]) -> str:
    kept = {k: v for k, v in attrs.items() if k != "swf.truncated"}
    return json.dumps([name, sorted(kept.items())], separators=(",", ":"))


def _with_stuck(
    samples: list[MetricSample], levels: dict[str, Any], at: float, forget_after: float
) -> list[MetricSample]:
    out = list(samples)
    for sample in samples:
        if sample.name not in _LEVELS:
            continue
        stuck_name, extra = _LEVELS[sample.name]
        key = _level_key(sample.name, sample.attributes)
        levels[key], stuck = stuck_update(levels.get(key), sample.value, at)
        attrs = {k: v for k, v in sample.attributes.items() if k != "swf.truncated"}
        out.append(MetricSample(stuck_name, stuck, {**attrs, **extra}))
    for key in list(levels):
        seen = _number(levels[key].get("seen"))
        if seen is None or at - seen > forget_after:
            del levels[key]
    return out


# -- the probes ---------------------------------------------------------------------------


@dataclass
class _Job:
    name: str  # "swf" or "sqs": also the probe attribute of integration.errors
    section: Swf | Sqs
    unit_attr: str  # attribute that sampleAgeSeconds carries
    age_name: str
    sample: Callable[[Any, ProbeRun, float], None]
    planned: Callable[[Any, dict[str, str]], int]


def _jobs(config: Config) -> list[_Job]:
    jobs = []
    if config.swf is not None:
        jobs.append(
            _Job(
                "swf", config.swf, "swf.domain", swf_probe.AGE, swf_probe.sample, swf_probe.planned
            )
        )
    if config.sqs is not None:
        jobs.append(
            _Job("sqs", config.sqs, "sqs.queue", sqs_probe.AGE, sqs_probe.sample, sqs_probe.planned)
        )
    return jobs


# The previous sample's thread per probe: in the long-running mode a thread abandoned at one
# run's deadline may still be waiting on a slow endpoint when the next run starts.
_INFLIGHT: dict[str, threading.Thread] = {}


def _run_probe(job: _Job, run: ProbeRun, now: float) -> None:
    try:
        job.sample(job.section, run, now)
    except Exception as exc:  # a probe bug must cost its metrics, never the run
        run._fail("the probe", f"failed: {type(exc).__name__}: {run._describe(exc)}")


def collect(config: Config, state: dict[str, Any], now: float, deadline: float) -> BacklogOutcome:
    """Sample the due probes (or re-emit their last values) and say what the groups consume.

    ``state`` is the persisted ``probes`` mapping; this function owns its "swf" and "sqs"
    keys. ``deadline`` is a ``time.monotonic()`` value the whole run must end by.
    """
    outcome = BacklogOutcome()
    started: list[tuple[_Job, dict[str, Any], ProbeRun, threading.Thread]] = []
    pstates: dict[str, dict[str, Any]] = {}
    for job in _jobs(config):
        pstate = pstates[job.name] = _probe_state(state, job.name, job.section)
        if not _due(pstate, now, job.section.sample_every):
            continue
        previous = _INFLIGHT.get(job.name)
        if previous is not None and previous.is_alive():
            outcome.errors.append(
                (job.name, f"{job.name} backlog probe: the previous sample is still waiting "
                 "on the endpoint; not sampling this run")
            )  # fmt: skip
            continue
        if time.monotonic() > deadline - EMIT_MARGIN_S - MIN_CALL_S:
            outcome.errors.append(
                (job.name, f"{job.name} backlog probe: run deadline reached before sampling; "
                 "trying again next run")
            )  # fmt: skip
            continue
        section = job.section
        pstate["unsupported"] = {
            api: until for api, until in pstate["unsupported"].items() if now < until
        }
        unsupported = set(pstate["unsupported"])
        run = ProbeRun(
            job.name,
            lambda name=job.name, section=section: aws_client(name, section),
            deadline - EMIT_MARGIN_S,
            cache=pstate["urls"],
            unsupported=unsupported,
        )
        run.planned = job.planned(section, pstate["urls"])
        thread = threading.Thread(
            target=_run_probe, args=(job, run, now), name=f"workerwatch-{job.name}", daemon=True
        )
        _INFLIGHT[job.name] = thread
        thread.start()
        started.append((job, pstate, run, thread))

    for job, pstate, run, thread in started:
        thread.join(max(0.0, deadline - EMIT_MARGIN_S - time.monotonic()))
        in_flight = run.cancel()
        if thread.is_alive() and in_flight is None:
            in_flight = "the client (importing boto3 or resolving credentials)"
        newly_unsupported = []
        if run.succeeded:
            # Other operations worked, so the endpoint is up and only this one is missing.
            suspects = set(run.suspect_unsupported) - run.succeeded - run.unsupported
            newly_unsupported = sorted(suspects)
            for api in newly_unsupported:
                pstate["unsupported"][api] = now + UNSUPPORTED_RECHECK_S
        if run.stop_reason is not None or in_flight is not None:
            _forget_client(job.name, job.section)  # credentials or connections may be stale
        message = run.summary(in_flight, newly_unsupported)
        if message:
            outcome.errors.append((job.name, message))
        samples = _with_stuck(run.samples, pstate["levels"], now, config.forget_after)
        pstate["sampled_at"] = now
        pstate["values"] = [_to_json(s) for s in samples]
        pstate["units"] = sorted(
            {str(s.attributes[job.unit_attr]) for s in samples if job.unit_attr in s.attributes}
        )
        pstate["urls"] = dict(run.cache)

    for job in _jobs(config):
        outcome.metrics.extend(_emitted(job, pstates[job.name], now))
    outcome.group_notes = group_notes(config, outcome.metrics)
    return outcome


def _emitted(job: _Job, pstate: dict[str, Any], now: float) -> list[MetricSample]:
    sampled_at = pstate.get("sampled_at")
    if sampled_at is None:
        return []
    values = [s for s in map(_from_json, pstate["values"]) if s is not None]
    age = max(0.0, now - sampled_at)
    values.extend(
        MetricSample(job.age_name, age, {job.unit_attr: unit}) for unit in pstate["units"]
    )
    return values


# -- group notes --------------------------------------------------------------------------


def _plural(n: float, word: str) -> str:
    return f"{n:.0f} {word}" + ("" if n == 1 else "s")


def group_notes(config: Config, samples: list[MetricSample]) -> dict[str, str]:
    """Per group with ``consumes:``, a note on its queue's backlog when work is pending."""
    index = {_level_key(s.name, s.attributes): s for s in samples}
    notes: dict[str, str] = {}
    for group in config.groups:
        consumes = group.consumes
        if consumes is None:
            continue
        parts: list[str] = []
        if consumes.swf_domain is not None and consumes.task_list is not None:
            kind = consumes.task_kind
            where = {"swf.domain": consumes.swf_domain, "swf.taskList": consumes.task_list}
            if not swf_probe.configured(config.swf, consumes.swf_domain, consumes.task_list, kind):
                log.warn(
                    f"group {group.name} consumes {kind} tasks of "
                    f"{consumes.swf_domain}/{consumes.task_list}, which the swf: section does "
                    "not sample; its reason cannot mention that backlog"
                )
            name = swf_probe.PENDING_ACTIVITY if kind == "activity" else swf_probe.PENDING_DECISION
            pending = index.get(_level_key(name, where))
            if pending is not None and pending.value > 0:
                stuck = index.get(_level_key(swf_probe.STUCK, {**where, "swf.taskKind": kind}))
                least = "at least " if pending.attributes.get("swf.truncated") else ""
                text = (
                    f"backlog: {least}{_plural(pending.value, kind + ' task')} pending in "
                    f"{consumes.swf_domain}/{consumes.task_list}"
                )
                if stuck is not None and stuck.value >= 1:
                    text += f", not decreasing for {ago(stuck.value)}"
                parts.append(text)
        if consumes.sqs_queue is not None:
            queue = sqs_queue_name(consumes.sqs_queue)
            names = {sqs_queue_name(q) for q in (config.sqs.queues if config.sqs else [])}
            if queue not in names:
                log.warn(
                    f"group {group.name} consumes SQS queue {queue}, which the sqs: section "
                    "does not sample; its reason cannot mention that backlog"
                )
            visible = index.get(_level_key(sqs_probe.VISIBLE, {"sqs.queue": queue}))
            if visible is not None and visible.value > 0:
                stuck = index.get(_level_key(sqs_probe.STUCK, {"sqs.queue": queue}))
                text = f"backlog: {_plural(visible.value, 'message')} visible in {queue}"
                if stuck is not None and stuck.value >= 1:
                    text += f", not decreasing for {ago(stuck.value)}"
                parts.append(text)
        if parts:
            notes[group.name] = "; ".join(parts)
    return notes
