"""`alerts simulate`: a real run's payload lines replayed through the shipped conditions.

The run: real worker processes (two loggers on a shared log, an idle poller that wakes on a
socket timeout, a CPU-bound worker that never logs, a worker sleeping in backoff, a worker
that blocks in recv() on a server that never answers, one that is killed), collected by the
real collector with the shipped defaults (the group sets no stall_after) and printed by the
real emitter. Two of the healthy workers wait longer than stall_after without a wake-up, a
poll with a socket timeout and a backoff sleep: timed waits, which are idle, never stalled.
Collections happen about every half second of wall time while the collector's
clock, which stamps the payloads and measures every silence, advances 30 s per run (the
one-shot agent interval): the shipped thresholds are met in seconds instead of minutes.

On that clock the hung worker is already blocked when the first run happens, so the first
run's time is where the hang is seen to start; the promise checked is that Worker stalled
opens within 300 s of it, and that nothing opens for a healthy worker.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import yaml
from workerwatch.alerts.cli import alerts_main
from workerwatch.alerts.load import load_alerts
from workerwatch.alerts.simulate import Point, read_payloads, simulate
from workerwatch.collector import Collector
from workerwatch.config import parse
from workerwatch.config.model import Group
from workerwatch.output.v4 import Sections, to_line
from workerwatch.state import StateStore

from tests.fleet import main_thread_blocked, wait_for
from tests.v4 import check_line

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "definitions"
INTERVAL = 30.0
RUNS = 34
KILL_AT = 4
GROUP_DEFAULT_STALL_AFTER = next(
    f.default for f in dataclasses.fields(Group) if f.name == "stall_after"
)


@pytest.fixture(scope="module")
def policy():
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    return doc


def _by_name(lines: list[str], metric: str) -> dict[str, list[tuple[float, float]]]:
    """worker.name -> [(time, value)] of one metric over the run."""
    series: dict[str, list[tuple[float, float]]] = {}
    for p in read_payloads(lines):
        if p.metric == metric:
            series.setdefault(p.attributes["worker.name"], []).append((p.time, p.value))
    return series


@pytest.fixture
def run(tmp_path: Path, tag: str, fleet, silent_server):
    shared = tmp_path / "worker.log"
    loggers = [fleet.start("logger", shared, 0.2) for _ in range(2)]
    poller = fleet.start("poller", "127.0.0.1", silent_server.port)
    busy = fleet.start("busy")
    # Sleeps of one second of wall time: about two runs of the collector's clock, a 60 s
    # backoff on it.
    backoff = fleet.start("backoff", "1.0")
    # Waits of 60 s of wall time, longer than the whole run: on the collector's clock a poll
    # and a backoff sleep far longer than stall_after, which end by themselves (timed waits).
    long_poller = fleet.start("poller", "127.0.0.1", silent_server.port, "60")
    long_backoff = fleet.start("backoff", "60")
    doomed = fleet.start("sleeper")
    hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked in recv")
    wait_for(lambda: shared.read_text().count("polled") >= 4, what="loggers writing")
    config = parse(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "groups": [
                    {
                        "name": "fleet",
                        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
                        "logs": [str(tmp_path / "*.log")],
                    }
                ],
            }
        )
    )
    collector, store = Collector(config), StateStore()
    start = time.time()
    lines = []
    for number in range(RUNS):
        if number == KILL_AT:
            doomed.kill()
            doomed.wait()
        result = collector.collect(store, now=start + number * INTERVAL)
        line = to_line(result, config, Sections())
        check_line(line)
        lines.append(line)
        time.sleep(0.4)
    pids = {
        "hung": hung.pid,
        "doomed": doomed.pid,
        "healthy": [p.pid for p in (*loggers, poller, busy, backoff, long_poller, long_backoff)],
    }
    path = tmp_path / "payloads.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path, lines, pids, start


def _names(lines: list[str]) -> dict[int, str]:
    return {
        p.attributes["process.pid"]: p.attributes["worker.name"]
        for p in read_payloads(lines)
        if p.metric == "workerwatch.worker.up"
    }


@pytest.mark.slow
def test_the_stalled_worker_opens_in_time_and_no_healthy_worker_ever_does(
    run, policy, capsys
) -> None:
    path, lines, pids, start = run
    names = _names(lines)
    hung, doomed = names[pids["hung"]], names[pids["doomed"]]
    healthy = {names[pid] for pid in pids["healthy"]}
    assert len(healthy) == 7
    stalled_series = _by_name(lines, "workerwatch.worker.stalled")
    first_stalled = min(t for t, v in stalled_series[hung] if v == 1)
    for name in healthy:
        assert all(v == 0 for _, v in stalled_series[name]), f"{name} was reported stalled"

    incidents = simulate([policy], read_payloads(lines))
    by_condition: dict[str, list] = {}
    for incident in incidents:
        by_condition.setdefault(incident.condition, []).append(incident)

    # The promise: the hung worker's incident opens within 5 minutes of the hang, on the
    # run's clock, with the shipped stall_after, window, delay and threshold.
    stalled_condition = next(c for c in policy.conditions if c.key == "worker-stalled")
    (opened,) = by_condition.pop("Worker stalled")
    assert opened.signal[1] == hung and opened.priority == "CRITICAL"
    hang_to_incident = opened.opened - start
    with capsys.disabled():
        print(
            f"\nhang seen from {start:.0f}; first stalled sample +{first_stalled - start:.0f} s;"
            f" Worker stalled opens +{hang_to_incident:.0f} s"
        )
    assert hang_to_incident <= 300, hang_to_incident
    # The integration waited stall_after; the condition added no more than its window, its
    # delay and the run that carries the window past the delay.
    s = stalled_condition.signal
    # (payload timestamps are whole milliseconds)
    assert first_stalled - start >= GROUP_DEFAULT_STALL_AFTER - 0.001
    assert (
        first_stalled
        <= opened.opened
        <= (first_stalled + s.aggregation_window + s.aggregation_delay + INTERVAL)
    ), opened.opened - first_stalled
    assert opened.closed is None

    # The killed worker: Worker gone, per host and name, while the group sets no expected.
    (gone,) = by_condition.pop("Worker gone")
    assert gone.signal[1] == doomed

    # The hung worker waits on its peer with no timeout: the risk warning opens for it too.
    (risk,) = by_condition.pop("Worker waits without a timeout")
    assert risk.signal[1] == hung and risk.priority == "WARNING"

    # Nothing else opens: no incident for a healthy worker, no lost signal for the host.
    assert by_condition == {}, by_condition
    for incident in incidents:
        assert not healthy & set(incident.signal), incident

    # The command prints the same, for an operator.
    code = alerts_main(["simulate", "--payloads", str(path), "--definitions", str(DEFINITIONS)])
    out = capsys.readouterr().out
    assert code == 0
    stalled_block = out.split("\nWorker stalled:", 1)[1].split("\n\n", 1)[0]
    assert hung in stalled_block and "critical opens" in stalled_block
    assert "still open at the end of the replay" in stalled_block
    assert "Integration not reporting:" in out


def _points(values: list[tuple[float, float]], metric: str, **attrs) -> list[Point]:
    base = {"host.name": "h", "worker.name": "w", **attrs}
    return [Point(t, metric, v, base) for t, v in values]


def test_for_at_least_needs_every_window_and_a_gap_resets_it(policy) -> None:
    # Worker gone: below 1 for at least gone_minutes (5), window 60 s, delay 120 s.
    t0 = 1_800_000_000.0  # a multiple of 60: windows start on it
    # Gone for 12 minutes with a 2-minute hole after 4 minutes, then back.
    samples = [(t0 + 30 * i, 0.0) for i in range(24) if i not in (8, 9, 10, 11)]
    samples += [(t0 + 30 * i, 1.0) for i in range(24, 44)]
    points = _points(samples, "workerwatch.worker.up")
    incidents = [i for i in simulate([policy], points) if i.condition == "Worker gone"]
    # Before the hole: 4 full windows, one short of 5 minutes. After it: 6 windows, opens.
    (incident,) = incidents
    # Windows 6..10 (from t0 + 360) breach; the fifth is aggregated when a point reaches its
    # end (t0 + 660) plus the 120 s delay.
    assert incident.opened == t0 + 780
    # Back from t0 + 720: five windows without a breach; the fifth (t0 + 960 to t0 + 1020)
    # is aggregated at its end plus the delay.
    assert incident.closed == t0 + 1140


def test_one_stalled_report_opens_worker_stalled_and_an_empty_window_does_not_matter(
    policy,
) -> None:
    # Worker stalled: above 0 at least once in stall_minutes (1), window 30 s, delay 30 s.
    t0 = 1_800_000_000.0
    # Healthy, then one stalled report at t0 + 300, then two runs in one window (jitter)
    # leaving the next window empty, still stalled.
    samples = [(t0 + 30 * i, 0.0) for i in range(10)]
    samples += [(t0 + 300, 1.0), (t0 + 331, 1.0), (t0 + 359, 1.0), (t0 + 420, 1.0)]
    samples += [(t0 + 420 + 30 * i, 1.0) for i in range(1, 4)]
    points = _points(samples, "workerwatch.worker.stalled")
    (incident,) = [i for i in simulate([policy], points) if i.condition == "Worker stalled"]
    # The window t0+300..t0+330 is aggregated by the first point at or past its end plus the
    # 30 s delay: t0 + 420 (the one at t0 + 359 is short of t0 + 360).
    assert incident.opened == t0 + 420
    assert incident.closed is None  # the empty window is no breach, and no recovery either
    # Healthy samples never open it.
    healthy = _points([(t0 + 30 * i, 0.0) for i in range(40)], "workerwatch.worker.stalled")
    assert [i for i in simulate([policy], healthy) if i.condition == "Worker stalled"] == []


def test_loss_of_signal_closes_the_gone_workers_incident(policy) -> None:
    t0 = 1_800_000_000.0
    up = [
        Point(t0 + 30 * i, "workerwatch.worker.up", 0.0, {"host.name": "h", "worker.name": "w"})
        for i in range(30)
    ]
    # Another worker keeps reporting, so the replay's clock moves on after w is forgotten.
    other = [
        Point(t0 + 30 * i, "workerwatch.worker.up", 1.0, {"host.name": "h", "worker.name": "x"})
        for i in range(70)
    ]
    incidents = simulate([policy], sorted(up + other, key=lambda p: p.time))
    (gone,) = [i for i in incidents if i.condition == "Worker gone"]
    assert gone.signal == ("h", "w")
    assert gone.close_reason == "loss of signal"
    assert gone.closed == up[-1].time + 600  # gone_forgotten_minutes


GOOD_LINE = (
    '{"protocol_version":"4","integration":{"name":"x","version":"1"},"data":[{"common":'
    '{"timestamp":1700000000,"attributes":{}},"metrics":[{"name":"workerwatch.worker.stalled",'
    '"type":"gauge","value":0,"attributes":{"worker.name":"w"}}]}]}'
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "payloads.jsonl: line 2 is not a protocol-v4 payload (JSON with data[])"),
        ('{"data": {"metrics": []}}', "payloads.jsonl: line 2: data is not a list"),
        ('{"data": ["x"]}', "payloads.jsonl: line 2: data[0] is not a protocol-v4 dataset"),
        ('{"data": [{"common": 3}]}', "payloads.jsonl: line 2: data[0] is not a protocol-v4"),
        (
            '{"data": [{"common": {}, "metrics": {"a": 1}}]}',
            "payloads.jsonl: line 2: data[0] is not a protocol-v4 dataset",
        ),
        (
            '{"data": [{"common": {"attributes": []}, "metrics": []}]}',
            "payloads.jsonl: line 2: data[0] is not a protocol-v4 dataset",
        ),
    ],
)
def test_a_malformed_payload_line_is_one_error_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    path = tmp_path / "payloads.jsonl"
    path.write_text(GOOD_LINE + "\n" + line + "\n")
    code = alerts_main(["simulate", "--payloads", str(path), "--definitions", str(DEFINITIONS)])
    err = capsys.readouterr().err
    assert code == 1
    (message,) = err.splitlines()
    assert expected in message
    assert "Traceback" not in err
