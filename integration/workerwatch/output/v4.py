"""Protocol-v4 payload: one compact JSON line per run on stdout, for the agent.

Worker and group metrics attach to the host entity: no ``entity`` and
``ignore_entity: false`` (infrastructure-agent pkg/integrations/v4/dm/emitter.go routes
such datasets to ``emitDatasetForAgent``; the Go SDK's default ``ignore_entity: true``
would leave them without the host's ``nr.entity.id``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

from workerwatch import INTEGRATION_NAME, __version__
from workerwatch.collector import RunResult
from workerwatch.config import Config, redacted
from workerwatch.judge.states import IDLE, WORKING, WorkerVerdict
from workerwatch.output import catalogue
from workerwatch.output.catalogue import CATALOGUE
from workerwatch.records import record
from workerwatch.sanitize import MAX_ATTRIBUTE, clean_text
from workerwatch.units import finite, parse_duration

DEFAULT_INTERVAL_S = 30.0
# The agent's documented limits: 1,000 metric sets per payload, 5 MB per line.
MAX_METRICS_PER_LINE = 1000
SUMMARISE_ABOVE = 500


@record(frozen=True)
class Sections:
    """Which parts of the v4 payload to publish (the agent's data flags)."""

    metrics: bool = True
    inventory: bool = True
    events: bool = True

    @classmethod
    def from_flags(cls, metrics: bool, inventory: bool, events: bool) -> Sections:
        # Go SDK rule: when no data flag is given, all of them are published.
        if not (metrics or inventory or events):
            return cls()
        return cls(bool(metrics), bool(inventory), bool(events))


def _value(value: float) -> float | int:
    if isinstance(value, bool):
        return int(value)
    number = finite(value)
    if number is None:
        raise ValueError(f"metric value {value!r} is not a finite number")
    return value if type(value) is int else round(number, 3)


# name -> the attribute names the catalogue allows, as a set built once per process.
_ALLOWED: dict[str, frozenset[str]] = {}


def metric(
    name: str,
    value: float,
    attributes: dict[str, Any],
    interval_ms: int | None = None,
    *,
    shared: bool = False,
) -> dict[str, Any]:
    """One v4 metric; the name and attributes must be in the catalogue.

    ``shared``: ``attributes`` hold no None and are used as they are, one dict for all of a
    worker's metrics (copying it per metric was a tenth of building a 200-worker payload).
    """
    spec = CATALOGUE[name]
    allowed = _ALLOWED.get(name)
    if allowed is None:
        allowed = _ALLOWED[name] = frozenset(spec.attributes)
    if not allowed.issuperset(attributes):
        unknown = set(attributes) - allowed
        raise KeyError(f"{name}: attributes {sorted(unknown)} not in the catalogue")
    out: dict[str, Any] = {
        "name": name,
        "type": spec.type,
        "value": _value(value),
        "attributes": (
            attributes if shared else {k: v for k, v in attributes.items() if v is not None}
        ),
    }
    if spec.type == "count":
        out["interval.ms"] = max(1, int(interval_ms or DEFAULT_INTERVAL_S * 1000))
    return out


@functools.cache
def host_name() -> str:
    # uname's nodename is what socket.gethostname() returns, without importing socket
    # (a few ms at every one-shot start).
    return clean_text(os.uname().nodename, 255)


def default_interval_s() -> float:
    """The agent's interval (``NRI_CONFIG_INTERVAL``, e.g. ``30s`` or ``1m``) for a first run."""
    try:
        return parse_duration(os.environ.get("NRI_CONFIG_INTERVAL") or DEFAULT_INTERVAL_S)
    except ValueError:
        return DEFAULT_INTERVAL_S


def worker_attributes(v: WorkerVerdict) -> dict[str, Any]:
    attrs = {
        "worker.name": v.name,
        "worker.group": v.group,
        "process.pid": v.pid,
        "worker.state": v.state,
        # The number-free form: a stable series while the situation is unchanged.
        "worker.reason": clean_text(v.summary or v.reason, MAX_ATTRIBUTE),
    }
    return {k: value for k, value in attrs.items() if value is not None}


def worker_metrics(v: WorkerVerdict, brief: bool = False) -> list[dict[str, Any]]:
    """A worker's metrics; ``brief`` keeps only up/stalled (their attributes carry the verdict)."""
    attrs = worker_attributes(v)
    ms = int(v.interval_s * 1000) if v.interval_s else None
    out = [
        metric(catalogue.WORKER_UP, int(v.up), attrs, shared=True),
        metric(catalogue.WORKER_STALLED, int(v.stalled), attrs, shared=True),
    ]
    if not v.up or brief:
        return out
    if v.silent_seconds is not None:
        out.append(metric(catalogue.LOG_SILENT, v.silent_seconds, attrs, shared=True))
    if v.bytes_written is not None and ms:
        out.append(metric(catalogue.LOG_BYTES, v.bytes_written, attrs, ms, shared=True))
    if v.heartbeat_age is not None:
        out.append(metric(catalogue.HEARTBEAT_AGE, v.heartbeat_age, attrs, shared=True))
    if v.cpu_delta is not None and ms:
        out.append(metric(catalogue.CPU, v.cpu_delta, attrs, ms, shared=True))
    if v.wakeups is not None and ms:
        out.append(metric(catalogue.WAKEUPS, v.wakeups, attrs, ms, shared=True))
    if v.blocked_seconds is not None:
        blocked = {**attrs, "blocked.syscall": v.blocked_syscall, "blocked.peer": v.blocked_peer}
        out.append(metric(catalogue.BLOCKED, v.blocked_seconds, blocked))
        if v.blocked_timeout is not None:
            out.append(metric(catalogue.BLOCKED_TIMEOUT, v.blocked_timeout, blocked))
    for peer, count in sorted(v.untimed_waits.items()):
        out.append(metric(catalogue.UNTIMED_WAITS, count, {**attrs, "blocked.peer": peer}))
    if v.restarted:
        out.append(metric(catalogue.RESTARTS, 1, attrs, ms))
    if v.task_seconds is not None and v.task_name:
        task = {**attrs, "task.name": v.task_name}
        out.append(metric(catalogue.TASK_RUNNING, v.task_seconds, task))
    return out


def all_metrics(result: RunResult) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # A very large fleet summarises its healthy workers instead of dropping anyone: every
    # worker keeps up/stalled with its state and reason; the detail stays for the rest.
    summarise = len(result.workers) > SUMMARISE_ABOVE
    for v in result.workers:
        out.extend(worker_metrics(v, brief=summarise and v.state in (IDLE, WORKING)))
    for g in result.groups:
        attrs = {"worker.group": g.group}
        out.append(metric(catalogue.GROUP_RUNNING, g.running, attrs))
        out.append(metric(catalogue.GROUP_STALLED, g.stalled, attrs))
        out.append(metric(catalogue.GROUP_MISSING, g.missing, attrs))
        out.append(metric(catalogue.GROUP_POOL, g.pool_processes, attrs))
        if g.expected is not None:
            out.append(metric(catalogue.GROUP_EXPECTED, g.expected, attrs))
    for sample in result.backlog:
        out.append(metric(sample.name, sample.value, dict(sample.attributes)))
    run_ms = int((result.interval_s or default_interval_s()) * 1000)
    out.append(metric(catalogue.RUN_DURATION, result.duration, {}))
    # Always at least one errors datapoint, so "no errors" is a 0 and not missing data.
    for probe in sorted(result.errors) or ["none"]:
        out.append(metric(catalogue.ERRORS, result.errors[probe], {"probe": probe}, run_ms))
    return out


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    elif isinstance(value, list):
        if all(not isinstance(i, (dict, list)) for i in value):
            into[prefix] = ",".join(str(i) for i in value)
        else:
            for index, item in enumerate(value):
                _flatten(f"{prefix}.{index}", item, into)
    else:
        into[prefix] = value


def inventory(config: Config, workers: Sequence[WorkerVerdict] = ()) -> dict[str, dict[str, Any]]:
    """The effective configuration (no secrets), the version, one item per section, and
    per worker the peers it was seen waiting on without a timeout."""
    data = redacted(config)
    items: dict[str, dict[str, Any]] = {
        "integration": {
            "version": __version__,
            "state_dir": data["state_dir"],
            "deadline": data["deadline"],
            "forget_after": data["forget_after"],
        }
    }
    for group in data["groups"]:
        flat: dict[str, Any] = {}
        _flatten("", {k: v for k, v in group.items() if k != "name"}, flat)
        items[f"group/{group['name']}"] = flat
    for section in ("swf", "sqs"):
        if section in data:
            flat = {}
            _flatten("", data[section], flat)
            items[section] = flat
    for v in workers:
        if v.untimed_peers:
            # One entry per worker: what it has been seen waiting on without a timeout.
            peers = ",".join(clean_text(p) for p in v.untimed_peers)
            items[f"untimedWaits/{v.name}"] = {"peers": clean_text(peers, MAX_ATTRIBUTE)}
    return items


def build_payload(result: RunResult, config: Config, sections: Sections) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "common": {
            "timestamp": int(result.now * 1000),
            "interval.ms": int((result.interval_s or default_interval_s()) * 1000),
            # The agent does not add the host's name to v4 metrics; push adds the same
            # attribute, so alert facets read one name whichever way the data came.
            "attributes": {"host.name": host_name()},
        },
        "metrics": all_metrics(result) if sections.metrics else [],
        "inventory": inventory(config, result.workers) if sections.inventory else {},
        "events": list(result.events) if sections.events else [],
        "ignore_entity": False,
    }
    return {
        "protocol_version": "4",
        "integration": {"name": INTEGRATION_NAME, "version": __version__},
        "data": [dataset],
    }


def split_payload(
    payload: dict[str, Any], limit: int = MAX_METRICS_PER_LINE
) -> list[dict[str, Any]]:
    """Payloads of at most ``limit`` metrics each; inventory and events ride on the first.

    The agent emits every stdout line as its own payload (runner.go ``handleLines``), so a
    large fleet becomes several complete lines rather than one line past its limits.
    """
    dataset = payload["data"][0]
    metrics = dataset["metrics"]
    if len(metrics) <= limit:
        return [payload]
    parts = []
    for start in range(0, len(metrics), limit):
        part = {**dataset, "metrics": metrics[start : start + limit]}
        if start:
            part["inventory"], part["events"] = {}, []
        parts.append({**payload, "data": [part]})
    return parts


def to_line(result: RunResult, config: Config, sections: Sections, pretty: bool = False) -> str:
    """The text to print: one compact JSON line per payload (one payload unless very large)."""
    payloads = split_payload(build_payload(result, config, sections))
    if pretty:
        # For people only: the agent reads one payload per line.
        return "".join(json.dumps(p, indent=2, allow_nan=False) + "\n" for p in payloads)
    return "".join(json.dumps(p, separators=(",", ":"), allow_nan=False) + "\n" for p in payloads)
