"""The reason behind a verdict, in words: what an operator reads in events and ``status``.

Each fact is given twice: exact (``no log write for 312 s``) for people and events, and
without numbers (``no log write``) for the metric attribute ``worker.reason``, which then
changes only when the situation does and does not mint a new time series every run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workerwatch.host.syscalls import WAIT_SYSCALLS
from workerwatch.judge.memory import WorkerMemory
from workerwatch.judge.states import (
    BUSY_CPU_SHARE,
    STALLED,
    UNKNOWN,
    WAITS_FOR_CHILDREN,
    WorkerVerdict,
)
from workerwatch.observations import ProcessObservation, WaitObservation, WorkerObservation
from workerwatch.units import human_duration as ago

if TYPE_CHECKING:
    from workerwatch.judge.work import TreeVerdict


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


# (with numbers, for people and events; without numbers, for the metric attribute)
Fact = tuple[str, str]


def explain(
    v: WorkerVerdict,
    obs: WorkerObservation,
    prev: WorkerMemory | None,
    now: float,
    silent_for: float,
    no_progress_for: float,
    log_since: float | None,
    tree: TreeVerdict | None,
    story: Fact | None = None,
) -> list[Fact]:
    """The evidence behind a verdict, twice: exact, and stable from run to run.

    ``story`` replaces the main thread's when the verdict rests on other processes (a pool
    process waiting for its parent, a worker's work horse; ``judge.supervision``).

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

    if story is not None:
        facts.append(story)
    elif proc is not None:
        facts.append(_thread_story(v, proc, no_progress_for, tree, now))
    if v.cpu_delta is not None:
        brief = "on CPU" if v.interval_s and v.cpu_delta >= BUSY_CPU_SHARE * v.interval_s else ""
        facts.append((f"cpu +{v.cpu_delta:.2f} s", brief))
    if v.state == STALLED and silent_for > 0 and not facts:
        facts.append((f"silent for {ago(silent_for)}", "silent"))
    facts.extend((note, "" if note.startswith("stalled for") else note) for note in v.notes)
    return facts


def _thread_story(
    v: WorkerVerdict,
    proc: ProcessObservation,
    no_progress_for: float,
    tree: TreeVerdict | None,
    now: float,
) -> Fact:
    if proc.state == "D":
        where = f" at {proc.wchan}" if proc.wchan else ""
        text = f"main thread in uninterruptible sleep (D){where}"
        return text, text
    if proc.state in ("T", "t"):
        return "process stopped (T)", "process stopped (T)"
    main = proc.main_wait
    peer = f" on {v.blocked_peer}" if v.blocked_peer else ""
    if tree is not None and (tree.blocked or tree.progressed):
        return _tree_story(main, tree, now)
    if v.waits_up_to is not None and main is not None and v.state != STALLED:
        return _timed_story(main, v.waits_up_to, tree)
    untimed = " with no timeout" if v.blocked_timeout == -1 else ""
    if v.state == STALLED and v.blocked_syscall:
        where = f"main thread blocked in {v.blocked_syscall}{peer}"
        wakeups = (
            f"{v.wakeups} wakeups since the last run"
            if v.wakeups
            else f"0 wakeups in {ago(no_progress_for)}"
        )
        return f"{where}{untimed} for {ago(v.blocked_seconds or 0)}, {wakeups}", where
    if v.state == STALLED:
        return f"main thread made no progress for {ago(no_progress_for)}", "no progress"
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
        return f"{where}{untimed} for {ago(v.blocked_seconds)}", where
    return "", ""


def _housekeeping(tree: TreeVerdict) -> str:
    count = len(tree.housekeeping)
    if not count:
        return ""
    return f"; {count} housekeeping thread{'s' if count > 1 else ''} (timed waits, no work)"


def _tree_story(main: WaitObservation | None, tree: TreeVerdict, now: float) -> Fact:
    """What the waiting main thread's work tree is doing: the blocked unit, or who works."""
    # Whoever works is named while anything does; the blocked unit once nothing else moves.
    from workerwatch.judge import work  # a tree was read: see verdict.judge

    blocked = [] if tree.progressed else tree.blocked
    unit = blocked[0] if blocked else tree.progressed[0]
    what = work.describe(unit, now)
    if main is not None and main.on_children and unit.key.startswith("p"):
        head = f"main thread waits for {unit.label}"
        rest = what[len(unit.label) :].replace(" is blocked", ", which is blocked", 1)
        if not blocked:
            rest = ", which is" + rest
        brief = f"main thread waits for a {work.brief(unit).replace(' ', ', which is ', 1)}"
        return head + rest + _housekeeping(tree), brief
    waits = f"main thread waits in {main.syscall}" if main is not None else "main thread waits"
    extra = (
        f" and {len(tree.progressed) - 1} more" if not blocked and len(tree.progressed) > 1 else ""
    )
    text = f"{waits}; {what}{extra}{_housekeeping(tree)}"
    return text, f"{waits}; {work.brief(unit)}"


def _timed_story(main: WaitObservation, up_to: float, tree: TreeVerdict | None) -> Fact:
    """``main thread waits up to 60 s (poll)``: a wait that ends by itself."""
    limit = f"up to {ago(up_to)}" if up_to >= 0 else "with a timeout"
    peer = f" on {main.peer}" if main.peer else ""
    if main.timed:
        text = f"waiting {limit} ({main.syscall}{peer})"
        return text, f"waiting with a timeout ({main.syscall}{peer})"
    whom = "its child processes" if main.on_children else "its threads"
    text = f"waiting {limit}: main thread waits for {whom}, which wait with a timeout"
    return text, f"main thread waits for {whom}, which wait with a timeout"
