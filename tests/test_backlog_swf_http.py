"""The SWF probe against a fake SWF endpoint speaking the real JSON protocol.

pytest-httpserver answers ``POST /`` with ``X-Amz-Target: SimpleWorkflowService.<Op>`` and
``Content-Type: application/x-amz-json-1.0`` (botocore swf service-2.json metadata), so
boto3 talks to it exactly as to SWF. This is how the faults moto cannot produce are made:
truncated counts, throttling, HTTP 500, a response that never comes, malformed JSON.
Fake credentials with a planted secret are in the environment; no output may contain it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from workerwatch.collector import Collector
from workerwatch.config import Canary, Config, from_data
from workerwatch.judge import memory
from workerwatch.judge.memory import Probes, SavedState
from workerwatch.output.catalogue import SWF_CANARY
from workerwatch.queues import aws, cadence
from workerwatch.state import FileStateStore, StateStore

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.moto_server import isolated_aws_env
from tests.v4 import check_line, find, write_config

# boto3 against a fake SWF endpoint, timeouts waited out: slow (make test-fast skips these).
pytestmark = pytest.mark.slow

SECRET = "wwPLANTEDsecretKEY0123456789abcdefghijSECRET"
TOKEN = "wwPLANTEDsessionTOKEN0123456789TOKEN"
ACCESS_KEY = "AKIAFAKEFORTESTS0001"
JSON_TYPE = "application/x-amz-json-1.0"
Handler = Callable[[dict[str, Any]], tuple[int, str]]


def _ok(body: dict[str, Any]) -> tuple[int, str]:
    return 200, json.dumps(body)


def fault(code: str, message: str = "", status: int = 400) -> tuple[int, str]:
    # AWS JSON errors carry "<namespace>#<Code>"; botocore keeps what follows the '#'.
    return status, json.dumps(
        {"__type": f"com.amazonaws.swf.base.model#{code}", "message": message}
    )


class FakeSwf:
    """A scriptable SWF endpoint; records each call and any protocol deviation."""

    def __init__(self, server: HTTPServer) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.protocol_errors: list[str] = []
        self.handlers: dict[str, Handler] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{server.port}"
        self.set_counts()
        server.expect_request("/", method="POST").respond_with_handler(self._handle)

    def set_counts(self, **counts: int) -> None:
        """Answer every Count* with a count (per operation name, default 0)."""
        for op in (
            "CountPendingActivityTasks",
            "CountPendingDecisionTasks",
            "CountOpenWorkflowExecutions",
            "CountClosedWorkflowExecutions",
        ):
            value = counts.get(op, 0)
            self.handlers[op] = lambda body, value=value: _ok({"count": value, "truncated": False})
        self.handlers.setdefault(
            "ListClosedWorkflowExecutions", lambda body: _ok({"executionInfos": []})
        )

    def hang(self, op: str) -> None:
        def handler(body: dict[str, Any]) -> tuple[int, str]:
            self.release.wait(30)
            return _ok({"count": 0})

        self.handlers[op] = handler

    def ops(self) -> list[str]:
        with self.lock:
            return [op for op, _ in self.calls]

    def _handle(self, request: Request) -> Response:
        target = request.headers.get("X-Amz-Target", "")
        auth = request.headers.get("Authorization", "")
        if request.headers.get("Content-Type") != JSON_TYPE:
            self.protocol_errors.append(f"content type {request.headers.get('Content-Type')}")
        if not target.startswith("SimpleWorkflowService."):
            self.protocol_errors.append(f"target {target!r}")
        if f"Credential={ACCESS_KEY}/" not in auth or "/us-east-1/swf/aws4_request" not in auth:
            self.protocol_errors.append(f"authorization {auth[:80]!r}")
        op = target.split(".", 1)[-1]
        body = json.loads(request.get_data() or b"{}")
        with self.lock:
            self.calls.append((op, body))
        handler = self.handlers.get(op)
        if handler is None:
            status, text = fault("UnknownOperationException", op)
        else:
            status, text = handler(body)
        return Response(text, status=status, content_type=JSON_TYPE)


@pytest.fixture(scope="module")
def swf_server() -> Iterator[HTTPServer]:
    # Our own threaded server: a handler that never answers must not block other requests
    # (or other modules' use of the shared httpserver fixture).
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def fake(swf_server: HTTPServer) -> Iterator[FakeSwf]:
    swf_server.clear()
    fake_swf = FakeSwf(swf_server)
    yield fake_swf
    fake_swf.release.set()  # let hung handlers finish before the server is cleared
    assert not fake_swf.protocol_errors, fake_swf.protocol_errors


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = isolated_aws_env(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(autouse=True)
def _fresh_backlog_module() -> Iterator[None]:
    cadence._INFLIGHT.clear()
    aws.forget_clients()
    yield
    cadence._INFLIGHT.clear()
    aws.forget_clients()


def _domain(name: str = "Publish", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "activity_task_lists": ["DefaultTaskList"],
        "decision_task_lists": ["DefaultTaskList"],
        "timed_out_window": 900,
        **extra,
    }


def _config(tmp_path: Path, fake: FakeSwf, tag: str, **swf: Any) -> Path:
    section = {"endpoint_url": fake.url, "sample_every": 60, "timeout": 2, **swf}
    section.setdefault("domains", [_domain()])
    deadline = section.pop("deadline", 20)
    return write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "deadline": deadline,
            "groups": [{"name": "fleet", "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}}],
            "swf": section,
        },
    )


def _run(config: Path, env: dict[str, str]) -> tuple[dict[str, Any], str, float]:
    started = time.monotonic()
    out, err = run_integration(config, env=env)
    elapsed = time.monotonic() - started
    for secret in (SECRET, TOKEN):
        assert secret not in out and secret not in err, "a secret leaked into the output"
        for path in config.parent.glob("state/*"):
            assert secret not in path.read_text(errors="replace"), f"secret in {path}"
    return check_line(out), err, elapsed


def _errors(payload: dict[str, Any], probe: str) -> int:
    found = find(payload, "workerwatch.integration.errors", probe=probe)
    return sum(m["value"] for m in found)


def _err_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[ERR]")]


def _value(payload: dict[str, Any], name: str, **attrs: Any) -> Any:
    found = find(payload, name, **attrs)
    assert len(found) == 1, (name, attrs, found)
    return found[0]


def test_counts_truncation_and_canary_through_the_cli(tmp_path, fake, aws_env, tag):
    now = time.time()
    fake.handlers["CountPendingActivityTasks"] = lambda body: _ok(
        {"count": 1000, "truncated": True}
    )
    fake.handlers["CountPendingDecisionTasks"] = lambda body: _ok({"count": 2, "truncated": False})
    fake.handlers["CountOpenWorkflowExecutions"] = lambda body: _ok({"count": 12})
    fake.handlers["CountClosedWorkflowExecutions"] = lambda body: _ok(
        {"count": 3, "truncated": False}
    )

    def closed(wid: str, status: str, ago_s: float) -> dict[str, Any]:
        return {
            "execution": {"workflowId": wid, "runId": f"r{ago_s}"},
            "workflowType": {"name": "Ping", "version": "1"},
            "startTimestamp": now - ago_s - 5,
            "closeTimestamp": now - ago_s,
            "executionStatus": "CLOSED",
            "closeStatus": status,
        }

    # Newest first, as SWF returns them: a timed-out run, then the last completion, plus
    # another workflow's completion that the client-side filter must ignore.
    fake.handlers["ListClosedWorkflowExecutions"] = lambda body: _ok(
        {
            "executionInfos": [
                closed("other", "COMPLETED", 10),
                closed("cron_FiveMinute", "TIMED_OUT", 60),
                closed("cron_FiveMinute", "COMPLETED", 300),
            ]
        }
    )
    domain = _domain(canaries=[{"workflow_id": "cron_FiveMinute", "expect_every": 600}])
    payload, stderr, _ = _run(_config(tmp_path, fake, tag, domains=[domain]), aws_env)

    assert not _err_lines(stderr), stderr
    tl = {"swf.domain": "Publish", "swf.taskList": "DefaultTaskList"}
    activity = _value(payload, "workerwatch.swf.pendingActivityTasks", **tl)
    assert activity["value"] == 1000 and activity["attributes"]["swf.truncated"] is True
    decision = _value(payload, "workerwatch.swf.pendingDecisionTasks", **tl)
    assert decision["value"] == 2 and "swf.truncated" not in decision["attributes"]
    assert _value(payload, "workerwatch.swf.openWorkflows")["value"] == 12
    assert _value(payload, "workerwatch.swf.timedOutWorkflows")["value"] == 3
    canary = _value(payload, "workerwatch.swf.canary.secondsSinceCompleted")
    assert canary["attributes"]["swf.workflowId"] == "cron_FiveMinute"
    assert 295 <= canary["value"] <= 320
    for kind in ("activity", "decision"):
        stuck = _value(payload, "workerwatch.swf.backlogStuckSeconds", **{"swf.taskKind": kind})
        assert stuck["value"] == 0, "a first reading has no history"
    assert _value(payload, "workerwatch.swf.sampleAgeSeconds")["value"] == 0
    assert _errors(payload, "swf") == 0

    # The budget: one call per task list per kind, one per count, one per canary.
    assert sorted(fake.ops()) == sorted(
        [
            "CountPendingActivityTasks",
            "CountPendingDecisionTasks",
            "CountOpenWorkflowExecutions",
            "CountClosedWorkflowExecutions",
            "ListClosedWorkflowExecutions",
        ]
    )
    bodies = dict(fake.calls)
    assert bodies["CountPendingActivityTasks"] == {
        "domain": "Publish",
        "taskList": {"name": "DefaultTaskList"},
    }
    closed_q = bodies["CountClosedWorkflowExecutions"]
    assert closed_q["closeStatusFilter"] == {"status": "TIMED_OUT"}
    assert abs(closed_q["closeTimeFilter"]["oldestDate"] - (now - 900)) < 30
    assert "startTimeFilter" in bodies["CountOpenWorkflowExecutions"]
    listed = bodies["ListClosedWorkflowExecutions"]
    assert listed["executionFilter"] == {"workflowId": "cron_FiveMinute"}
    assert listed["maximumPageSize"] <= 20 and "closeStatusFilter" not in listed
    assert not listed.get("reverseOrder"), "SWF lists newest first by default"


def _throttled(body: dict[str, Any]) -> tuple[int, str]:
    return fault("ThrottlingException", "Rate exceeded")


FAULTS: dict[str, tuple[Callable[[FakeSwf], None], str]] = {
    "throttled": (
        lambda f: f.handlers.__setitem__("CountPendingActivityTasks", _throttled),
        "throttled: ThrottlingException (HTTP 400): Rate exceeded",
    ),
    "http-500": (
        lambda f: f.handlers.update(
            {op: (lambda body: (500, "<html>oops</html>")) for op in list(f.handlers)}
        ),
        "HTTP 500 without an AWS error body",
    ),
    # Two faults that cost one call (malformed answer) or one domain (unknown), in one run.
    "unknown-domain-and-malformed": (
        lambda f: f.handlers.update(
            {
                **{
                    op: (
                        lambda body, h=h: (
                            fault("UnknownResourceFault", f"Unknown domain: {body['domain']}")
                            if body.get("domain") == "Nope"
                            else h(body)
                        )
                    )
                    for op, h in list(f.handlers.items())
                },
                "CountOpenWorkflowExecutions": lambda body: (200, '{"count": 3, truncated'),
            }
        ),
        "Nope/DefaultTaskList: does not exist: UnknownResourceFault: Unknown domain: Nope",
    ),
    "credentials-rejected": (
        lambda f: f.handlers.__setitem__(
            "CountPendingActivityTasks",
            # A hostile or buggy endpoint echoing the secret: it must be redacted.
            lambda body: fault("UnrecognizedClientException", f"bad signature for {SECRET}"),
        ),
        "credentials rejected: UnrecognizedClientException",
    ),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_faults_cost_only_the_backlog_metrics(case, tmp_path, fake, aws_env, tag, fleet):
    worker = fleet.start("sleeper")
    wait_for(lambda: Path(f"/proc/{worker.pid}/cmdline").read_bytes().count(tag.encode()))
    setup, cause = FAULTS[case]
    setup(fake)
    two = case == "unknown-domain-and-malformed"
    domains = [_domain(), _domain("Nope")] if two else [_domain()]
    payload, stderr, _ = _run(_config(tmp_path, fake, tag, domains=domains), aws_env)

    errs = _err_lines(stderr)
    assert len(errs) == 1 and errs[0].startswith("[ERR] swf backlog probe: "), stderr
    assert cause in errs[0], errs[0]
    assert _errors(payload, "swf") == 1
    # The worker side is complete whatever the queue side did.
    ups = find(payload, "workerwatch.worker.up", **{"process.pid": worker.pid})
    assert len(ups) == 1 and ups[0]["value"] == 1, stderr
    assert find(payload, "workerwatch.group.running", **{"worker.group": "fleet"})

    pending = find(payload, "workerwatch.swf.pendingActivityTasks", **{"swf.domain": "Publish"})
    ops = fake.ops()
    if case in ("throttled", "credentials-rejected"):
        # The first call's answer stops the probe: no more calls this sample.
        assert set(ops) == {"CountPendingActivityTasks"}
        assert len(ops) <= 2  # standard retry mode: at most one retry
        assert "not made (" in errs[0]
        assert not pending
    elif case == "http-500":
        assert not pending
        assert "does not implement" not in errs[0], "nothing succeeded: not a missing operation"
    elif case == "unknown-domain-and-malformed":
        assert pending and pending[0]["value"] == 0
        assert not find(payload, "workerwatch.swf.pendingActivityTasks", **{"swf.domain": "Nope"})
        nope_calls = [op for op, body in fake.calls if body.get("domain") == "Nope"]
        assert len(nope_calls) == 1, "an unknown domain is asked once, then skipped"
        assert "CountOpenWorkflowExecutions Publish: malformed response" in errs[0]
        assert not find(payload, "workerwatch.swf.openWorkflows")
        assert find(payload, "workerwatch.swf.timedOutWorkflows", **{"swf.domain": "Publish"})
    if case == "credentials-rejected":
        assert "<redacted>" in errs[0]


@pytest.mark.parametrize(
    ("timeout", "deadline", "cause", "limit"),
    [
        # The read timeout fires first: the probe stops at the first unanswered call.
        (0.5, 20, "timed out: ReadTimeoutError", 6.0),
        # The run's deadline comes first: the call is abandoned in its thread.
        (30, 2, "run deadline reached while waiting for CountPendingActivityTasks", 5.0),
    ],
)
def test_a_response_that_never_comes(
    timeout, deadline, cause, limit, tmp_path, fake, aws_env, tag, fleet
):
    worker = fleet.start("sleeper")
    fake.hang("CountPendingActivityTasks")
    config = _config(tmp_path, fake, tag, timeout=timeout, deadline=deadline)
    payload, stderr, elapsed = _run(config, aws_env)

    assert elapsed < limit, f"run took {elapsed:.1f} s"
    errs = _err_lines(stderr)
    assert len(errs) == 1 and cause in errs[0], stderr
    assert _errors(payload, "swf") == 1
    assert find(payload, "workerwatch.worker.up", **{"process.pid": worker.pid}), stderr
    assert not find(payload, "workerwatch.swf.pendingActivityTasks")
    assert set(fake.ops()) == {"CountPendingActivityTasks"}


def _in_process_config(fake: FakeSwf, tmp_path: Path, **extra: Any) -> Config:
    data = {
        "state_dir": str(tmp_path / "state"),
        "groups": [{"name": "g", "match": {"cmdline": "never-matches-anything-xyz"}}],
        "swf": {
            "endpoint_url": fake.url,
            "sample_every": 60,
            "timeout": 2,
            "domains": [{"name": "Publish", "activity_task_lists": ["A"]}],
        },
        **extra,
    }
    return from_data(data)


def _round_trip(probes: Probes, now: float) -> Probes:
    """Through JSON and the saved-state checks, as the state file does between runs."""
    saved = json.loads(json.dumps(memory.to_json(SavedState(probes=probes))))
    loaded, dropped = memory.from_json(saved, now)
    assert dropped == []
    return loaded.probes


def test_canary_that_never_completed_reports_the_searched_span(tmp_path, fake, aws_env):
    fake.handlers["ListClosedWorkflowExecutions"] = lambda body: _ok({"executionInfos": []})
    config = _in_process_config(fake, tmp_path)
    domain = replace(
        config.swf.domains[0], canaries=[Canary(workflow_id="cron_FiveMinute", expect_every=600)]
    )
    config = replace(config, swf=replace(config.swf, domains=[domain]))
    outcome = cadence.collect(config, Probes(), 1_800_000_000.0, time.monotonic() + 10)
    assert not outcome.errors
    (canary,) = [s for s in outcome.metrics if s.name == SWF_CANARY]
    assert canary.value == 86400  # at least a day: the span searched
    assert canary.attributes == {"swf.domain": "Publish", "swf.workflowId": "cron_FiveMinute"}


def test_backlog_stuck_seconds_across_runs_with_a_controlled_clock(tmp_path, fake, aws_env):
    config = _in_process_config(fake, tmp_path)
    state = Probes()
    t0 = 1_800_000_000.0
    # (seconds after t0, pending count SWF answers, expected stuck seconds, sampled?)
    steps = [
        (0, 5, 0, True),  # first reading: no history
        (60, 5, 60, True),  # not decreasing
        (90, 99, 60, False),  # not due: last values again, no call
        (120, 7, 120, True),  # growing still counts as not decreasing
        (180, 3, 0, True),  # went down: workers consume, clock restarts
        (240, 3, 60, True),
        (300, 0, 0, True),  # empty
        (360, 4, 0, True),  # new backlog starts from zero
        (420, 4, 60, True),
    ]
    for offset, count, stuck, sampled in steps:
        fake.set_counts(CountPendingActivityTasks=count)
        before = len(fake.calls)
        outcome = cadence.collect(config, state, t0 + offset, time.monotonic() + 10)
        assert not outcome.errors
        # A round trip through JSON, as the state file does between runs.
        state = _round_trip(state, t0 + offset)
        made = len(fake.calls) - before
        assert made == (3 if sampled else 0), (offset, made)
        by_name = {s.name: s for s in outcome.metrics}
        assert by_name["workerwatch.swf.backlogStuckSeconds"].value == stuck, offset
        assert by_name["workerwatch.swf.backlogStuckSeconds"].attributes == {
            "swf.domain": "Publish",
            "swf.taskList": "A",
            "swf.taskKind": "activity",
        }
        age = by_name["workerwatch.swf.sampleAgeSeconds"].value
        assert age == (0 if sampled else 30), offset


def test_a_clock_that_goes_back_resamples(tmp_path, fake, aws_env):
    config = _in_process_config(fake, tmp_path)
    state = Probes()
    fake.set_counts(CountPendingActivityTasks=5)
    cadence.collect(config, state, 1_800_000_060.0, time.monotonic() + 10)
    before = len(fake.calls)
    outcome = cadence.collect(config, state, 1_800_000_000.0, time.monotonic() + 10)
    assert len(fake.calls) - before == 3
    stuck = [s for s in outcome.metrics if s.name == "workerwatch.swf.backlogStuckSeconds"]
    assert stuck[0].value == 0


def test_a_missing_operation_is_detected_once(tmp_path, fake, aws_env):
    """moto answers CountOpen/CountClosed with an HTML 500; said once, then not asked."""
    fake.handlers["CountOpenWorkflowExecutions"] = lambda body: (500, "<html>NotImplemented</html>")
    config = _in_process_config(fake, tmp_path)
    state = Probes()
    first = cadence.collect(config, state, 1_800_000_000.0, time.monotonic() + 10)
    assert len(first.errors) == 1
    assert "does not implement CountOpenWorkflowExecutions" in first.errors[0][1]
    assert not [s for s in first.metrics if s.name == "workerwatch.swf.openWorkflows"]
    fake.calls.clear()
    second = cadence.collect(config, state, 1_800_000_060.0, time.monotonic() + 10)
    assert not second.errors
    assert "CountOpenWorkflowExecutions" not in fake.ops()
    assert [s for s in second.metrics if s.name == "workerwatch.swf.timedOutWorkflows"]
    # Asked again once the recheck time has passed.
    later = 1_800_000_000.0 + memory.UNSUPPORTED_RECHECK_S + 1
    cadence.collect(config, state, later, time.monotonic() + 10)
    assert "CountOpenWorkflowExecutions" in fake.ops()


def test_the_group_reason_mentions_the_backlog_its_stalled_workers_leave(
    tmp_path, fake, aws_env, tag, fleet
):
    worker = fleet.start("sleeper")
    wait_for(lambda: main_thread_blocked(worker.pid), what="sleeper asleep")
    fake.set_counts(CountPendingActivityTasks=42)
    group = {
        "name": "fleet",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        "stall_after": "60s",
        "consumes": {"swf_domain": "Publish", "task_list": "A"},
    }
    config = _in_process_config(fake, tmp_path, groups=[group])
    collector = Collector(config)
    t0 = time.time()
    with FileStateStore(config.state_dir) as store:
        first = collector.collect(store, now=t0)
    with FileStateStore(config.state_dir) as store:
        second = collector.collect(store, now=t0 + 720)

    reasons = {g.group: g.reason for g in first.groups}
    assert "backlog" not in reasons["fleet"], "a first sight is unknown, not stalled or idle"
    (verdict,) = [v for v in second.workers if v.pid == worker.pid]
    assert verdict.state in ("stalled", "idle"), verdict.reason
    reasons = {g.group: g.reason for g in second.groups}
    assert (
        "backlog: 42 activity tasks pending in Publish/A, not decreasing for 12 min"
        in (reasons["fleet"])
    ), reasons


def test_a_probe_cut_short_keeps_what_it_read(tmp_path, fake, aws_env):
    """A deadline in the middle of a sample: values read so far are emitted and kept."""
    fake.set_counts(CountPendingActivityTasks=4)
    fake.hang("CountPendingDecisionTasks")
    config = _in_process_config(fake, tmp_path)
    domain = replace(config.swf.domains[0], decision_task_lists=["D"])
    config = replace(config, swf=replace(config.swf, timeout=30, domains=[domain]))
    state = Probes()
    started = time.monotonic()
    # Long enough for the boto3 import and the first call, short of the hung one; a first
    # import of boto3 alone can take over a second on a loaded 2-core machine.
    outcome = cadence.collect(config, state, 1_800_000_000.0, started + 4.0)
    assert time.monotonic() - started < 4.0
    names = {s.name: s.value for s in outcome.metrics}
    assert names["workerwatch.swf.pendingActivityTasks"] == 4
    assert "workerwatch.swf.pendingDecisionTasks" not in names
    ((probe, message),) = outcome.errors
    assert probe == "swf"
    assert "run deadline reached while waiting for CountPendingDecisionTasks Publish/D" in message
    assert "2 not made (the run's deadline was reached)" in message
    fake.release.set()


def test_state_from_a_stranger_is_ignored_not_fatal(tmp_path, fake, aws_env):
    config = _in_process_config(fake, tmp_path)
    state = Probes()
    cadence.collect(config, state, 1_800_000_000.0, time.monotonic() + 10)
    saved = memory.to_json(SavedState(probes=state))
    entry = saved["probes"]["swf"]
    entry["values"] = [
        {"name": "workerwatch.worker.bogus", "value": 1, "attributes": {}},
        {"name": "workerwatch.swf.openWorkflows", "value": "NaN", "attributes": {}},
        {"name": "workerwatch.swf.openWorkflows", "value": 1, "attributes": {"evil": "x"}},
        "garbage",
        {"name": "workerwatch.swf.openWorkflows", "value": 7, "attributes": {"swf.domain": "P"}},
    ]
    entry["levels"] = {"k": "not a dict"}
    entry["units"] = "nope"
    loaded, dropped = memory.from_json(json.loads(json.dumps(saved)), 1_800_000_030.0)
    assert len(dropped) == 6, dropped  # four values, one level, the units: each said once
    outcome = cadence.collect(config, loaded.probes, 1_800_000_030.0, time.monotonic() + 10)
    assert [(s.name, s.value) for s in outcome.metrics] == [("workerwatch.swf.openWorkflows", 7)]
    saved["probes"]["swf"] = ["not", "a", "dict"]
    loaded, dropped = memory.from_json(json.loads(json.dumps(saved)), 1_800_000_040.0)
    assert len(dropped) == 1 and loaded.probes.swf is None
    outcome = cadence.collect(config, loaded.probes, 1_800_000_040.0, time.monotonic() + 10)
    assert not outcome.errors and outcome.metrics


def test_the_state_store_survives_a_round_trip(tmp_path, fake, aws_env):
    config = _in_process_config(fake, tmp_path)
    fake.set_counts(CountPendingActivityTasks=2)
    with FileStateStore(config.state_dir) as store:
        Collector(config).collect(store, now=1_800_000_000.0)
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert saved["probes"]["swf"]["levels"]
    in_memory = StateStore()
    in_memory.raw = saved
    result = Collector(config).collect(in_memory, now=1_800_000_060.0)
    stuck = [s for s in result.backlog if s.name == "workerwatch.swf.backlogStuckSeconds"]
    assert stuck[0].value == 60
