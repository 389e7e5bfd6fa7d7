"""A job thread hung behind a dispatcher thread that keeps waking, with real processes.

The worker (tests/children/shapes_v2.py ``dispatcher``) polls its queue with a timeout in
its main thread and hands jobs to a ThreadPoolExecutor: its main thread moves on every
run, so only its other threads can show a hang. Each test runs the real one-shot CLI
every STALL_AFTER + 0.3 s against one such worker and its log.

The negatives run over several stall windows: idle pool threads (untimed futex waits),
and a listener thread blocked in an untimed recv for the whole test, from before the
worker's last log line, next to a main thread that logs or one that is quiet.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.fleet import run_integration, wait_for
from tests.shapes import facts_in, settled, start_shape
from tests.v4 import check_line, find, write_config

pytestmark = pytest.mark.slow  # several runs over stall windows each

STALL_AFTER = 1.0
GAP = STALL_AFTER + 0.3
WINDOWS = 5  # runs of the negatives after the first sight: four stall windows and more


def _config(tmp_path: Path, tag: str, log: Path) -> Path:
    return write_config(
        tmp_path / "c.yml",
        {"state_dir": str(tmp_path / "state"),
         "groups": [{"name": "g", "match": {"cmdline": f"shapes_v2\\.py dispatcher {tag} "},
                     "stall_after": f"{STALL_AFTER}s", "logs": [str(log)]}]},
    )  # fmt: skip


def _run(config: Path) -> dict:
    return check_line(run_integration(config)[0])


def _verdict(payload: dict, pid: int) -> tuple[str, str]:
    (up,) = find(payload, "workerwatch.worker.up", **{"process.pid": pid})
    return up["attributes"]["worker.state"], up["attributes"]["worker.reason"]


def _start(fleet, tmp_path: Path, port: int, flags: str) -> tuple[int, dict, Path]:
    log = tmp_path / "worker.log"
    proc, facts = start_shape(fleet, tmp_path, "dispatcher", log, "127.0.0.1", port, flags)
    if "listener" in facts:
        settled(proc.pid, "recvfrom", tid=facts["listener"])
    return proc.pid, facts, log


def test_a_job_hung_in_a_pool_thread_behind_a_polling_main_thread_is_stalled(
    tmp_path, tag, fleet, silent_server
):
    pid, _, log = _start(fleet, tmp_path, silent_server.port, "-")
    config = _config(tmp_path, tag, log)
    payloads = [_run(config)]  # first sight: the pool threads idle on their queue
    os.kill(pid, signal.SIGUSR1)  # the job that hangs
    job = wait_for(lambda: facts_in(Path(f"{tmp_path}/dispatcher-0.json.job")), what="job")
    settled(pid, "recvfrom", tid=job["tid"])
    hung_at = time.time()
    while True:
        time.sleep(GAP)
        payloads.append(_run(config))
        if time.time() >= hung_at + STALL_AFTER:
            break
    # Not before stall_after, then stalled at the first run after it or the one after.
    states = [_verdict(p, pid)[0] for p in payloads]
    assert "stalled" not in states[:-1], states
    if states[-1] != "stalled":
        time.sleep(GAP)
        payloads.append(_run(config))
    peer = f"127.0.0.1:{silent_server.port}"
    assert _verdict(payloads[-1], pid) == (
        "stalled",
        f"no log write; thread {job['tid']} blocked in recvfrom on {peer} with no timeout",
    )
    (event,) = [
        e
        for p in payloads
        for e in p["data"][0]["events"]
        if e["attributes"]["process.pid"] == pid and "stalled" in e["summary"]
    ]
    assert re.fullmatch(
        rf"no log write for \d+ s; thread {job['tid']} blocked in recvfrom on "
        rf"{re.escape(peer)} with no timeout for \d+ s, 0 wakeups; it began waiting after "
        r"the worker's last log write or beat; cpu \+0\.\d\d s",
        event["attributes"]["worker.reason"],
    ), event["attributes"]["worker.reason"]
    (peer_metric,) = find(
        payloads[-1], "workerwatch.worker.blocked.seconds", **{"process.pid": pid}
    )
    assert peer_metric["attributes"]["blocked.syscall"] == "recvfrom"
    assert peer_metric["attributes"]["blocked.peer"] == peer


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param("-", {"idle"}, id="idle-pool"),
        pytest.param("listener,chatty", {"working"}, id="listener-and-a-logging-main-thread"),
        pytest.param("listener", {"idle"}, id="listener-from-before-the-last-log-line"),
    ],
)
def test_a_healthy_pool_worker_is_never_stalled(
    tmp_path, tag, fleet, silent_server, flags, expected
):
    pid, facts, log = _start(fleet, tmp_path, silent_server.port, flags)
    config = _config(tmp_path, tag, log)
    payloads = [_run(config)]
    for _ in range(WINDOWS):
        time.sleep(GAP)
        payloads.append(_run(config))
    verdicts = [_verdict(p, pid) for p in payloads[1:]]
    assert {state for state, _ in verdicts} == expected, verdicts
    if "listener" in facts:  # the listener stayed where it was the whole time
        settled(pid, "recvfrom", tid=facts["listener"])
