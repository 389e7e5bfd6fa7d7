"""The metric catalogue: every metric the integration may emit, by name.

``definitions/metrics.yml`` is the human-facing copy (with meanings) used by the alert
definitions, the dashboard and the README; a test keeps the two in step in both
directions. Emitters take names from here so a typo fails loudly instead of creating a
metric nobody alerts on.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKER_ATTRS = ("worker.name", "worker.group", "process.pid", "worker.state", "worker.reason")
GROUP_ATTRS = ("worker.group",)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # "gauge" or "count" (v4 types we compute ourselves)
    unit: str
    attributes: tuple[str, ...]


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in specs}


W = WORKER_ATTRS
SWF_TL = ("swf.domain", "swf.taskList")

CATALOGUE: dict[str, MetricSpec] = _specs(
    # per worker
    MetricSpec("workerwatch.worker.up", "gauge", "boolean", W),
    MetricSpec("workerwatch.worker.stalled", "gauge", "boolean", W),
    MetricSpec("workerwatch.worker.log.silentSeconds", "gauge", "seconds", W),
    MetricSpec("workerwatch.worker.log.bytesWritten", "count", "bytes", W),
    MetricSpec("workerwatch.worker.heartbeat.ageSeconds", "gauge", "seconds", W),
    MetricSpec("workerwatch.worker.cpu.seconds", "count", "seconds", W),
    MetricSpec("workerwatch.worker.mainThread.wakeups", "count", "count", W),
    MetricSpec(
        "workerwatch.worker.blocked.seconds",
        "gauge",
        "seconds",
        (*W, "blocked.syscall", "blocked.peer"),
    ),
    MetricSpec("workerwatch.worker.restarts", "count", "count", W),
    MetricSpec("workerwatch.worker.task.runningSeconds", "gauge", "seconds", (*W, "task.name")),
    # per group
    MetricSpec("workerwatch.group.running", "gauge", "count", GROUP_ATTRS),
    MetricSpec("workerwatch.group.expected", "gauge", "count", GROUP_ATTRS),
    MetricSpec("workerwatch.group.missing", "gauge", "count", GROUP_ATTRS),
    MetricSpec("workerwatch.group.stalled", "gauge", "count", GROUP_ATTRS),
    # queue side (SWF)
    MetricSpec(
        "workerwatch.swf.pendingActivityTasks", "gauge", "count", (*SWF_TL, "swf.truncated")
    ),
    MetricSpec(
        "workerwatch.swf.pendingDecisionTasks", "gauge", "count", (*SWF_TL, "swf.truncated")
    ),
    MetricSpec("workerwatch.swf.openWorkflows", "gauge", "count", ("swf.domain", "swf.truncated")),
    MetricSpec(
        "workerwatch.swf.timedOutWorkflows", "gauge", "count", ("swf.domain", "swf.truncated")
    ),
    MetricSpec(
        "workerwatch.swf.backlogStuckSeconds", "gauge", "seconds", (*SWF_TL, "swf.taskKind")
    ),
    MetricSpec(
        "workerwatch.swf.canary.secondsSinceCompleted",
        "gauge",
        "seconds",
        ("swf.domain", "swf.workflowId"),
    ),
    MetricSpec("workerwatch.swf.sampleAgeSeconds", "gauge", "seconds", ("swf.domain",)),
    # queue side (SQS)
    MetricSpec("workerwatch.sqs.visibleMessages", "gauge", "count", ("sqs.queue",)),
    MetricSpec("workerwatch.sqs.inFlightMessages", "gauge", "count", ("sqs.queue",)),
    MetricSpec("workerwatch.sqs.delayedMessages", "gauge", "count", ("sqs.queue",)),
    MetricSpec("workerwatch.sqs.backlogStuckSeconds", "gauge", "seconds", ("sqs.queue",)),
    MetricSpec("workerwatch.sqs.sampleAgeSeconds", "gauge", "seconds", ("sqs.queue",)),
    # the integration itself
    MetricSpec("workerwatch.integration.durationSeconds", "gauge", "seconds", ()),
    MetricSpec("workerwatch.integration.errors", "count", "count", ("probe",)),
)
