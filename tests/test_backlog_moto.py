"""The SWF and SQS probes against moto in server mode: a real HTTP server on loopback.

Work is really scheduled (a decider polls and answers with ScheduleActivityTask decisions)
and the counts come back through one-shot runs of the CLI, as the agent runs it. moto's
gaps are part of what is tested: it has no CountOpen/CountClosedWorkflowExecutions (HTTP 500
with an HTML body), which the probe detects once and reports, and it counts started
activity tasks as pending (moto/swf/models/__init__.py, count_pending_activity_tasks), so
a task only leaves the count when it completes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from workerwatch.config import from_data
from workerwatch.judge.memory import Probes
from workerwatch.queues import aws, cadence

from tests.fleet import run_integration
from tests.moto_server import MotoServer
from tests.v4 import check_line, find, write_config

# Registers the session-wide moto_server fixture (one server for every module using it).
pytest_plugins = ["tests.moto_server"]


# moto in server mode: slow to start and to answer (make test-fast skips these).
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_backlog_module():
    cadence._INFLIGHT.clear()
    aws.forget_clients()
    yield
    cadence._INFLIGHT.clear()
    aws.forget_clients()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Decider:
    """Just enough of a decider and a worker to put real tasks into moto's task lists."""

    def __init__(self, server: MotoServer, domain: str) -> None:
        self.swf = server.client("swf")
        self.domain = domain
        self.swf.register_domain(name=domain, workflowExecutionRetentionPeriodInDays="1")
        self.swf.register_workflow_type(
            domain=domain,
            name="Ping",
            version="1",
            defaultTaskList={"name": "DefaultTaskList"},
            defaultExecutionStartToCloseTimeout="3600",
            defaultTaskStartToCloseTimeout="3600",
            defaultChildPolicy="TERMINATE",
        )
        self.swf.register_activity_type(
            domain=domain,
            name="PingWorker",
            version="1",
            defaultTaskList={"name": "DefaultTaskList"},
            defaultTaskHeartbeatTimeout="3600",
            defaultTaskScheduleToStartTimeout="3600",
            defaultTaskScheduleToCloseTimeout="3600",
            defaultTaskStartToCloseTimeout="3600",
        )

    def start(self, workflow_id: str, task_list: str = "DefaultTaskList") -> None:
        self.swf.start_workflow_execution(
            domain=self.domain,
            workflowId=workflow_id,
            workflowType={"name": "Ping", "version": "1"},
            taskList={"name": task_list},
        )

    def decide(self, task_list: str = "DefaultTaskList", *, activities: int = 0) -> None:
        """Take one decision task; schedule activities, or complete the workflow if none."""
        task = self.swf.poll_for_decision_task(
            domain=self.domain, taskList={"name": task_list}, identity="test-decider"
        )
        assert task.get("taskToken"), "no decision task to take"
        if activities:
            decisions = [
                {
                    "decisionType": "ScheduleActivityTask",
                    "scheduleActivityTaskDecisionAttributes": {
                        "activityType": {"name": "PingWorker", "version": "1"},
                        "activityId": f"a{i}",
                    },
                }
                for i in range(activities)
            ]
        else:
            decisions = [
                {
                    "decisionType": "CompleteWorkflowExecution",
                    "completeWorkflowExecutionDecisionAttributes": {},
                }
            ]
        self.swf.respond_decision_task_completed(taskToken=task["taskToken"], decisions=decisions)

    def work_one(self) -> None:
        task = self.swf.poll_for_activity_task(
            domain=self.domain, taskList={"name": "DefaultTaskList"}, identity="test-worker"
        )
        assert task.get("taskToken"), "no activity task to take"
        self.swf.respond_activity_task_completed(taskToken=task["taskToken"], result="ok")


def _config(tmp_path: Path, server: MotoServer, **sections: Any) -> Path:
    return write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "none", "match": {"cmdline": "never-matches-anything-xyz"}}],
            **sections,
        },
    )


def _err_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[ERR]")]


def _one(payload: dict[str, Any], name: str, **attrs: Any) -> float:
    found = find(payload, name, **attrs)
    assert len(found) == 1, (name, attrs, found)
    return found[0]["value"]


def test_swf_pending_counts_from_real_scheduling(tmp_path, moto_server):
    domain = _unique("Publish")
    decider = Decider(moto_server, domain)
    for i in range(3):
        decider.start(f"wf-{i}")
    decider.decide(activities=4)  # one workflow's decision: four activity tasks
    decider.start("cron_FiveMinute", task_list="canary")
    decider.decide("canary")  # the canary completes
    section = {
        "endpoint_url": moto_server.url,
        "sample_every": 0.1,  # every run samples
        "timeout": 3,
        "domains": [
            {
                "name": domain,
                "activity_task_lists": ["DefaultTaskList", "NeverUsed"],
                "decision_task_lists": ["DefaultTaskList"],
                "canaries": [{"workflow_id": "cron_FiveMinute", "expect_every": 300}],
            }
        ],
    }
    config = _config(tmp_path, moto_server, swf=section)
    env = moto_server.env()

    out, err = run_integration(config, env=env)
    payload = check_line(out)
    tl = {"swf.domain": domain, "swf.taskList": "DefaultTaskList"}
    assert _one(payload, "workerwatch.swf.pendingActivityTasks", **tl) == 4
    assert _one(payload, "workerwatch.swf.pendingDecisionTasks", **tl) == 2
    unused = {"swf.domain": domain, "swf.taskList": "NeverUsed"}
    assert _one(payload, "workerwatch.swf.pendingActivityTasks", **unused) == 0
    canary = _one(payload, "workerwatch.swf.canary.secondsSinceCompleted", **{"swf.domain": domain})
    assert 0 <= canary < 60
    # moto's gap, detected and said once: the counts it lacks are missing, not fatal.
    (line,) = _err_lines(err)
    assert "does not implement CountClosedWorkflowExecutions, CountOpenWorkflowExecutions" in line
    assert not find(payload, "workerwatch.swf.openWorkflows")
    assert not find(payload, "workerwatch.swf.timedOutWorkflows")
    assert _one(payload, "workerwatch.integration.errors", probe="swf") == 1

    # A worker completes one task (moto counts a started task as pending until then).
    decider.work_one()
    out, err = run_integration(config, env=env)
    payload = check_line(out)
    assert not _err_lines(err), "the missing operations are not asked again"
    assert _one(payload, "workerwatch.swf.pendingActivityTasks", **tl) == 3
    stuck = {**tl, "swf.taskKind": "activity"}
    assert _one(payload, "workerwatch.swf.backlogStuckSeconds", **stuck) == 0, "it went down"
    decision_stuck = {**tl, "swf.taskKind": "decision"}
    # Completing the activity scheduled a decision task: the decision count did not go down.
    assert _one(payload, "workerwatch.swf.pendingDecisionTasks", **tl) == 3
    assert _one(payload, "workerwatch.swf.backlogStuckSeconds", **decision_stuck) > 0, "not reset"
    assert not find(payload, "workerwatch.integration.errors", probe="swf")


def test_swf_unknown_domain_against_moto(moto_server, monkeypatch):
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    missing = _unique("Missing")
    config = from_data(
        {
            "groups": [{"name": "none", "match": {"cmdline": "never-matches-anything-xyz"}}],
            "swf": {
                "endpoint_url": moto_server.url,
                "domains": [{"name": missing, "activity_task_lists": ["DefaultTaskList"]}],
            },
        }
    )
    outcome = cadence.collect(config, Probes(), time.time(), time.monotonic() + 10)
    ((probe, message),) = outcome.errors
    assert probe == "swf" and f"Unknown domain: {missing}" in message
    assert "2 not made" in message, "the rest of an unknown domain is skipped"
    assert not outcome.metrics


def test_sqs_depths_by_name_and_url(tmp_path, moto_server):
    sqs = moto_server.client("sqs")
    by_name = _unique("starter")
    by_url = _unique("worker")
    name_url = sqs.create_queue(QueueName=by_name)["QueueUrl"]
    direct_url = sqs.create_queue(QueueName=by_url)["QueueUrl"]
    for _ in range(3):
        sqs.send_message(QueueUrl=name_url, MessageBody="x")
    sqs.send_message(QueueUrl=name_url, MessageBody="later", DelaySeconds=600)
    sqs.receive_message(QueueUrl=name_url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    missing = _unique("gone")
    section = {
        "endpoint_url": moto_server.url,
        "sample_every": 1,
        "queues": [by_name, direct_url, missing],
    }
    config = _config(tmp_path, moto_server, sqs=section)
    out, err = run_integration(config, env=moto_server.env())
    payload = check_line(out)
    assert _one(payload, "workerwatch.sqs.visibleMessages", **{"sqs.queue": by_name}) == 2
    assert _one(payload, "workerwatch.sqs.inFlightMessages", **{"sqs.queue": by_name}) == 1
    assert _one(payload, "workerwatch.sqs.delayedMessages", **{"sqs.queue": by_name}) == 1
    assert _one(payload, "workerwatch.sqs.visibleMessages", **{"sqs.queue": by_url}) == 0
    assert _one(payload, "workerwatch.sqs.sampleAgeSeconds", **{"sqs.queue": by_name}) == 0
    assert not find(payload, "workerwatch.sqs.visibleMessages", **{"sqs.queue": missing})
    (line,) = _err_lines(err)
    assert line.startswith("[ERR] sqs backlog probe: ") and f"GetQueueUrl {missing}" in line
    assert "does not exist" in line
    assert _one(payload, "workerwatch.integration.errors", probe="sqs") == 1
    assert not [m for m in payload["data"][0]["metrics"] if m["name"].startswith("workerwatch.swf")]


def test_sqs_backlog_stuck_with_a_controlled_clock(tmp_path, moto_server, monkeypatch):
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    sqs = moto_server.client("sqs")
    queue = _unique("stuck")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    config = from_data(
        {
            "state_dir": str(tmp_path),
            "groups": [
                {
                    "name": "starters",
                    "match": {"cmdline": "never-matches-anything-xyz"},
                    "consumes": {"sqs_queue": queue},
                }
            ],
            "sqs": {"endpoint_url": moto_server.url, "sample_every": 60, "queues": [queue]},
        }
    )
    state = Probes()
    t0 = 1_800_000_000.0

    def run(offset: float) -> tuple[dict[str, float], dict[str, str]]:
        outcome = cadence.collect(config, state, t0 + offset, time.monotonic() + 10)
        assert not outcome.errors, outcome.errors
        return {s.name: s.value for s in outcome.metrics}, outcome.group_notes

    sqs.send_message(QueueUrl=url, MessageBody="x")
    values, notes = run(0)
    assert values["workerwatch.sqs.visibleMessages"] == 1
    assert values["workerwatch.sqs.backlogStuckSeconds"] == 0
    assert notes == {"starters": f"backlog: 1 message visible in {queue}"}
    assert state.sqs.urls == {queue: url}, "the resolved URL is kept"
    sqs.send_message(QueueUrl=url, MessageBody="y")
    values, notes = run(600)
    assert values["workerwatch.sqs.backlogStuckSeconds"] == 600
    assert notes["starters"] == f"backlog: 2 messages visible in {queue}, not decreasing for 10 min"
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    values, _ = run(660)
    assert values["workerwatch.sqs.visibleMessages"] == 1
    assert values["workerwatch.sqs.inFlightMessages"] == 1
    assert values["workerwatch.sqs.backlogStuckSeconds"] == 0
