"""Small, bounded readers for /proc.

Every read is capped in size, and a process that exits mid-read becomes ``ProcGone``
(ENOENT or ESRCH), which callers treat as "not running" rather than as an error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os

DEFAULT_LIMIT = 65536


class ProcGone(Exception):
    """The process (or thread) disappeared while we were reading it."""


def read_bytes(path: str, limit: int = DEFAULT_LIMIT) -> bytes:
    if _held is not None and (path in _held or (path.startswith("/proc/") and _holdable(path))):
        return _read_held(path, limit)
    fd = _open(path)
    try:
        return _read(fd, limit)
    finally:
        os.close(fd)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcGone(path) from None
        raise


def _read(fd: int, limit: int, path: str = "", at: int | None = None) -> bytes:
    """Up to ``limit`` bytes from the start of the file (``at``: read with pread from 0)."""
    try:
        chunks = []
        remaining = limit
        while remaining > 0:
            want = min(remaining, 65536)
            chunk = os.read(fd, want) if at is None else os.pread(fd, want, at)
            chunks.append(chunk)
            remaining -= len(chunk)
            # /proc's seq_file reads fill the buffer until the end of the file, so a short
            # read is the end: asking again only to get b"" doubled the reads per file.
            if len(chunk) < want:
                break
            if at is not None:
                at += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcGone(path) from None
        raise


# Files under /proc/PID kept open between the host phases of a resident child (``hold``):
# path -> fd, and the paths read in the phase under way (``release_unread`` closes the
# others: their processes are gone or no longer of interest).
_held: dict[str, int] | None = None
_read_now: set[str] = set()
_held_cap = 0
# At most this many held files, whatever the fd limit: a held /proc seq_file keeps its
# buffer (a page at least) allocated in the kernel until it is closed (fs/seq_file.c
# seq_read_iter allocates m->buf on the first read, seq_release frees it).
MAX_HELD = 16384
HELD_RESERVE = 256  # fds left for everything else the child opens


# The /proc/PID files that look their process up again at every read, so a held one reads
# what a fresh open would (also after an exec). Not environ, mem or auxv: those bind the
# process's memory at open (fs/proc/base.c __mem_open), and a held one reads the memory of
# the program before an exec (an empty environ, checked).
_HOLDABLE = frozenset(
    {"cmdline", "stat", "status", "io", "syscall", "wchan", "cgroup", "comm", "children"}
)


def _holdable(path: str) -> bool:
    """``/proc/PID/NAME``, ``/proc/PID/task/TID/NAME`` of ``_HOLDABLE``, or an fdinfo."""
    if not path[6:7].isdigit():
        return False
    head, _, name = path.rpartition("/")
    return name in _HOLDABLE or head.endswith("/fdinfo")


def hold(limit: int = MAX_HELD) -> None:
    """Keep the ``/proc/PID/...`` files read from now on open, and read them again with
    ``pread`` at offset 0: one system call per file instead of open, read and close.

    Why this reads the same as opening the file afresh (checked on Linux 6.x with a real
    process, see tests/test_resident.py): a ``/proc/PID`` file is bound to the process's
    ``struct pid`` when opened. Each read looks the task up again (``get_proc_task`` in
    fs/proc/base.c; for fdinfo the fd number in the task's table, fs/proc/fd.c), and a
    seq_file read at offset 0 regenerates the whole text (fs/seq_file.c seq_read_iter
    resets its iterator when ``ki_pos`` is 0). Once the process is reaped every read fails
    with ESRCH (ENOENT for fdinfo), also after its pid was given to a new process, which
    such an fd never shows; the file is then opened afresh, as a one-shot run would.
    A zombie reads as it does through a fresh open (its cmdline empty, fdinfo ENOENT).
    One difference: fdinfo checks ptrace access at open, so a held one stays readable after
    its process exec'd a setuid program (a root agent reads it either way).
    """
    global _held, _held_cap
    import resource  # only in a resident child

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit + HELD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):
            pass
    room = limit if soft == resource.RLIM_INFINITY else soft - HELD_RESERVE
    _held_cap = max(0, min(limit, room))
    _held = {}
    _read_now.clear()


def held() -> int:
    """How many files are held open now (0 unless ``hold`` was called)."""
    return len(_held or ())


def release_unread() -> None:
    """Close the held files not read since the last call (the end of a host phase)."""
    if _held is None:
        return
    for path in [p for p in _held if p not in _read_now]:
        with contextlib.suppress(OSError):
            os.close(_held.pop(path))
    _read_now.clear()


def _read_held(path: str, limit: int) -> bytes:
    assert _held is not None
    fd = _held.get(path)
    if fd is not None:
        try:
            # Nearly every file fits in one read of at most 64 KiB: that read, on its own.
            want = min(limit, 65536)
            data = os.pread(fd, want, 0)
            if len(data) == want and limit > want:
                data = _read(fd, limit, path, at=0)
        except (ProcGone, OSError):
            # Its process is gone (or the file can no longer be read): open it afresh, so
            # a new process with the same pid, or the error, is what a one-shot run sees.
            del _held[path]
            with contextlib.suppress(OSError):
                os.close(fd)
        else:
            _read_now.add(path)
            return data
    fd = _open(path)
    try:
        data = _read(fd, limit, path)
    except BaseException:
        os.close(fd)
        raise
    if len(_held) < _held_cap:
        _held[path] = fd
        _read_now.add(path)
    else:
        os.close(fd)
    return data


def read_text(path: str, limit: int = DEFAULT_LIMIT) -> str:
    return read_bytes(path, limit).decode("utf-8", "replace")


@functools.cache
def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


@functools.cache
def boot_time() -> float:
    for line in read_text("/proc/stat", 1 << 20).splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


# Indexes into ``stat()``'s list: field N of proc(5) ``/proc/PID/stat`` is at N - 3.
STATE, PPID, UTIME, STIME, CUTIME, CSTIME, NUM_THREADS, STARTTIME = 0, 1, 11, 12, 13, 14, 17, 19


def stat_with_comm(path: str) -> tuple[str, list[str]]:
    """(comm, the fields after it) of a stat file (``/proc/PID/stat``, ``.../task/TID/stat``).

    The one parser of these files: comm may hold spaces and parentheses, so it ends at the
    last ``)``.
    """
    raw = read_text(path, 4096)
    end = raw.rindex(")")
    return raw[raw.index("(") + 1 : end], raw[end + 2 :].split()


def stat(path: str) -> list[str]:
    """The fields of a stat file after ``(comm)`` (see ``stat_with_comm``)."""
    return stat_with_comm(path)[1]


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it is gone."""
    try:
        return int(stat(f"/proc/{pid}/stat")[STARTTIME])
    except (ProcGone, OSError, ValueError, IndexError):
        return None
