"""SWF backlog probe: which calls one sample makes and how their answers are read.

The calls go through ``aws.ProbeRun`` (client, deadline, fault rules); this module knows
only the SWF API (botocore ``swf/2012-01-25/service-2.json``). Budget per sample, per
domain, in the order they are made (most useful first, so a deadline cuts the least useful):

1. one ``CountPendingActivityTasks`` per activity task list and one
   ``CountPendingDecisionTasks`` per decision task list (all domains first),
2. one ``CountOpenWorkflowExecutions`` and one ``CountClosedWorkflowExecutions``
   (closed as TIMED_OUT within ``timed_out_window``) per domain,
3. one ``ListClosedWorkflowExecutions`` (one page) per canary.

An unknown task list reads as 0, as SWF answers it (only an unknown domain is an error).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from workerwatch.config import Swf
from workerwatch.observations import MetricSample
from workerwatch.output.catalogue import (
    SWF_CANARY,
    SWF_OPEN,
    SWF_PENDING_ACTIVITY,
    SWF_PENDING_DECISION,
    SWF_TIMED_OUT,
)
from workerwatch.queues.aws import ProbeRun

ACTIVITY, DECISION = "activity", "decision"

# CountOpenWorkflowExecutions needs a start-time filter; an execution runs for at most one
# year (SWF quotas: "Maximum workflow execution time"), so this span covers every open one.
OPEN_SPAN_S = 366 * 86400.0
# The canary search: one page, newest closures first (SWF's default order), over at least a
# day so a canary that stopped completing reads as "at least this long" rather than absent.
CANARY_PAGE = 20
CANARY_MIN_SPAN_S = 86400.0
CANARY_SPAN_FACTOR = 3


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _epoch(value: Any) -> float:
    """botocore parses SWF timestamps into aware datetimes; a raw number is also accepted."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a timestamp: {type(value).__name__}")


def _count(response: dict[str, Any]) -> tuple[int, bool]:
    count = response["count"]
    truncated = response.get("truncated", False)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count is {count!r}")
    if not isinstance(truncated, bool):
        raise ValueError(f"truncated is {truncated!r}")
    return count, truncated


def _truncated(flag: bool) -> dict[str, bool]:
    # SWF caps these counts (an internal 1 MB limit); then the count is a lower bound.
    return {"swf.truncated": True} if flag else {}


def canary_age(response: dict[str, Any], workflow_id: str, now: float, span: float) -> float:
    """Seconds since ``workflow_id`` last closed COMPLETED, from one page of closures.

    The close status is checked here because SWF cannot filter on it together with the
    workflow id (closeStatusFilter and executionFilter are mutually exclusive); the id is
    checked too because moto ignores executionFilter. Without a completion on the page the
    answer is a lower bound: the oldest closure on a full page, else the searched span.
    """
    infos = response["executionInfos"]
    if not isinstance(infos, list):
        raise ValueError("executionInfos is not a list")
    completed: float | None = None
    oldest: float | None = None
    for info in infos:
        if info["execution"]["workflowId"] != workflow_id or "closeTimestamp" not in info:
            continue
        closed = _epoch(info["closeTimestamp"])
        oldest = closed if oldest is None else min(oldest, closed)
        if info.get("closeStatus") == "COMPLETED":
            completed = closed if completed is None else max(completed, closed)
    if completed is not None:
        return max(0.0, now - completed)
    if response.get("nextPageToken") and oldest is not None:
        return max(0.0, now - oldest)
    return span


def planned(section: Swf, _cache: dict[str, str] | None = None) -> int:
    """API calls one sample makes (the budget in docs/backlog.md)."""
    return sum(
        len(d.activity_task_lists) + len(d.decision_task_lists) + 2 + len(d.canaries)
        for d in section.domains
    )


def configured(section: Swf | None, domain: str, task_list: str, kind: str) -> bool:
    if section is None:
        return False
    for d in section.domains:
        if d.name == domain:
            lists = d.activity_task_lists if kind == ACTIVITY else d.decision_task_lists
            return task_list in lists
    return False


def sample(section: Swf, run: ProbeRun, now: float) -> None:
    """Make this sample's calls through ``run`` and hand it the metrics read."""
    for domain in section.domains:
        name = domain.name
        for api, metric, lists in (
            ("CountPendingActivityTasks", SWF_PENDING_ACTIVITY, domain.activity_task_lists),
            ("CountPendingDecisionTasks", SWF_PENDING_DECISION, domain.decision_task_lists),
        ):
            for task_list in lists:
                got = run.call(
                    api,
                    f"{name}/{task_list}",
                    _count,
                    scope=name,
                    domain=name,
                    taskList={"name": task_list},
                )
                if got is not None:
                    attrs = {"swf.domain": name, "swf.taskList": task_list}
                    run.add(MetricSample(metric, got[0], {**attrs, **_truncated(got[1])}))

    for domain in section.domains:
        name = domain.name
        got = run.call(
            "CountOpenWorkflowExecutions",
            name,
            _count,
            scope=name,
            domain=name,
            startTimeFilter={"oldestDate": _when(now - OPEN_SPAN_S)},
        )
        if got is not None:
            run.add(MetricSample(SWF_OPEN, got[0], {"swf.domain": name, **_truncated(got[1])}))
        got = run.call(
            "CountClosedWorkflowExecutions",
            name,
            _count,
            scope=name,
            domain=name,
            # No latestDate: a host clock behind SWF's must not hide the newest closures.
            closeTimeFilter={"oldestDate": _when(now - domain.timed_out_window)},
            closeStatusFilter={"status": "TIMED_OUT"},
        )
        if got is not None:
            run.add(MetricSample(SWF_TIMED_OUT, got[0], {"swf.domain": name, **_truncated(got[1])}))

    for domain in section.domains:
        name = domain.name
        for canary in domain.canaries:
            span = max(CANARY_MIN_SPAN_S, CANARY_SPAN_FACTOR * canary.expect_every)
            wid = canary.workflow_id
            age = run.call(
                "ListClosedWorkflowExecutions",
                f"{name} workflowId={wid}",
                lambda response, wid=wid, span=span: canary_age(response, wid, now, span),
                scope=name,
                domain=name,
                closeTimeFilter={"oldestDate": _when(now - span)},
                executionFilter={"workflowId": wid},
                maximumPageSize=CANARY_PAGE,
            )
            if age is not None:
                run.add(MetricSample(SWF_CANARY, age, {"swf.domain": name, "swf.workflowId": wid}))
