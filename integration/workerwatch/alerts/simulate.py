"""Replay a run's metrics through the alert conditions: when would each incident open and close?

``nri-workerwatch alerts simulate --payloads FILE`` reads protocol-v4 payload lines (what the
integration printed, one run per line, in time order) and evaluates every condition of the
definitions, with the parameters in effect, the way New Relic's streaming alerts do. Each
rule below is taken from New Relic's documentation (docs/alerts.md, "Previewing a change with
simulate", lists the pages); where the docs leave a choice open, the replay takes the reading
that opens an incident no earlier than New Relic would, and says so.

- Signals: one per distinct value of the FACET attributes ("each facet is a signal"). Data
  points are the metric's datapoints; a point's time is its own timestamp, else the payload's
  ``common.timestamp`` (the agent does the same). The replay's clock is the newest timestamp
  read so far: it stands for both data time and arrival time.
- Aggregation windows of ``aggregation_window`` seconds, aligned on multiples of it; a window's
  points are reduced by the query's function (max, min, latest, sum, count, average).
- Event flow: a window is aggregated when a data point of the same signal arrives with a
  timestamp at or past the window's end plus ``aggregation_delay``. The docs do not say
  whether another signal's data advances the clock; only the signal's own data does here.
- Event timer: a window is aggregated ``aggregation_timer`` seconds after its last point
  arrived. Cadence: at the window's end plus the delay on the clock, with or without data.
- Gaps: with fill ``none`` an empty window is not a breach and resets the "for at least"
  count; ``static`` fills it with ``fill_value``, ``last_value`` with the last value seen.
- Thresholds: ``all`` ("for at least N s") opens when every one of the last N/window windows
  breached; ``at_least_once`` opens on a breaching window. An incident closes when the signal
  has not breached for the threshold duration (the docs' recovery period): as many windows
  in a row with data that does not breach.
- Loss of signal: a signal with no data point for ``expiration`` seconds is lost; with
  ``close_incidents`` its open incidents close, with ``open_incident`` a lost-signal incident
  opens, which closes when the signal's data returns. A signal is lost only after it has been
  seen. The replay does not declare signals lost because the file ends.

Not modelled (an error names them): sliding windows, NRQL WHERE clauses, nested queries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from workerwatch.alerts.models import AlertsDocument, Condition, Term
from workerwatch.alerts.params import DefinitionError

_QUERY = re.compile(
    r"^SELECT\s+(?P<func>max|min|latest|sum|count|average)\((?P<metric>[\w.]+)\)\s+"
    r"FROM\s+Metric(?:\s+FACET\s+(?P<facet>.+))?$",
    re.I,
)
_COMPARE = {
    "ABOVE": lambda v, t: v > t,
    "ABOVE_OR_EQUALS": lambda v, t: v >= t,
    "BELOW": lambda v, t: v < t,
    "BELOW_OR_EQUALS": lambda v, t: v <= t,
    "EQUALS": lambda v, t: v == t,
    "NOT_EQUALS": lambda v, t: v != t,
}


@dataclass(frozen=True)
class Point:
    time: float  # seconds since the epoch
    metric: str
    value: float
    attributes: dict[str, Any]


@dataclass
class Incident:
    condition: str
    signal: tuple[str, ...]  # facet values, in FACET order
    priority: str  # CRITICAL, WARNING, or LOST_SIGNAL
    opened: float
    reason: str
    closed: float | None = None
    close_reason: str = ""


@dataclass
class _Signal:
    windows: dict[int, list[float]] = field(default_factory=dict)
    last_arrival: dict[int, float] = field(default_factory=dict)
    next_window: int | None = None  # the oldest window not yet aggregated
    last_point: float = 0.0
    last_value: float | None = None
    lost: bool = False
    # per priority: breaching windows in a row, non-breaching windows in a row, open incident
    streak: dict[str, int] = field(default_factory=dict)
    calm: dict[str, int] = field(default_factory=dict)
    recent: dict[str, list[bool]] = field(default_factory=dict)
    open: dict[str, Incident] = field(default_factory=dict)


def read_payloads(lines: Iterable[str], where: str = "payloads") -> list[Point]:
    """Every metric datapoint of the v4 payload lines, oldest first."""
    points: list[Point] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
            datasets = payload["data"]
        except (ValueError, KeyError, TypeError):
            raise DefinitionError(
                f"{where}: line {number} is not a protocol-v4 payload (JSON with data[])"
            ) from None
        if not isinstance(datasets, list):
            raise DefinitionError(f"{where}: line {number}: data is not a list")
        for index, dataset in enumerate(datasets):
            common = dataset.get("common") if isinstance(dataset, dict) else None
            base = common.get("attributes") if isinstance(common, dict) else None
            metrics = dataset.get("metrics") if isinstance(dataset, dict) else None
            if (
                not isinstance(dataset, dict)
                or not isinstance({} if common is None else common, dict)
                or not isinstance({} if base is None else base, dict)
                or not isinstance([] if metrics is None else metrics, list)
            ):
                raise DefinitionError(
                    f"{where}: line {number}: data[{index}] is not a protocol-v4 dataset "
                    "(an object with common{} and metrics[])"
                )
            stamp = (common or {}).get("timestamp")
            for m in metrics or []:
                if not isinstance(m, dict) or not isinstance(m.get("attributes") or {}, dict):
                    continue
                when = m.get("timestamp", stamp)
                value = m.get("value")
                if not isinstance(when, (int, float)) or not isinstance(value, (int, float)):
                    continue
                # The agent reads values below 252489600000 as seconds (protocol v4, Metric.Time).
                seconds = when / 1000 if when >= 252_489_600_000 else float(when)
                attrs = {**(base or {}), **(m.get("attributes") or {})}
                points.append(Point(seconds, str(m.get("name")), float(value), attrs))
    points.sort(key=lambda p: p.time)
    if not points:
        raise DefinitionError(f"{where}: no metric datapoints found")
    return points


def _aggregate(func: str, values: list[float]) -> float:
    if func == "max":
        return max(values)
    if func == "min":
        return min(values)
    if func == "latest":
        return values[-1]
    if func == "sum":
        return math.fsum(values)
    if func == "count":
        return float(len(values))
    return math.fsum(values) / len(values)


class _ConditionReplay:
    def __init__(self, c: Condition) -> None:
        match = _QUERY.match(c.nrql)
        if not match:
            raise DefinitionError(
                f"condition {c.name!r}: simulate reads only "
                "'SELECT max|min|latest|sum|count|average(metric) FROM Metric [FACET ...]', "
                f"not {c.nrql!r}"
            )
        if c.signal.slide_by:
            raise DefinitionError(f"condition {c.name!r}: simulate does not model sliding windows")
        self.c = c
        self.func = match.group("func").lower()
        self.metric = match.group("metric")
        self.facet = [a.strip() for a in (match.group("facet") or "").split(",") if a.strip()]
        self.window = c.signal.aggregation_window
        self.method = c.signal.aggregation_method
        self.delay = c.signal.aggregation_delay or 0
        self.timer = c.signal.aggregation_timer or 0
        self.signals: dict[tuple[str, ...], _Signal] = {}
        self.incidents: list[Incident] = []

    # -- data in

    def add(self, point: Point) -> None:
        if point.metric != self.metric:
            return
        if any(point.attributes.get(a) is None for a in self.facet):
            return
        key = tuple(str(point.attributes[a]) for a in self.facet)
        signal = self.signals.setdefault(key, _Signal())
        if signal.lost:
            signal.lost = False
            lost = signal.open.pop("LOST_SIGNAL", None)
            if lost:
                self._close(lost, point.time, "the signal returned")
        index = int(point.time // self.window)
        if signal.next_window is None:
            signal.next_window = index
        if index < signal.next_window:
            return  # its window was already aggregated: New Relic drops such late points too
        signal.windows.setdefault(index, []).append(point.value)
        signal.last_arrival[index] = point.time
        signal.last_point = point.time
        if self.method == "EVENT_FLOW":
            # "aggregates a window of data when the first data point arrives in a subsequent
            # window", the delay defining which one (docs streaming-alerts-key-terms-concepts).
            while signal.next_window is not None and (
                point.time >= (signal.next_window + 1) * self.window + self.delay
            ):
                self._aggregate(key, signal, point.time)

    def tick(self, now: float) -> None:
        """The clock moved to ``now``: timers, cadence windows and loss of signal."""
        for key, signal in self.signals.items():
            if self.method == "EVENT_TIMER":
                while signal.next_window is not None and signal.windows:
                    first = min(signal.windows)
                    if now < signal.last_arrival[first] + self.timer:
                        break
                    signal.next_window = first
                    self._aggregate(key, signal, signal.last_arrival[first] + self.timer)
            elif self.method == "CADENCE":
                while signal.next_window is not None and (
                    now >= (signal.next_window + 1) * self.window + self.delay
                ):
                    when = (signal.next_window + 1) * self.window + self.delay
                    self._aggregate(key, signal, when)
            self._expire(key, signal, now)

    # -- evaluation

    def _aggregate(self, key: tuple[str, ...], signal: _Signal, when: float) -> None:
        index = signal.next_window
        assert index is not None
        values = signal.windows.pop(index, None)
        signal.last_arrival.pop(index, None)
        signal.next_window = index + 1
        fill = self.c.signal.fill_option
        if values:
            value: float | None = _aggregate(self.func, values)
            signal.last_value = value
        elif fill == "STATIC":
            value = float(self.c.signal.fill_value or 0.0)
        elif fill == "LAST_VALUE":
            value = signal.last_value
        else:
            value = None
        for priority, term in self.c.terms:
            self._evaluate(key, signal, priority, term, value, index, when)

    def _evaluate(
        self,
        key: tuple[str, ...],
        signal: _Signal,
        priority: str,
        term: Term,
        value: float | None,
        index: int,
        when: float,
    ) -> None:
        needed = max(1, term.duration // self.window)
        breach = value is not None and _COMPARE[term.operator](value, term.threshold)
        recent = signal.recent.setdefault(priority, [])
        recent.append(breach)
        del recent[:-needed]
        signal.streak[priority] = signal.streak.get(priority, 0) + 1 if breach else 0
        if value is not None and not breach:
            signal.calm[priority] = signal.calm.get(priority, 0) + 1
        elif breach:
            signal.calm[priority] = 0
        incident = signal.open.get(priority)
        if incident is None:
            opens = signal.streak[priority] >= needed if term.occurrences == "ALL" else any(recent)
            if opens:
                start = (index + 1 - needed) * self.window
                incident = Incident(
                    self.c.name,
                    key,
                    priority,
                    when,
                    f"{term.operator.lower()} {term.threshold:g} "
                    + ("for at least" if term.occurrences == "ALL" else "at least once in")
                    + f" {term.duration} s (windows from {_clock(start)}), value {value:g}",
                )
                signal.open[priority] = incident
                self.incidents.append(incident)
        elif signal.calm.get(priority, 0) >= needed:
            signal.open.pop(priority)
            self._close(incident, when, f"{term.duration} s without a breach")
            signal.recent[priority] = []

    def _expire(self, key: tuple[str, ...], signal: _Signal, now: float) -> None:
        expiration = self.c.expiration
        if expiration is None or signal.lost or not signal.last_point:
            return
        lost_at = signal.last_point + expiration.duration
        if now < lost_at:
            return
        signal.lost = True
        if expiration.close_incidents:
            for priority in list(signal.open):
                self._close(signal.open.pop(priority), lost_at, "loss of signal")
        if expiration.open_incident:
            incident = Incident(
                self.c.name,
                key,
                "LOST_SIGNAL",
                lost_at,
                f"no data for {expiration.duration} s (loss of signal)",
            )
            signal.open["LOST_SIGNAL"] = incident
            self.incidents.append(incident)

    def _close(self, incident: Incident, when: float, why: str) -> None:
        incident.closed = when
        incident.close_reason = why


def simulate(docs: list[AlertsDocument], points: list[Point]) -> list[Incident]:
    """Every incident the conditions would open over the points, in the order they open."""
    replays = [_ConditionReplay(c) for doc in docs for c in doc.conditions if c.enabled]
    for point in points:
        for replay in replays:
            replay.tick(point.time)
            replay.add(point)
    if points:
        for replay in replays:
            replay.tick(points[-1].time)
    incidents = [i for replay in replays for i in replay.incidents]
    return sorted(incidents, key=lambda i: (i.opened, i.condition, i.signal))


def _clock(seconds: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _offset(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"+{minutes}m{rest:02d}s"


def report(docs: list[AlertsDocument], points: list[Point], source: str) -> Iterator[str]:
    """The replay as text, one block per condition."""
    start, end = points[0].time, points[-1].time
    yield (
        f"Replay of {source}: {len(points)} datapoints from {_clock(start)} to {_clock(end)} "
        f"UTC ({_offset(end - start)}); times below are UTC and offsets from the first one."
    )
    incidents = simulate(docs, points)
    for doc in docs:
        for c in doc.conditions:
            terms = "; ".join(
                f"{p.lower()} {t.operator.lower()} {t.threshold:g} "
                + ("for at least" if t.occurrences == "ALL" else "at least once in")
                + f" {t.duration} s"
                for p, t in c.terms
            )
            s = c.signal
            timing = (
                f"timer {s.aggregation_timer} s"
                if s.aggregation_method == "EVENT_TIMER"
                else f"delay {s.aggregation_delay} s"
            )
            los = (
                f"loss of signal after {c.expiration.duration} s"
                + (" opens an incident" if c.expiration.open_incident else "")
                + (" closes incidents" if c.expiration.close_incidents else "")
                if c.expiration
                else "no loss of signal"
            )
            yield ""
            yield (
                f"{c.name}: {terms or 'no threshold'}; window {s.aggregation_window} s, "
                f"{s.aggregation_method.lower().replace('_', ' ')}, {timing}; {los}"
                + ("" if c.enabled else " (disabled: not evaluated)")
            )
            mine = [i for i in incidents if i.condition == c.name]
            if not mine:
                yield "  no incident"
            for i in mine:
                closed = (
                    f"closes {_clock(i.closed)} ({_offset(i.closed - start)}, {i.close_reason})"
                    if i.closed is not None
                    else "still open at the end of the replay"
                )
                yield (
                    f"  {' / '.join(i.signal) or '(all)'}: {i.priority.lower()} opens "
                    f"{_clock(i.opened)} ({_offset(i.opened - start)}): {i.reason}; {closed}"
                )
