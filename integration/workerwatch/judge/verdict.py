"""Verdicts: observations + what we remembered from the previous run -> state and reason.

Pure code: no I/O, no clock; ``now`` is passed in. The rules (README "Verdict rules"):

* ``unknown``  first sight of a process with no fresh heartbeat, or no progress evidence.
* ``stalled``  alive, silent (no log write, no heartbeat beat) for at least ``stall_after``,
  and no progress over that window: no main-thread CPU and no main-thread wakeups.
* ``working``  its log advanced, a heartbeat says busy and keeps beating, or it burns CPU.
* ``idle``     alive and making progress (wakes up, beats idle) without doing work.
* ``gone``     a worker we knew whose process is no longer there.

Entering ``stalled`` needs the whole window; leaving it needs a clear activity signal (a log
write, a beat, or CPU), not merely a wakeup, so a stack-dump signal to a hung worker does
not flap its verdict.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from workerwatch.judge.memory import MAX_PEERS, MAX_UNITS, WorkerMemory
from workerwatch.judge.reasons import explain
from workerwatch.judge.states import (
    BUSY_CPU_SHARE,
    CLEAR_CPU,
    GONE,
    IDLE,
    RECOVERY_RUNS,
    STALLED,
    UNKNOWN,
    WAITS_FOR_CHILDREN,
    WORKING,
    GroupVerdict,
    WorkerVerdict,
)
from workerwatch.observations import (
    ProcessObservation,
    ThreadObservation,
    WaitObservation,
    WorkerObservation,
    WorkTree,
)
from workerwatch.units import human_duration as ago

if TYPE_CHECKING:
    from workerwatch.judge.work import TreeVerdict


def _in_blocking_call(proc: ProcessObservation) -> bool:
    return proc.syscall not in (None, "running", "none")


def no_progress_since(proc: ProcessObservation, prev: WorkerMemory) -> bool:
    """The main thread has neither woken nor run since the previous run.

    Decides whether the costlier evidence (socket peer, other threads) is worth reading.
    """
    return (
        prev.main_voluntary is not None
        and proc.main_voluntary == prev.main_voluntary
        and proc.main_cpu_seconds == prev.main_cpu
    )


def _log_delta(
    obs: WorkerObservation, prev: WorkerMemory | None
) -> tuple[bool, int | None, dict[int, int] | None]:
    """(advanced, bytes written, new offsets) from the worker's own fd offsets."""
    log = obs.log
    if log is None or log.source != "fd":
        return False, None, None
    current = {f.fd: f.pos for f in log.fds}
    if prev is None or prev.log_pos is None:
        return False, None, current
    advanced = False
    grown = 0
    for fd, pos in current.items():
        if fd in log.stack_dumps:
            continue  # a stack dump someone asked the worker for is not its work
        old = prev.log_pos.get(fd)
        if old is None:
            # A log opened since last run (reopen after rotation) that has been written to.
            advanced = advanced or pos > 0
        elif pos > old:
            advanced = True
            grown += pos - old
        elif pos < old and pos > 0:
            advanced = True  # truncated (copytruncate) and written again
            grown += pos
    written = grown
    proc = obs.process
    if proc and proc.write_chars is not None and prev.write_chars is not None:
        # On a shared O_APPEND file our offset jumps over other workers' lines too; what
        # this process wrote in total caps what it can have written to its logs. And an
        # offset that moved while the process wrote nothing at all moved for a process
        # sharing its open file (a forked sibling or parent): not this worker's activity.
        wrote = max(0, proc.write_chars - prev.write_chars)
        written = min(grown, wrote)
        advanced = advanced and wrote > 0
    return advanced, written, current


def judge(
    obs: WorkerObservation,
    name: str,
    prev: WorkerMemory | None,
    now: float,
    stall_after: float,
) -> tuple[WorkerVerdict, WorkerMemory]:
    """The verdict for one live worker, and the memory to keep for the next run."""
    worker, proc, hb = obs.worker, obs.process, obs.heartbeat
    if prev is not None and now <= prev.last_seen:
        prev = None  # the clock went backwards: deltas would lie, start over
    first_seen = prev.first_seen if prev else now
    interval = now - prev.last_seen if prev else None
    memory = WorkerMemory(
        name=name, group=worker.group, pid=worker.pid, first_seen=first_seen, last_seen=now
    )
    verdict = WorkerVerdict(name=name, group=worker.group, pid=worker.pid, state=UNKNOWN, reason="")
    verdict.previous_state = prev.state if prev else None
    verdict.interval_s = interval
    verdict.notes.extend(obs.notes)

    # Log: the worker's own offsets (exact), or the log files' mtime (coarse).
    advanced, written, offsets = _log_delta(obs, prev)
    memory.log_pos = offsets
    memory.last_log_activity = now if advanced else (prev.last_log_activity if prev else None)
    log_since: float | None = None
    if obs.log is not None and obs.log.source == "fd" and obs.log.fds:
        log_since = memory.last_log_activity or first_seen
        verdict.bytes_written = written
        verdict.silent_seconds = max(0.0, now - log_since)
    elif obs.log is not None and obs.log.source == "mtime" and obs.log.mtime is not None:
        # The files' mtime moves whenever any worker writes, so it cannot vouch for this
        # one: it is reported, and the verdict rests on the main thread's progress.
        # Counted on this integration's clock from when the mtime was seen to change: a
        # file dated in the future must not look freshly written for as long as the skew.
        memory.log_mtime = obs.log.mtime
        if prev is not None and prev.log_mtime is not None and prev.log_mtime != obs.log.mtime:
            memory.last_log_activity = min(now, max(prev.last_seen, obs.log.mtime))
        elif prev is not None:
            memory.last_log_activity = prev.last_log_activity
        seen = memory.last_log_activity or min(now, obs.log.mtime)
        verdict.silent_seconds = max(0.0, now - seen)
        verdict.notes.append(
            "log evidence is only the shared files' mtime, not per worker (run as root)"
        )

    # Heartbeat: its age counts on this integration's clock, from the run that saw the beat
    # change; the writer's own time (which may be hours off after a clock step) only orders
    # beats, and dates the beat at first sight when it lies in the past.
    beat = False
    if hb is not None:
        memory.hb_seq, memory.hb_time = hb.seq, hb.beat_time
        beat = prev is not None and (prev.hb_seq, prev.hb_time) != (hb.seq, hb.beat_time)
        if beat and prev is not None:
            # It changed since the previous run: the writer's time is believed only
            # within that interval, so a skewed clock moves the age by one run at most.
            memory.hb_seen = min(now, max(prev.last_seen, hb.beat_time))
        elif prev is None or prev.hb_seen is None:
            memory.hb_seen = min(now, hb.beat_time)
        else:
            memory.hb_seen = prev.hb_seen
        verdict.heartbeat_age = max(0.0, now - memory.hb_seen)
        if hb.task is not None:
            verdict.task_name = hb.task.name
            if hb.task.started is not None:
                verdict.task_seconds = max(0.0, now - hb.task.started)
        if hb.problem:
            verdict.notes.append(f"heartbeat: {hb.problem}")
    elif obs.heartbeat_unavailable and prev is not None:
        # Unreadable this run: keep the last beat we saw rather than forget it.
        memory.hb_seq, memory.hb_time = prev.hb_seq, prev.hb_time
        memory.hb_seen = prev.hb_seen
        verdict.notes.append("heartbeat files unreadable this run")

    last_beat = memory.hb_seen
    signals = [t for t in (log_since, last_beat) if t is not None]
    silent_since = max(signals) if signals else first_seen
    silent_for = max(0.0, now - silent_since)
    verdict.quiet_seconds = silent_for

    # Progress: the main thread's CPU and wakeups since the previous run, and anywhere in
    # its work tree (threads, descendants) when that was read.
    progressed = False
    dcpu_main = 0.0
    main_wait = proc.main_wait if proc is not None else None
    tree: TreeVerdict | None = None
    watched: TreeVerdict | None = None  # the threads, whichever way they were read
    if proc is not None:
        memory.cpu, memory.main_cpu = proc.cpu_seconds, proc.main_cpu_seconds
        memory.main_voluntary, memory.write_chars = proc.main_voluntary, proc.write_chars
        if prev is not None and prev.main_voluntary is not None and prev.cpu is not None:
            verdict.cpu_delta = max(0.0, proc.cpu_seconds - prev.cpu)
            verdict.wakeups = max(0, proc.main_voluntary - prev.main_voluntary)
            dcpu_main = max(0.0, proc.main_cpu_seconds - (prev.main_cpu or 0.0))
            progressed = verdict.wakeups > 0 or dcpu_main > 0
            read_before = prev.units_at is not None and prev.units_at == prev.last_seen
            if obs.tree is not None:
                # Only a worker whose work tree was read (its main thread did not move)
                # needs these rules: most runs never import them.
                from workerwatch.judge.work import judge_tree

                tree = judge_tree(obs.tree, prev.units, now, interval, read_before)
                memory.units, memory.units_at = tree.memory or None, now
                progressed = progressed or bool(tree.progressed)
                watched = tree
            elif obs.watched is not None:
                watched = _watch(obs.watched, prev, memory, now, interval, read_before)
        if prev is None and obs.watched is not None:
            # First sight: the threads' counters and waits, so that a wait entered before
            # the next run is seen entered (``hung_thread``).
            _watch(obs.watched, None, memory, now, None, False)
        elif prev is not None and memory.units_at != now:
            memory.units = prev.units  # not read this run: the counters stand
            memory.units_at = prev.units_at
        kept_progress = prev.last_progress if prev is not None else None
        memory.last_progress = now if progressed or kept_progress is None else kept_progress
        _remember_waits(memory, verdict, main_wait, tree, prev, watched)
        if _in_blocking_call(proc):
            memory.blocked_syscall, memory.blocked_fd = proc.syscall, proc.syscall_fd
            same = prev is not None and (prev.blocked_syscall, prev.blocked_fd) == (
                proc.syscall,
                proc.syscall_fd,
            )
            kept = prev.blocked_since if same and not progressed and prev else None
            memory.blocked_since = kept or now
            verdict.blocked_seconds = now - memory.blocked_since
            verdict.blocked_syscall = proc.syscall
            verdict.blocked_peer = obs.peer
            if main_wait is not None:
                verdict.blocked_timeout = main_wait.timeout_seconds
        elif proc.syscall is not None:
            verdict.blocked_seconds = 0.0

    # What the worker waits for: a timed wait ends by itself; an untimed one is followed to
    # the thread or descendant it waits on.
    on_unit = tree.blocked[0] if tree is not None and tree.blocked else None
    if on_unit is not None and on_unit.wait is not None and on_unit.blocked_since is not None:
        verdict.blocked_syscall = on_unit.wait.syscall
        verdict.blocked_peer = on_unit.wait.peer
        verdict.blocked_seconds = now - on_unit.blocked_since
        verdict.blocked_timeout = on_unit.wait.timeout_seconds
    ends_by_itself = _ends_by_itself(main_wait, tree) if on_unit is None else None
    verdict.waits_up_to = ends_by_itself

    # A job thread hung while another thread keeps waking (README "Verdict rules").
    hung = None
    if watched is not None and silent_for >= stall_after:
        from workerwatch.judge.work import hung_thread

        hung = hung_thread(watched, silent_since, now, stall_after)
    if hung is not None and hung.wait is not None and hung.blocked_since is not None:
        verdict.blocked_syscall = hung.wait.syscall
        verdict.blocked_peer = hung.wait.peer
        verdict.blocked_seconds = now - hung.blocked_since
        verdict.blocked_timeout = hung.wait.timeout_seconds

    # The verdict itself.
    no_progress_for = now - memory.last_progress if memory.last_progress is not None else 0.0
    tree_busy = tree is not None and any(u.progressed and not u.new for u in tree.units)
    activity = advanced or beat or dcpu_main >= CLEAR_CPU or tree_busy
    threads_unknown = (
        proc is not None
        and tree is None
        and delegates_to_threads(proc)
        and not progressed
        and (main_wait is None or not main_wait.network)
    )
    supervisor = (
        proc is not None
        and proc.syscall in WAITS_FOR_CHILDREN
        and (tree is None or not any_children(tree))
    )
    if proc is None or prev is None or prev.main_voluntary is None:
        # At first sight the log's silence counts only from now, so it vouches for nothing:
        # the heartbeat must be fresh by its own age (README: unknown without a fresh one).
        quiet_for = now - hb.beat_time if hb is not None and prev is None else silent_for
        if hb is not None and hb.state and quiet_for < stall_after:
            state = WORKING if hb.state == "busy" else IDLE
        else:
            state = UNKNOWN
    elif hung is not None or (
        silent_for >= stall_after
        and no_progress_for >= stall_after
        and not threads_unknown
        and not supervisor
        and ends_by_itself is None
    ):
        state = STALLED
    elif prev.state == STALLED and not activity and ends_by_itself is None:
        # Hysteresis: a lone wakeup (a stack-dump signal, a spurious wake) does not clear
        # a stall; wakeups on two runs in a row do, as does any log write, beat or CPU.
        memory.wake_runs = prev.wake_runs + 1 if progressed else 0
        state = STALLED if memory.wake_runs < RECOVERY_RUNS else IDLE
    elif (
        advanced
        or (hb is not None and hb.state == "busy" and silent_for < stall_after)
        or (
            interval
            and verdict.cpu_delta is not None
            and verdict.cpu_delta >= BUSY_CPU_SHARE * interval
        )
        or (interval and tree is not None and _tree_cpu(tree) >= BUSY_CPU_SHARE * interval)
    ):
        state = WORKING
    else:
        state = IDLE

    verdict.state = memory.state = state
    if state == STALLED:
        memory.stalled_since = prev.stalled_since if prev and prev.stalled_since else now
        if prev is not None and prev.state == STALLED and no_progress_for < stall_after:
            verdict.notes.insert(0, f"stalled for {ago(now - memory.stalled_since)}")
    story = None
    if hung is not None and state == STALLED:
        from workerwatch.judge.work import hung_story

        story = hung_story(hung, now)
    facts = explain(verdict, obs, prev, now, silent_for, no_progress_for, log_since, tree, story)
    verdict.reason = "; ".join(text for text, _ in facts if text)
    verdict.summary = "; ".join(dict.fromkeys(brief for _, brief in facts if brief))
    return verdict, memory


def _watch(
    threads: tuple[ThreadObservation, ...],
    prev: WorkerMemory | None,
    memory: WorkerMemory,
    now: float,
    interval: float | None,
    read_before: bool,
) -> TreeVerdict | None:
    """The threads of a worker whose main thread moves, read while its log was silent:
    for ``hung_thread`` only, never as the worker's progress. Their memory replaces the
    threads' in ``memory.units``; the descendants' stands. None when there are none."""
    kept = [(k, u) for k, u in ((prev.units or {}) if prev else {}).items() if k[0] == "p"]
    memory.units_at = now
    if not threads:  # a single-threaded worker: nothing to judge, nor to import
        memory.units = dict(kept) or None
        return None
    from workerwatch.judge.work import judge_tree

    verdict = judge_tree(
        WorkTree(threads), prev.units if prev else None, now, interval, read_before
    )
    units = list(verdict.memory.items()) + kept
    memory.units = dict(units[:MAX_UNITS]) or None
    return verdict


def any_children(tree: TreeVerdict) -> bool:
    return any(u.key.startswith("p") for u in tree.units)


def _tree_cpu(tree: TreeVerdict) -> float:
    """CPU of the descendants (a thread's is in the process's own CPU already)."""
    return sum(u.cpu_delta for u in tree.units if u.key.startswith("p"))


def _ends_by_itself(main: WaitObservation | None, tree: TreeVerdict | None) -> float | None:
    """The timeout of the wait the worker is in, when that wait ends by itself; else None.

    The main thread's own timed wait; or, when it waits for its children or threads and
    none of them is blocked, the timed wait one of them is in (a child reading with a
    socket timeout, a pool thread sleeping between retries).
    """
    if main is None:
        return None
    if main.timed:
        return main.timeout if main.timeout is not None else -1.0
    if tree is None or main.network:
        return None
    # Housekeeping threads count here: with nothing blocked, a main thread parked while its
    # threads sleep on timers is as idle as one sleeping itself.
    waiting = tree.timed(children=main.on_children)
    if not waiting:
        return None
    timeouts = [u.wait.timeout for u in waiting if u.wait is not None and u.wait.timeout]
    return max(timeouts) if timeouts else -1.0


def _remember_waits(
    memory: WorkerMemory,
    verdict: WorkerVerdict,
    main: WaitObservation | None,
    tree: TreeVerdict | None,
    prev: WorkerMemory | None,
    watched: TreeVerdict | None = None,
) -> None:
    """Resolved peers for the next run, and the peers waited on without a timeout.

    Threads read while the main thread moves (``watched``) only add their resolved peers:
    what the worker waits on without a timeout is said when the main thread waits.
    """
    waits = [main] + ([u.wait for u in tree.units] if tree is not None else [])
    extra = [u.wait for u in watched.units] if watched is not None and tree is None else []
    peers: dict[str, str] = {}
    untimed: dict[str, int] = {}
    for wait in extra:
        if wait is not None and wait.peer_key and wait.peer:
            peers[wait.peer_key] = wait.peer
    for wait in waits:
        if wait is None:
            continue
        if wait.peer_key and wait.peer:
            peers[wait.peer_key] = wait.peer
        if wait.untimed_network:
            name = wait.peer or "unresolved peer"
            untimed[name] = untimed.get(name, 0) + 1
    if main is None and tree is None and not extra and prev is not None:
        peers = dict(prev.peers or {})  # nothing read this run: what was resolved stands
    memory.peers = dict(list(peers.items())[:MAX_PEERS]) or None
    verdict.untimed_waits = untimed
    known = list(prev.untimed_peers or ()) if prev is not None else []
    known = [p for p in known if p not in untimed] + sorted(untimed)
    memory.untimed_peers = known[-MAX_PEERS:] or None
    verdict.untimed_peers = memory.untimed_peers or []


def delegates_to_threads(proc: ProcessObservation) -> bool:
    """The main thread waits (not on an fd) in a process that has other threads."""
    return proc.threads > 1 and proc.syscall_fd is None and proc.syscall not in (None, "running")


def gone(memory: WorkerMemory, now: float) -> tuple[WorkerVerdict, WorkerMemory]:
    """A worker we knew whose process has disappeared."""
    verdict = WorkerVerdict(
        name=memory.name,
        group=memory.group,
        pid=memory.pid,
        state=GONE,
        up=False,
        reason=f"process {memory.pid} gone; last seen {ago(now - memory.last_seen)} ago",
        previous_state=memory.state,
    )
    return verdict, replace(memory, state=GONE)


def judge_group(
    group: str,
    expected: int | None,
    verdicts: list[WorkerVerdict],
    backlog_note: str | None = None,
    running: int | None = None,
    pool_processes: int = 0,
) -> GroupVerdict:
    """``running`` counts the discovered top-level workers, including any the run had no time
    to judge; pool processes are counted apart (``pool_processes``)."""
    live = [v for v in verdicts if v.up]
    stalled = [v for v in live if v.stalled]
    count = len(live) if running is None else running
    parts = [f"{count} running" + (f" of {expected} expected" if expected is not None else "")]
    if pool_processes:
        parts[0] += f" (+{pool_processes} pool processes)"
    if stalled:
        parts.append(f"{len(stalled)} stalled: " + ", ".join(v.name for v in stalled))
    if backlog_note and live and all(v.state in (STALLED, IDLE) for v in live):
        parts.append(backlog_note)
    return GroupVerdict(group, count, expected, len(stalled), "; ".join(parts), pool_processes)
