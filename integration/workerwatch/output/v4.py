"""Protocol-v4 payload: one compact JSON line per run on stdout, for the agent.

Worker and group metrics attach to the host entity: no ``entity`` and
``ignore_entity: false`` (infrastructure-agent pkg/integrations/v4/dm/emitter.go routes
such datasets to ``emitDatasetForAgent``; the Go SDK's default ``ignore_entity: true``
would leave them without the host's ``nr.entity.id``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
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
    # The common cases first: an exact int or a finite float (the rest as before).
    kind = type(value)
    if kind is float and math.isfinite(value):
        return round(value, 3)
    if kind is int and -_FLOAT_MAX < value < _FLOAT_MAX:
        return value
    if isinstance(value, bool):
        return int(value)
    number = finite(value)
    if number is None:
        raise ValueError(f"metric value {value!r} is not a finite number")
    return value if type(value) is int else round(number, 3)


_FLOAT_MAX = 1e308  # an int beyond float's range is no finite number for the agent
# name -> (the attribute names the catalogue allows, its type, whether it is a count, the
# start of its entry's JSON text up to the value), built once per process.
_SPECS: dict[str, tuple[frozenset[str], str, bool, str]] = {}
# json.dumps(..., separators=(",", ":"), allow_nan=False) without a new encoder per call.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def attributes_json(attributes: dict[str, Any]) -> str:
    """Attributes as the payload's text writes them (None values left out)."""
    if None in attributes.values():
        attributes = {k: v for k, v in attributes.items() if v is not None}
    return _encode(attributes)


def _spec(name: str) -> tuple[frozenset[str], str, bool, str]:
    spec = CATALOGUE[name]
    head = f'{{"name":{_encode(name)},"type":{_encode(spec.type)},"value":'
    _SPECS[name] = found = (frozenset(spec.attributes), spec.type, spec.type == "count", head)
    return found


def metric(
    name: str,
    value: float,
    attributes: dict[str, Any],
    interval_ms: int | None = None,
    *,
    as_text: bool = False,
    written: Any = None,
) -> Any:
    """One v4 metric, a dict or (``as_text``) its compact JSON text; the name and attributes
    must be in the catalogue.

    The stdout payload is written as text, not as dicts handed to ``json.dumps``: a
    200-worker payload has ~1,500 metrics and a dict for each was most of its cost. The
    text is exactly what ``json.dumps(..., separators=(",", ":"))`` writes for the dict
    (same keys, order, number forms, escapes); push posts the dicts.
    ``written``: the attributes as they go into the entry, made once for all of a worker's
    metrics: ``attributes_json(attributes)`` for text, ``attributes`` (holding no None)
    for a dict; None: made here, None values left out.
    """
    allowed, kind, count, head = _SPECS.get(name) or _spec(name)
    if not allowed.issuperset(attributes):
        unknown = set(attributes) - allowed
        raise KeyError(f"{name}: attributes {sorted(unknown)} not in the catalogue")
    number = _value(value)
    ms = max(1, int(interval_ms or DEFAULT_INTERVAL_S * 1000)) if count else 0
    if as_text:
        text = attributes_json(attributes) if written is None else written
        # json.dumps writes an int and a float with their repr (float.__repr__: the
        # shortest text that reads back as the same float).
        if count:
            return f'{head}{number!r},"attributes":{text},"interval.ms":{ms}}}'
        return f'{head}{number!r},"attributes":{text}}}'
    if written is None:
        written = {k: v for k, v in attributes.items() if v is not None}
    out: dict[str, Any] = {"name": name, "type": kind, "value": number, "attributes": written}
    if count:
        out["interval.ms"] = ms
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


# A resident process writes the same workers' attributes every cycle: their texts (with
# the dicts they were written from) are kept from one run to the next while unchanged,
# keyed by what they are made of; only the last run's are kept.
_Texts = dict[tuple, tuple[dict[str, Any], str]]
_last_texts: _Texts = {}


def _attribute_texts(key: tuple, make: Callable[[], dict[str, Any]], seen: _Texts) -> tuple:
    found = _last_texts.get(key)
    if found is None:
        attrs = make()
        found = (attrs, attributes_json(attrs))
    seen[key] = found
    return found


def _worker_entries(v: WorkerVerdict, brief: bool, seen: _Texts | None) -> list[Any]:
    """A worker's metrics: dicts, or (``seen`` given) texts, whose attribute texts go there."""
    as_text = seen is not None
    if seen is None:
        attrs = shared = worker_attributes(v)  # the dict itself goes into every entry
    else:
        key = (v.name, v.group, v.pid, v.state, v.summary or v.reason)
        attrs, shared = _attribute_texts(key, lambda: worker_attributes(v), seen)
    ms = int(v.interval_s * 1000) if v.interval_s else None

    def own(name: str, value: float, interval_ms: int | None = None) -> Any:
        """A metric with the worker's own attributes (one dict or text for all of them)."""
        return metric(name, value, attrs, interval_ms, as_text=as_text, written=shared)

    out = [own(catalogue.WORKER_UP, int(v.up)), own(catalogue.WORKER_STALLED, int(v.stalled))]
    if not v.up or brief:
        return out
    if v.silent_seconds is not None:
        out.append(own(catalogue.LOG_SILENT, v.silent_seconds))
    if v.bytes_written is not None and ms:
        out.append(own(catalogue.LOG_BYTES, v.bytes_written, ms))
    if v.heartbeat_age is not None:
        out.append(own(catalogue.HEARTBEAT_AGE, v.heartbeat_age))
    if v.cpu_delta is not None and ms:
        out.append(own(catalogue.CPU, v.cpu_delta, ms))
    if v.wakeups is not None and ms:
        out.append(own(catalogue.WAKEUPS, v.wakeups, ms))
    if v.blocked_seconds is not None:

        def blocked_attributes() -> dict[str, Any]:
            return {**attrs, "blocked.syscall": v.blocked_syscall, "blocked.peer": v.blocked_peer}

        if seen is None:
            blocked, text = blocked_attributes(), None
        else:
            key = (shared, v.blocked_syscall, v.blocked_peer)
            blocked, text = _attribute_texts(key, blocked_attributes, seen)
        out.append(
            metric(catalogue.BLOCKED, v.blocked_seconds, blocked, as_text=as_text, written=text)
        )
        if v.blocked_timeout is not None:
            timeout = v.blocked_timeout
            out.append(
                metric(catalogue.BLOCKED_TIMEOUT, timeout, blocked, as_text=as_text, written=text)
            )
    for peer, count in sorted(v.untimed_waits.items()):
        out.append(
            metric(catalogue.UNTIMED_WAITS, count, {**attrs, "blocked.peer": peer}, as_text=as_text)
        )
    if v.restarted:
        out.append(own(catalogue.RESTARTS, 1, ms))
    if v.task_seconds is not None and v.task_name:
        task = {**attrs, "task.name": v.task_name}
        out.append(metric(catalogue.TASK_RUNNING, v.task_seconds, task, as_text=as_text))
    return out


def worker_metrics(v: WorkerVerdict, brief: bool = False) -> list[dict[str, Any]]:
    """A worker's metrics; ``brief`` keeps only up/stalled (their attributes carry the verdict)."""
    return _worker_entries(v, brief, None)


def all_metrics(result: RunResult, as_text: bool = False) -> list[Any]:
    """Every metric of a run: dicts (push), or (``as_text``) their JSON texts (stdout)."""
    global _last_texts
    out: list[Any] = []
    seen: _Texts | None = {} if as_text else None
    # A very large fleet summarises its healthy workers instead of dropping anyone: every
    # worker keeps up/stalled with its state and reason; the detail stays for the rest.
    summarise = len(result.workers) > SUMMARISE_ABOVE
    for v in result.workers:
        out.extend(_worker_entries(v, summarise and v.state in (IDLE, WORKING), seen))
    if seen is not None:
        _last_texts = seen
    for g in result.groups:
        attrs = {"worker.group": g.group}
        out.append(metric(catalogue.GROUP_RUNNING, g.running, attrs, as_text=as_text))
        out.append(metric(catalogue.GROUP_STALLED, g.stalled, attrs, as_text=as_text))
        out.append(metric(catalogue.GROUP_MISSING, g.missing, attrs, as_text=as_text))
        out.append(metric(catalogue.GROUP_POOL, g.pool_processes, attrs, as_text=as_text))
        if g.expected is not None:
            out.append(metric(catalogue.GROUP_EXPECTED, g.expected, attrs, as_text=as_text))
    for sample in result.backlog:
        out.append(metric(sample.name, sample.value, dict(sample.attributes), as_text=as_text))
    run_ms = int((result.interval_s or default_interval_s()) * 1000)
    out.append(metric(catalogue.RUN_DURATION, result.duration, {}, as_text=as_text))
    # Always at least one errors datapoint, so "no errors" is a 0 and not missing data.
    for probe in sorted(result.errors) or ["none"]:
        errors = result.errors[probe]
        out.append(metric(catalogue.ERRORS, errors, {"probe": probe}, run_ms, as_text=as_text))
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


def build_payload(
    result: RunResult, config: Config, sections: Sections, metrics: list[Any] | None = None
) -> dict[str, Any]:
    """The payload; ``metrics`` as given (``to_line`` passes their texts), else as objects."""
    if metrics is None:
        metrics = all_metrics(result) if sections.metrics else []
    dataset: dict[str, Any] = {
        "common": {
            "timestamp": int(result.now * 1000),
            "interval.ms": int((result.interval_s or default_interval_s()) * 1000),
            # The agent does not add the host's name to v4 metrics; push adds the same
            # attribute, so alert facets read one name whichever way the data came.
            "attributes": {"host.name": host_name()},
        },
        "metrics": metrics,
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


# Where the metrics go in a payload's text: the first place this can stand outside a string
# (``common``, before it, holds only numbers and strings, whose quotes are escaped).
_NO_METRICS = '"metrics":[]'


def _line(payload: dict[str, Any]) -> str:
    """One payload whose metrics are texts, as one compact JSON line."""
    dataset = payload["data"][0]
    skeleton = {**payload, "data": [{**dataset, "metrics": []}]}
    text = _encode(skeleton)
    at = text.index(_NO_METRICS) + len(_NO_METRICS) - 1
    return f"{text[:at]}{','.join(dataset['metrics'])}{text[at:]}\n"


def to_line(result: RunResult, config: Config, sections: Sections, pretty: bool = False) -> str:
    """The text to print: one compact JSON line per payload (one payload unless very large)."""
    if pretty:
        # For people only: the agent reads one payload per line.
        payloads = split_payload(build_payload(result, config, sections))
        return "".join(json.dumps(p, indent=2, allow_nan=False) + "\n" for p in payloads)
    texts = all_metrics(result, as_text=True) if sections.metrics else []
    return "".join(_line(p) for p in split_payload(build_payload(result, config, sections, texts)))
