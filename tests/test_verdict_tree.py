"""Table tests of the work-tree rules: threads, descendants, timed and untimed waits, clocks.

The verdict is pure, so the observations are written out; the real-process counterparts
of each case are in tests/test_work_tree_fleet.py.
"""

from __future__ import annotations

from dataclasses import replace

from workerwatch.judge.states import IDLE, STALLED, UNKNOWN, WORKING
from workerwatch.observations import (
    DescendantObservation,
    HeartbeatObservation,
    LogFd,
    LogObservation,
    ProcessObservation,
    ThreadObservation,
    WaitObservation,
    Worker,
    WorkerObservation,
    WorkTree,
)

from tests.test_verdict import run

T0 = 1_800_000_000.0
W = Worker(group="g", pid=42, create_time=T0 - 1000, unit="worker@3.service")
PEER = "10.0.0.5:21"
RECV = WaitObservation("recvfrom", timed=False, network=True, peer=PEER, fd=5, peer_key="1:5:9")
SLEEP = WaitObservation("clock_nanosleep", timed=True, timeout=0.4)
FUTEX = WaitObservation("futex", timed=False)
WAIT4 = WaitObservation("wait4", timed=False, child=4242, on_children=True)
PIPES = WaitObservation("poll", timed=False, on_children=True)


def proc(main_wait=None, cpu=1.0, threads=1, syscall="futex", fd=None):
    return ProcessObservation(
        cpu_seconds=cpu,
        main_cpu_seconds=1.0,
        main_voluntary=10,
        main_involuntary=0,
        state="S",
        syscall=syscall,
        syscall_fd=fd,
        threads=threads,
        write_chars=1000,
        main_wait=main_wait,
    )


def obs(process, tree=None, hb=None, peer=None):
    log = LogObservation(fds=(LogFd(fd=3, path="/l", pos=100),))
    return WorkerObservation(worker=W, log=log, heartbeat=hb, process=process, peer=peer, tree=tree)


def child(cpu=0.0, io=100, wait=RECV, pid=4242, depth=1, vol=3):
    return DescendantObservation(
        pid=pid,
        start_ticks=777,
        ppid=42,
        depth=depth,
        cmdline="lftp -e get",
        state="S",
        cpu_seconds=cpu,
        voluntary=vol,
        io_chars=io,
        wait=wait,
    )


def thread(tid, cpu=0.0, vol=0, wait=None):
    return ThreadObservation(tid=tid, cpu_seconds=cpu, voluntary=vol, state="S", wait=wait)


def test_a_child_hung_in_a_socket_read_stalls_the_waiting_parent_and_is_named():
    waiting = obs(proc(WAIT4, syscall="wait4"), WorkTree(descendants=(child(),)))
    verdicts = run([(0, obs(proc(syscall="wait4"))), (10, waiting), (322, waiting)])
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, STALLED]
    assert verdicts[2].reason == (
        "no log write for 322 s; main thread waits for child 4242 (lftp -e get), which is "
        "blocked in recvfrom on 10.0.0.5:21 with no timeout for 312 s, 0 wakeups; cpu +0.00 s"
    )
    assert verdicts[2].summary == (
        "no log write; main thread waits for a child, which is blocked in recvfrom on "
        "10.0.0.5:21 with no timeout"
    )
    assert verdicts[2].blocked_peer == PEER and verdicts[2].blocked_timeout == -1
    assert verdicts[2].untimed_waits == {PEER: 1}


def test_a_child_computing_silently_keeps_the_parent_working():
    def at(cpu):
        return obs(proc(PIPES, syscall="poll"), WorkTree(descendants=(child(cpu, wait=None),)))

    verdicts = run(
        [(0, obs(proc(syscall="poll"))), (10, at(1.0)), (310, at(290.0)), (610, at(590.0))]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, WORKING, WORKING]
    assert verdicts[3].reason == (
        "no log write for 10 min; main thread waits for child 4242 (lftp -e get), which is "
        "on CPU (+300.00 s); cpu +0.00 s"
    )


def test_a_child_waiting_with_a_timeout_is_idle_not_stalled():
    timed = WaitObservation("poll", timed=True, timeout=60.0, network=True, peer=PEER)
    waiting = obs(proc(WAIT4, syscall="wait4"), WorkTree(descendants=(child(wait=timed),)))
    verdicts = run([(0, obs(proc(syscall="wait4"))), (10, waiting), (400, waiting), (800, waiting)])
    assert [v.state for v in verdicts][2:] == [IDLE, IDLE]
    assert verdicts[3].reason == (
        "no log write for 13 min; waiting up to 60 s: main thread waits for its child "
        "processes, which wait with a timeout; cpu +0.00 s"
    )
    assert verdicts[3].waits_up_to == 60.0


def test_a_pool_thread_on_the_cpu_is_progress_for_a_main_thread_in_a_futex():
    def at(cpu):
        tree = WorkTree(threads=(thread(43, cpu=cpu),))
        return obs(proc(FUTEX, cpu=cpu + 1.0, threads=2), tree)

    verdicts = run([(0, obs(proc(threads=2))), (10, at(0.5)), (310, at(200.5)), (610, at(500.5))])
    assert [v.state for v in verdicts][2:] == [WORKING, WORKING]
    assert verdicts[3].reason == (
        "no log write for 10 min; main thread waits in futex; thread 43 on CPU (+300.00 s); "
        "cpu +300.00 s"
    )


def test_a_housekeeping_thread_does_not_mask_a_task_thread_hung_in_recv():
    def at(n):
        tree = WorkTree(
            threads=(thread(43, cpu=0.001 * n, vol=20 * n, wait=SLEEP), thread(44, wait=RECV))
        )
        return obs(proc(FUTEX, threads=3), tree)

    verdicts = run([(0, obs(proc(threads=3))), (10, at(1)), (161, at(2)), (322, at(3))])
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, IDLE, STALLED]
    assert verdicts[3].reason == (
        "no log write for 322 s; main thread waits in futex; thread 44 is blocked in recvfrom "
        "on 10.0.0.5:21 with no timeout for 312 s, 0 wakeups; 1 housekeeping thread "
        "(timed waits, no work); cpu +0.00 s"
    )
    assert verdicts[3].blocked_syscall == "recvfrom" and verdicts[3].blocked_seconds == 312


def test_a_thread_in_a_timed_wait_that_uses_the_cpu_is_work_not_housekeeping():
    tree = WorkTree(threads=(thread(43, cpu=0.0, vol=0, wait=SLEEP), thread(44, wait=RECV)))
    busy = WorkTree(threads=(thread(43, cpu=5.0, vol=20, wait=SLEEP), thread(44, wait=RECV)))
    verdicts = run(
        [(0, obs(proc(threads=3))), (10, obs(proc(FUTEX, threads=3), tree)),
         (322, obs(proc(FUTEX, threads=3, cpu=6.0), busy))]
    )  # fmt: skip
    assert verdicts[2].state == IDLE
    assert verdicts[2].reason == (
        "no log write for 322 s; main thread waits in futex; thread 43 on CPU (+5.00 s); "
        "cpu +5.00 s"
    )


def test_a_timed_main_wait_is_idle_with_its_timeout_and_never_stalled():
    poll = WaitObservation("poll", timed=True, timeout=70.0, network=True, peer="10.0.0.9:443")
    waiting = obs(proc(poll, syscall="poll"), peer="10.0.0.9:443")
    verdicts = run([(0, waiting), (400, waiting), (800, waiting)])
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, IDLE]
    assert verdicts[2].reason == (
        "no log write for 13 min; waiting up to 70 s (poll on 10.0.0.9:443); cpu +0.00 s"
    )
    assert verdicts[2].blocked_timeout == 70.0 and verdicts[2].untimed_waits == {}


def test_an_untimed_socket_wait_is_stalled_with_no_timeout_and_counted_as_a_risk():
    waiting = obs(proc(RECV, syscall="recvfrom", fd=5), peer=PEER)
    verdicts = run([(0, waiting), (312, waiting)])
    assert verdicts[1].state == STALLED
    assert verdicts[1].reason == (
        "no log write for 312 s; main thread blocked in recvfrom on 10.0.0.5:21 with no "
        "timeout for 312 s, 0 wakeups in 312 s; cpu +0.00 s"
    )
    assert verdicts[1].blocked_timeout == -1
    assert verdicts[1].untimed_waits == {PEER: 1} and verdicts[1].untimed_peers == [PEER]


def test_the_untimed_peers_are_remembered_while_the_worker_is_healthy_again():
    waiting = obs(proc(RECV, syscall="recvfrom", fd=5), peer=PEER)
    healthy = obs(replace(proc(syscall="running"), main_voluntary=99))
    verdicts = run([(0, waiting), (30, waiting), (60, healthy)])
    assert verdicts[1].untimed_waits == {PEER: 1}
    assert verdicts[2].untimed_waits == {} and verdicts[2].untimed_peers == [PEER]


def beat(seq, at):
    return HeartbeatObservation(path="/hb", beat_time=at, seq=seq, state="idle", pid=42)


def test_a_future_dated_beat_that_stops_cannot_hide_a_hang():
    frozen = beat(1, T0 + 3600)
    verdicts = run(
        [(0, obs(proc(RECV, syscall="recvfrom", fd=5), hb=frozen)),
         (150, obs(proc(RECV, syscall="recvfrom", fd=5), hb=frozen)),
         (301, obs(proc(RECV, syscall="recvfrom", fd=5), hb=frozen))]
    )  # fmt: skip
    assert [v.heartbeat_age for v in verdicts] == [0.0, 150.0, 301.0]
    assert verdicts[2].state == STALLED


def test_a_behind_clock_writer_that_keeps_beating_is_young():
    verdicts = run(
        [(0, obs(proc(), hb=beat(1, T0 - 3600))),
         (30, obs(proc(), hb=beat(2, T0 + 30 - 3600))),
         (60, obs(proc(), hb=beat(3, T0 + 60 - 3600)))]
    )  # fmt: skip
    # First sight dates the beat by its own time; from then on, by when it changed.
    assert [v.heartbeat_age for v in verdicts] == [3600.0, 30.0, 30.0]
    assert verdicts[2].state == IDLE


# --- a job thread hung while the main thread keeps waking (hung_thread) ---------------------


def moving(n: int, pos: int, *threads: ThreadObservation) -> WorkerObservation:
    """A worker whose main thread woke since the last run (a dispatcher polling its queue
    with a timeout), with the threads the host phase watched while its log was quiet."""
    process = replace(
        proc(threads=1 + len(threads)), main_voluntary=10 + 5 * n, write_chars=1000 + pos
    )
    log = LogObservation(fds=(LogFd(fd=3, path="/l", pos=pos),))
    return WorkerObservation(worker=W, log=log, process=process, watched=threads)


def test_a_job_thread_that_entered_its_wait_with_the_last_log_write_is_stalled():
    idle = (thread(43, wait=FUTEX), thread(44, wait=FUTEX))
    hung = (thread(43, wait=FUTEX), thread(44, vol=1, wait=RECV))  # woke once, to get there
    verdicts = run(
        [
            (0, moving(0, 100, *idle)),
            (30, moving(1, 200, *hung)),  # "job received" written; the job in recvfrom
            (180, moving(2, 200, *hung)),
            (329, moving(3, 200, *hung)),
            (330, moving(4, 200, *hung)),
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, WORKING, IDLE, IDLE, STALLED]
    assert verdicts[4].reason == (
        "no log write for 300 s; thread 44 blocked in recvfrom on 10.0.0.5:21 with no timeout "
        "for 300 s, 0 wakeups; it began waiting after the worker's last log write or beat; "
        "cpu +0.00 s"
    )
    assert verdicts[4].summary == (
        "no log write; thread 44 blocked in recvfrom on 10.0.0.5:21 with no timeout"
    )
    assert (verdicts[4].blocked_syscall, verdicts[4].blocked_peer) == ("recvfrom", PEER)
    assert (verdicts[4].blocked_seconds, verdicts[4].blocked_timeout) == (300, -1)


def test_a_hung_job_thread_stays_stalled_and_clears_when_the_worker_writes_again():
    idle = (thread(44, wait=FUTEX),)
    hung = (thread(44, vol=1, wait=RECV),)
    verdicts = run(
        [
            (0, moving(0, 100, *idle)),
            (30, moving(1, 200, *hung)),
            (330, moving(2, 200, *hung)),
            (630, moving(3, 200, *hung)),
            (660, moving(4, 300, thread(44, cpu=1.0, vol=9, wait=FUTEX))),
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, WORKING, STALLED, STALLED, WORKING]
    assert verdicts[3].reason == (
        "no log write for 10 min; thread 44 blocked in recvfrom on 10.0.0.5:21 with no timeout "
        "for 10 min, 0 wakeups; it began waiting after the worker's last log write or beat; "
        "cpu +0.00 s; stalled for 300 s"
    )


def test_idle_pool_threads_on_a_futex_never_stall_a_waking_worker():
    idle = (thread(43, wait=FUTEX), thread(44, wait=FUTEX))
    verdicts = run([(300 * n, moving(n, 100, *idle)) for n in range(6)])
    assert [v.state for v in verdicts] == [UNKNOWN] + [IDLE] * 5
    assert verdicts[-1].reason == (
        "no log write for 25 min; main thread woke 5 times in 300 s (futex); cpu +0.00 s"
    )


def test_a_listener_waiting_before_the_last_log_write_never_stalls_a_quiet_worker():
    futex, listening = thread(44, wait=FUTEX), thread(44, wait=RECV)
    message = thread(44, cpu=0.01, vol=1, wait=RECV)  # one message, then the same wait
    verdicts = run(
        [
            (0, moving(0, 100, futex)),
            (30, moving(1, 100, listening)),  # seen entering its wait...
            (60, moving(2, 200, listening)),  # ...before this log write
            (400, moving(3, 200, message)),
            (800, moving(4, 200, message)),
            (1200, moving(5, 200, message)),
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, IDLE, WORKING, IDLE, IDLE, IDLE]
    assert verdicts[-1].reason == (
        "no log write for 19 min; main thread woke 5 times in 400 s (futex); cpu +0.00 s"
    )


def test_a_listener_already_waiting_at_first_sight_never_stalls_a_quiet_worker():
    listening = thread(44, wait=RECV)
    verdicts = run([(300 * n, moving(n, 100, listening)) for n in range(6)])
    assert [v.state for v in verdicts] == [UNKNOWN] + [IDLE] * 5


def test_a_listener_next_to_a_main_thread_that_logs_is_working_never_stalled():
    listening = thread(44, wait=RECV)
    verdicts = run(
        [(0, moving(0, 100, thread(44, wait=FUTEX)))]
        + [(300 * n, moving(n, 100 + 50 * n, listening)) for n in range(1, 6)]
    )
    assert [v.state for v in verdicts] == [UNKNOWN] + [WORKING] * 5


def test_a_listener_that_reconnects_or_handles_a_message_without_logging_never_stalls():
    """Seen running, or in a socket wait on another peer, at the run before it entered its
    present wait after the last log write: a listener's reconnect or message, not a job."""
    other = WaitObservation("recvfrom", timed=False, network=True, peer="10.0.0.9:6379", fd=6)
    for before in (thread(44, cpu=0.5, vol=3, wait=None), thread(44, vol=1, wait=other)):
        verdicts = run(
            [
                (0, moving(0, 100, thread(44, wait=FUTEX))),
                (30, moving(1, 200, before)),  # the last log write; the thread not in RECV
                (60, moving(2, 200, thread(44, vol=4, wait=RECV))),
                (400, moving(3, 200, thread(44, vol=4, wait=RECV))),
                (800, moving(4, 200, thread(44, vol=4, wait=RECV))),
            ]
        )
        assert [v.state for v in verdicts][2:] == [IDLE, IDLE, IDLE], before


def test_a_job_thread_new_since_the_last_run_that_hangs_is_stalled():
    """A pool that starts its threads on the first job (ThreadPoolExecutor, Celery's
    threads pool): the thread did not exist at the run before it was seen in its wait."""
    hung = (thread(44, vol=1, wait=RECV),)
    verdicts = run(
        [
            (0, moving(0, 100)),
            (30, moving(1, 200, *hung)),
            (180, moving(2, 200, *hung)),
            (330, moving(3, 200, *hung)),
        ]
    )
    assert [v.state for v in verdicts] == [UNKNOWN, WORKING, IDLE, STALLED]
    assert verdicts[3].summary == (
        "no log write; thread 44 blocked in recvfrom on 10.0.0.5:21 with no timeout"
    )
