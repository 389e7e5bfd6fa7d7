"""Process progress: CPU, the main thread's wakeups, and where the main thread waits.

The main thread is read from ``/proc/PID/task/PID/*`` on purpose: a background thread
(an APM harvest thread, a heartbeat timer) keeps process-wide CPU ticking while the work
loop is blocked, so only the main thread's counters say whether the loop makes progress.
"""

from __future__ import annotations

import errno

from workerwatch.host.procfs import (
    NUM_THREADS,
    STATE,
    STIME,
    UTIME,
    ProcGone,
    clock_ticks,
    read_text,
    stat,
)
from workerwatch.host.syscalls import FD_SYSCALLS, name_of
from workerwatch.observations import ProcessObservation

MAX_THREADS = 4096  # threads read per worker at most


def parse_syscall(text: str) -> tuple[str | None, int | None, int | None]:
    """``/proc/PID/syscall`` -> (name, number, fd argument)."""
    text = text.strip()
    if not text:
        return None, None, None
    if text == "running":
        return "running", None, None
    parts = text.split()
    nr = int(parts[0])
    if nr < 0:
        # Blocked, but not in a system call (e.g. a page fault).
        return "none", nr, None
    name = name_of(nr)
    fd = None
    if name in FD_SYSCALLS and len(parts) > 1:
        value = int(parts[1], 16)
        fd = value if value < 1 << 31 else None
    return name, nr, fd


def _status_int(text: str, key: str) -> int:
    """The number after ``key`` at the start of a line of a status file, else 0."""
    # A search for the one line, not a split of all ~55: this runs for every worker.
    if text.startswith(key):
        start = 0
    else:
        start = text.find("\n" + key)
        if start < 0:
            return 0
        start += 1
    end = text.find("\n", start)
    return int((text[start:] if end < 0 else text[start:end]).split()[1])


def _ctx_switches(text: str) -> tuple[int, int]:
    return (
        _status_int(text, "voluntary_ctxt_switches:"),
        _status_int(text, "nonvoluntary_ctxt_switches:"),
    )


def _optional(path: str, limit: int = 256) -> str | None:
    """Files that need ptrace-level access (wchan, syscall): None when denied."""
    try:
        return read_text(path, limit)
    except PermissionError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return None
        raise


def observe(pid: int, always_wchan: bool = True) -> ProcessObservation:
    """Read the process's progress counters; raises ``ProcGone`` if it exited.

    ``always_wchan=False`` reads the wait channel only for a main thread in uninterruptible
    sleep (D), the one state whose verdict names it: one file fewer per worker per run.
    """
    ticks = clock_ticks()
    proc = stat(f"/proc/{pid}/stat")
    main = stat(f"/proc/{pid}/task/{pid}/stat")
    vol, invol = _ctx_switches(read_text(f"/proc/{pid}/task/{pid}/status", 8192))
    wchan = None
    if always_wchan or main[STATE] == "D":
        wchan = _optional(f"/proc/{pid}/task/{pid}/wchan")
    raw_syscall = _optional(f"/proc/{pid}/task/{pid}/syscall")
    raw_io = _optional(f"/proc/{pid}/io", 4096)
    name = nr = fd = None
    if raw_syscall is not None:
        try:
            name, nr, fd = parse_syscall(raw_syscall)
        except (ValueError, IndexError):
            name = None
    return ProcessObservation(
        cpu_seconds=(int(proc[UTIME]) + int(proc[STIME])) / ticks,
        main_cpu_seconds=(int(main[UTIME]) + int(main[STIME])) / ticks,
        main_voluntary=vol,
        main_involuntary=invol,
        state=main[STATE],
        wchan=_wchan(wchan),
        syscall=name,
        syscall_nr=nr,
        syscall_fd=fd,
        threads=int(proc[NUM_THREADS]),
        write_chars=_wchar(raw_io),
    )


__all__ = ["ProcGone", "observe", "parse_syscall"]


def _wchan(raw: str | None) -> str | None:
    # "0" means the thread is running or runnable, not sleeping anywhere.
    value = (raw or "").strip()
    return value if value and value != "0" else None


def _wchar(raw: str | None) -> int | None:
    for line in (raw or "").splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return None
