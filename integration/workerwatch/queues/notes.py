"""The group's side of the queue: a note on the backlog of the queue a group consumes.

A group whose workers are all idle or stalled while its queue holds work says so in its
reason (``judge.verdict.judge_group`` adds the note).
"""

from __future__ import annotations

from workerwatch import log
from workerwatch.config import Config
from workerwatch.config.model import sqs_queue_name
from workerwatch.observations import MetricSample
from workerwatch.output import catalogue
from workerwatch.queues import swf
from workerwatch.queues.stuck import level_key
from workerwatch.units import human_duration


def _plural(n: float, word: str) -> str:
    return f"{n:.0f} {word}" + ("" if n == 1 else "s")


def group_notes(config: Config, samples: list[MetricSample]) -> dict[str, str]:
    """Per group with ``consumes:``, a note on its queue's backlog when work is pending."""
    index = {level_key(s.name, s.attributes): s for s in samples}
    notes: dict[str, str] = {}
    for group in config.groups:
        consumes = group.consumes
        if consumes is None:
            continue
        parts: list[str] = []
        if consumes.swf_domain is not None and consumes.task_list is not None:
            kind = consumes.task_kind
            where = {"swf.domain": consumes.swf_domain, "swf.taskList": consumes.task_list}
            if not swf.configured(config.swf, consumes.swf_domain, consumes.task_list, kind):
                log.warn(
                    f"group {group.name} consumes {kind} tasks of "
                    f"{consumes.swf_domain}/{consumes.task_list}, which the swf: section does "
                    "not sample; its reason cannot mention that backlog"
                )
            name = (
                catalogue.SWF_PENDING_ACTIVITY
                if kind == "activity"
                else catalogue.SWF_PENDING_DECISION
            )
            pending = index.get(level_key(name, where))
            if pending is not None and pending.value > 0:
                stuck = index.get(level_key(catalogue.SWF_STUCK, {**where, "swf.taskKind": kind}))
                least = "at least " if pending.attributes.get("swf.truncated") else ""
                text = (
                    f"backlog: {least}{_plural(pending.value, kind + ' task')} pending in "
                    f"{consumes.swf_domain}/{consumes.task_list}"
                )
                if stuck is not None and stuck.value >= 1:
                    text += f", not decreasing for {human_duration(stuck.value)}"
                parts.append(text)
        if consumes.sqs_queue is not None:
            queue = sqs_queue_name(consumes.sqs_queue)
            names = {sqs_queue_name(q) for q in (config.sqs.queues if config.sqs else [])}
            if queue not in names:
                log.warn(
                    f"group {group.name} consumes SQS queue {queue}, which the sqs: section "
                    "does not sample; its reason cannot mention that backlog"
                )
            visible = index.get(level_key(catalogue.SQS_VISIBLE, {"sqs.queue": queue}))
            if visible is not None and visible.value > 0:
                stuck = index.get(level_key(catalogue.SQS_STUCK, {"sqs.queue": queue}))
                text = f"backlog: {_plural(visible.value, 'message')} visible in {queue}"
                if stuck is not None and stuck.value >= 1:
                    text += f", not decreasing for {human_duration(stuck.value)}"
                parts.append(text)
        if parts:
            notes[group.name] = "; ".join(parts)
    return notes
