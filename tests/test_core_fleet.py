"""The core scenario with real processes and real sockets: only the hung worker is stalled."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.v4 import check_line, find, metrics_of, write_config

STALL_AFTER = 2.0


def _config(tmp_path: Path, tag: str, **group) -> Path:
    base = {
        "name": "fleet",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        "expected": 7,
        "stall_after": f"{STALL_AFTER}s",
    }
    return write_config(
        tmp_path / "config.yml",
        {"state_dir": str(tmp_path / "state"), "groups": [{**base, **group}]},
    )


def _by_pid(payload, name):
    return {m["attributes"]["process.pid"]: m for m in find(payload, name)}


def test_only_the_worker_blocked_in_recv_is_stalled(tmp_path, tag, fleet, silent_server):
    shared = tmp_path / "worker.log"
    loggers = [fleet.start("logger", shared, 0.3) for _ in range(3)]
    hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port)
    busy = fleet.start("busy")
    poller = fleet.start("poller", "127.0.0.1", silent_server.port)
    doomed = fleet.start("sleeper")
    wait_for(lambda: main_thread_blocked(hung.pid) and len(silent_server.accepted) >= 2,
             what="hung worker blocked in recv")  # fmt: skip
    wait_for(lambda: shared.read_text().count("polled") >= 3, what="loggers writing")
    config = _config(tmp_path, tag, logs=[str(tmp_path / "*.log")])

    first = check_line(run_integration(config)[0])
    states = {m["attributes"]["process.pid"]: m["attributes"]["worker.state"]
              for m in find(first, "workerwatch.worker.up")}  # fmt: skip
    assert set(states) == {p.pid for p in fleet.procs}
    assert "stalled" not in states.values(), "the first sample never says stalled"
    assert find(first, "workerwatch.group.running")[0]["value"] == 7

    doomed.kill()
    doomed.wait()
    time.sleep(STALL_AFTER + 0.3)
    second = check_line(run_integration(config)[0])

    stalled = _by_pid(second, "workerwatch.worker.stalled")
    assert stalled[hung.pid]["value"] == 1
    assert [pid for pid, m in stalled.items() if m["value"] == 1] == [hung.pid]
    # On the metric, the evidence without numbers (a stable series); on the event, in full.
    reason = stalled[hung.pid]["attributes"]["worker.reason"]
    assert (
        reason == f"no log write; main thread blocked in recvfrom on 127.0.0.1:{silent_server.port}"
    )
    (event,) = [
        e
        for e in second["data"][0]["events"]
        if e["attributes"]["process.pid"] == hung.pid and "stalled" in e["summary"]
    ]
    full = event["attributes"]["worker.reason"]
    assert re.match(
        r"no log write for \d+ s; main thread blocked in recvfrom on 127\.0\.0\.1:\d+ with no timeout for \d+ s, 0 wakeups in \d+ s; cpu \+0\.00 s$",
        full,
    ), full

    blocked = _by_pid(second, "workerwatch.worker.blocked.seconds")[hung.pid]
    assert blocked["attributes"]["blocked.syscall"] == "recvfrom"
    assert blocked["attributes"]["blocked.peer"] == f"127.0.0.1:{silent_server.port}"
    assert blocked["value"] >= STALL_AFTER

    silent = _by_pid(second, "workerwatch.worker.log.silentSeconds")
    assert silent[hung.pid]["value"] >= STALL_AFTER
    assert all(silent[p.pid]["value"] < STALL_AFTER for p in loggers)
    written = _by_pid(second, "workerwatch.worker.log.bytesWritten")
    assert written[hung.pid]["value"] == 0
    assert all(written[p.pid]["value"] > 0 for p in loggers)

    ups = find(second, "workerwatch.worker.up", **{"worker.group": "fleet"})
    states = {m["attributes"]["process.pid"]: m["attributes"]["worker.state"] for m in ups}
    assert all(states[p.pid] == "working" for p in loggers)
    assert states[busy.pid] == "working", "a CPU-bound worker is not stalled"
    assert states[poller.pid] == "idle", "an idle poller that wakes up is not stalled"
    assert states[doomed.pid] == "gone"
    assert _by_pid(second, "workerwatch.worker.up")[doomed.pid]["value"] == 0

    assert find(second, "workerwatch.group.running")[0]["value"] == 6
    assert find(second, "workerwatch.group.stalled")[0]["value"] == 1
    assert find(second, "workerwatch.group.missing")[0]["value"] == 1
    summaries = [e["summary"] for e in second["data"][0]["events"]]
    assert any(s.startswith("fleet:") and "stalled" in s and "recvfrom" in s for s in summaries)
    assert any("disappeared" in s for s in summaries)

    emitted = {m["name"] for m in metrics_of(second)}
    for name in (
        "workerwatch.worker.up",
        "workerwatch.worker.stalled",
        "workerwatch.worker.log.silentSeconds",
        "workerwatch.worker.log.bytesWritten",
        "workerwatch.worker.cpu.seconds",
        "workerwatch.worker.mainThread.wakeups",
        "workerwatch.worker.blocked.seconds",
        "workerwatch.group.running",
        "workerwatch.group.expected",
        "workerwatch.group.missing",
        "workerwatch.group.stalled",
        "workerwatch.integration.durationSeconds",
        "workerwatch.integration.errors",
    ):
        assert name in emitted, name

    # The stalled worker stays stalled on the next run and no second event is sent.
    third = check_line(run_integration(config)[0])
    assert _by_pid(third, "workerwatch.worker.stalled")[hung.pid]["value"] == 1
    assert not [e for e in third["data"][0]["events"] if "stalled" in e["summary"]]


@pytest.mark.slow  # real workers over several stall windows
def test_shared_log_mtime_stays_fresh_while_one_worker_hangs(tmp_path, tag, fleet, silent_server):
    """The old cron check's blind spot: the shared file is fresh, the hung worker is not."""
    shared = tmp_path / "worker.log"
    fleet.start("logger", shared, 0.2)
    hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked")
    config = _config(tmp_path, tag)  # default: every file held open for writing is a log
    run_integration(config)
    time.sleep(STALL_AFTER + 0.3)
    payload = check_line(run_integration(config)[0])
    assert time.time() - shared.stat().st_mtime < 1.0, "the shared log is fresh"
    assert _by_pid(payload, "workerwatch.worker.stalled")[hung.pid]["value"] == 1
