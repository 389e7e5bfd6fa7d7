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

from dataclasses import dataclass, field, replace
from typing import Any

from workerwatch.observations import ProcessObservation, WorkerObservation
from workerwatch.probes.syscalls import WAIT_SYSCALLS
from workerwatch.sanitize import clean_text

UNKNOWN, IDLE, WORKING, STALLED, GONE = "unknown", "idle", "working", "stalled", "gone"
STATES = (UNKNOWN, IDLE, WORKING, STALLED, GONE)

CLEAR_CPU = 0.05  # seconds of main-thread CPU that count as a clear activity signal
BUSY_CPU_SHARE = 0.05  # share of the interval on CPU that counts as working
# A supervisor parked in wait4 lets its child processes work; they are judged themselves.
WAITS_FOR_CHILDREN = frozenset({"wait4", "waitid"})
RECOVERY_RUNS = 2  # runs in a row with wakeups that clear a stall without other activity


@dataclass
class WorkerMemory:
    """What one run leaves for the next about one process (keyed by pid + start time)."""

    name: str
    group: str
    pid: int
    first_seen: float
    last_seen: float
    state: str = UNKNOWN
    log_pos: dict[int, int] | None = None
    last_log_activity: float | None = None
    log_mtime: float | None = None
    hb_seq: int | None = None
    hb_time: float | None = None
    cpu: float | None = None
    main_cpu: float | None = None
    voluntary: int | None = None
    write_chars: int | None = None
    last_progress: float | None = None
    blocked_syscall: str | None = None
    blocked_fd: int | None = None
    blocked_since: float | None = None
    stalled_since: float | None = None
    others_voluntary: int | None = None
    wake_runs: int = 0


@dataclass
class WorkerVerdict:
    name: str
    group: str
    pid: int
    state: str
    reason: str
    summary: str = ""  # the reason without numbers: stable while the situation is
    up: bool = True
    silent_seconds: float | None = None
    bytes_written: int | None = None
    interval_s: float | None = None
    heartbeat_age: float | None = None
    cpu_delta: float | None = None
    wakeups: int | None = None
    blocked_seconds: float | None = None
    blocked_syscall: str | None = None
    blocked_peer: str | None = None
    task_name: str | None = None
    task_seconds: float | None = None
    restarted: bool = False
    started: float | None = None  # process start time, for uptime
    previous_state: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stalled(self) -> bool:
        return self.state == STALLED


def ago(seconds: float) -> str:
    """Durations the way an operator reads them: 312 s, 14 min, 2.5 h."""
    seconds = max(0.0, seconds)
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def _in_blocking_call(proc: ProcessObservation) -> bool:
    return proc.syscall not in (None, "running", "none")


def no_progress_since(proc: ProcessObservation, prev: WorkerMemory) -> bool:
    """The main thread has neither woken nor run since the previous run.

    Decides whether the costlier evidence (socket peer, other threads) is worth reading.
    """
    return (
        prev.voluntary is not None
        and proc.main_voluntary == prev.voluntary
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
        memory.log_mtime = obs.log.mtime
        verdict.silent_seconds = max(0.0, now - obs.log.mtime)
        verdict.notes.append(
            "log evidence is only the shared files' mtime, not per worker (run as root)"
        )

    # Heartbeat: its own time is exact, whenever it was written.
    beat = False
    if hb is not None:
        memory.hb_seq, memory.hb_time = hb.seq, hb.beat_time
        beat = prev is not None and (prev.hb_seq, prev.hb_time) != (hb.seq, hb.beat_time)
        verdict.heartbeat_age = max(0.0, now - hb.beat_time)
        if hb.task is not None:
            verdict.task_name = hb.task.name
            if hb.task.started is not None:
                verdict.task_seconds = max(0.0, now - hb.task.started)
        if hb.problem:
            verdict.notes.append(f"heartbeat: {hb.problem}")
    elif obs.heartbeat_unavailable and prev is not None:
        # Unreadable this run: keep the last beat we saw rather than forget it.
        memory.hb_seq, memory.hb_time = prev.hb_seq, prev.hb_time
        verdict.notes.append("heartbeat files unreadable this run")

    last_beat = hb.beat_time if hb else memory.hb_time
    signals = [t for t in (log_since, last_beat) if t is not None]
    silent_since = max(signals) if signals else first_seen
    silent_for = max(0.0, now - silent_since)

    # Progress: the main thread's CPU and wakeups since the previous run.
    progressed = False
    others: bool | None = None  # other threads' progress, read only when it matters
    dcpu_main = 0.0
    if proc is not None:
        memory.cpu, memory.main_cpu = proc.cpu_seconds, proc.main_cpu_seconds
        memory.voluntary, memory.write_chars = proc.main_voluntary, proc.write_chars
        memory.others_voluntary = proc.others_voluntary
        if prev is not None and prev.voluntary is not None and prev.cpu is not None:
            verdict.cpu_delta = max(0.0, proc.cpu_seconds - prev.cpu)
            verdict.wakeups = max(0, proc.main_voluntary - prev.voluntary)
            dcpu_main = max(0.0, proc.main_cpu_seconds - (prev.main_cpu or 0.0))
            progressed = verdict.wakeups > 0 or dcpu_main > 0
            # A main thread parked in a wait (join, lock, queue) has handed the work to
            # other threads: theirs is the progress that counts. A main thread stuck in a
            # socket read is stuck whatever an APM thread does, so that is not asked.
            if (
                not progressed
                and delegates_to_threads(proc)
                and proc.others_voluntary is not None
                and prev.others_voluntary is not None
            ):
                others = proc.others_voluntary > prev.others_voluntary
                progressed = others
        kept_progress = prev.last_progress if prev is not None else None
        memory.last_progress = now if progressed or kept_progress is None else kept_progress
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
        elif proc.syscall is not None:
            verdict.blocked_seconds = 0.0

    # The verdict itself.
    no_progress_for = now - memory.last_progress if memory.last_progress is not None else 0.0
    activity = advanced or beat or dcpu_main >= CLEAR_CPU
    threads_unknown = (
        proc is not None and delegates_to_threads(proc) and not progressed and others is None
    )
    if proc is None or prev is None or prev.voluntary is None:
        # At first sight the log's silence counts only from now, so it vouches for nothing:
        # the heartbeat must be fresh by its own age (README: unknown without a fresh one).
        quiet_for = now - hb.beat_time if hb is not None and prev is None else silent_for
        if hb is not None and hb.state and quiet_for < stall_after:
            state = WORKING if hb.state == "busy" else IDLE
        else:
            state = UNKNOWN
    elif (
        silent_for >= stall_after
        and no_progress_for >= stall_after
        and not threads_unknown
        and proc.syscall not in WAITS_FOR_CHILDREN
    ):
        state = STALLED
    elif prev.state == STALLED and not activity:
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
    ):
        state = WORKING
    else:
        state = IDLE

    verdict.state = memory.state = state
    if state == STALLED:
        memory.stalled_since = prev.stalled_since if prev and prev.stalled_since else now
        if prev is not None and prev.state == STALLED and no_progress_for < stall_after:
            verdict.notes.insert(0, f"stalled for {ago(now - memory.stalled_since)}")
    facts = _facts(verdict, obs, prev, now, silent_for, no_progress_for, log_since, others)
    verdict.reason = "; ".join(text for text, _ in facts if text)
    verdict.summary = "; ".join(dict.fromkeys(brief for _, brief in facts if brief))
    return verdict, memory


def delegates_to_threads(proc: ProcessObservation) -> bool:
    """The main thread waits (not on an fd) in a process that has other threads."""
    return proc.threads > 1 and proc.syscall_fd is None and proc.syscall not in (None, "running")


# (with numbers, for people and events; without numbers, for the metric attribute)
Fact = tuple[str, str]


def _facts(
    v: WorkerVerdict,
    obs: WorkerObservation,
    prev: WorkerMemory | None,
    now: float,
    silent_for: float,
    no_progress_for: float,
    log_since: float | None,
    others: bool | None,
) -> list[Fact]:
    """The evidence behind a verdict, twice: exact, and stable from run to run.

    The metric attribute ``worker.reason`` uses the stable form, so it changes only when
    the situation does and does not mint a new time series every run; the exact numbers
    are metrics of their own.
    """
    proc, hb = obs.process, obs.heartbeat
    facts: list[Fact] = []
    if v.state == UNKNOWN and prev is None:
        facts.append(("first sample, verdict from the next run", "first sample"))
    elif v.state == UNKNOWN and proc is None:
        facts.append(("process counters unreadable", "process counters unreadable"))

    if hb is not None and v.task_name:
        running = f" for {ago(v.task_seconds)}" if v.task_seconds is not None else ""
        age = ago(v.heartbeat_age or 0)
        if v.state == STALLED:
            text = f"busy on {v.task_name}{running}, no beat for {age}"
            facts.append((text, f"busy on {v.task_name}, no beat"))
        else:
            facts.append(
                (f"busy on {v.task_name}{running}, beat {age} ago", f"busy on {v.task_name}")
            )
    elif hb is not None:
        idle = "idle heartbeat" if hb.state == "idle" else "heartbeat"
        facts.append((f"{idle} {ago(v.heartbeat_age or 0)} ago", idle))

    if v.bytes_written:
        facts.append(
            (f"log +{_bytes(v.bytes_written)} in {ago(v.interval_s or 0)}", "writing its log")
        )
    elif log_since is not None:
        facts.append((f"no log write for {ago(now - log_since)}", "no log write"))
    elif obs.log is not None and obs.log.source == "fd":
        facts.append(("no log file open", "no log file open"))

    if proc is not None:
        facts.append(_thread_story(v, proc, no_progress_for, others))
    if v.cpu_delta is not None:
        brief = "on CPU" if v.interval_s and v.cpu_delta >= BUSY_CPU_SHARE * v.interval_s else ""
        facts.append((f"cpu +{v.cpu_delta:.2f} s", brief))
    if v.state == STALLED and silent_for > 0 and not facts:
        facts.append((f"silent for {ago(silent_for)}", "silent"))
    facts.extend((note, "" if note.startswith("stalled for") else note) for note in v.notes)
    return facts


def _thread_story(
    v: WorkerVerdict, proc: ProcessObservation, no_progress_for: float, others: bool | None
) -> Fact:
    if proc.state == "D":
        where = f" at {proc.wchan}" if proc.wchan else ""
        text = f"main thread in uninterruptible sleep (D){where}"
        return text, text
    if proc.state in ("T", "t"):
        return "process stopped (T)", "process stopped (T)"
    peer = f" on {v.blocked_peer}" if v.blocked_peer else ""
    if v.state == STALLED and v.blocked_syscall:
        where = f"main thread blocked in {v.blocked_syscall}{peer}"
        wakeups = (
            f"{v.wakeups} wakeups since the last run"
            if v.wakeups
            else f"0 wakeups in {ago(no_progress_for)}"
        )
        return f"{where} for {ago(v.blocked_seconds or 0)}, {wakeups}", where
    if v.state == STALLED:
        return f"main thread made no progress for {ago(no_progress_for)}", "no progress"
    if others:
        where = f"main thread waits in {v.blocked_syscall or proc.syscall}"
        return f"{where}; other threads active", f"{where}; other threads active"
    if proc.syscall in WAITS_FOR_CHILDREN:
        text = f"waits for its child processes ({proc.syscall})"
        return text, text
    if v.wakeups:
        where = f" ({proc.syscall})" if proc.syscall and proc.syscall != "running" else ""
        text = f"main thread woke {v.wakeups} times in {ago(v.interval_s or 0)}{where}"
        return text, f"main thread wakes{where}"
    if proc.syscall == "running" or proc.state == "R":
        return "main thread on CPU", "main thread on CPU"
    if v.blocked_syscall and v.blocked_syscall not in WAIT_SYSCALLS and v.blocked_seconds:
        where = f"main thread in {v.blocked_syscall}{peer}"
        return f"{where} for {ago(v.blocked_seconds)}", where
    return "", ""


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


@dataclass
class GroupVerdict:
    group: str
    running: int
    expected: int | None
    stalled: int
    reason: str

    @property
    def missing(self) -> int:
        return max(0, (self.expected or 0) - self.running)


def judge_group(
    group: str,
    expected: int | None,
    verdicts: list[WorkerVerdict],
    backlog_note: str | None = None,
    running: int | None = None,
) -> GroupVerdict:
    """``running`` counts discovered processes, including any the run had no time to judge."""
    live = [v for v in verdicts if v.up]
    stalled = [v for v in live if v.stalled]
    count = len(live) if running is None else running
    parts = [f"{count} running" + (f" of {expected} expected" if expected is not None else "")]
    if stalled:
        parts.append(f"{len(stalled)} stalled: " + ", ".join(v.name for v in stalled))
    if backlog_note and live and all(v.state in (STALLED, IDLE) for v in live):
        parts.append(backlog_note)
    return GroupVerdict(group, count, expected, len(stalled), "; ".join(parts))


def transition_event(verdict: WorkerVerdict, what: str, detail: str = "") -> dict[str, Any]:
    """A v4 event for a state change: stalled, recovered, disappeared, restarted."""
    if what == "restarted":
        detail = f"{detail}{verdict.pid}"
    summary = f"{verdict.name} {what}: {detail or verdict.reason}"
    return {
        "summary": clean_text(summary, 4000),
        "category": "workerwatch",
        "attributes": {
            "worker.name": verdict.name,
            "worker.group": verdict.group,
            "process.pid": verdict.pid,
            "worker.state": verdict.state,
            "worker.previousState": verdict.previous_state or "none",
            "worker.reason": clean_text(verdict.reason, 4000),
            "workerwatch.transition": what,
        },
    }
