"""Long-running mode as the agent sees it: a real resident process, read line by line."""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.v4 import check_line, find, tagged_config

INTERVAL = 0.5


class LineReader:
    """Reads a child's stdout on a thread, keeping each line and when it arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), ""))

    def next(self, timeout: float = 10.0) -> tuple[float, str]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None

    def until_payloads(self, count: int, timeout: float = 15.0) -> list[tuple[float, str]]:
        """All lines up to and including the ``count``-th payload line."""
        seen: list[tuple[float, str]] = []
        deadline = time.monotonic() + timeout
        while sum(1 for _, ln in seen if ln.strip() != "{}") < count:
            at, line = self.next(max(0.1, deadline - time.monotonic()))
            assert line, (
                f"stdout closed; stderr: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
            seen.append((at, line))
        return seen


def start_run(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workerwatch", "run", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, float, str]:
    """Send ``sig``; return (exit code, seconds to exit, stderr)."""
    sent = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout=5)
    took = time.monotonic() - sent
    stderr = proc.stderr.read() if proc.stderr else ""
    return code, took, stderr


def _config(tmp_path: Path, tag: str) -> Path:
    return tagged_config(tmp_path, tag, stall_after="2s")


@pytest.mark.slow  # real workers over several stall windows
def test_payloads_at_the_interval_heartbeats_between_and_sigterm_exit(tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    proc = start_run(_config(tmp_path, tag), "--interval", f"{INTERVAL}s")
    try:
        reader = LineReader(proc)
        lines = reader.until_payloads(4)
    finally:
        code, took, stderr = stop(proc)
    payloads = [(at, check_line(ln)) for at, ln in lines if ln.strip() != "{}"]
    beats = [ln for _, ln in lines if ln.strip() == "{}"]
    assert len(payloads) == 4
    assert beats and all(ln == "{}\n" for ln in beats), "heartbeats are exactly '{}' lines"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(payloads)]
    # Start-to-start scheduling: one slow cycle may be followed by a quick one, so bound
    # the mean tightly and each gap loosely.
    assert INTERVAL * 0.8 < sum(gaps) / len(gaps) < INTERVAL * 1.5, gaps
    assert all(0 < g < INTERVAL * 3 for g in gaps), gaps
    # Heartbeats arrive between payloads, not only at the end.
    kinds = ["p" if ln.strip() != "{}" else "h" for _, ln in lines]
    assert re.search("ph+p", "".join(kinds)), kinds
    for _, payload in payloads:
        assert find(payload, "workerwatch.worker.up", **{"process.pid": sleeper.pid})
    # The first cycle's interval.ms is the interval we keep, not the 30 s default.
    assert payloads[0][1]["data"][0]["common"]["interval.ms"] == int(INTERVAL * 1000)

    assert code == 0, stderr
    assert took < 1.0, f"SIGTERM took {took:.2f} s"
    assert "below the agent's 15 s minimum" in stderr
    summary = re.search(r"cpu per cycle mean ([\d.]+) ms", stderr)
    assert summary, stderr
    print(f"long-running cpu per cycle: {summary.group(0)}")
    assert "[ERR]" not in stderr


def test_state_file_is_written_and_survives_a_restart(tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    config = _config(tmp_path, tag)
    proc = start_run(config, "--interval", f"{INTERVAL}s")
    try:
        LineReader(proc).until_payloads(2)
    finally:
        assert stop(proc)[0] == 0
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    first_seen = [w["first_seen"] for w in state["workers"].values() if w["pid"] == sleeper.pid]
    assert len(first_seen) == 1

    # A restart reads it back: the worker keeps its first_seen and is past "first sample".
    proc = start_run(config, "--interval", f"{INTERVAL}s")
    try:
        _, line = LineReader(proc).until_payloads(1)[-1]
    finally:
        assert stop(proc, signal.SIGINT)[0] == 0
    reason = find(check_line(line), "workerwatch.worker.up", **{"process.pid": sleeper.pid})[0]
    assert "first sample" not in reason["attributes"]["worker.reason"]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert [w["first_seen"] for w in state["workers"].values()] == first_seen


@pytest.mark.slow  # real workers over several stall windows
def test_a_cycle_that_raises_once_does_not_end_the_process(tmp_path, tag, fleet):
    """The documented test hook makes exactly cycle 2 raise."""
    fleet.start("sleeper")
    proc = start_run(
        _config(tmp_path, tag),
        "--interval",
        f"{INTERVAL}s",
        env={"WORKERWATCH_TEST_FAIL_CYCLES": "2"},
    )
    try:
        lines = LineReader(proc).until_payloads(3)
        assert proc.poll() is None, "still running after the failed cycle"
    finally:
        code, _, stderr = stop(proc)
    payloads = [check_line(ln) for _, ln in lines if ln.strip() != "{}"]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("[ERR]")]
    assert len(errors) == 1 and "cycle 2 failed: RuntimeError" in errors[0], stderr
    # The failure is counted in the next payload, so it shows up in New Relic.
    counted = find(payloads[1], "workerwatch.integration.errors", probe="cycle")
    assert counted and counted[0]["value"] == 1
    assert not find(payloads[2], "workerwatch.integration.errors", probe="cycle")
    assert code == 0


def test_poisoned_state_file_does_not_end_the_process(tmp_path, tag, fleet):
    """A real fault: a state file of the right format version with a wrongly typed entry."""
    fleet.start("sleeper")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(
        json.dumps(
            {
                "version": 1,
                "workers": {},
                "names": {"old-worker": {"key": "1:1.00", "pid": 1, "last_seen": "yesterday"}},
                "probes": {},
            }
        )
    )
    proc = start_run(_config(tmp_path, tag), "--interval", "0.2s")
    try:
        lines = LineReader(proc).until_payloads(2, timeout=20)
        assert proc.poll() is None
    finally:
        code, _, stderr = stop(proc)
    for _, line in lines:
        if line.strip() != "{}":
            check_line(line)
    # The wrongly typed entry is dropped on load: no cycle fails, and it is not kept.
    assert "[ERR]" not in stderr, stderr
    assert "old-worker" not in (state_dir / "state.json").read_text()
    assert code == 0


def test_sigterm_during_a_cycle_exits_promptly(tmp_path, tag, fleet):
    """Stop arrives while collecting: the cycle is abandoned, no half line is written."""
    for _ in range(3):
        fleet.start("sleeper")
    proc = start_run(_config(tmp_path, tag), "--interval", "0.05s", "--heartbeat", "1h")
    reader = LineReader(proc)
    reader.until_payloads(2)
    code, took, stderr = stop(proc)
    assert code == 0 and took < 1.0, (took, stderr)
    rest = []
    while True:
        _, line = reader.next()
        if not line:
            break
        rest.append(line)
    for line in rest:
        check_line(line)


def test_bad_interval_is_a_fatal_line(tmp_path, tag):
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", "run", "--config", str(_config(tmp_path, tag)),
         "--interval", "soon"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("[FATAL] --interval:"), done.stderr
    assert done.stdout == ""
