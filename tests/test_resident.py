"""The resident host-phase child (host/child.py ``Resident``) and its held /proc files
(host/procfs.py ``hold``), on real processes.

A resident process keeps one child across cycles and that child keeps the /proc files it
reads open: these tests check that it still sees what a fresh child sees (workers that
start, exit or whose pid is reused), that a hung child is abandoned as before, and that
the held files do not pile up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workerwatch.collector import Collector
from workerwatch.config import load
from workerwatch.host import procfs
from workerwatch.host.procfs import ProcGone
from workerwatch.judge.states import GONE
from workerwatch.state import StateStore

from tests.fleet import wait_for
from tests.v4 import tagged_config

F_SETPIPE_SZ = 1031  # linux/fcntl.h (fcntl.F_SETPIPE_SZ from Python 3.10)


def _config(tmp_path: Path, tag: str, **extra: object):
    path = tagged_config(
        tmp_path,
        tag,
        name="g",
        top={"deadline": "2s"},
        logs=[str(tmp_path / "*.log")],
        stall_after="60s",
        **extra,
    )
    return load(str(path))


def _lines_of(log: Path, pid: int) -> int:
    """Lines the worker ``pid`` wrote to ``log`` (0 before the file exists)."""
    try:
        return log.read_text().count(f"worker_{pid} ")
    except FileNotFoundError:
        return 0


@pytest.fixture
def holding():
    """``procfs.hold`` in this test process, undone afterwards (the held fds closed)."""
    before = procfs._held
    procfs.hold()
    yield
    for fd in (procfs._held or {}).values():
        with contextlib.suppress(OSError):
            os.close(fd)
    procfs._held = before
    procfs._read_now.clear()


def _dead(pid: int) -> bool:
    """Exited: gone, or a zombie its parent reaps later."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def _exited(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def test_the_kept_child_lives_across_cycles_and_sees_workers_start_and_exit(tmp_path, tag, fleet):
    log = tmp_path / "w.log"
    first = [fleet.start("logger", log, 0.2), fleet.start("logger", log, 0.2)]
    config = _config(tmp_path, tag)
    store = StateStore()
    with Collector(config, resident=True) as collector:
        result = collector.collect(store)
        child = collector.host_child
        assert child is not None
        assert {v.pid for v in result.workers} == {p.pid for p in first}

        late = fleet.start("logger", log, 0.2)  # started after the first cycle
        wait_for(lambda: _lines_of(log, late.pid) > 0)
        result = collector.collect(store)
        assert collector.host_child == child, "a fresh child was forked"
        assert {v.pid for v in result.workers} == {p.pid for p in [*first, late]}
        late_verdict = next(v for v in result.workers if v.pid == late.pid)
        assert late_verdict.state != GONE

        _exited(first[0])  # exits and is reaped: its held files now fail with ESRCH
        result = collector.collect(store)
        assert collector.host_child == child
        states = {v.pid: v.state for v in result.workers}
        assert states[first[0].pid] == GONE
        assert states[first[1].pid] != GONE and states[late.pid] != GONE

        # Its log keeps being read through the held fdinfo: the remembered offset moves.
        def offset() -> int:
            (memory,) = [m for m in store.state.workers.values() if m.pid == late.pid]
            return sum((memory.log_pos or {}).values())

        before = offset()
        written = _lines_of(log, late.pid)
        wait_for(lambda: _lines_of(log, late.pid) > written)
        collector.collect(store)
        assert collector.host_child == child
        assert offset() > before > 0
    wait_for(lambda: not os.path.exists(f"/proc/{child}"), what="the kept child to exit")


def test_a_held_file_of_an_exited_process_is_never_read_as_alive(holding):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_for(lambda: b"time.sleep(60)" in procfs.read_bytes(f"/proc/{proc.pid}/cmdline"))
        status = procfs.read_text(f"/proc/{proc.pid}/status")
        assert f"Pid:\t{proc.pid}\n" in status
        assert procfs.held() >= 2
    finally:
        _exited(proc)
    for path in (f"/proc/{proc.pid}/cmdline", f"/proc/{proc.pid}/status"):
        with pytest.raises(ProcGone):
            procfs.read_bytes(path)
    # The failed held files were dropped, not kept for the next phase.
    procfs.release_unread()
    assert procfs.held() == 0


def test_held_files_follow_an_exec_and_memory_bound_files_are_not_held(holding):
    """cmdline and stat look the process up at each read; environ binds the memory of the
    program that was running at open, so it is never held."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; sys.stdin.readline(); os.execv('/bin/sleep', ['sleep', '60'])",
        ],
        stdin=subprocess.PIPE,
        env={**os.environ, "WWTEST_MARK": "before-exec"},
    )
    try:
        base = f"/proc/{proc.pid}"
        wait_for(lambda: b"execv" in procfs.read_bytes(f"{base}/cmdline"))
        assert b"WWTEST_MARK=before-exec" in procfs.read_bytes(f"{base}/environ")
        assert "(python" in procfs.read_text(f"{base}/stat")
        held = procfs.held()
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        wait_for(lambda: Path(f"{base}/cmdline").read_bytes() == b"sleep\x0060\x00")
        assert procfs.read_bytes(f"{base}/cmdline") == b"sleep\x0060\x00"
        assert "(sleep)" in procfs.read_text(f"{base}/stat")
        assert procfs.read_bytes(f"{base}/environ") == Path(f"{base}/environ").read_bytes()
        assert procfs.held() == held, "environ was held"
    finally:
        _exited(proc)


def _reuse_pid(pid: int) -> subprocess.Popen | None:
    """A new process that gets ``pid`` (through ns_last_pid, which needs CAP_SYS_ADMIN or
    CAP_CHECKPOINT_RESTORE); None when this host does not let us choose."""
    for _ in range(5):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
                handle.write(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "reused"])
        if proc.pid == pid:
            return proc
        _exited(proc)
    return None


def test_a_held_file_never_shows_a_new_process_with_the_same_pid(holding):
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "first"])
    wait_for(lambda: b"first" in procfs.read_bytes(f"/proc/{old.pid}/cmdline"))
    path = f"/proc/{old.pid}/cmdline"
    raw_fd = os.open(path, os.O_RDONLY)  # the same kind of fd the table holds
    _exited(old)
    new = _reuse_pid(old.pid)
    if new is None:
        os.close(raw_fd)
        pytest.skip("cannot choose the next pid here (ns_last_pid not writable)")
    try:
        wait_for(lambda: b"reused" in Path(path).read_bytes())
        with pytest.raises(OSError) as raised:
            os.pread(raw_fd, 4096, 0)
        assert raised.value.errno == errno.ESRCH
        # Through the table: the held fd fails, so the file is opened afresh: the new process.
        assert b"reused" in procfs.read_bytes(path)
        assert b"first" not in procfs.read_bytes(path)
    finally:
        os.close(raw_fd)
        _exited(new)


def test_held_files_do_not_pile_up_with_churning_processes(tmp_path, tag, fleet):
    log = tmp_path / "w.log"
    config = _config(tmp_path, tag)
    store = StateStore()
    workers = [fleet.start("logger", log, 0.2) for _ in range(3)]
    wait_for(lambda: all(_lines_of(log, w.pid) for w in workers))
    gone: set[int] = set()
    others_before = None
    with Collector(config, resident=True) as collector:
        collector.collect(store)
        child = collector.host_child
        assert child is not None
        for _ in range(12):
            # One worker replaced, and short-lived processes that match no group.
            old = workers.pop(0)
            _exited(old)
            gone.add(old.pid)
            workers.append(fleet.start("logger", log, 0.2))
            # Until the new program is set up, its cmdline reads empty (a fresh open too).
            wait_for(lambda new=workers[-1].pid: _lines_of(log, new) > 0)
            others = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
            result = collector.collect(store)
            for proc in others:
                _exited(proc)
                gone.add(proc.pid)
            assert collector.host_child == child
            assert {w.pid for w in workers} <= {v.pid for v in result.workers}
            # Files of processes gone before the phase are closed by the sweep at its end
            # (just after the answer); those that exited after it by the next one.
            before_phase = gone - {p.pid for p in others}
            wait_for(lambda b=before_phase: not _held_by(child)[0].keys() & b, what="the sweep")
            held, others_now = _held_by(child)
            assert all(held[w.pid] <= 10 for w in workers), held
            if others_before is None:
                others_before = others_now
            assert others_now == others_before, "fds other than /proc files grew"
        held, _ = _held_by(child)
        assert set(held) & {w.pid for w in workers} == {w.pid for w in workers}


def _held_by(child: int) -> tuple[dict[int, int], int]:
    """The kept child's open fds: {pid: files under /proc/PID held}, and how many others."""
    held: dict[int, int] = {}
    others = 0
    for entry in os.listdir(f"/proc/{child}/fd"):
        try:
            target = os.readlink(f"/proc/{child}/fd/{entry}")
        except OSError:
            continue
        match = re.match(r"/proc/(\d+)/", target)
        if match:
            held[int(match.group(1))] = held.get(int(match.group(1)), 0) + 1
        else:
            others += 1
    return held, others


@pytest.mark.parametrize("request_fits", [True, False])
def test_a_kept_child_that_stops_answering_is_left_behind_and_replaced(
    tmp_path, tag, fleet, request_fits
):
    """A kept child stopped between cycles (SIGSTOP stands for any hang) misses the next
    deadline: it is killed and left behind like a hung one-shot child, and the cycle after
    forks a fresh one. ``request_fits`` False: the request is longer than the pipe holds,
    so writing it must give up at the deadline too."""
    workers = [fleet.start("sleeper") for _ in range(20)]
    wait_for(lambda: all(procfs.start_ticks(w.pid) for w in workers))
    config = _config(tmp_path, tag)
    store = StateStore()
    with Collector(config, resident=True) as collector:
        assert len(collector.collect(store).workers) == 20
        stuck = collector.host_child
        assert stuck is not None
        if not request_fits:  # 20 remembered workers are about 6 KB
            assert collector.resident is not None
            fcntl.fcntl(collector.resident._requests, F_SETPIPE_SZ, 4096)
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()
        result = collector.collect(store)
        assert time.monotonic() - started < 4, "the cycle waited past its deadline"
        assert result.errors["deadline"] == 1
        assert collector.host_child is None
        wait_for(lambda: _dead(stuck), what="the stopped child killed")
        result = collector.collect(store)
        assert "deadline" not in result.errors
        assert {v.pid for v in result.workers} == {w.pid for w in workers}
        assert collector.host_child not in (None, stuck)


@pytest.mark.slow  # a FUSE mount that never answers
def test_a_hung_kept_child_is_abandoned_and_the_next_cycle_forks_a_fresh_one(
    tmp_path, tag, fleet, hung_fs
):
    log = tmp_path / "w.log"
    workers = [fleet.start("logger", log, 0.2), fleet.start("logger", log, 0.2)]
    config = _config(tmp_path, tag, heartbeats=f"{hung_fs}/*.json")
    store = StateStore()
    with Collector(config, resident=True) as collector:
        result = collector.collect(store)  # hangs in the heartbeat step: deadline
        assert result.errors["deadline"] == 1
        assert {v.pid for v in result.workers} == {p.pid for p in workers}
        hung = store.state.probes.hung["heartbeats:g"].pid
        assert collector.host_child is None, "the hung child was kept"
        assert os.path.exists(f"/proc/{hung}"), "the hung child is not left behind"

        for _ in range(3):
            started = time.monotonic()
            result = collector.collect(store)
            assert time.monotonic() - started < 2, "a skipped step costs nothing"
            assert "deadline" not in result.errors
            assert {v.pid for v in result.workers} == {p.pid for p in workers}
            fresh = collector.host_child
            assert fresh is not None and fresh != hung
        assert collector.host_child == fresh
