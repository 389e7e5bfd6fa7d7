"""A worker's whole work, read from /proc: its threads and its descendant processes.

Progress can happen anywhere in that tree: a pool thread on the CPU while the main thread
waits on a future, a child process (``curl``, ``lftp``, a converter) while the main thread
sits in ``wait4`` or polls the child's pipes. These readers return what each thread and
each descendant is doing; judging it is the verdict's business.

They cost a few small reads per thread or per descendant, so they are meant for the
workers whose main thread waits, not for every worker on every run. Reads are bounded,
threads and processes that vanish mid-read are skipped, and the files that need ptrace
access (``syscall``, ``io``, the fd links) read as None without it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection

from workerwatch.host.process import MAX_THREADS, _ctx_switches, _optional
from workerwatch.host.procfs import (
    CSTIME,
    CUTIME,
    NUM_THREADS,
    PPID,
    STARTTIME,
    STATE,
    STIME,
    UTIME,
    ProcGone,
    clock_ticks,
    read_text,
    stat,
    stat_with_comm,
)
from workerwatch.records import record

MAX_DESCENDANTS = 64  # processes read per worker at most
MAX_DEPTH = 8  # generations below the worker
CMDLINE_BYTES = 4096


@record(frozen=True)
class ThreadSample:
    """One thread of a process, as /proc shows it at one moment."""

    tid: int
    name: str  # comm: the thread name if the program set one, else the program's
    state: str  # R, S, D, T ...
    syscall: str | None  # the raw ``syscall`` line (decode with waits.decode); None: no access
    cpu_seconds: float  # user + system
    voluntary: int  # its wakeups
    nonvoluntary: int


@record(frozen=True)
class ProcessSample:
    """One descendant process of a worker, with the evidence that it makes progress."""

    pid: int
    ppid: int
    start_ticks: int  # start time in clock ticks since boot: (pid, start) names it for good
    depth: int  # 1 for a child, 2 for a grandchild ...
    cmdline: str
    state: str  # of its main thread
    syscall: str | None  # its main thread's raw ``syscall`` line; None: no access
    cpu_seconds: float  # user + system, all its threads
    reaped_cpu_seconds: float  # CPU of its own children that have exited and been waited for
    voluntary: int  # its main thread's wakeups
    threads: int
    read_chars: int | None  # /proc/PID/io rchar, wchar: file and pipe bytes, not sockets
    write_chars: int | None
    stdio: tuple[str | None, ...]  # what fds 0, 1, 2 are: "pipe:[123]", a path, None


def threads(pid: int, syscalls: bool = True) -> tuple[ThreadSample, ...]:
    """Every thread of ``pid`` (at most ``MAX_THREADS``), main thread first.

    Three reads per thread (stat, status, syscall); ``syscalls=False`` skips the third.
    Raises ``ProcGone`` when the process is gone.
    """
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcGone(f"/proc/{pid}/task") from None
    tids.sort(key=lambda tid: tid != pid)  # the main thread first, then by age
    ticks = clock_ticks()
    out = []
    for tid in tids[:MAX_THREADS]:
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm, fields = stat_with_comm(f"{base}/stat")
            vol, invol = _ctx_switches(read_text(f"{base}/status", 8192))
            line = _optional(f"{base}/syscall") if syscalls else None
        except (ProcGone, ValueError, IndexError):
            continue  # a thread that ended while we looked
        out.append(
            ThreadSample(
                tid=tid,
                name=comm,
                state=fields[STATE],
                syscall=line.strip() if line is not None else None,
                cpu_seconds=(int(fields[UTIME]) + int(fields[STIME])) / ticks,
                voluntary=vol,
                nonvoluntary=invol,
            )
        )
    return tuple(out)


@functools.lru_cache(maxsize=1)
def has_children_files() -> bool:
    """Whether the kernel has ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN)."""
    return os.path.exists("/proc/thread-self/children")


def parent_table() -> dict[int, tuple[int, ...]]:
    """ppid -> child pids, from one pass over every ``/proc/PID/stat``.

    The fallback when the kernel has no ``children`` files; build it once per run and
    pass it to ``descendants`` for every worker.
    """
    table: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(stat(f"/proc/{entry}/stat")[PPID])
        except (ProcGone, OSError, ValueError, IndexError):
            continue
        table.setdefault(ppid, []).append(int(entry))
    return {ppid: tuple(sorted(pids)) for ppid, pids in table.items()}


def children(pid: int, table: dict[int, tuple[int, ...]] | None = None) -> tuple[int, ...]:
    """The child processes of ``pid``: from ``table`` if given, else the kernel's lists.

    The ``children`` file of a thread lists the children that thread started, so a child
    started from a pool thread is only in that thread's file: all threads are read.
    """
    if table is not None:
        return table.get(pid, ())
    if not has_children_files():
        return parent_table().get(pid, ())
    found: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return ()
    for tid in tids[:MAX_THREADS]:
        try:
            found.update(int(c) for c in read_text(f"/proc/{pid}/task/{tid}/children").split())
        except (ProcGone, OSError, ValueError):
            continue
    return tuple(sorted(found))


def _io(raw: str | None) -> tuple[int | None, int | None]:
    rchar = wchar = None
    for line in (raw or "").splitlines():
        if line.startswith("rchar:"):
            rchar = int(line.split()[1])
        elif line.startswith("wchar:"):
            wchar = int(line.split()[1])
    return rchar, wchar


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def process(pid: int, depth: int = 1) -> ProcessSample:
    """One process's sample; raises ``ProcGone`` when it is gone."""
    try:
        cmdline = read_text(f"/proc/{pid}/cmdline", CMDLINE_BYTES)
        fields = stat(f"/proc/{pid}/stat")
        vol, _ = _ctx_switches(read_text(f"/proc/{pid}/status", 8192))
    except (ValueError, IndexError):
        raise ProcGone(f"/proc/{pid}") from None
    line = _optional(f"/proc/{pid}/syscall")
    rchar, wchar = _io(_optional(f"/proc/{pid}/io", 4096))
    ticks = clock_ticks()
    return ProcessSample(
        pid=pid,
        ppid=int(fields[PPID]),
        start_ticks=int(fields[STARTTIME]),
        depth=depth,
        cmdline=cmdline.replace("\x00", " ").strip(),
        state=fields[STATE],
        syscall=line.strip() if line is not None else None,
        cpu_seconds=(int(fields[UTIME]) + int(fields[STIME])) / ticks,
        reaped_cpu_seconds=(int(fields[CUTIME]) + int(fields[CSTIME])) / ticks,
        voluntary=vol,
        threads=int(fields[NUM_THREADS]),
        read_chars=rchar,
        write_chars=wchar,
        stdio=tuple(_link(f"/proc/{pid}/fd/{fd}") for fd in range(3)),
    )


def descendants(
    pid: int,
    exclude: Collection[int] = (),
    table: dict[int, tuple[int, ...]] | None = None,
) -> tuple[ProcessSample, ...]:
    """The processes below ``pid``, children before grandchildren, at most ``MAX_DESCENDANTS``.

    A process in ``exclude`` (a worker another group matches, judged on its own) is left
    out together with everything below it.
    """
    if table is None and not has_children_files():
        table = parent_table()  # one pass over /proc for the whole tree
    out: list[ProcessSample] = []
    seen = {pid}
    level = [pid]
    for depth in range(1, MAX_DEPTH + 1):
        below: list[int] = []
        for parent in level:
            for child in children(parent, table):
                if child in seen or child in exclude or len(out) >= MAX_DESCENDANTS:
                    continue
                seen.add(child)
                try:
                    out.append(process(child, depth))
                except (ProcGone, OSError):
                    continue
                below.append(child)
        if not below:
            break
        level = below
    return tuple(out)
