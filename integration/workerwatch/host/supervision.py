"""Evidence about a worker's own processes: its work horses, and what a pool process reads.

Discovery tells pool processes from work horses (``host.discover``); this module reads, for
the few processes that need it, what the verdict needs on top of the usual counters: the
horse's own counters and peer, and whether a pool process waits on a pipe its parent holds.
"""

from __future__ import annotations

import os

from workerwatch.host import peer, process
from workerwatch.host.procfs import STARTTIME, ProcGone, boot_time, clock_ticks, read_text, stat
from workerwatch.judge.memory import WorkerMemory
from workerwatch.observations import HorseObservation, ProcessObservation

# Calls in which a pool process reads its next task from a pipe (billiard's pool reads the
# job pipe in a plain blocking read).
_READS = frozenset({"read", "readv"})
_ACCESS_MODE = 0o3  # O_ACCMODE: 1 = O_WRONLY, 2 = O_RDWR
MAX_PARENT_FDS = 4096  # fds of a parent scanned at most for the other end of a pipe


def observe_horse(pid: int, prev: WorkerMemory | None) -> HorseObservation | None:
    """The horse's counters; its socket peer only when it did not move since the last run."""
    try:
        fields = stat(f"/proc/{pid}/stat")
        proc = process.observe(pid, always_wchan=False)
        cmdline = read_text(f"/proc/{pid}/cmdline", 4096).replace("\x00", " ").strip()
    except (ProcGone, PermissionError, OSError, ValueError, IndexError):
        return None
    ticks = int(fields[STARTTIME])
    horse = HorseObservation(
        pid=pid,
        start_ticks=ticks,
        create_time=round(boot_time() + ticks / clock_ticks(), 2),
        cmdline=cmdline[:1024],
        process=proc,
    )
    if proc.syscall_fd is not None and proc.state != "R" and _may_stall(horse, proc, prev):
        horse = HorseObservation(**{**horse.__dict__, "peer": peer.resolve(pid, proc.syscall_fd)})
    return horse


def _may_stall(
    horse: HorseObservation, proc: ProcessObservation, prev: WorkerMemory | None
) -> bool:
    """No progress since the last run, or a first sight (a horse is timed from its start)."""
    if prev is None or prev.horse_key != horse.key:
        return True
    return prev.horse_voluntary == proc.main_voluntary and prev.horse_cpu == proc.cpu_seconds


def waits_for_parent(
    pid: int, parent: int, proc: ProcessObservation, writers: dict[int, set[str]]
) -> str | None:
    """``"read on a pipe"`` when the main thread reads a pipe whose write end ``parent`` holds.

    ``writers`` caches, per parent, the pipes it holds open for writing (one scan of its fd
    table per run however many pool processes it has).
    """
    if proc.syscall not in _READS or proc.syscall_fd is None:
        return None
    try:
        target = os.readlink(f"/proc/{pid}/fd/{proc.syscall_fd}")
    except OSError:
        return None
    if not target.startswith("pipe:"):
        return None
    if parent not in writers:
        writers[parent] = _pipes_written(parent)
    return f"{proc.syscall} on a pipe" if target in writers[parent] else None


def _pipes_written(pid: int) -> set[str]:
    """The ``pipe:[inode]`` targets ``pid`` holds open for writing."""
    found: set[str] = set()
    try:
        entries = os.listdir(f"/proc/{pid}/fd")[:MAX_PARENT_FDS]
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
            if not target.startswith("pipe:"):
                continue
            flags = read_text(f"/proc/{pid}/fdinfo/{entry}", 4096).split("flags:", 1)[1].split()[0]
        except (OSError, ProcGone, IndexError):
            continue
        if int(flags, 8) & _ACCESS_MODE in (os.O_WRONLY, os.O_RDWR):
            found.add(target)
    return found
