"""Pools and work horses (README "Pools and work horses"), with real supervisor processes.

A pre-forked pool fed through pipes (Celery prefork's shape) and a worker that forks a work
horse per job and waits for it (RQ's shape), judged by the one-shot collector at
``stall_after: 1s``. The real frameworks are in tests/test_frameworks.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.v4 import check_line, find, write_config

SCRIPT = Path(__file__).parent / "children" / "supervisors.py"


def _config(tmp_path: Path, tag: str) -> Path:
    group = {"name": "g", "match": {"cmdline": f"supervisors\\.py \\w+ {tag}"}, "stall_after": "1s"}
    return write_config(
        tmp_path / "c.yml", {"state_dir": str(tmp_path / "state"), "groups": [group]}
    )


def _run(config: Path) -> dict[str, Any]:
    return check_line(run_integration(config)[0])


def _verdicts(payload: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {
        m["attributes"]["process.pid"]: {**m["attributes"], "up": m["value"]}
        for m in find(payload, "workerwatch.worker.up")
    }


def _gauge(payload: dict[str, Any], name: str) -> float:
    (metric,) = find(payload, name, **{"worker.group": "g"})
    return metric["value"]


def _events(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for d in payload["data"] for e in d["events"]]


def _facts(path: Path) -> dict[str, Any]:
    wait_for(path.exists, what=f"{path} written")
    return json.loads(path.read_text())


@pytest.fixture
def shape(tmp_path, tag, fleet):
    def start(mode: str, *args: object) -> Path:
        info = tmp_path / f"{mode}.json"
        fleet.start(mode, info, *args, script=SCRIPT, python=sys.executable)
        return info

    return start


@pytest.mark.slow  # real processes over several stall windows
def test_pool_processes_waiting_for_work_are_idle_and_a_hung_one_is_stalled(
    tmp_path, tag, shape, silent_server
):
    info = shape("pool", 3, "127.0.0.1", silent_server.port)
    facts = _facts(info)
    parent, (hung, *idle) = facts["parent"], facts["pool"]
    wait_for(lambda: len(silent_server.accepted) == 1 and main_thread_blocked(hung))
    wait_for(lambda: all(main_thread_blocked(p) for p in idle))
    config = _config(tmp_path, tag)
    payloads = []
    for _ in range(4):
        payloads.append(_run(config))
        time.sleep(0.6)
    for payload in payloads[1:]:
        verdicts = _verdicts(payload)
        for pid in idle:
            assert verdicts[pid]["worker.state"] == "idle", verdicts[pid]
            assert verdicts[pid]["worker.reason"] == (
                f"no log file open; waits for work from its parent {parent} (read on a pipe)"
            )
        assert verdicts[parent]["worker.state"] == "idle", verdicts[parent]
        assert _gauge(payload, "workerwatch.group.running") == 1
        assert _gauge(payload, "workerwatch.group.poolProcesses") == 3
    # A job that hangs inside a pool process is judged as any hang: its wait is a socket's.
    last = _verdicts(payloads[-1])[hung]
    assert last["worker.state"] == "stalled", last
    assert last["worker.reason"] == (
        f"no log file open; main thread blocked in recvfrom on 127.0.0.1:{silent_server.port}"
    )
    # And the pool processes are counted apart from the workers the group runs.
    assert _gauge(payloads[-1], "workerwatch.group.stalled") == 1


@pytest.mark.slow  # real processes over several runs
def test_a_recycled_pool_process_is_replaced_without_an_event(tmp_path, tag, shape):
    info = shape("pool", 2)
    old = _facts(info)["pool"]
    wait_for(lambda: all(main_thread_blocked(p) for p in old))
    config = _config(tmp_path, tag)
    _run(config)
    os.kill(old[0], signal.SIGKILL)
    wait_for(lambda: _facts(info)["pool"][0] != old[0], what="the pool process replaced")
    new = _facts(info)["pool"]
    wait_for(lambda: main_thread_blocked(new[0]))
    for _ in range(2):
        payload = _run(config)
        verdicts = _verdicts(payload)
        assert old[0] not in verdicts, "no gone worker for a recycled pool process"
        assert set(new) <= set(verdicts)
        assert not [e for e in _events(payload) if "disappeared" in e["summary"]]
        assert _gauge(payload, "workerwatch.group.poolProcesses") == 2


@pytest.mark.slow  # real processes over several stall windows
def test_work_horses_are_their_workers_work_and_a_hung_one_stalls_it(
    tmp_path, tag, shape, silent_server
):
    info = shape("horses", 3, "127.0.0.1", silent_server.port)
    parent = _facts(info)["parent"]
    config = _config(tmp_path, tag)
    payloads = []
    while not silent_server.accepted:  # the quick jobs, about 0.9 s each
        payloads.append(_run(config))
        time.sleep(0.2)
    facts = _facts(info)
    horse = facts["current"]
    wait_for(lambda: main_thread_blocked(horse))
    for _ in range(3):
        time.sleep(0.6)
        payloads.append(_run(config))
    horses = {*facts["done"], horse}
    for payload in payloads:
        verdicts = _verdicts(payload)
        assert not horses & set(verdicts), "a horse is no worker of its own"
        assert {v["worker.state"] for v in verdicts.values()} != {"gone"}
        assert not [e for e in _events(payload) if "disappeared" in e["summary"]]
        assert _gauge(payload, "workerwatch.group.running") == 1
        assert _gauge(payload, "workerwatch.group.poolProcesses") == 0
    seen_working = [
        _verdicts(p)[parent]["worker.reason"]
        for p in payloads
        if _verdicts(p)[parent]["worker.state"] == "working"
    ]
    assert any("work horse" in r and "on CPU" in r for r in seen_working), seen_working
    last = _verdicts(payloads[-1])[parent]
    assert last["worker.state"] == "stalled", last
    assert last["worker.reason"] == (
        # Programs and paths by their base names in a reason.
        f"no log file open; work horse {horse} ({Path(sys.executable).name} supervisors.py "
        f"horses {tag} horses.json 3 127.0.0.1 {silent_server.port}) blocked in recvfrom "
        f"on 127.0.0.1:{silent_server.port}"
    )
