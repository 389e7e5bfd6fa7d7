"""The remembered log fds (host/log_offsets.py) on a real process whose fd table changes.

A run reads only the fdinfo of the log fds an earlier scan found while the process has the
same number of fds open and each fd is still the same file; these cases must fall back to
the full scan and find what a scan finds.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from workerwatch.host import log_offsets

# A process that opens, reopens and closes files on command (one line on stdin each).
SCRIPT = textwrap.dedent(
    """
    import os, sys
    held = {}
    for line in sys.stdin:
        op, *args = line.split()
        if op == "open":
            fd = os.open(args[0], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if len(args) > 1:  # at a given fd number
                os.dup2(fd, int(args[1]))
                os.close(fd)
                fd = int(args[1])
            os.write(fd, b"line\\n")
            held[args[0]] = fd
        elif op == "close":
            os.close(held.pop(args[0]))
        print("ok", held.get(args[0], -1), flush=True)
    """
)


class Holder:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def do(self, *words: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply[0] == "ok"
        return int(reply[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder():
    h = Holder()
    yield h
    h.stop()


def remembered(obs: log_offsets.LogObservation) -> dict[int, tuple[str, int]]:
    return {f.fd: (f.path, f.inode) for f in obs.fds if f.inode is not None}


def paths(obs: log_offsets.LogObservation) -> dict[int, str]:
    return {f.fd: f.path for f in obs.fds}


def test_unchanged_table_reads_the_same_logs_and_offsets(holder, tmp_path: Path):
    log = str(tmp_path / "a.log")
    fd = holder.do("open", log)
    patterns = [str(tmp_path / "*.log")]
    first = log_offsets.observe(holder.proc.pid, patterns)
    if first.open_fds is None or not remembered(first):
        pytest.skip("kernel reports no fd count (before 6.2) or no inode in fdinfo (5.14)")
    holder.do("open", str(tmp_path / "b.txt"))  # not a log: the count changes
    holder.do("close", str(tmp_path / "b.txt"))  # ...and back
    again = log_offsets.observe(holder.proc.pid, patterns, remembered(first), first.open_fds)
    assert paths(again) == {fd: log}
    holder.do("open", str(tmp_path / "other.log"), "40")
    holder.do("close", str(tmp_path / "other.log"))
    # Writes since the first look move the offset the cached path reports.
    holder.do("close", log)
    fd2 = holder.do("open", log)
    after = log_offsets.observe(holder.proc.pid, patterns, remembered(first), first.open_fds)
    assert paths(after) == {fd2: log}
    assert after.fds[0].pos == 10  # two lines of 5 bytes, both appended to a.log


def test_a_log_fd_reused_for_another_file_is_seen(holder, tmp_path: Path):
    patterns = [str(tmp_path / "*.log")]
    fd = holder.do("open", str(tmp_path / "a.log"))
    first = log_offsets.observe(holder.proc.pid, patterns)
    if first.open_fds is None or not remembered(first):
        pytest.skip("kernel reports no fd count (before 6.2) or no inode in fdinfo (5.14)")
    # Same fd number, same count of open fds, another file (a reopen after rotation).
    holder.do("open", str(tmp_path / "b.log"), str(fd))
    now = log_offsets.observe(holder.proc.pid, patterns, remembered(first), first.open_fds)
    assert paths(now) == {fd: str(tmp_path / "b.log")}
    # The same fd now holding a file that is not a log: no log fd at all.
    holder.do("open", str(tmp_path / "c.txt"), str(fd))
    later = log_offsets.observe(holder.proc.pid, patterns, remembered(now), now.open_fds)
    assert paths(later) == {}


def test_a_log_opened_later_is_found(holder, tmp_path: Path):
    patterns = [str(tmp_path / "*.log")]
    a = holder.do("open", str(tmp_path / "a.log"))
    first = log_offsets.observe(holder.proc.pid, patterns)
    if first.open_fds is None or not remembered(first):
        pytest.skip("kernel reports no fd count (before 6.2) or no inode in fdinfo (5.14)")
    b = holder.do("open", str(tmp_path / "b.log"))
    now = log_offsets.observe(holder.proc.pid, patterns, remembered(first), first.open_fds)
    assert paths(now) == {a: str(tmp_path / "a.log"), b: str(tmp_path / "b.log")}


def test_changed_patterns_are_applied_to_remembered_fds(holder, tmp_path: Path):
    holder.do("open", str(tmp_path / "a.log"))
    first = log_offsets.observe(holder.proc.pid, [str(tmp_path / "*.log")])
    if first.open_fds is None or not remembered(first):
        pytest.skip("kernel reports no fd count (before 6.2) or no inode in fdinfo (5.14)")
    other = [str(tmp_path / "*.out")]
    now = log_offsets.observe(holder.proc.pid, other, remembered(first), first.open_fds)
    assert paths(now) == {}
