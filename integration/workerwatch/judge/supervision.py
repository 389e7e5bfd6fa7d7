"""Supervision rules: pool processes waiting for work, and work horses (README "Pools and
work horses").

Applied to a verdict ``judge.verdict.judge`` made, before its events are drawn:

* A **pool process** (a child of a worker of the same group, not waited for: Celery prefork)
  whose main thread reads a pipe its live parent holds for writing is waiting for work from
  that parent: ``idle``, never ``stalled``, while the parent is not stalled. Any other wait
  of the pool process (a socket inside a task) is judged by the usual rules.
* A **work horse** (a child of the same group its parent waits for in wait4: RQ) is the
  parent's work: its CPU makes the parent ``working``, and its silence (no CPU, no wakeups
  for ``stall_after``, with no log write or beat) makes the parent ``stalled``, naming the
  horse, the call it is blocked in and its peer. The parent's own wakeups in wait4 (RQ's
  monitoring alarm) are not progress. The horse's clock starts at its own start when it
  has used no CPU by its first sighting, so a job hung from the start is stalled
  ``stall_after`` after it began, not after a run first saw it.
"""

from __future__ import annotations

from workerwatch.judge.memory import WorkerMemory
from workerwatch.judge.reasons import Fact, explain
from workerwatch.judge.states import (
    BUSY_CPU_SHARE,
    CLEAR_CPU,
    IDLE,
    STALLED,
    WORKING,
    WorkerVerdict,
)
from workerwatch.observations import HorseObservation, WorkerObservation
from workerwatch.sanitize import clean_text, redact
from workerwatch.units import human_duration as ago

COMMAND_CHARS = 80  # of a horse's command line in a reason


def supervise(
    verdict: WorkerVerdict,
    memory: WorkerMemory,
    obs: WorkerObservation,
    prev: WorkerMemory | None,
    now: float,
    stall_after: float,
    parent_state: str | None,
) -> None:
    """Apply the pool and horse rules to ``verdict`` and ``memory`` (in place).

    ``parent_state`` is this run's verdict of the pool process's parent (None when the
    parent was not judged this run: then the parent cannot vouch for the wait).
    """
    memory.parent_key = obs.worker.parent_key
    if obs.horse is not None:
        _horse(verdict, memory, obs, obs.horse, prev, now, stall_after)
    elif (
        obs.waits_for_parent is not None
        and prev is not None
        and parent_state is not None
        and parent_state != STALLED
        and verdict.state != WORKING
    ):
        story = f"waits for work from its parent {obs.worker.parent} ({obs.waits_for_parent})"
        verdict.state = memory.state = IDLE
        memory.stalled_since = None
        memory.wake_runs = 0
        # Waiting for work is not silence: a task that hangs later is timed from here.
        memory.last_progress = now
        _retell(verdict, obs, prev, now, 0.0, (story, story))


def _horse(
    verdict: WorkerVerdict,
    memory: WorkerMemory,
    obs: WorkerObservation,
    horse: HorseObservation,
    prev: WorkerMemory | None,
    now: float,
    stall_after: float,
) -> None:
    proc = horse.process
    same = prev is not None and prev.horse_key == horse.key and prev.horse_cpu is not None
    cpu_delta = None
    if same and prev is not None:
        cpu_delta = max(0.0, proc.cpu_seconds - (prev.horse_cpu or 0.0))
        moved = cpu_delta > 0 or proc.main_voluntary != prev.horse_voluntary
        since = now if moved or prev.horse_progress is None else prev.horse_progress
    elif proc.cpu_seconds < CLEAR_CPU and proc.state != "R":
        since = min(now, horse.create_time)  # has done next to nothing since its start
    else:
        since = now
    memory.horse_key, memory.horse_cpu = horse.key, proc.cpu_seconds
    memory.horse_voluntary, memory.horse_progress = proc.main_voluntary, since
    no_progress_for = max(0.0, now - since)

    command = command_words(horse.cmdline)
    who = f"work horse {horse.pid} ({command})"
    interval = verdict.interval_s
    quiet = verdict.quiet_seconds if verdict.quiet_seconds is not None else 0.0
    blocked = proc.syscall not in (None, "running", "none")
    if cpu_delta is not None and interval and cpu_delta >= BUSY_CPU_SHARE * interval:
        state = WORKING
        story = (f"{who} on CPU (+{cpu_delta:.2f} s)", f"{who} on CPU")
    elif blocked and quiet >= stall_after and no_progress_for >= stall_after:
        state = STALLED
        peer = f" on {horse.peer}" if horse.peer else ""
        where = f"{who} blocked in {proc.syscall}{peer}"
        story = (f"{where}, 0 wakeups in {ago(no_progress_for)}", where)
        verdict.blocked_syscall, verdict.blocked_peer = proc.syscall, horse.peer
        verdict.blocked_seconds = no_progress_for
    elif verdict.state == STALLED:
        return  # stalled by the work-tree rules (something beneath the horse): their reason
    else:
        state = verdict.state
        doing = f"in {proc.syscall}" if blocked else "running"
        story = (f"waits for {who}, {doing}", f"waits for {who}")
    verdict.state = memory.state = state
    if state == STALLED:
        kept = prev.stalled_since if prev is not None and prev.state == STALLED else None
        memory.stalled_since = kept or now
    else:
        memory.stalled_since = None
        memory.wake_runs = 0
    _retell(verdict, obs, prev, now, no_progress_for, story)


def command_words(cmdline: str) -> str:
    """A command line short enough for a reason: programs by their base names, no URL
    credentials (``/srv/shop/venv/bin/python /srv/shop/venv/bin/rq worker`` ->
    ``python rq worker``)."""
    words = [w.rsplit("/", 1)[-1] if w.startswith("/") else w for w in cmdline.split()]
    return clean_text(redact(" ".join(words)), COMMAND_CHARS)


def _retell(
    verdict: WorkerVerdict,
    obs: WorkerObservation,
    prev: WorkerMemory | None,
    now: float,
    no_progress_for: float,
    story: Fact,
) -> None:
    """The reason again, with ``story`` in place of the main thread's."""
    if verdict.state != STALLED:
        verdict.notes[:] = [n for n in verdict.notes if not n.startswith("stalled for")]
    log_since = (
        now - verdict.silent_seconds
        if obs.log is not None and obs.log.source == "fd" and verdict.silent_seconds is not None
        else None
    )
    quiet = verdict.quiet_seconds or 0.0
    facts = explain(verdict, obs, prev, now, quiet, no_progress_for, log_since, None, story)
    verdict.reason = "; ".join(text for text, _ in facts if text)
    verdict.summary = "; ".join(dict.fromkeys(brief for _, brief in facts if brief))
