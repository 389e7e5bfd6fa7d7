"""How long a backlog has been stuck: not gone down since it rose above zero.

``backlogStuckSeconds`` comes from the saved state: per task list or queue, the time since
the count rose above zero or last went down, as of the last sample. "Stuck" means this and
only this: a queue whose backlog does not drain. (A worker that stopped is ``stalled``; a
probe child that does not come back is ``hung``.)
"""

from __future__ import annotations

import json
from typing import Any

from workerwatch.judge.memory import Level
from workerwatch.observations import MetricSample
from workerwatch.output import catalogue
from workerwatch.queues.swf import ACTIVITY, DECISION

# The count that is "the backlog" for each probe, and the metric saying how long it has not
# gone down.
_LEVELS: dict[str, tuple[str, dict[str, str]]] = {
    catalogue.SWF_PENDING_ACTIVITY: (catalogue.SWF_STUCK, {"swf.taskKind": ACTIVITY}),
    catalogue.SWF_PENDING_DECISION: (catalogue.SWF_STUCK, {"swf.taskKind": DECISION}),
    catalogue.SQS_VISIBLE: (catalogue.SQS_STUCK, {}),
}


def stuck_update(previous: Level | None, count: float, at: float) -> tuple[Level, float]:
    """The new level record and backlogStuckSeconds for a count read at ``at``.

    The clock starts when the count rises above zero and restarts whenever it goes down;
    a count that stays equal or grows keeps it running. A first reading has no history,
    so it starts at 0.
    """
    if count <= 0:
        return Level(count=count, since=None, seen=at), 0.0
    if previous is None or previous.since is None or at < previous.seen or count < previous.count:
        return Level(count=count, since=at, seen=at), 0.0
    return Level(count=count, since=previous.since, seen=at), max(0.0, at - previous.since)


def level_key(name: str, attrs: dict[str, Any]) -> str:
    """One backlog's key: its metric and attributes, whether or not the count was truncated."""
    kept = {k: v for k, v in attrs.items() if k != "swf.truncated"}
    return json.dumps([name, sorted(kept.items())], separators=(",", ":"))


def with_stuck(
    samples: list[MetricSample], levels: dict[str, Level], at: float, forget_after: float
) -> list[MetricSample]:
    """``samples`` plus a backlogStuckSeconds for each backlog count; updates ``levels``."""
    out = list(samples)
    for sample in samples:
        if sample.name not in _LEVELS:
            continue
        stuck_name, extra = _LEVELS[sample.name]
        key = level_key(sample.name, sample.attributes)
        levels[key], stuck = stuck_update(levels.get(key), sample.value, at)
        attrs = {k: v for k, v in sample.attributes.items() if k != "swf.truncated"}
        out.append(MetricSample(stuck_name, stuck, {**attrs, **extra}))
    for key in list(levels):
        if at - levels[key].seen > forget_after:
            del levels[key]
    return out
