"""The Metric API and Event API client behind ``nri-workerwatch push`` (``commands.push``).

For hosts without the infrastructure agent, and containers. The metrics are the same ones
the agent would receive (``v4.all_metrics``); what the agent would add on its way to New
Relic is added here as common attributes: the host's name, ``instrumentation.*`` and
``label.*`` (infrastructure-agent ``pkg/integrations/v4/dm/processor.go``).

Transport rules (docs "Metric API" / "Event API", and the retry policy of New Relic's Java
telemetry SDK ``BatchDataSender``):

* gzip body, ``Api-Key`` header from ``NEW_RELIC_LICENSE_KEY`` only (never a flag, so it
  is not in ``ps``; never printed: every message goes through ``sanitize.redact``);
* a POST body must stay under 10^6 bytes (413 at or above it): batches are split until
  each compressed body fits, and split again on a 413;
* 429: wait ``Retry-After`` (10 s when absent), bounded; 5xx, 408 and network errors:
  retry with exponential backoff, bounded; other 4xx (400, 404, 415...): drop with an error;
  403: the key is refused, so nothing will ever get through: stop;
* pending batches wait in a bounded queue while the endpoint is down; when it is full
  the oldest batch is dropped with a counted warning (reported later as
  ``workerwatch.integration.errors{probe=push}``).

``requests`` is imported only here, so the agent's one-shot path never loads it.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from workerwatch import INTEGRATION_NAME, __version__, log
from workerwatch.output import retry
from workerwatch.records import record
from workerwatch.sanitize import redact
from workerwatch.units import human_duration

LICENSE_ENV = "NEW_RELIC_LICENSE_KEY"
METRIC_URLS = {
    "US": "https://metric-api.newrelic.com/metric/v1",
    "EU": "https://metric-api.eu.newrelic.com/metric/v1",
}
# The Event API needs the account id in the path.
EVENT_URLS = {
    "US": "https://insights-collector.newrelic.com/v1/accounts/{account_id}/events",
    "EU": "https://insights-collector.eu01.nr-data.net/v1/accounts/{account_id}/events",
}
EVENT_TYPE = "WorkerWatchEvent"
MAX_BODY = 1_000_000  # bytes per POST; the APIs answer 413 at 10^6 and above
MAX_EVENTS_PER_POST = 500  # the agent's own event batch size (event_sender.go)
DEFAULT_RETRY_AFTER = 10.0
MAX_ATTEMPTS = 4  # per batch per flush, for 5xx / network errors
DEFAULT_QUEUE = 120  # pending batches; each is < 1 MB compressed, usually a few KB
RETRY_STATUSES = {408, 429}  # client-side codes that mean "later", not "never"


class AuthRefused(Exception):
    """HTTP 403: the license key is not accepted; retrying cannot help."""


@record
class Batch:
    kind: str  # "metrics" or "events"
    url: str
    items: list[dict[str, Any]]
    common: dict[str, Any] | None
    body: bytes
    created: float = field(default_factory=time.monotonic)

    @property
    def count(self) -> int:
        return len(self.items)


@record
class FlushReport:
    sent: int = 0  # batches accepted
    dropped: int = 0  # batches given up on (4xx, too big, out of attempts in --once)
    pending: int = 0  # batches still queued for the next flush


def _gzip(payload: Any) -> bytes:
    raw = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    # mtime=0 keeps the body reproducible; level 6 is gzip's default trade-off.
    return gzip.compress(raw, compresslevel=6, mtime=0)


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header; ``DEFAULT_RETRY_AFTER`` without one."""
    seconds = retry.retry_after(value, now)
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def host_attributes(labels: dict[str, str] | None = None) -> dict[str, Any]:
    """What the agent would have put on every metric, since there is no agent here."""
    name = socket.gethostname()
    attrs: dict[str, Any] = {
        "host.name": name,
        "hostname": name,
        "instrumentation.name": INTEGRATION_NAME,
        "instrumentation.version": __version__,
        "instrumentation.provider": INTEGRATION_NAME,
        "collector.name": f"{INTEGRATION_NAME} push",
        "collector.version": __version__,
    }
    for key, value in (labels or {}).items():
        attrs[f"label.{key}"] = value
    return attrs


def event_records(
    events: list[dict[str, Any]], now: float, attrs: dict[str, Any]
) -> list[dict[str, Any]]:
    """v4 events (summary, category, attributes) as flat Event API records."""
    out = []
    for event in events:
        record: dict[str, Any] = {
            "eventType": EVENT_TYPE,
            "timestamp": int(now * 1000),
            "summary": event.get("summary", ""),
            "category": event.get("category", "workerwatch"),
        }
        for key, value in attrs.items():
            record.setdefault(key, value)
        for key, value in (event.get("attributes") or {}).items():
            if isinstance(value, (str, int, float, bool)):
                record[key if key not in record else f"attr.{key}"] = value
        out.append(record)
    return out


class Sender:
    """Packs, queues and posts batches; the only code that talks to New Relic."""

    def __init__(
        self,
        license_key: str,
        metric_url: str,
        event_url: str | None,
        *,
        timeout: float = 10.0,
        queue_size: int = DEFAULT_QUEUE,
        max_body: int = MAX_BODY,
        sleep: Callable[[float], bool] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.key = license_key
        self.metric_url = metric_url
        self.event_url = event_url
        self.timeout = timeout
        self.queue_size = max(1, queue_size)
        self.max_body = max_body
        self.max_attempts = max(1, max_attempts)
        # sleep(seconds) -> True when asked to stop; long-running push passes its Stopper.
        self.sleep = sleep or (lambda s: time.sleep(s) or False)
        self.pending: deque[Batch] = deque()
        self.errors: Counter[str] = Counter()
        self._session: Any = None

    # packing --------------------------------------------------------------------------

    def _wrap(self, kind: str, items: list[dict[str, Any]], common: dict[str, Any] | None) -> Any:
        if kind == "metrics":
            return [{"common": common or {}, "metrics": items}]
        return items

    def _pack(
        self, kind: str, url: str, items: list[dict[str, Any]], common: dict[str, Any] | None
    ) -> list[Batch]:
        """Batches of ``items`` whose compressed bodies are each under ``max_body``."""
        if not items:
            return []
        if kind == "events" and len(items) > MAX_EVENTS_PER_POST:
            half = MAX_EVENTS_PER_POST
            return self._pack(kind, url, items[:half], common) + self._pack(
                kind, url, items[half:], common
            )
        body = _gzip(self._wrap(kind, items, common))
        if len(body) < self.max_body:
            return [Batch(kind, url, items, common, body)]
        if len(items) == 1:
            self.errors["push"] += 1
            log.error(
                f"one {kind[:-1]} compresses to {len(body)} bytes, over the "
                f"{self.max_body}-byte limit per POST: dropped"
            )
            return []
        half = len(items) // 2
        return self._pack(kind, url, items[:half], common) + self._pack(
            kind, url, items[half:], common
        )

    def _queue(self, batches: list[Batch]) -> None:
        for batch in batches:
            while len(self.pending) >= self.queue_size:
                old = self.pending.popleft()
                self.errors["push"] += 1
                log.warn(
                    f"push queue full ({self.queue_size} batches): dropped the oldest "
                    f"{old.kind} batch ({old.count} items, "
                    f"{human_duration(time.monotonic() - old.created)} old); "
                    f"{self.errors['push']} dropped so far"
                )
            self.pending.append(batch)

    def add_metrics(self, metrics: list[dict[str, Any]], common: dict[str, Any]) -> None:
        self._queue(self._pack("metrics", self.metric_url, metrics, common))

    def add_events(self, records: list[dict[str, Any]]) -> None:
        if self.event_url and records:
            self._queue(self._pack("events", self.event_url, records, None))

    # sending --------------------------------------------------------------------------

    def _post(self, batch: Batch) -> tuple[int | None, str, dict[str, str]]:
        import requests

        if self._session is None:
            self._session = requests.Session()
        headers = {
            "Api-Key": self.key,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"{INTEGRATION_NAME}/{__version__}",
            "x-request-id": str(uuid.uuid4()),
        }
        try:
            response = self._session.post(
                batch.url, data=batch.body, headers=headers, timeout=(5.0, self.timeout)
            )
        except requests.RequestException as exc:
            # requests nests the cause several levels deep; the errno text is what helps.
            text = str(exc)
            cause = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
            return None, f"{type(exc).__name__}: {cause.group(0) if cause else text[:160]}", {}
        return response.status_code, response.text[:300], dict(response.headers)

    def _describe(self, batch: Batch) -> str:
        parts = urlsplit(batch.url)
        return f"{batch.kind} batch ({batch.count} items) to {parts.scheme}://{parts.netloc}"

    def flush(self, final: bool = False) -> FlushReport:
        """Post every pending batch in order.

        A batch that keeps failing with 5xx or network errors stays queued for the next
        flush (``final`` drops it instead: a one-shot run has no next flush).
        """
        report = FlushReport()
        while self.pending:
            batch = self.pending[0]
            outcome = self._send_one(batch)
            if outcome == "sent":
                self.pending.popleft()
                report.sent += 1
            elif outcome == "split":
                self.pending.popleft()
                half = len(batch.items) // 2
                parts = self._pack(
                    batch.kind, batch.url, batch.items[:half], batch.common
                ) + self._pack(batch.kind, batch.url, batch.items[half:], batch.common)
                self.pending.extendleft(reversed(parts))
            elif outcome == "drop":
                self.pending.popleft()
                report.dropped += 1
                self.errors["push"] += 1
            elif outcome == "stopped":
                break
            else:  # "later": out of attempts this round
                if final:
                    self.pending.popleft()
                    report.dropped += 1
                    self.errors["push"] += 1
                    log.error(f"{self._describe(batch)} not delivered: giving up")
                    continue
                break
        report.pending = len(self.pending)
        return report

    def _send_one(self, batch: Batch) -> str:
        where = self._describe(batch)
        failures = 0
        while True:
            status, text, headers = self._post(batch)
            text = redact(text, (self.key,))
            if status is not None and 200 <= status < 300:
                return "sent"
            if status == 403:
                raise AuthRefused(
                    f"HTTP 403 for {where}: the key in {LICENSE_ENV} was refused. It must be "
                    "an ingest License key (not a User key) of this account, for the region "
                    "the endpoint serves (US or EU)"
                )
            if status == 413:
                if batch.count <= 1:
                    log.error(f"HTTP 413 for {where} with a single item: dropped")
                    return "drop"
                log.warn(f"HTTP 413 for {where}: splitting it")
                return "split"
            if status is not None and 400 <= status < 500 and status not in RETRY_STATUSES:
                log.error(f"HTTP {status} for {where}: dropped; the API said: {text!r}")
                return "drop"
            failures += 1
            if status == 429:
                wait = retry_after(headers.get("Retry-After"))
                log.warn(f"HTTP 429 for {where}: retrying after {wait:g} s")
            else:
                what = f"HTTP {status}" if status is not None else text
                wait = retry.backoff(failures)
                log.warn(f"{what} for {where}: attempt {failures} of {self.max_attempts}")
            if failures >= self.max_attempts:
                return "later"
            if self.sleep(wait):
                return "stopped"
