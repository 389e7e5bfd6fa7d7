"""End to end: the elife-bot incident replayed on loopback, as ``make demo`` shows it.

Real processes and sockets throughout: moto serves SWF (server mode), a decider and a cron
(the ``Ping`` canary, workflowId ``cron_FiveMinute``) drive four workers that long-poll it
and share one ``worker.log`` (two use the heartbeat library, two are log-only), and an FTP
server that accepts and never answers. The integration runs as the agent runs it, one
fresh ``python -m workerwatch`` every ``INTERVAL``; every payload line is checked against
the v4 protocol.

Asserted: the worker that takes the FTPArticle task, and only it, is reported stalled
within ``stall_after`` + one interval of going silent (plus the start-up of a one-shot run
on a loaded machine), with the peer it waits on and a state-change event; the backlog
metrics see the pending tasks; once every worker is hung the canary's age grows; and no
process of the fleet survives the test.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path

import psutil
import pytest

from demo.agent import Agent, AgentRun
from demo.fleet import SimFleet
from tests.v4 import check_line, write_config

pytest_plugins = ["tests.moto_server"]
pytestmark = pytest.mark.e2e

WORKERS = 4
INTERVAL = 3.0
# Not a multiple of INTERVAL on purpose: the verdict needs stall_after between the run that
# last saw activity and a later run, and with exactly 2 intervals a run starting a little
# early would miss it by milliseconds and push detection one interval later.
STALL_AFTER = 5.0
# A one-shot run's clock starts after interpreter start-up and imports: on a loaded 2-core
# machine that moves a run's "now" by up to a second or two against the schedule.
JITTER = 2.0
# The first run that can see the silence is at most one interval after it began; a verdict
# then needs stall_after, which two intervals cover.
DETECT_WITHIN = STALL_AFTER + INTERVAL + JITTER

PENDING = "workerwatch.swf.pendingActivityTasks"
CANARY = "workerwatch.swf.canary.secondsSinceCompleted"


def _run(agent: Agent, first: bool = False) -> AgentRun:
    run = agent.run_once() if first else agent.run()
    assert run.lines, f"run {run.number} printed nothing: {run.stderr}"
    for line in run.lines:
        check_line(line)
    return run


def _stalled(run: AgentRun, group: str = "worker") -> set[int]:
    return {pid for pid, state in run.states(group).items() if state == "stalled"}


def _stall_events(runs: list[AgentRun]) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for run in runs:
        for event in run.events:
            attrs = event["attributes"]
            if attrs["workerwatch.transition"] == "stalled":
                found.setdefault(attrs["process.pid"], []).append(event)
    return found


def _fleet_processes(tag: str) -> list[int]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        if tag in " ".join(proc.info["cmdline"] or ()):
            out.append(proc.pid)
    return out


def test_incident_replay(tmp_path: Path, moto_server) -> None:
    domain = f"Publish-{uuid.uuid4().hex[:8]}"  # the moto server is shared by the session
    env = {**os.environ, **moto_server.env()}
    fleet = SimFleet(
        tmp_path / "fleet", moto_server.url, workers=WORKERS, domain=domain, env=moto_server.env()
    )
    with fleet:
        fleet.wait_ready(timeout=60)
        assert fleet.ftp is not None
        workers = {m.pid: m for m in fleet.workers}
        config = write_config(
            tmp_path / "config.yml", fleet.integration_config(stall_after=STALL_AFTER)
        )
        agent = Agent(config, INTERVAL, env)

        # Healthy fleet: everyone found, nobody stalled, the canary completing.
        first = _run(agent, first=True)
        assert set(first.states()) == set(workers)
        healthy = _run(agent)
        assert set(healthy.states().values()) <= {"idle", "working"}, healthy.reasons()
        assert set(healthy.states("decider").values()) <= {"idle", "working"}
        assert healthy.value("workerwatch.group.running", **{"worker.group": "worker"}) == WORKERS
        canary_ok = healthy.value(CANARY, **{"swf.workflowId": "cron_FiveMinute"})
        assert canary_ok is not None and canary_ok < fleet.ping_every + 2 * INTERVAL

        # The incident: one FTPArticle task; the worker that takes it blocks in recv.
        fleet.inject_ftp()
        (hung,) = fleet.wait_hung(1)
        silent_since = fleet.ftp.accept_times[0]
        detected = None
        while detected is None and time.time() - silent_since < DETECT_WITHIN + INTERVAL:
            run = _run(agent)
            assert _stalled(run) <= {hung}, f"another worker reported stalled: {run.reasons()}"
            if _stalled(run):
                detected = run
        assert detected is not None, f"worker {hung} never reported stalled: {run.reasons()}"
        delay = detected.now - silent_since
        assert delay <= DETECT_WITHIN, f"reported {delay:.1f} s after going silent"

        reason = detected.reasons()[hung]
        assert f"blocked in recvfrom on 127.0.0.1:{fleet.ftp.port}" in reason, reason
        assert "no log write" in reason, reason
        # The event carries the reason with its numbers.
        full = [
            e["attributes"]["worker.reason"]
            for e in detected.events
            if e["attributes"]["process.pid"] == hung and "stalled" in e["summary"]
        ]
        assert full and "no log write for" in full[0] and "cpu +0.00 s" in full[0], full
        if workers[hung].heartbeat:
            assert "busy on FTPArticle" in reason, reason
            task = detected.metrics(
                "workerwatch.worker.task.runningSeconds", **{"process.pid": hung}
            )
            assert task and task[0]["attributes"]["task.name"] == "FTPArticle"
        blocked = detected.metrics("workerwatch.worker.blocked.seconds", **{"process.pid": hung})
        assert blocked[0]["attributes"]["blocked.peer"] == f"127.0.0.1:{fleet.ftp.port}"
        others = {pid: s for pid, s in detected.states().items() if pid != hung}
        assert set(others.values()) <= {"idle", "working"}, detected.reasons()
        assert not _stalled(detected, "decider")
        assert detected.value("workerwatch.group.stalled", **{"worker.group": "worker"}) == 1
        (event,) = _stall_events([detected])[hung]
        assert event["attributes"]["worker.previousState"] in ("idle", "working")
        assert "recvfrom" in event["summary"]
        # moto counts a started task as pending until it completes (docs/backlog.md), so
        # the hung FTPArticle task stays in the count.
        assert (detected.value(PENDING, **{"swf.taskList": "DefaultTaskList"}) or 0) >= 1

        # Every worker hung: nothing completes the canary any more, and work piles up.
        for _ in range(WORKERS - 1):
            fleet.inject_ftp()
        all_hung = fleet.wait_hung(WORKERS)
        assert set(all_hung) == set(workers)
        everyone_silent = max(fleet.ftp.accept_times)
        # moto returns a domain's closures oldest first and the canary reads one page of
        # 20: past 20 closures the reading would be stale (docs/backlog.md, moto).
        assert fleet.closed_executions() < 20
        after: list[AgentRun] = []
        while len(after) < 3 or _stalled(after[-1]) != set(workers):
            assert time.time() - everyone_silent < DETECT_WITHIN + 2 * INTERVAL, (
                f"not every worker reported stalled: {after[-1].reasons() if after else None}"
            )
            after.append(_run(agent))
        ages = [r.value(CANARY, **{"swf.workflowId": "cron_FiveMinute"}) for r in after]
        assert None not in ages, "the canary was not read"
        assert all(b > a for a, b in itertools.pairwise(ages)), ages
        assert ages[-1] >= after[-1].now - everyone_silent - 1, ages
        pending = [r.value(PENDING, **{"swf.taskList": "DefaultTaskList"}) for r in after]
        # The four hung tasks (started, still counted by moto) plus work nobody takes.
        assert pending[-1] is not None and pending[-1] > WORKERS, pending
        assert not _stalled(after[-1], "decider"), "the decider still polls"

        # One stalled event per worker over the whole run, never repeated.
        events = _stall_events(agent.runs)
        assert {pid: len(e) for pid, e in events.items()} == dict.fromkeys(workers, 1)

    pids = fleet.pids()
    assert not [p for p in pids if psutil.pid_exists(p)], "a fleet process survived"
    assert not _fleet_processes(fleet.tag)
