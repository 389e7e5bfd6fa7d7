"""Worker shapes beyond one process, one thread: threads, forked children, ourselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.v4 import check_line, find, write_config


def _config(tmp_path: Path, tag: str, **extra) -> Path:
    group = {
        "name": "g",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        "stall_after": "1s",
        **extra,
    }
    return write_config(
        tmp_path / "c.yml", {"state_dir": str(tmp_path / "state"), "groups": [group]}
    )


def _states(payload) -> dict[int, tuple[str, str]]:
    return {
        m["attributes"]["process.pid"]: (
            m["attributes"]["worker.state"],
            m["attributes"]["worker.reason"],
        )
        for m in find(payload, "workerwatch.worker.up")
    }


def _runs(config: Path, count: int, gap: float = 1.2) -> dict:
    payload = None
    for i in range(count):
        if i:
            time.sleep(gap)
        payload = check_line(run_integration(config)[0])
    return payload


@pytest.mark.slow  # real workers over several stall windows
def test_a_main_thread_waiting_for_a_busy_thread_is_not_stalled(
    tmp_path, tag, fleet, silent_server
):
    busy = fleet.start("joiner")
    stuck = fleet.start("stuckjoiner", "127.0.0.1", silent_server.port)
    wait_for(lambda: len(silent_server.accepted) >= 1 and main_thread_blocked(busy.pid))
    states = _states(_runs(_config(tmp_path, tag), 4))
    assert states[busy.pid][0] == "idle", states[busy.pid]
    assert "main thread waits for its threads, which wait with a timeout" in states[busy.pid][1]
    assert states[stuck.pid][0] == "stalled", states[stuck.pid]


def test_a_busy_background_thread_does_not_hide_a_hung_main_thread(
    tmp_path, tag, fleet, silent_server
):
    """An APM harvest thread keeps the process's CPU ticking; the main thread's does not."""
    hung = fleet.start("apm", "127.0.0.1", silent_server.port)
    wait_for(lambda: len(silent_server.accepted) >= 1 and main_thread_blocked(hung.pid))
    payload = _runs(_config(tmp_path, tag), 3)
    state, reason = _states(payload)[hung.pid]
    assert state == "stalled", reason
    assert f"main thread blocked in recvfrom on 127.0.0.1:{silent_server.port}" in reason, reason
    (cpu,) = find(payload, "workerwatch.worker.cpu.seconds")
    assert cpu["value"] > 0, "the process itself was on the CPU"


@pytest.mark.slow  # real workers over several stall windows
def test_workers_sharing_one_inherited_log_file(tmp_path, tag, fleet, silent_server):
    """A forked logger and a hung sibling share one open file: only the hung one is stalled."""
    shared = tmp_path / "worker.log"
    parent = fleet.start("forkshare", shared, "127.0.0.1", silent_server.port)
    wait_for(
        lambda: len(silent_server.accepted) >= 1 and shared.read_text().count("child polled") > 2
    )
    children = [
        int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    ]
    states = _states(_runs(_config(tmp_path, tag), 3))
    assert set(states) == {parent.pid, *children}
    by_state = {pid: state for pid, (state, _) in states.items()}
    assert by_state[parent.pid] == "idle", states[parent.pid]
    assert "waits for its child processes" in states[parent.pid][1]
    assert sorted(by_state[c] for c in children) == ["stalled", "working"], states


def test_the_integration_never_reports_itself(tmp_path):
    """A regex that matches our own command line: neither the run nor its probe child."""
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "self", "match": {"cmdline": "-m workerwatch --config"}}],
        },
    )
    for _ in range(2):
        payload = check_line(run_integration(config)[0])
        assert find(payload, "workerwatch.worker.up") == []
        assert find(payload, "workerwatch.group.running")[0]["value"] == 0
        assert payload["data"][0]["events"] == []


def test_a_restart_under_a_stable_name_is_counted(tmp_path, tag, fleet):
    """The name comes from the heartbeat; a new pid behind it is a restart, not a new worker."""
    beats = tmp_path / "hb"
    beats.mkdir()

    def beat_for(pid: int) -> None:
        body = {
            "version": 1,
            "worker": "worker@7",
            "pid": pid,
            "time": time.time(),
            "seq": 1,
            "state": "idle",
        }
        (beats / "worker@7.json").write_text(json.dumps(body))

    first = fleet.start("sleeper")
    beat_for(first.pid)
    config = _config(tmp_path, tag, heartbeats=f"{beats}/*.json")
    check_line(run_integration(config)[0])
    first.kill()
    first.wait()
    second = fleet.start("sleeper")
    beat_for(second.pid)
    wait_for(lambda: Path(f"/proc/{second.pid}/cmdline").read_bytes().count(tag.encode()))
    payload = check_line(run_integration(config)[0])
    (restarts,) = find(payload, "workerwatch.worker.restarts")
    assert restarts["value"] == 1 and restarts["attributes"]["worker.name"] == "worker@7"
    assert restarts["attributes"]["process.pid"] == second.pid
    summaries = [e["summary"] for e in payload["data"][0]["events"]]
    assert f"worker@7 restarted: pid {first.pid} -> {second.pid}" in summaries
    assert not [s for s in summaries if "disappeared" in s], "a restart is not a disappearance"
