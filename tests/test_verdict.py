"""Table tests of the pure verdict: observations + memory -> state and reason."""

from __future__ import annotations

import pytest
from workerwatch.judge.states import (
    BUSY_CPU_SHARE,
    CLEAR_CPU,
    GONE,
    IDLE,
    STALLED,
    UNKNOWN,
    WORKING,
)
from workerwatch.judge.verdict import gone, judge, judge_group, no_progress_since
from workerwatch.observations import (
    HeartbeatObservation,
    LogFd,
    LogObservation,
    ProcessObservation,
    Task,
    Worker,
    WorkerObservation,
)
from workerwatch.units import human_duration as ago

T0 = 1_800_000_000.0
W = Worker(group="g", pid=42, create_time=T0 - 1000, unit="worker@3.service")


def proc(cpu=1.0, main_cpu=1.0, vol=10, state="S", syscall="recvfrom", fd=5, wchar=1000):
    return ProcessObservation(
        cpu_seconds=cpu,
        main_cpu_seconds=main_cpu,
        main_voluntary=vol,
        main_involuntary=0,
        state=state,
        wchan="wait_woken",
        syscall=syscall,
        syscall_nr=45,
        syscall_fd=fd,
        write_chars=wchar,
    )


def logs(*positions):
    return LogObservation(
        fds=tuple(LogFd(fd=3 + i, path="/l", pos=p) for i, p in enumerate(positions))
    )


def obs(process=None, log=None, hb=None, peer=None):
    return WorkerObservation(worker=W, log=log, heartbeat=hb, process=process, peer=peer)


def run(sequence, stall_after=300.0):
    """Feed (time offset, observation) pairs through judge; return the verdicts."""
    memory, verdicts = None, []
    for offset, observation in sequence:
        verdict, memory = judge(observation, "worker@3.service", memory, T0 + offset, stall_after)
        verdicts.append(verdict)
    return verdicts


def test_first_sample_is_unknown_never_stalled():
    (v,) = run([(0, obs(proc(), logs(100)))])
    assert v.state == UNKNOWN
    assert "first sample" in v.reason


def test_blocked_forever_in_recv_is_stalled_with_evidence():
    frozen = obs(proc(), logs(100), peer="10.0.0.5:21")
    _, second = run([(0, frozen), (312, frozen)])
    assert second.state == STALLED
    assert second.reason == (
        "no log write for 312 s; main thread blocked in recvfrom on 10.0.0.5:21 for 312 s, "
        "0 wakeups in 312 s; cpu +0.00 s"
    )
    assert second.blocked_seconds == 312 and second.blocked_peer == "10.0.0.5:21"
    assert second.bytes_written == 0 and second.wakeups == 0


@pytest.mark.parametrize(
    ("later", "expected", "words"),
    [
        # idle poller: the main thread wakes at its timeout, never logs
        (obs(proc(vol=310, syscall="poll", fd=None), logs(100)), IDLE, "woke 300 times"),
        # busy on the CPU: no wakeups, CPU grows
        (obs(proc(cpu=300, main_cpu=300, syscall="running", fd=None), logs(100)), WORKING, "cpu +299.00 s"),
        # logs: offset advanced
        (obs(proc(vol=20, wchar=1500), logs(400)), WORKING, "log +300 B"),
        # uninterruptible sleep, no progress: stalled, and says D
        (obs(proc(state="D", syscall="read", fd=7), logs(100)), STALLED, "uninterruptible sleep (D)"),
        # stopped by SIGSTOP
        (obs(proc(state="T", syscall="none", fd=None), logs(100)), STALLED, "stopped (T)"),
    ],
)  # fmt: skip
def test_evidence_table(later, expected, words):
    _, second = run([(0, obs(proc(), logs(100))), (300, later)])
    assert second.state == expected, second.reason
    assert words in second.reason


def test_silent_but_not_for_the_whole_window_is_not_stalled():
    frozen = obs(proc(), logs(100))
    _, second = run([(0, frozen), (299, frozen)])
    assert second.state == IDLE


def test_background_thread_cpu_does_not_hide_a_stuck_main_thread():
    # Process CPU grows (an APM harvest thread), the main thread's does not.
    _, second = run([(0, obs(proc(cpu=1.0), logs(100))), (300, obs(proc(cpu=1.2), logs(100)))])
    assert second.state == STALLED


def test_shared_file_bytes_are_capped_by_what_the_process_wrote():
    # Our offset jumped 5000 bytes, but other workers wrote most of them.
    _, second = run(
        [(0, obs(proc(wchar=1000), logs(100))), (30, obs(proc(wchar=1200), logs(5100)))]
    )
    assert second.bytes_written == 200


def test_rotation_reopen_and_copytruncate_count_as_writes():
    rotated = LogObservation(fds=(LogFd(fd=9, path="/l", pos=50),))  # new fd after reopen
    _, second = run([(0, obs(proc(), logs(100))), (30, obs(proc(wchar=2000), rotated))])
    assert second.state == WORKING
    _, truncated = run([(0, obs(proc(), logs(5000))), (30, obs(proc(wchar=2000), logs(60)))])
    assert truncated.state == WORKING and truncated.bytes_written == 60


def test_hysteresis_a_wakeup_alone_does_not_clear_a_stall():
    frozen = obs(proc(), logs(100))
    woke = obs(proc(vol=11), logs(100))  # e.g. SIGUSR1 for a stack dump, back into recv
    wrote = obs(proc(vol=12, wchar=1100), logs(200))
    verdicts = run([(0, frozen), (300, frozen), (330, woke), (360, wrote)])
    assert [v.state for v in verdicts] == [UNKNOWN, STALLED, STALLED, WORKING]


def test_heartbeat_busy_task_stalled_names_the_task():
    def hb(at):
        task = Task(name="FTPArticle", id="t1", started=T0 - 120)
        return HeartbeatObservation(
            path="/hb", beat_time=at, seq=5, state="busy", task=task, pid=42
        )

    first = obs(proc(), logs(100), hb=hb(T0 - 120))
    verdicts = run([(0, first), (720, first)])
    assert verdicts[0].state == WORKING, "a fresh busy heartbeat is evidence on the first run"
    assert verdicts[1].state == STALLED
    assert verdicts[1].reason.startswith("busy on FTPArticle for 14 min, no beat for 14 min")
    assert verdicts[1].task_seconds == 840


def test_heartbeat_beats_keep_a_silent_worker_alive():
    def beat(seq, at):
        return HeartbeatObservation(path="/hb", beat_time=at, seq=seq, state="idle", pid=42)

    verdicts = run(
        [(0, obs(proc(), None, beat(1, T0))), (400, obs(proc(), None, beat(2, T0 + 390)))]
    )
    assert verdicts[1].state == IDLE
    assert verdicts[1].heartbeat_age == 10


def test_clock_going_backwards_starts_over():
    frozen = obs(proc(), logs(100))
    _, back = run([(0, frozen), (-10, frozen)])
    assert back.state == UNKNOWN


def test_costlier_evidence_only_for_a_main_thread_that_did_not_move():
    _, memory = judge(obs(proc(), logs(1)), "w", None, T0, 300)
    assert no_progress_since(proc(), memory)
    assert not no_progress_since(proc(vol=11), memory)
    assert not no_progress_since(proc(main_cpu=1.5), memory)


def test_gone_and_group():
    _, memory = judge(obs(proc(), logs(1)), "w", None, T0, 300)
    v, memory = gone(memory, T0 + 60)
    assert v.state == GONE and not v.up and "gone" in v.reason
    frozen = obs(proc(), logs(100))
    _, stalled = run([(0, frozen), (300, frozen)])
    group = judge_group("g", 5, [v, stalled], backlog_note="backlog: 42 pending")
    assert (group.running, group.missing, group.stalled) == (1, 4, 1)
    assert "1 stalled: worker@3.service" in group.reason and "backlog: 42" in group.reason


def test_ago_formats():
    assert [ago(s) for s in (0, 312, 840, 9000)] == ["0 s", "312 s", "14 min", "2.5 h"]


def test_an_offset_moved_by_a_process_sharing_the_file_is_not_this_workers_write():
    """Forked workers share one open file: a sibling's writes move our offset too."""
    shared_moved = obs(proc(wchar=1000), logs(5000))  # offset jumped, we wrote nothing
    _, second = run([(0, obs(proc(), logs(100))), (300, shared_moved)])
    assert second.state == STALLED, second.reason
    assert second.bytes_written == 0


def test_recovery_needs_wakeups_on_two_runs_in_a_row():
    frozen = obs(proc(), logs(100))
    verdicts = run(
        [
            (0, frozen),
            (300, frozen),
            (330, obs(proc(vol=12), logs(100))),
            (360, obs(proc(vol=14), logs(100))),
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, STALLED, STALLED, IDLE]
    assert "2 wakeups since the last run" in verdicts[2].reason


def test_the_metric_reason_has_no_numbers_and_is_stable():
    frozen = obs(proc(), logs(100), peer="10.0.0.5:21")
    verdicts = run([(0, frozen), (312, frozen), (342, frozen)])
    assert verdicts[1].summary == verdicts[2].summary
    assert verdicts[1].summary == "no log write; main thread blocked in recvfrom on 10.0.0.5:21"
    assert verdicts[1].reason != verdicts[2].reason


def test_a_beat_where_only_seq_advances_counts_as_a_beat():
    """Format doc: a beat is new when seq or time changed (a writer with a coarse clock)."""

    def beat(seq):
        return HeartbeatObservation(path="/hb", beat_time=T0, seq=seq, state="idle", pid=42)

    frozen = obs(proc(), logs(100), beat(1))
    stalled = [(0, frozen), (300, frozen)]
    # A stalled worker wakes once and beats: seq moved, its time did not.
    verdicts = run([*stalled, (330, obs(proc(vol=11), logs(100), beat(2)))])
    assert [v.state for v in verdicts] == [IDLE, STALLED, IDLE]
    # The same wakeup without the beat is a lone wakeup: still stalled.
    verdicts = run([*stalled, (330, obs(proc(vol=11), logs(100), beat(1)))])
    assert [v.state for v in verdicts] == [IDLE, STALLED, STALLED]


def test_main_thread_cpu_alone_clears_a_stall():
    """No log write, no beat, no wakeup: CLEAR_CPU seconds on the main thread is activity."""

    def cpu(seconds):
        return obs(proc(cpu=seconds, main_cpu=seconds), logs(100))

    stalled = [(0, cpu(0.0)), (300, cpu(0.0))]
    verdicts = run([*stalled, (330, cpu(CLEAR_CPU))])
    assert [v.state for v in verdicts] == [UNKNOWN, STALLED, IDLE]
    assert verdicts[2].wakeups == 0 and verdicts[2].bytes_written == 0
    # Less than that, on its own, is one run of progress: not enough to leave the stall.
    verdicts = run([*stalled, (330, cpu(CLEAR_CPU - 0.01))])
    assert [v.state for v in verdicts] == [UNKNOWN, STALLED, STALLED]
    assert CLEAR_CPU == 0.05  # the README's "CPU" signal: 5 clock ticks at 100 Hz


def test_working_from_five_percent_of_the_interval_on_the_cpu():
    """README: working when it "used at least 5 % of the interval on the CPU"."""

    def cpu(seconds):
        return obs(proc(cpu=1.0 + seconds, main_cpu=1.0 + seconds, vol=10 + 30), logs(100))

    for seconds, expected in ((30.0, WORKING), (15.0, WORKING), (14.0, IDLE)):
        _, later = run([(0, obs(proc(), logs(100))), (300, cpu(seconds))])
        assert later.state == expected, (seconds, later.reason)
    assert BUSY_CPU_SHARE == 0.05


def test_recovery_wakeups_must_be_on_consecutive_runs():
    """Two stack dumps minutes apart are two lone wakeups, not a recovery."""
    frozen = obs(proc(), logs(100))
    verdicts = run(
        [
            (0, frozen),
            (300, frozen),
            (330, obs(proc(vol=11), logs(100))),  # a stack-dump signal
            (360, obs(proc(vol=11), logs(100))),  # back in recv, nothing
            (390, obs(proc(vol=12), logs(100))),  # another signal
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, STALLED, STALLED, STALLED, STALLED]


def test_first_sight_with_a_stale_heartbeat_is_unknown():
    """A fresh heartbeat settles the first run; one older than stall_after does not."""
    stale = HeartbeatObservation(path="/hb", beat_time=T0 - 400, seq=3, state="busy", pid=42)
    fresh = HeartbeatObservation(path="/hb", beat_time=T0 - 10, seq=3, state="busy", pid=42)
    for log in (logs(100), None):  # an open log says nothing yet at first sight
        (first,) = run([(0, obs(proc(), log, stale))])
        assert first.state == UNKNOWN, first.reason
        assert first.reason.startswith("first sample"), first.reason
        (first,) = run([(0, obs(proc(), log, fresh))])
        assert first.state == WORKING, first.reason


def test_more_processes_than_expected_is_not_a_negative_missing_count():
    frozen = obs(proc(), logs(100))
    live = [run([(0, frozen)])[0] for _ in range(3)]
    group = judge_group("g", 2, live)
    assert (group.running, group.expected, group.missing) == (3, 2, 0)


def test_blocked_time_restarts_whenever_the_main_thread_makes_progress():
    """An idle poller re-enters poll every timeout: it is never "blocked for" hours."""
    polling = [obs(proc(vol=10 + 30 * i, syscall="poll", fd=None), logs(100)) for i in range(3)]
    verdicts = run([(0, polling[0]), (30, polling[1]), (60, polling[2])])
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, IDLE]
    assert [v.blocked_seconds for v in verdicts] == [0, 0, 0]
    # Without progress, the same call keeps counting.
    frozen = obs(proc(), logs(100))
    verdicts = run([(0, frozen), (30, frozen), (60, frozen)])
    assert [v.blocked_seconds for v in verdicts] == [0, 30, 60]
