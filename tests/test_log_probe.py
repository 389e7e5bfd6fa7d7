"""The log probe on real processes: each worker's own offset on a shared log, rotation.

The project's central claim is per-worker log writes on one shared ``O_APPEND`` file: each
process has its own open file description, so its fd offset moves only with its own writes
(and jumps to the end of the file when it writes). The file's size or mtime cannot tell the
workers apart; these tests pin that the probe reads the fd offset, not the file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from workerwatch.host import log_offsets as log_probe

from tests.fleet import run_integration, wait_for
from tests.v4 import check_line, find, write_config


def _offsets(pid: int, patterns: list[str] | None) -> dict[str, int]:
    """What the probe reports for one process: log path -> that process's fd offset."""
    observed = log_probe.observe(pid, patterns)
    assert observed.source == "fd", observed
    return {f.path: f.pos for f in observed.fds}


def _config(tmp_path: Path, tag: str, logs: list[str]) -> Path:
    group = {
        "name": "logs",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        # Long enough that nothing in these tests stalls: they are about log evidence.
        "stall_after": "60s",
        "logs": logs,
    }
    return write_config(
        tmp_path / "config.yml", {"state_dir": str(tmp_path / "state"), "groups": [group]}
    )


def _by_pid(payload: dict, name: str) -> dict[int, dict]:
    return {m["attributes"]["process.pid"]: m for m in find(payload, name)}


def test_two_writers_on_one_append_log_each_have_their_own_offset(tmp_path, tag, fleet):
    shared = tmp_path / "worker.log"
    patterns = [str(tmp_path / "*.log")]
    first = fleet.start("appender", shared, 100)
    wait_for(lambda: shared.exists() and shared.stat().st_size == 100, what="first write")
    second = fleet.start("appender", shared, 500)
    wait_for(lambda: shared.stat().st_size == 600, what="second write")

    # O_APPEND leaves each fd at the end of the file as it was after that fd's own last
    # write: 100 for the first writer, 600 for the second. The file's size (600) is only
    # the last writer's offset, so a probe that read st_size would report 600 for both.
    assert _offsets(first.pid, patterns) == {str(shared): 100}
    assert _offsets(second.pid, patterns) == {str(shared): 600}
    assert shared.stat().st_size == 600

    # Through the integration: the first writes 100 more bytes, the second nothing.
    config = _config(tmp_path, tag, patterns)
    check_line(run_integration(config)[0])
    os.kill(first.pid, signal.SIGUSR1)
    wait_for(lambda: shared.stat().st_size == 700, what="first writer's second line")
    assert _offsets(first.pid, patterns) == {str(shared): 700}
    assert _offsets(second.pid, patterns) == {str(shared): 600}
    payload = check_line(run_integration(config)[0])
    written = _by_pid(payload, "workerwatch.worker.log.bytesWritten")
    assert written[first.pid]["value"] == 100
    assert written[second.pid]["value"] == 0
    states = {pid: m["attributes"]["worker.state"] for pid, m in written.items()}
    assert states == {first.pid: "working", second.pid: "idle"}


def test_a_worker_holding_the_shared_log_but_writing_only_to_stdout(tmp_path, tag, fleet):
    """Its offset stays where it is while the others fill the file: it wrote no log."""
    shared = tmp_path / "worker.log"
    patterns = [str(tmp_path / "*.log")]
    logger = fleet.start("logger", shared, 0.1)
    chatty = fleet.start("stdout", shared, 0.1)
    wait_for(
        lambda: (
            set(_offsets(chatty.pid, patterns)) == {str(shared)}
            and shared.read_text().count("polled") >= 2
        ),
        what="both workers holding the log, the logger writing",
    )
    # Python's append mode seeks to the end on open: where its offset stays from now on.
    held = _offsets(chatty.pid, patterns)
    config = _config(tmp_path, tag, patterns)
    first_run = time.time()
    check_line(run_integration(config)[0])
    first_done = time.time()
    size = shared.stat().st_size
    wait_for(lambda: shared.stat().st_size > size + 200, what="the shared log growing")
    second_run = time.time()
    payload = check_line(run_integration(config)[0])
    second_done = time.time()

    written = _by_pid(payload, "workerwatch.worker.log.bytesWritten")
    assert written[chatty.pid]["value"] == 0
    assert written[logger.pid]["value"] > 0
    # A count covers the time since the previous run, not the agent's default interval.
    between = (second_run - first_done) * 1000 - 1, (second_done - first_run) * 1000
    assert between[0] <= written[logger.pid]["interval.ms"] <= between[1]
    ups = _by_pid(payload, "workerwatch.worker.up")
    assert ups[chatty.pid]["attributes"]["worker.state"] == "idle"
    assert ups[chatty.pid]["attributes"]["worker.reason"].startswith("no log write")
    assert ups[logger.pid]["attributes"]["worker.state"] == "working"
    silent = _by_pid(payload, "workerwatch.worker.log.silentSeconds")
    assert silent[chatty.pid]["value"] > 0
    assert _offsets(chatty.pid, patterns) == held
    assert shared.stat().st_size > held[str(shared)] + 200


def test_a_worker_whose_log_is_rotated_keeps_advancing(tmp_path, tag, fleet):
    """Rename rotation (.1, then -YYYYMMDD, then deleted): the fd follows the file."""
    log = tmp_path / "worker.log"
    worker = fleet.start("logger", log, 0.1)
    wait_for(lambda: log.exists() and "polled" in log.read_text(), what="worker logging")
    # The exact name, not a glob: the rotated names match only as the log they were.
    patterns = [str(log)]
    config = _config(tmp_path, tag, patterns)
    check_line(run_integration(config)[0])

    def offset() -> int:
        (pos,) = _offsets(worker.pid, patterns).values()
        return pos

    current = log
    for name in ("worker.log.1", "worker.log-20261127", None):
        before = offset()
        if name is None:
            current.unlink()  # "worker.log-20261127 (deleted)" in the fd table
            shown = current
        else:
            shown = tmp_path / name
            current.rename(shown)
            current = shown
        wait_for(lambda b=before: offset() > b + 100, what=f"writes after rotation to {name}")
        assert set(_offsets(worker.pid, patterns)) == {str(shown)}
        payload = check_line(run_integration(config)[0])
        (written,) = find(payload, "workerwatch.worker.log.bytesWritten")
        assert written["attributes"]["process.pid"] == worker.pid
        assert written["value"] > 100, name
        assert written["attributes"]["worker.state"] == "working", name
        (silent,) = find(payload, "workerwatch.worker.log.silentSeconds")
        assert silent["value"] == 0, name


@pytest.mark.parametrize("patterns", [None, ["*.log"]], ids=["every file", "glob"])
def test_only_files_held_open_for_writing_are_logs(tmp_path, fleet, patterns):
    """Read-write (``a+``) and write-only logs count; a file it only reads, and its stdio on
    /dev/null, do not (else a worker with no log would report one that never advances)."""
    (tmp_path / "input.log").write_text("line one\nline two\n")
    worker = fleet.start("openmodes", tmp_path)
    wait_for(lambda: (tmp_path / "ready").exists(), what="files opened")
    if patterns is not None:
        patterns = [str(tmp_path / p) for p in patterns]
    offsets = _offsets(worker.pid, patterns)
    assert set(offsets) == {str(tmp_path / "rw.log"), str(tmp_path / "w.log")}
    assert offsets[str(tmp_path / "w.log")] == (tmp_path / "w.log").stat().st_size


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("/var/log/w/worker.log", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log", ["/var/log/w/*.log"], True),
        ("/var/log/w/worker.log.1", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log.12", ["/var/log/w/*.log"], True),
        ("/var/log/w/worker.log-20261127", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log-2026112703", ["/var/log/w/*.log"], True),
        ("/var/log/w/worker.log (deleted)", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log.1 (deleted)", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log-20261127 (deleted)", ["/var/log/w/*.log"], True),
        ("/var/log/w/a.txt", ["/var/log/w/*.log", "/var/log/w/*.txt"], True),
        # negatives: other suffixes, not-a-date, another directory, another name
        ("/var/log/w/worker.log.bak", ["/var/log/w/worker.log"], False),
        # compressed rotations still count (logrotate's compress): see tests/test_log_names.py
        ("/var/log/w/worker.log.1.gz", ["/var/log/w/worker.log"], True),
        ("/var/log/w/worker.log-2026", ["/var/log/w/worker.log"], False),
        ("/var/log/w/worker.log-202611271", ["/var/log/w/worker.log"], False),
        ("/var/log/w/worker.logx", ["/var/log/w/worker.log"], False),
        ("/var/log/w/worker.log (deleted).1", ["/var/log/w/worker.log"], False),
        ("/var/log/other/worker.log.1", ["/var/log/w/*.log"], False),
        ("/var/log/w/worker.txt", ["/var/log/w/*.log"], False),
        ("/var/log/w/worker.log", [], False),
    ],
)
def test_is_log_path(path: str, patterns: list[str], expected: bool) -> None:
    assert log_probe.is_log_path(path, patterns) is expected
