"""The metric catalogue: every metric the integration may emit, by name.

``definitions/metrics.yml`` is the human-facing copy (with meanings) used by the alert
definitions, the dashboard and the README; a test keeps the two in step in both
directions. Emitters take names from here so a typo fails loudly instead of creating a
metric nobody alerts on.
"""

from __future__ import annotations

from workerwatch.records import record

WORKER_ATTRS = ("worker.name", "worker.group", "process.pid", "worker.state", "worker.reason")
GROUP_ATTRS = ("worker.group",)


@record(frozen=True)
class MetricSpec:
    """One metric of the catalogue: its type, unit and attributes."""

    name: str
    type: str  # "gauge" or "count" (v4 types we compute ourselves)
    unit: str
    attributes: tuple[str, ...]


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in specs}


# The names, for code: every emitter takes its metric names from here.
WORKER_UP = "workerwatch.worker.up"
WORKER_STALLED = "workerwatch.worker.stalled"
LOG_SILENT = "workerwatch.worker.log.silentSeconds"
LOG_BYTES = "workerwatch.worker.log.bytesWritten"
HEARTBEAT_AGE = "workerwatch.worker.heartbeat.ageSeconds"
CPU = "workerwatch.worker.cpu.seconds"
WAKEUPS = "workerwatch.worker.mainThread.wakeups"
BLOCKED = "workerwatch.worker.blocked.seconds"
BLOCKED_TIMEOUT = "workerwatch.worker.blocked.timeoutSeconds"
UNTIMED_WAITS = "workerwatch.worker.untimedWaits"
RESTARTS = "workerwatch.worker.restarts"
TASK_RUNNING = "workerwatch.worker.task.runningSeconds"
GROUP_RUNNING = "workerwatch.group.running"
GROUP_EXPECTED = "workerwatch.group.expected"
GROUP_MISSING = "workerwatch.group.missing"
GROUP_STALLED = "workerwatch.group.stalled"
GROUP_POOL = "workerwatch.group.poolProcesses"
SWF_PENDING_ACTIVITY = "workerwatch.swf.pendingActivityTasks"
SWF_PENDING_DECISION = "workerwatch.swf.pendingDecisionTasks"
SWF_OPEN = "workerwatch.swf.openWorkflows"
SWF_TIMED_OUT = "workerwatch.swf.timedOutWorkflows"
SWF_STUCK = "workerwatch.swf.backlogStuckSeconds"
SWF_CANARY = "workerwatch.swf.canary.secondsSinceCompleted"
SWF_AGE = "workerwatch.swf.sampleAgeSeconds"
SQS_VISIBLE = "workerwatch.sqs.visibleMessages"
SQS_IN_FLIGHT = "workerwatch.sqs.inFlightMessages"
SQS_DELAYED = "workerwatch.sqs.delayedMessages"
SQS_STUCK = "workerwatch.sqs.backlogStuckSeconds"
SQS_AGE = "workerwatch.sqs.sampleAgeSeconds"
RUN_DURATION = "workerwatch.integration.durationSeconds"
ERRORS = "workerwatch.integration.errors"

W = WORKER_ATTRS
SWF_TL = ("swf.domain", "swf.taskList")
SWF_COUNT = ("swf.domain", "swf.truncated")

CATALOGUE: dict[str, MetricSpec] = _specs(
    # per worker
    MetricSpec(WORKER_UP, "gauge", "boolean", W),
    MetricSpec(WORKER_STALLED, "gauge", "boolean", W),
    MetricSpec(LOG_SILENT, "gauge", "seconds", W),
    MetricSpec(LOG_BYTES, "count", "bytes", W),
    MetricSpec(HEARTBEAT_AGE, "gauge", "seconds", W),
    MetricSpec(CPU, "count", "seconds", W),
    MetricSpec(WAKEUPS, "count", "count", W),
    MetricSpec(BLOCKED, "gauge", "seconds", (*W, "blocked.syscall", "blocked.peer")),
    MetricSpec(BLOCKED_TIMEOUT, "gauge", "seconds", (*W, "blocked.syscall", "blocked.peer")),
    MetricSpec(UNTIMED_WAITS, "gauge", "count", (*W, "blocked.peer")),
    MetricSpec(RESTARTS, "count", "count", W),
    MetricSpec(TASK_RUNNING, "gauge", "seconds", (*W, "task.name")),
    # per group
    MetricSpec(GROUP_RUNNING, "gauge", "count", GROUP_ATTRS),
    MetricSpec(GROUP_EXPECTED, "gauge", "count", GROUP_ATTRS),
    MetricSpec(GROUP_MISSING, "gauge", "count", GROUP_ATTRS),
    MetricSpec(GROUP_STALLED, "gauge", "count", GROUP_ATTRS),
    MetricSpec(GROUP_POOL, "gauge", "count", GROUP_ATTRS),
    # queue side (SWF)
    MetricSpec(SWF_PENDING_ACTIVITY, "gauge", "count", (*SWF_TL, "swf.truncated")),
    MetricSpec(SWF_PENDING_DECISION, "gauge", "count", (*SWF_TL, "swf.truncated")),
    MetricSpec(SWF_OPEN, "gauge", "count", SWF_COUNT),
    MetricSpec(SWF_TIMED_OUT, "gauge", "count", SWF_COUNT),
    MetricSpec(SWF_STUCK, "gauge", "seconds", (*SWF_TL, "swf.taskKind")),
    MetricSpec(SWF_CANARY, "gauge", "seconds", ("swf.domain", "swf.workflowId")),
    MetricSpec(SWF_AGE, "gauge", "seconds", ("swf.domain",)),
    # queue side (SQS)
    MetricSpec(SQS_VISIBLE, "gauge", "count", ("sqs.queue",)),
    MetricSpec(SQS_IN_FLIGHT, "gauge", "count", ("sqs.queue",)),
    MetricSpec(SQS_DELAYED, "gauge", "count", ("sqs.queue",)),
    MetricSpec(SQS_STUCK, "gauge", "seconds", ("sqs.queue",)),
    MetricSpec(SQS_AGE, "gauge", "seconds", ("sqs.queue",)),
    # the integration itself
    MetricSpec(RUN_DURATION, "gauge", "seconds", ()),
    MetricSpec(ERRORS, "count", "count", ("probe",)),
)
