"""The stalled event carries the evidence captured at the transition: the stack, or why not."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from workerwatch.collector import MAX_CAPTURES
from workerwatch.host.stack import find_py_spy
from workerwatch.state import STATE_FILE

from tests.fleet import main_thread_blocked, python_without_py_spy, run_integration, wait_for
from tests.v4 import check_line, tagged_config

STALL_AFTER = 1.0


def _config(tmp_path: Path, tag: str) -> Path:
    return tagged_config(tmp_path, tag, stall_after=f"{STALL_AFTER}s")


def _stalled_events(payload: dict, pid: int) -> list[dict]:
    return [
        e
        for e in payload["data"][0]["events"]
        if e["attributes"]["process.pid"] == pid
        and e["attributes"]["workerwatch.transition"] in ("stalled", "evidence")
    ]


def _run_until_stalled(config: Path, pid: int, env: dict | None = None) -> tuple[dict, dict]:
    check_line(run_integration(config, env=env)[0])
    time.sleep(STALL_AFTER + 0.3)
    payload = check_line(run_integration(config, env=env)[0])
    (event,) = _stalled_events(payload, pid)
    return payload, event


def _state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / STATE_FILE).read_text())


@pytest.mark.skipif(find_py_spy() is None, reason="py-spy is a test extra")
@pytest.mark.skipif(os.geteuid() != 0, reason="py-spy needs ptrace rights over the worker")
def test_stalled_event_names_the_blocking_frame(tmp_path, tag, fleet, silent_server):
    hung = fleet.start("hung", tmp_path / "worker.log", "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked in recv")
    config = _config(tmp_path, tag)

    _, event = _run_until_stalled(config, hung.pid)
    attrs = event["attributes"]
    assert attrs["workerwatch.transition"] == "stalled"
    assert attrs["worker.stackSource"] == "py-spy", attrs
    frames = attrs["worker.stack"].split(" <- ")
    # The innermost Python frame is the module-level recv() of worker_kinds.py's "hung" mode.
    assert "worker_kinds.py:" in frames[0], frames
    assert len(attrs["worker.stack"]) <= 4095
    assert attrs["worker.peer"] == f"127.0.0.1:{silent_server.port}"
    assert 0 < attrs["workerwatch.captureSeconds"] < 10
    assert hung.poll() is None, "the capture never stops the worker"
    assert main_thread_blocked(hung.pid), "nor wakes it"

    # Once per stall: remembered in the state, no second capture on the next run.
    stall = _state(tmp_path)["workers"]
    (memory,) = [m for m in stall.values() if m["pid"] == hung.pid]
    assert memory["evidence_for"] == memory["stalled_since"]
    again = check_line(run_integration(config)[0])
    assert _stalled_events(again, hung.pid) == []


def test_capture_skipped_cleanly_without_py_spy(tmp_path, tag, fleet, silent_server, monkeypatch):
    hung = fleet.start("hung", tmp_path / "worker.log", "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked in recv")
    python = python_without_py_spy(tmp_path)
    # The integration runs under that interpreter with a PATH holding nothing but an empty dir.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setattr(sys, "executable", python)  # run_integration starts sys.executable
    config = _config(tmp_path, tag)

    _, event = _run_until_stalled(config, hung.pid, env={"PATH": str(empty)})
    attrs = event["attributes"]
    assert "py-spy is not beside" in attrs["worker.stackSkipped"]
    assert "nor on PATH" in attrs["worker.stackSkipped"]
    if os.geteuid() == 0:
        # The kernel stack instead: where in the kernel the main thread sleeps.
        assert attrs["worker.stackSource"] == "kernel"
        assert any(
            "recv" in f or "tcp" in f or "sk_wait" in f for f in attrs["worker.stack"].split(" <- ")
        )
    else:
        assert attrs["worker.stackSource"] == "none"
    assert f"-> 127.0.0.1:{silent_server.port} ESTABLISHED" in attrs["worker.sockets"]
    # A skip is final for this stall: no retry on every run.
    again = check_line(run_integration(config, env={"PATH": str(empty)})[0])
    assert _stalled_events(again, hung.pid) == []
    assert hung.poll() is None


@pytest.mark.skipif(find_py_spy() is None, reason="py-spy is a test extra")
@pytest.mark.skipif(os.geteuid() != 0, reason="py-spy needs ptrace rights over the worker")
def test_captures_beyond_the_limit_of_a_run_come_on_the_next_run(
    tmp_path, tag, fleet, silent_server
):
    hung = [
        fleet.start("hung", tmp_path / "worker.log", "127.0.0.1", silent_server.port)
        for _ in range(MAX_CAPTURES + 1)
    ]
    wait_for(lambda: all(main_thread_blocked(p.pid) for p in hung), what="all blocked in recv")
    config = _config(tmp_path, tag)
    check_line(run_integration(config)[0])
    time.sleep(STALL_AFTER + 0.3)
    second = check_line(run_integration(config)[0])
    events = [e for p in hung for e in _stalled_events(second, p.pid)]
    assert len(events) == len(hung), "every stalled worker has its stalled event"
    captured = [e for e in events if e["attributes"]["worker.stackSource"] == "py-spy"]
    deferred = [e for e in events if e["attributes"]["worker.stackSource"] == "none"]
    assert len(captured) == MAX_CAPTURES and len(deferred) == 1
    assert "deferred to the next run" in deferred[0]["attributes"]["worker.stackSkipped"]

    third = check_line(run_integration(config)[0])
    late = [e for p in hung for e in _stalled_events(third, p.pid)]
    assert [e["attributes"]["process.pid"] for e in late] == [
        deferred[0]["attributes"]["process.pid"]
    ]
    assert late[0]["attributes"]["workerwatch.transition"] == "evidence"
    assert "worker_kinds.py:" in late[0]["attributes"]["worker.stack"]
    fourth = check_line(run_integration(config)[0])
    assert [e for p in hung for e in _stalled_events(fourth, p.pid)] == []
