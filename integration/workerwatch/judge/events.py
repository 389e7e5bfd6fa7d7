"""Transition events: a worker became stalled, recovered, disappeared or restarted."""

from __future__ import annotations

from typing import Any

from workerwatch.judge.states import STALLED, WorkerVerdict
from workerwatch.sanitize import clean_text


def transition_event(verdict: WorkerVerdict, what: str, detail: str = "") -> dict[str, Any]:
    """A v4 event for a state change: stalled, recovered, disappeared, restarted."""
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
