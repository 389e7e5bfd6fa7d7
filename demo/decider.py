"""The decider, written like elife-bot's decider.py: poll decision tasks, schedule activities.

Each workflow type runs its activities one after the other (``common.WORKFLOWS``); the
workflow input is passed on to every activity, which is how an FTPArticle activity learns
its FTP endpoint. A failed or timed-out activity fails the workflow.

Usage: python -m demo.decider --fleet TAG --endpoint URL --domain NAME
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

from demo.common import TASK_LIST, WORKFLOWS, Flag, die_with_parent, elife_logger, swf_client

_DONE = "ActivityTaskCompleted"
_BAD = ("ActivityTaskFailed", "ActivityTaskTimedOut", "ScheduleActivityTaskFailed")


def decide(workflow: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions for one decision task, from the workflow's history."""
    steps = WORKFLOWS.get(workflow, [])
    types = [e["eventType"] for e in events]
    if any(t in _BAD for t in types):
        return [
            {
                "decisionType": "FailWorkflowExecution",
                "failWorkflowExecutionDecisionAttributes": {"reason": "activity failed"},
            }
        ]
    scheduled = types.count("ActivityTaskScheduled")
    done = types.count(_DONE)
    if done >= len(steps):
        return [
            {
                "decisionType": "CompleteWorkflowExecution",
                "completeWorkflowExecutionDecisionAttributes": {"result": "done"},
            }
        ]
    if scheduled > done:
        return []  # the current step is still running
    started = next(e for e in events if e["eventType"] == "WorkflowExecutionStarted")
    data = started.get("workflowExecutionStartedEventAttributes", {}).get("input", "{}")
    step = steps[done]
    return [
        {
            "decisionType": "ScheduleActivityTask",
            "scheduleActivityTaskDecisionAttributes": {
                "activityType": {"name": step, "version": "1"},
                "activityId": f"{step}.{done + 1}",
                "taskList": {"name": TASK_LIST},
                "input": data,
            },
        }
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.decider")
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--domain", required=True)
    args = parser.parse_args(argv)
    die_with_parent()

    identity = f"decider_{os.getpid()}"
    logger = elife_logger("decider.log", identity)
    client = swf_client(args.endpoint)
    flag = Flag()
    while flag.green:
        logger.info("polling for decision task...")
        try:
            task = client.poll_for_decision_task(
                domain=args.domain,
                taskList={"name": TASK_LIST},
                identity=identity,
                maximumPageSize=100,
            )
        except Exception as exc:
            logger.error("poll failed: %s", exc)
            time.sleep(1)
            continue
        token = task.get("taskToken")
        if not token:
            continue
        workflow = task["workflowType"]["name"]
        decisions = decide(workflow, task.get("events", []))
        kinds = ", ".join(d["decisionType"] for d in decisions) or "nothing to do"
        logger.info("%s %s: %s", workflow, task["workflowExecution"]["workflowId"], kinds)
        try:
            client.respond_decision_task_completed(taskToken=token, decisions=decisions)
        except Exception as exc:
            logger.error("respond_decision_task_completed failed: %s", exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
