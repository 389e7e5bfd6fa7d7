"""Detection v2 with real processes: work in children and threads, housekeeping threads,
timed and untimed waits, epoll peers, skewed heartbeat clocks, dateext rotation.

Each test runs the real one-shot CLI against worker shapes from tests/children/shapes_v2.py
(three runs over a stall window of 1 s: first sight, the work tree's first read, the
verdict) and asserts the state and the reason: the metric's number-free reason always,
and for a stall the event's full reason.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.fleet import run_integration, wait_for
from tests.shapes import EPOLL_WAIT, POLL, settled, start_shape
from tests.v4 import check_line, find, write_config

# Every test here spans two or three runs over a stall window, like the other multi-window
# fleet tests: `make test` runs them, `make test-fast` does not.
pytestmark = pytest.mark.slow

STALL_AFTER = 1.0
NO_LOG = "no log file open; "  # the shapes hold no log file: every reason starts so


def _config(tmp_path: Path, tag: str, mode: str, tail: str = "", **group) -> Path:
    base = {
        "name": "g",
        # The shape's own mode only: the children it starts run other modes (or the same
        # mode with other arguments) and must be its work, not workers of their own.
        "match": {"cmdline": f"shapes_v2\\.py {mode} {tag} \\S+{tail}"},
        "stall_after": f"{STALL_AFTER}s",
    }
    return write_config(
        tmp_path / "c.yml",
        {"state_dir": str(tmp_path / "state"), "groups": [{**base, **group}]},
    )


def _runs(config: Path, count: int = 3, gap: float = STALL_AFTER + 0.3) -> list[dict]:
    payloads = []
    for i in range(count):
        if i:
            time.sleep(gap)
        payloads.append(check_line(run_integration(config)[0]))
    return payloads


def _verdict(payload: dict, pid: int) -> tuple[str, str]:
    (up,) = find(payload, "workerwatch.worker.up", **{"process.pid": pid})
    return up["attributes"]["worker.state"], up["attributes"]["worker.reason"]


def _stall_reason(payloads: list[dict], pid: int) -> str:
    """The full reason of the event that said this worker became stalled."""
    events = [
        e
        for p in payloads
        for e in p["data"][0]["events"]
        if e["attributes"]["process.pid"] == pid and "stalled" in e["summary"]
    ]
    assert events, "no stalled event"
    return events[-1]["attributes"]["worker.reason"]


def _one(payload: dict, name: str, pid: int) -> dict:
    (metric,) = find(payload, name, **{"process.pid": pid})
    return metric


@pytest.fixture
def shape(fleet, tmp_path):
    return lambda mode, *args, **kw: start_shape(fleet, tmp_path, mode, *args, **kw)


# --- work in child processes ---------------------------------------------------------------


def test_a_child_computing_silently_behind_captured_pipes_is_work(tmp_path, tag, shape):
    proc, facts = shape("capture_compute")
    settled(proc.pid, POLL)
    payloads = _runs(_config(tmp_path, tag, "capture_compute"))
    assert _verdict(payloads[-1], proc.pid) == (
        "working",
        NO_LOG + "main thread waits for a child, which is on CPU",
    )
    assert facts["ppid"] == proc.pid  # the child that computes is the one that told us


@pytest.mark.parametrize("levels", [1, 2])
def test_a_child_hung_in_recv_stalls_the_parent_waiting_in_wait4(
    tmp_path, tag, shape, silent_server, levels
):
    port = silent_server.port
    proc, facts = shape("wait_hung_child", "127.0.0.1", port, levels)
    settled(facts["pid"], "recvfrom")
    config = _config(tmp_path, tag, "wait_hung_child", f" \\S+ \\S+ {levels}$")
    payloads = _runs(config)
    kind = "child" if levels == 1 else "descendant"
    peer = f"127.0.0.1:{port}"
    assert _verdict(payloads[-1], proc.pid) == (
        "stalled",
        f"{NO_LOG}main thread waits for a {kind}, which is blocked in recvfrom on {peer} "
        "with no timeout",
    )
    assert re.fullmatch(
        rf"{NO_LOG}main thread waits for {kind} {facts['pid']} \(.*shapes_v2\.py recv {tag} .*\), "
        rf"which is blocked in recvfrom on {re.escape(peer)} with no timeout for \d+ s, "
        r"0 wakeups; cpu \+0\.00 s",
        _stall_reason(payloads, proc.pid),
    ), _stall_reason(payloads, proc.pid)
    blocked = _one(payloads[-1], "workerwatch.worker.blocked.timeoutSeconds", proc.pid)
    assert blocked["value"] == -1 and blocked["attributes"]["blocked.peer"] == peer
    risk = _one(payloads[-1], "workerwatch.worker.untimedWaits", proc.pid)
    assert risk["value"] == 1 and risk["attributes"]["blocked.peer"] == peer


def test_a_child_reading_with_a_timeout_is_idle(tmp_path, tag, shape, silent_server):
    proc, facts = shape("wait_timeout_child", "127.0.0.1", silent_server.port, 60)
    settled(facts["pid"], POLL)
    payloads = _runs(_config(tmp_path, tag, "wait_timeout_child"))
    assert _verdict(payloads[-1], proc.pid) == (
        "idle",
        NO_LOG + "main thread waits for its child processes, which wait with a timeout",
    )
    assert not find(payloads[-1], "workerwatch.worker.untimedWaits", **{"process.pid": proc.pid})


# --- work in threads -------------------------------------------------------------------------


def test_a_pool_thread_burning_cpu_is_work_for_a_main_thread_in_future_result(tmp_path, tag, shape):
    proc, _ = shape("pool_burn")
    settled(proc.pid, "futex")
    payloads = _runs(_config(tmp_path, tag, "pool_burn"))
    assert _verdict(payloads[-1], proc.pid) == (
        "working",
        NO_LOG + "main thread waits in futex; thread on CPU; on CPU",
    )


def test_a_child_started_from_a_pool_thread_is_work(tmp_path, tag, shape):
    proc, _ = shape("pool_capture")
    settled(proc.pid, "futex")
    payloads = _runs(_config(tmp_path, tag, "pool_capture"))
    assert _verdict(payloads[-1], proc.pid) == (
        "working",
        NO_LOG + "main thread waits in futex; child on CPU",
    )


@pytest.mark.parametrize("mode", ["housekeeping_recv", "housekeeping_lock"])
def test_a_housekeeping_thread_does_not_mask_a_task_thread_hung_in_recv(
    tmp_path, tag, shape, silent_server, mode
):
    proc, facts = shape(mode, "127.0.0.1", silent_server.port)
    settled(proc.pid, "recvfrom", tid=facts["task"])
    payloads = _runs(_config(tmp_path, tag, mode))
    peer = f"127.0.0.1:{silent_server.port}"
    assert _verdict(payloads[-1], proc.pid) == (
        "stalled",
        f"{NO_LOG}main thread waits in futex; thread blocked in recvfrom on {peer} with no timeout",
    )
    assert re.fullmatch(
        rf"{NO_LOG}main thread waits in futex; thread {facts['task']} is blocked in recvfrom on "
        rf"{re.escape(peer)} with no timeout for \d+ s, 0 wakeups; 1 housekeeping thread "
        r"\(timed waits, no work\); cpu \+0\.\d\d s",
        _stall_reason(payloads, proc.pid),
    ), _stall_reason(payloads, proc.pid)


# --- timed and untimed waits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "args", "syscall", "timeout"),
    [
        ("poll", (60000,), POLL, 60.0),
        ("epoll", (60,), EPOLL_WAIT, 60.0),
        ("recv_timeout", (60,), POLL, 60.0),
    ],
)
def test_a_timed_network_wait_is_idle_with_its_timeout(
    tmp_path, tag, shape, silent_server, mode, args, syscall, timeout
):
    host_port = ("127.0.0.1", silent_server.port)
    proc, _ = shape(mode, *(args + host_port) if mode != "recv_timeout" else (*host_port, *args))
    settled(proc.pid, syscall)
    payloads = _runs(_config(tmp_path, tag, mode))
    assert _verdict(payloads[-1], proc.pid) == (
        "idle",
        f"{NO_LOG}waiting with a timeout ({syscall})",
    )
    blocked = _one(payloads[-1], "workerwatch.worker.blocked.timeoutSeconds", proc.pid)
    # A timed wait's peer is not looked up (it ends by itself; naming costs a psutil walk).
    assert blocked["value"] == timeout and "blocked.peer" not in blocked["attributes"]


def test_a_backoff_sleep_is_idle_with_the_time_left(tmp_path, tag, shape):
    proc, _ = shape("sleep", 60)
    settled(proc.pid, ("clock_nanosleep", "pselect6"))
    payloads = _runs(_config(tmp_path, tag, "sleep"))
    state, reason = _verdict(payloads[-1], proc.pid)
    assert state == "idle" and re.fullmatch(
        rf"{NO_LOG}waiting with a timeout \((clock_nanosleep|pselect6)\)", reason
    )
    blocked = _one(payloads[-1], "workerwatch.worker.blocked.timeoutSeconds", proc.pid)
    assert 50 < blocked["value"] <= 60


@pytest.mark.parametrize(
    ("mode", "args", "syscall"),
    [("recv", (), "recvfrom"), ("poll", (-1,), POLL), ("epoll", ("none",), EPOLL_WAIT)],
)
def test_an_untimed_network_wait_is_stalled_naming_its_peer_and_no_timeout(
    tmp_path, tag, shape, silent_server, mode, args, syscall
):
    proc, _ = shape(mode, *args, "127.0.0.1", silent_server.port)
    settled(proc.pid, syscall)
    payloads = _runs(_config(tmp_path, tag, mode), count=2)
    peer = f"127.0.0.1:{silent_server.port}"
    assert _verdict(payloads[-1], proc.pid) == (
        "stalled",
        f"{NO_LOG}main thread blocked in {syscall} on {peer}",
    )
    assert re.fullmatch(
        rf"{NO_LOG}main thread blocked in {syscall} on {re.escape(peer)} with no timeout for \d+ s, "
        r"0 wakeups in \d+ s; cpu \+0\.00 s",
        _stall_reason(payloads, proc.pid),
    ), _stall_reason(payloads, proc.pid)
    risk = _one(payloads[-1], "workerwatch.worker.untimedWaits", proc.pid)
    assert risk["value"] == 1 and risk["attributes"]["blocked.peer"] == peer
    inventory = payloads[-1]["data"][0]["inventory"]
    assert inventory[f"untimedWaits/{risk['attributes']['worker.name']}"] == {"peers": peer}


# --- clocks -------------------------------------------------------------------------------


def test_a_future_dated_heartbeat_cannot_hide_a_hang(tmp_path, tag, shape, silent_server):
    beat = tmp_path / "beats" / "w.json"
    beat.parent.mkdir()
    proc, _ = shape("skewed_beat", beat, 3600, 1, "127.0.0.1", silent_server.port)
    settled(proc.pid, "recvfrom")
    config = _config(tmp_path, tag, "skewed_beat", heartbeats=str(beat.parent / "*.json"))
    payloads = _runs(config)
    ages = [_one(p, "workerwatch.worker.heartbeat.ageSeconds", proc.pid)["value"] for p in payloads]
    assert ages[0] == 0 and STALL_AFTER < ages[-1] < 60, ages
    state, reason = _verdict(payloads[-1], proc.pid)
    assert state == "stalled", reason
    assert reason.startswith(
        f"idle heartbeat; {NO_LOG}main thread blocked in recvfrom on 127.0.0.1:"
    )


def test_a_heartbeat_written_an_hour_behind_is_young(tmp_path, tag, shape):
    beat = tmp_path / "beats" / "w.json"
    beat.parent.mkdir()
    proc, _ = shape("skewed_beat", beat, -3600, 0)
    config = _config(tmp_path, tag, "skewed_beat", heartbeats=str(beat.parent / "*.json"))
    payloads = _runs(config)
    ages = [_one(p, "workerwatch.worker.heartbeat.ageSeconds", proc.pid)["value"] for p in payloads]
    # First sight can only date the beat by its own time; from then on it is seen changing.
    assert ages[0] > 3500 and all(age <= STALL_AFTER + 1 for age in ages[1:]), ages
    assert _verdict(payloads[-1], proc.pid)[0] == "idle"


# --- rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize("rotated", ["worker.log-2026-11-30", "worker.log-20261130"])
def test_a_log_renamed_by_dateext_rotation_keeps_the_log_evidence(tmp_path, tag, fleet, rotated):
    log = tmp_path / "worker.log"
    writer = fleet.start("logger", log, 0.2)
    wait_for(lambda: log.exists() and log.read_text().count("polled") >= 2, what="logging")
    log.rename(tmp_path / rotated)  # logrotate's dateext, without copytruncate
    config = write_config(
        tmp_path / "c.yml",
        {"state_dir": str(tmp_path / "state"),
         "groups": [{"name": "g", "match": {"cmdline": f"worker_kinds\\.py logger {tag}"},
                     "stall_after": "1s", "logs": [str(log)]}]},
    )  # fmt: skip
    payloads = _runs(config, count=2)
    assert _verdict(payloads[-1], writer.pid)[0] == "working"
    assert _one(payloads[-1], "workerwatch.worker.log.bytesWritten", writer.pid)["value"] > 0


# --- the worker's own stack dump -----------------------------------------------------------


def test_a_stack_dump_into_the_log_of_a_stalled_worker_is_not_a_log_write(
    tmp_path, tag, shape, silent_server
):
    log = tmp_path / "worker.log"
    proc, _ = shape("dump_recv", log, "127.0.0.1", silent_server.port)
    settled(proc.pid, "recvfrom")
    config = _config(tmp_path, tag, "dump_recv", logs=[str(log)])
    payloads = _runs(config, count=2)
    assert _verdict(payloads[-1], proc.pid)[0] == "stalled"
    size = log.stat().st_size
    os.kill(proc.pid, signal.SIGUSR1)  # an operator asks for the stack
    wait_for(lambda: log.stat().st_size > size and "most recent call first" in log.read_text())
    after = check_line(run_integration(config)[0])
    # The signal woke the main thread, so its peer is not looked up this run.
    assert _verdict(after, proc.pid) == ("stalled", "no log write; main thread blocked in recvfrom")
    assert not [e for e in after["data"][0]["events"] if e["attributes"]["process.pid"] == proc.pid]
