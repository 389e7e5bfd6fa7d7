"""The worker's own log writes, from the offsets of the log files it holds open.

Each process appending to a shared file has its own open file description, so its fd
offset (``/proc/PID/fdinfo/N`` ``pos:``) advances only with its own writes, and follows
the file through a rename-style rotation. A file's mtime cannot tell workers apart; it is
kept only as a coarse fallback when the fd table is not readable (another user's process
without root).
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
from collections.abc import Sequence

from workerwatch.host.procfs import ProcGone, read_text
from workerwatch.observations import LogFd, LogObservation

MAX_LOG_FDS = 64
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)
_NOT_FILES = ("socket:", "pipe:", "anon_inode:", "/dev/", "/proc/", "/sys/", "/memfd:")
# Rotated names still count as the log they were: worker.log.1, logrotate's dateext names
# (worker.log-20261127, worker.log-2026112712 with %H, dateformat -%Y-%m-%d), and any of
# them compressed (compresscmd gzip, bzip2, xz, zstd).
_ROTATED = re.compile(r"(\.\d+|-\d{8}(\d{2})?|-\d{4}-\d{2}-\d{2})(\.(gz|bz2|xz|zst))?$")


def _clean(path: str) -> str:
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    return path


def is_log_path(path: str, patterns: Sequence[str]) -> bool:
    path = _clean(path)
    candidates = (path, _ROTATED.sub("", path))
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def _fdinfo(pid: int, fd: int) -> tuple[int, int]:
    pos = flags = 0
    for line in read_text(f"/proc/{pid}/fdinfo/{fd}", 4096).splitlines():
        if line.startswith("pos:"):
            pos = int(line.split()[1])
        elif line.startswith("flags:"):
            flags = int(line.split()[1], 8)
    return pos, flags


def _coarse(patterns: Sequence[str] | None) -> LogObservation:
    newest = None
    for pattern in patterns or ():
        for path in glob.glob(pattern):
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return LogObservation(mtime=newest, source="mtime" if newest is not None else "none")


def observe(pid: int, patterns: Sequence[str] | None) -> LogObservation:
    """Offsets of the log files ``pid`` holds open; ``patterns`` None means any file it writes."""
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        raise ProcGone(pid) from None
    except PermissionError:
        return _coarse(patterns)
    found: list[LogFd] = []
    for entry in entries:
        fd = int(entry)
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                continue  # closed between listdir and readlink
            raise
        if not target.startswith("/") or target.startswith(_NOT_FILES):
            continue
        if patterns is not None and not is_log_path(target, patterns):
            continue
        try:
            pos, flags = _fdinfo(pid, fd)
        except ProcGone:
            continue
        if flags & os.O_ACCMODE not in _WRITE_MODES:
            continue
        found.append(LogFd(fd=fd, path=_clean(target), pos=pos))
        if len(found) >= MAX_LOG_FDS:
            break
    return LogObservation(fds=tuple(sorted(found, key=lambda f: f.fd)), source="fd")


MAX_DUMP_BYTES = 1 << 16  # a longer write is not read: it counts as a write
# faulthandler's dump (Python/traceback.c): a header per thread, one line per frame.
_DUMP_LINE = re.compile(
    r"(Current thread|Thread) 0x[0-9a-f]+ (\[[^\]]*\] )?\(most recent call first\):"
    r"|Stack \(most recent call first\):"
    r'|  File ".*", line (\d+|\?\?\?) in .*'
    r"|  <no Python frame>"
    r"|  \.\.\.|"
)


def stack_dumps(pid: int, fds: Sequence[LogFd], before: dict[int, int]) -> tuple[int, ...]:
    """The log fds whose bytes since offset ``before[fd]`` are only a Python stack dump.

    Read only for a worker that was stalled: a ``kill -USR1`` for its stack must not look
    like the worker writing its log again. The bytes are read back through the worker's
    own fd (``/proc/PID/fd/N``), at most ``MAX_DUMP_BYTES``.
    """
    found = []
    for log in fds:
        start = before.get(log.fd)
        if start is None or not 0 < log.pos - start <= MAX_DUMP_BYTES:
            continue
        try:
            fd = os.open(f"/proc/{pid}/fd/{log.fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            text = os.pread(fd, log.pos - start, start).decode("utf-8", "replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        lines = text.splitlines()
        if lines and any(lines) and all(_DUMP_LINE.fullmatch(line) for line in lines):
            found.append(log.fd)
    return tuple(found)
