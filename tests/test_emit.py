"""The emitter's mapping from verdicts to metrics, where a real run cannot tell values apart.

A real fleet rarely makes every group number different, or stalls a worker in a fleet of
more than 500: these cases feed the emitter verdicts directly.
"""

from __future__ import annotations

from workerwatch.collector import RunResult
from workerwatch.judge.states import IDLE, STALLED, GroupVerdict, WorkerVerdict
from workerwatch.output.v4 import SUMMARISE_ABOVE, all_metrics, split_payload

NOW = 1_800_000_000.0


def _worker(pid: int, state: str) -> WorkerVerdict:
    return WorkerVerdict(
        name=f"g:{pid}",
        group="g",
        pid=pid,
        state=state,
        reason=f"{state} reason",
        summary=state,
        silent_seconds=400.0,
        bytes_written=0,
        interval_s=30.0,
        cpu_delta=0.0,
        wakeups=0 if state == STALLED else 30,
        blocked_seconds=400.0,
        blocked_syscall="recvfrom",
        blocked_peer="10.0.0.5:21",
    )


def _values(metrics: list[dict], pid: int | None = None) -> dict[str, float]:
    return {
        m["name"]: m["value"]
        for m in metrics
        if pid is None or m["attributes"].get("process.pid") == pid
    }


def test_each_group_metric_carries_its_own_number():
    group = GroupVerdict(group="g", running=3, expected=5, stalled=1, reason="")
    result = RunResult(now=NOW, duration=0.1, interval_s=30.0, workers=[], groups=[group])
    values = {k: v for k, v in _values(all_metrics(result)).items() if ".group." in k}
    assert values == {
        "workerwatch.group.running": 3,
        "workerwatch.group.expected": 5,
        "workerwatch.group.missing": 2,
        "workerwatch.group.stalled": 1,
    }


def test_a_large_fleet_keeps_the_detail_of_its_stalled_workers():
    """Beyond 500 workers the healthy ones are summarised; a stalled one never is."""
    workers = [_worker(pid, IDLE) for pid in range(1, SUMMARISE_ABOVE + 1)]
    workers.append(_worker(9999, STALLED))
    result = RunResult(now=NOW, duration=0.1, interval_s=30.0, workers=workers, groups=[])
    metrics = all_metrics(result)
    assert set(_values(metrics, pid=1)) == {"workerwatch.worker.up", "workerwatch.worker.stalled"}
    stalled = _values(metrics, pid=9999)
    assert stalled["workerwatch.worker.stalled"] == 1
    assert stalled["workerwatch.worker.blocked.seconds"] == 400
    assert stalled["workerwatch.worker.log.silentSeconds"] == 400
    assert stalled["workerwatch.worker.mainThread.wakeups"] == 0
    # At 500 workers nobody is summarised.
    small = RunResult(now=NOW, duration=0.1, interval_s=30.0, workers=workers[1:], groups=[])
    assert "workerwatch.worker.blocked.seconds" in _values(all_metrics(small), pid=2)


def test_a_split_payload_sends_events_and_inventory_once():
    """Each line is its own payload to the agent: a repeated event would be a duplicate."""
    metrics = [{"name": "workerwatch.worker.up", "value": i} for i in range(2500)]
    events = [{"summary": "g:1 stalled: ..."}, {"summary": "g:2 recovered: ..."}]
    payload = {
        "protocol_version": "4",
        "integration": {"name": "n", "version": "v"},
        "data": [{"metrics": metrics, "events": events, "inventory": {"integration": {}}}],
    }
    parts = split_payload(payload, limit=1000)
    datasets = [p["data"][0] for p in parts]
    assert [len(d["metrics"]) for d in datasets] == [1000, 1000, 500]
    assert [m for d in datasets for m in d["metrics"]] == metrics
    assert [d["events"] for d in datasets] == [events, [], []]
    assert [d["inventory"] for d in datasets] == [{"integration": {}}, {}, {}]
