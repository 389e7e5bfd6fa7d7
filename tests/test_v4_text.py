"""The v4 payload is written as text (``output.v4.metric``): it must be exactly what
``json.dumps`` writes for the same content, and carry what the verdicts say.

The real fleets of the other tests check the line with ``tests.v4.check_line``; these
verdicts carry what a fleet rarely shows: unicode, quotes and control characters in a
reason, very large and very small floats, ints next to floats, unset figures, a payload
split over several lines.
"""

from __future__ import annotations

import json
import math

import pytest
from workerwatch.collector import RunResult
from workerwatch.config.load import from_data
from workerwatch.judge.states import IDLE, STALLED, WORKING, GroupVerdict, WorkerVerdict
from workerwatch.observations import MetricSample
from workerwatch.output import catalogue
from workerwatch.output.v4 import (
    MAX_METRICS_PER_LINE,
    Sections,
    all_metrics,
    to_line,
    worker_attributes,
)

from tests.v4 import check_line

NOW = 1_800_000_000.0
REASONS = [
    "plain",
    'quoted "peer" \\ back\\slash',
    "unicode: ünïcødé – 日本語 – 🙂",
    "control: \x00\x01\t\n\r\x1b\x7f\x85\u2028\u2029 end",
    "x" * 5000,
    "ünïcødé " * 600,  # cut at the attribute limit
]
FLOATS = [0.0, -0.0, 1e-9, 0.0004, 0.0005, 1.0005, 2.675, 123456.789012, 1e15, 1.5e300, -7.25]


def _config():
    return from_data(
        {"state_dir": "/nonexistent", "groups": [{"name": "g", "match": {"cmdline": "x"}}]}
    )


def _verdicts() -> list[WorkerVerdict]:
    out = []
    for i, reason in enumerate(REASONS):
        number = FLOATS[i % len(FLOATS)]
        out.append(
            WorkerVerdict(
                name=f"g:{i}",
                group="g",
                pid=100 + i,
                state=STALLED if i % 2 else WORKING,
                reason=reason,
                summary=reason if i % 3 else "",
                silent_seconds=number,
                bytes_written=2**40 + i,  # an int stays an int
                interval_s=30.0,
                heartbeat_age=FLOATS[-1 - i],
                cpu_delta=float(i),  # a float that is a whole number stays a float
                wakeups=i,
                blocked_seconds=FLOATS[(i + 3) % len(FLOATS)],
                blocked_syscall="recvfrom" if i % 2 else None,  # None is left out
                blocked_peer=f'10.0.0.{i}:21 "ü"',
                blocked_timeout=-1.0,
                untimed_waits={f"10.0.0.{i}:21": 3, "b\u00e9:1": 1} if i % 2 else {},
                restarted=bool(i % 2),
                task_name=f"task {reason[:20]}" if i else None,
                task_seconds=1e-7 * i if i else None,
            )
        )
    for i, number in enumerate(FLOATS):
        out.append(
            WorkerVerdict(
                name=f"h:{i}", group="h", pid=200 + i, state=WORKING, reason="r",
                silent_seconds=number, interval_s=15.5, cpu_delta=number, wakeups=True,
            )
        )  # fmt: skip
    return out


def _result(workers: list[WorkerVerdict]) -> RunResult:
    groups = [
        GroupVerdict(group="g", running=3, expected=5, stalled=1, reason="", pool_processes=4),
        GroupVerdict(group="h", running=2, expected=None, stalled=0, reason=""),
    ]
    backlog = [
        MetricSample(
            name=catalogue.SQS_VISIBLE,
            value=12.3456,
            attributes={"sqs.queue": 'q "ü" \u00e9'},
        )
    ]
    return RunResult(
        now=NOW, duration=0.1234567, interval_s=30.0, workers=workers, groups=groups,
        backlog=backlog, events=[{"summary": "g:1 stalled: \"x\" ü", "category": "workerwatch"}],
    )  # fmt: skip


def _expected_value(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int) else round(value, 3)


@pytest.mark.parametrize("many", [False, True], ids=["one line", "split lines"])
def test_the_line_is_what_json_dumps_writes_for_its_content(many):
    workers = _verdicts()
    if many:  # past MAX_METRICS_PER_LINE metrics: several complete lines
        workers = workers * (MAX_METRICS_PER_LINE // 40)
    result = _result(workers)
    lines = to_line(result, _config(), Sections()).splitlines(keepends=True)
    assert (len(lines) > 1) == many
    metrics = []
    for line in lines:
        payload = check_line(line)
        # Byte for byte: the same escapes (ASCII only), number forms, key order and
        # separators as json.dumps of the parsed content.
        assert line == json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n"
        assert line.isascii()
        metrics += payload["data"][0]["metrics"]
    # The text entries are the dicts push posts, written as json.dumps writes them.
    objects = all_metrics(result)
    assert metrics == objects
    texts = all_metrics(result, as_text=True)
    assert texts == [json.dumps(m, separators=(",", ":"), allow_nan=False) for m in objects]
    groups = {(m["name"], m["attributes"].get("worker.group")): m["value"] for m in metrics}
    assert groups[(catalogue.GROUP_MISSING, "g")] == 2
    assert type(groups[(catalogue.GROUP_RUNNING, "h")]) is int
    for m in metrics:
        assert list(m)[:4] == ["name", "type", "value", "attributes"]
    # The figures as the verdicts gave them: ints as ints, floats rounded to 3 places.
    by_pid: dict[int, dict[str, object]] = {}
    for m in metrics:
        if "process.pid" in m["attributes"]:
            values = by_pid.setdefault(m["attributes"]["process.pid"], {})
            values[m["name"]] = m["value"]
            assert type(m["value"]) in (int, float)
    for v in _verdicts():
        values = by_pid[v.pid]
        assert values[catalogue.LOG_SILENT] == _expected_value(v.silent_seconds)
        assert type(values[catalogue.LOG_SILENT]) is float
        assert values[catalogue.CPU] == _expected_value(v.cpu_delta)
        assert type(values[catalogue.CPU]) is float
        assert type(values[catalogue.WAKEUPS]) is int
        assert values[catalogue.WORKER_UP] == 1 and type(values[catalogue.WORKER_UP]) is int
        assert type(values[catalogue.WORKER_STALLED]) is int
        if v.blocked_timeout is not None:
            assert values[catalogue.BLOCKED_TIMEOUT] == -1.0
            assert type(values[catalogue.BLOCKED_TIMEOUT]) is float
        if v.bytes_written is not None:
            assert values[catalogue.LOG_BYTES] == v.bytes_written
            assert type(values[catalogue.LOG_BYTES]) is int
    first = [m for m in metrics if m["attributes"].get("process.pid") == 101]
    shared = worker_attributes(_verdicts()[1])
    assert first[0]["attributes"] == shared
    assert "\x00" not in shared["worker.reason"] and "\u2028" not in shared["worker.reason"]
    blocked = next(m for m in first if m["name"] == catalogue.BLOCKED)
    assert blocked["attributes"] == {
        **shared,
        "blocked.syscall": "recvfrom",
        "blocked.peer": '10.0.0.1:21 "ü"',
    }
    unset = next(m for m in metrics if m["attributes"].get("process.pid") == 100)
    assert unset["name"] == catalogue.WORKER_UP
    blocked0 = next(
        m for m in metrics if m["attributes"].get("process.pid") == 100 and "blocked.peer" in m["attributes"]
    )  # fmt: skip
    assert "blocked.syscall" not in blocked0["attributes"]  # None is left out, not null


def test_pretty_output_has_the_same_content():
    result = _result(_verdicts())
    compact = [json.loads(line) for line in to_line(result, _config(), Sections()).splitlines()]
    pretty = to_line(result, _config(), Sections(), pretty=True)
    assert json.loads(pretty) == compact[0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400])
def test_a_value_that_is_not_a_finite_number_is_refused(bad):
    worker = WorkerVerdict(name="g:1", group="g", pid=1, state=WORKING, reason="r")
    worker.silent_seconds = bad
    with pytest.raises(ValueError, match="not a finite number"):
        to_line(_result([worker]), _config(), Sections())


def test_an_attribute_outside_the_catalogue_is_refused():
    sample = MetricSample(name=catalogue.SQS_VISIBLE, value=1.0, attributes={})
    result = _result([])
    result.backlog = [sample]
    assert any(m["name"] == catalogue.SQS_VISIBLE for m in all_metrics(result))
    object.__setattr__(sample, "attributes", {"worker.name": "x"})
    with pytest.raises(KeyError, match="not in the catalogue"):
        to_line(result, _config(), Sections())


def test_attribute_texts_kept_between_runs_follow_every_change():
    """A resident process reuses a worker's attribute texts while they are unchanged."""
    config = _config()

    def metrics(workers: list[WorkerVerdict]) -> list[dict]:
        line = to_line(_result(workers), config, Sections())
        return check_line(line)["data"][0]["metrics"]

    workers = _verdicts()
    assert metrics(workers) == all_metrics(_result(workers))
    changes = [
        {"state": IDLE},
        {"state": STALLED, "reason": "now stalled", "summary": "stalled"},
        {"summary": "", "reason": "only a reason"},
        {"pid": 4242, "name": "g:4242"},
        {"group": "h"},
        {"blocked_peer": "10.9.9.9:22"},
        {"blocked_syscall": None},
    ]
    for change in changes:
        workers = [
            WorkerVerdict(**{**{f: getattr(v, f) for f in v.__record_fields__}, **change})
            for v in workers
        ]
        assert metrics(workers) == all_metrics(_result(workers)), change
