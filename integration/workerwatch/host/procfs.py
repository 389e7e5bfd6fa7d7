"""Small, bounded readers for /proc.

Every read is capped in size, and a process that exits mid-read becomes ``ProcGone``
(ENOENT or ESRCH), which callers treat as "not running" rather than as an error.
"""

from __future__ import annotations

import errno
import functools
import os

DEFAULT_LIMIT = 65536


class ProcGone(Exception):
    """The process (or thread) disappeared while we were reading it."""


def read_bytes(path: str, limit: int = DEFAULT_LIMIT) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcGone(path) from None
        raise
    try:
        chunks = []
        remaining = limit
        while remaining > 0:
            want = min(remaining, 65536)
            chunk = os.read(fd, want)
            chunks.append(chunk)
            remaining -= len(chunk)
            # /proc's seq_file reads fill the buffer until the end of the file, so a short
            # read is the end: asking again only to get b"" doubled the reads per file.
            if len(chunk) < want:
                break
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise ProcGone(path) from None
        raise
    finally:
        os.close(fd)


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
