"""A worker's threads and descendant processes, read from real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from workerwatch.host import waits, worktree
from workerwatch.host.procfs import ProcGone

from tests.fleet import wait_for
from tests.shapes import POLL, settled, start_shape


@pytest.fixture
def shape(fleet, tmp_path):
    return lambda mode, *args, **kw: start_shape(fleet, tmp_path, mode, *args, **kw)


def decoded(line: str | None) -> waits.Wait | None:
    return waits.decode(line) if line is not None else None


def by_tid(pid: int) -> dict[int, worktree.ThreadSample]:
    return {t.tid: t for t in worktree.threads(pid)}


def _once(sample, ready):
    """``sample`` if ``ready(sample)``, else None: a sample to poll for with wait_for."""
    return sample if ready(sample) else None


def test_a_pool_thread_burning_cpu_while_the_main_thread_waits_on_its_future(shape):
    proc, facts = shape("pool_burn")
    settled(proc.pid, "futex")
    first = worktree.threads(proc.pid)
    assert [t.tid for t in first] == [proc.pid, facts["pool"]], "main thread first"
    time.sleep(0.5)
    # 0.2 s of CPU takes longer than 0.2 s on a busy host: the pool thread's share is polled.
    pool_tid = facts["pool"]
    second = wait_for(
        lambda: _once(
            by_tid(proc.pid), lambda s: s[pool_tid].cpu_seconds - first[1].cpu_seconds >= 0.2
        ),
        what="the pool thread does the work (0.2 s of CPU)",
    )
    main, pool = second[proc.pid], second[pool_tid]
    wait = decoded(main.syscall)
    assert (wait.syscall, wait.timed) == ("futex", False), "future.result() waits untimed"
    assert main.cpu_seconds - first[0].cpu_seconds < 0.05
    assert pool.state == "R" or decoded(pool.syscall).syscall == "running"
    assert pool.nonvoluntary > 0


@pytest.mark.parametrize("mode", ["housekeeping_recv", "housekeeping_lock"])
def test_a_housekeeping_thread_next_to_a_task_thread_hung_in_recv(shape, silent_server, mode):
    proc, facts = shape(mode, "127.0.0.1", silent_server.port)
    settled(proc.pid, "recvfrom", tid=facts["task"])
    settled(proc.pid, "futex")  # join(), or the lock the hung thread holds
    first = by_tid(proc.pid)
    time.sleep(1.3)
    # Two wakeups of a 0.5 s sleep can come later than 1.3 s on a busy host: polled after it.
    house_tid = facts["housekeeping"]
    second = wait_for(
        lambda: _once(
            by_tid(proc.pid), lambda s: s[house_tid].voluntary - first[house_tid].voluntary >= 2
        ),
        what="the housekeeping thread wakes every 0.5 s",
    )
    assert set(second) == {proc.pid, facts["housekeeping"], facts["task"]}
    main, house, task = (second[t] for t in (proc.pid, facts["housekeeping"], facts["task"]))

    assert decoded(main.syscall).timed is False
    assert decoded(house.syscall).syscall == "clock_nanosleep"
    # The task thread: never woke, no CPU, untimed read on the silent server.
    assert task.voluntary == first[task.tid].voluntary
    assert task.cpu_seconds == first[task.tid].cpu_seconds
    wait = waits.inspect(proc.pid, task.tid)
    assert (wait.syscall, wait.timed, wait.fds) == ("recvfrom", False, (facts["fd"],))
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: f"127.0.0.1:{silent_server.port}"}


def test_a_parent_polling_the_pipes_of_a_child_that_computes_silently(shape):
    """subprocess.run(capture_output=True): the parent polls the child's stdout and stderr."""
    parent, facts = shape("capture_compute")
    wait = settled(parent.pid, POLL)
    assert (wait.timed, len(wait.fds)) == (False, 2)
    first = worktree.descendants(parent.pid)
    assert [(c.pid, c.ppid, c.depth) for c in first] == [(facts["pid"], parent.pid, 1)]
    time.sleep(0.5)
    (child,) = wait_for(
        lambda: _once(
            worktree.descendants(parent.pid),
            lambda d: d[0].cpu_seconds - first[0].cpu_seconds >= 0.2,
        ),
        what="the child is the one working (0.2 s of CPU)",
    )
    assert f"shapes_v2.py compute {parent.args[3]}" in child.cmdline
    # The parent's polled fds are the child's stdout and stderr pipes.
    polled = waits.name_fds(parent.pid, wait.fds)
    assert sorted(polled.values()) == sorted(child.stdio[1:])
    assert all(target.startswith("pipe:[") for target in child.stdio[1:])
    assert child.write_chars is not None and child.read_chars is not None


def test_a_child_started_from_a_pool_thread_is_found(shape):
    """The kernel lists a child under the thread that started it, not the main thread."""
    parent, facts = shape("pool_capture")
    threads = worktree.threads(parent.pid)
    assert len(threads) == 2
    assert Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split() == []
    assert [(c.pid, c.depth) for c in worktree.descendants(parent.pid)] == [(facts["pid"], 1)]
    assert worktree.children(parent.pid) == (facts["pid"],)


def test_a_parent_in_wait4_on_a_child_hung_in_recv(shape, silent_server):
    parent, facts = shape("wait_hung_child", "127.0.0.1", silent_server.port)
    assert settled(parent.pid, "wait4").child == facts["pid"]
    settled(facts["pid"], "recvfrom")
    first = worktree.descendants(parent.pid)
    time.sleep(0.5)
    (child,) = worktree.descendants(parent.pid)
    assert (child.pid, child.depth, child.state, child.threads) == (facts["pid"], 1, "S", 1)
    assert (child.voluntary, child.cpu_seconds) == (first[0].voluntary, first[0].cpu_seconds)
    wait = waits.inspect(child.pid)
    assert (decoded(child.syscall).syscall, wait.timed, wait.fds) == (
        "recvfrom",
        False,
        (facts["fd"],),
    )
    assert waits.name_fds(child.pid, wait.fds) == {facts["fd"]: f"127.0.0.1:{silent_server.port}"}


def test_a_parent_in_wait4_on_a_child_reading_with_a_timeout(shape, silent_server):
    parent, facts = shape("wait_timeout_child", "127.0.0.1", silent_server.port, 60)
    settled(parent.pid, "wait4")
    wait = settled(facts["pid"], POLL)
    (child,) = worktree.descendants(parent.pid)
    assert child.pid == facts["pid"]
    assert (wait.timed, wait.timeout, wait.fds) == (True, 60.0, (facts["fd"],))


def test_grandchildren_the_kernels_lists_and_the_ppid_scan_agree(shape, silent_server):
    top, facts = shape("wait_hung_child", "127.0.0.1", silent_server.port, 3)
    settled(facts["pid"], "recvfrom")
    found = worktree.descendants(top.pid)
    assert [d.depth for d in found] == [1, 2, 3]
    assert found[-1].pid == facts["pid"] and found[-1].ppid == found[1].pid
    assert [d.ppid for d in found] == [top.pid, found[0].pid, found[1].pid]
    scanned = worktree.descendants(top.pid, table=worktree.parent_table())
    assert [(d.pid, d.ppid, d.depth, d.cmdline) for d in scanned] == [
        (d.pid, d.ppid, d.depth, d.cmdline) for d in found
    ]
    assert worktree.has_children_files() == os.path.exists(
        f"/proc/{top.pid}/task/{top.pid}/children"
    )


def test_a_descendant_matched_by_another_group_is_left_out_with_its_subtree(shape, silent_server):
    top, facts = shape("wait_hung_child", "127.0.0.1", silent_server.port, 2)
    settled(facts["pid"], "recvfrom")
    (middle,) = worktree.children(top.pid)
    assert worktree.descendants(top.pid, exclude={middle}) == ()
    assert [d.pid for d in worktree.descendants(top.pid, exclude={facts["pid"]})] == [middle]


def test_a_process_that_is_gone(shape):
    proc, _ = shape("sleep", 60)
    proc.kill()
    proc.wait()
    with pytest.raises(ProcGone):
        worktree.threads(proc.pid)
    with pytest.raises(ProcGone):
        worktree.process(proc.pid)
    assert worktree.descendants(proc.pid) == ()


@pytest.mark.parametrize("skew", [3600, -3600])
def test_skewed_heartbeat_fixture_writes_its_times_off_by_the_skew(shape, tmp_path, skew):
    """The clock-skew fixture the verdict tests rely on: body time and mtime both off."""
    beat = tmp_path / "worker.json"
    proc, _ = shape("skewed_beat", beat, skew, 0)
    wait_for(lambda: (_seq(beat) or 0) >= 3, what="three beats")
    body = json.loads(beat.read_text())
    now = time.time()
    assert body["pid"] == proc.pid and body["state"] == "idle"
    assert abs(body["time"] - (now + skew)) < 5
    assert abs(beat.stat().st_mtime - (now + skew)) < 5


def _seq(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["seq"]
    except (OSError, ValueError, KeyError):
        return None
