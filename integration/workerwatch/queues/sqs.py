"""SQS backlog probe: queue depth from GetQueueAttributes, one call per queue per sample.

A queue given by name is resolved once with GetQueueUrl and the URL is kept in the state
(until region or endpoint change, or the queue stops existing); a queue given by URL is used
as is. The calls go through ``aws.ProbeRun`` (client, deadline, fault rules).
"""

from __future__ import annotations

from typing import Any

from workerwatch.config import Sqs
from workerwatch.config.model import sqs_queue_name
from workerwatch.observations import MetricSample
from workerwatch.output.catalogue import SQS_DELAYED, SQS_IN_FLIGHT, SQS_VISIBLE
from workerwatch.queues.aws import ProbeRun

# GetQueueAttributes names -> our metrics (SQS API reference, GetQueueAttributes).
ATTRIBUTES = {
    "ApproximateNumberOfMessages": SQS_VISIBLE,
    "ApproximateNumberOfMessagesNotVisible": SQS_IN_FLIGHT,
    "ApproximateNumberOfMessagesDelayed": SQS_DELAYED,
}


def _is_url(queue: str) -> bool:
    return queue.startswith(("http://", "https://"))


def _queue_url(response: dict[str, Any]) -> str:
    url = response["QueueUrl"]
    if not isinstance(url, str) or not _is_url(url):
        raise ValueError("QueueUrl is not a URL")
    return url


def _depths(response: dict[str, Any]) -> dict[str, int]:
    # SQS returns every attribute value as a string.
    attributes = response["Attributes"]
    out = {}
    for key in ATTRIBUTES:
        value = int(attributes[key])
        if value < 0:
            raise ValueError(f"{key} is negative")
        out[key] = value
    return out


def planned(section: Sqs, cache: dict[str, str] | None = None) -> int:
    """API calls the next sample makes: one per queue, plus one per name not yet resolved."""
    cache = cache or {}
    unresolved = sum(1 for q in section.queues if not _is_url(q) and q not in cache)
    return len(section.queues) + unresolved


def sample(section: Sqs, run: ProbeRun, now: float) -> None:
    """Make this sample's calls through ``run`` and hand it the metrics read."""
    for queue in section.queues:
        name = sqs_queue_name(queue)
        url = queue if _is_url(queue) else run.cache.get(name)
        if url is None:
            url = run.call("GetQueueUrl", name, _queue_url, scope=name, QueueName=name)
            if url is None:
                continue
            run.remember(name, url)
        depths = run.call(
            "GetQueueAttributes",
            name,
            _depths,
            scope=name,
            QueueUrl=url,
            AttributeNames=list(ATTRIBUTES),
        )
        if depths is None:
            if name in run.dead_scopes:
                run.forget(name)  # deleted (or recreated elsewhere): resolve again next time
            continue
        for key, metric in ATTRIBUTES.items():
            run.add(MetricSample(metric, depths[key], {"sqs.queue": name}))
