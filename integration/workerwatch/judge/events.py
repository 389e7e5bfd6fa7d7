"""Transition events: a worker became stalled, recovered, disappeared or restarted; and
the evidence about a stall when it could not be captured in the run that reported it."""

from __future__ import annotations

from typing import Any

from workerwatch.judge.states import STALLED, WorkerVerdict
from workerwatch.sanitize import MAX_ATTRIBUTE, clean_text


def transition_event(verdict: WorkerVerdict, what: str, detail: str = "") -> dict[str, Any]:
    """A v4 event for a state change (stalled, recovered, disappeared, restarted) or the
    late evidence of a stall (evidence)."""
    if what == "restarted":
        detail = f"{detail}{verdict.pid}"
    summary = f"{verdict.name} {what}: {detail or verdict.reason}"
    return {
        "summary": clean_text(summary, 4000),
        "category": "workerwatch",
        "attributes": {
            "worker.name": verdict.name,
            "worker.group": verdict.group,
            "process.pid": verdict.pid,
            "worker.state": verdict.state,
            "worker.previousState": verdict.previous_state or "none",
            "worker.reason": clean_text(verdict.reason, 4000),
            "workerwatch.transition": what,
        },
    }


def transitions(verdict: WorkerVerdict) -> list[dict[str, Any]]:
    """The events a verdict's change of state calls for (a restart is told apart by naming)."""
    if verdict.state == STALLED and verdict.previous_state != STALLED:
        return [transition_event(verdict, "stalled")]
    if verdict.previous_state == STALLED and verdict.state != STALLED:
        return [transition_event(verdict, "recovered")]
    return []


def add_evidence(
    event: dict[str, Any],
    verdict: WorkerVerdict,
    source: str,
    stack: list[str],
    skipped: str | None = None,
    sockets: list[str] | None = None,
    seconds: float | None = None,
) -> None:
    """Put what was captured about a stalled worker on its event (innermost frame first).

    Each value is one attribute within the Metric API's 4,095-character limit; frames are
    joined with `` <- `` (caller after callee) because line breaks are not kept.
    """
    attributes = event["attributes"]
    attributes["worker.stackSource"] = source
    if stack:
        attributes["worker.stack"] = clean_text(" <- ".join(stack), MAX_ATTRIBUTE)
    if skipped:
        attributes["worker.stackSkipped"] = clean_text(skipped, MAX_ATTRIBUTE)
    if sockets:
        attributes["worker.sockets"] = clean_text("; ".join(sockets), MAX_ATTRIBUTE)
    if verdict.blocked_peer:
        attributes["worker.peer"] = clean_text(verdict.blocked_peer)
    if verdict.task_name:
        attributes["worker.task"] = clean_text(verdict.task_name)
    if seconds is not None:
        attributes["workerwatch.captureSeconds"] = round(seconds, 3)
