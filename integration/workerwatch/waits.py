"""What a blocked thread waits for, and whether that wait ends by itself.

``decode`` reads one ``/proc/PID/task/TID/syscall`` line (number, six argument registers,
stack pointer, program counter) and says, per system call, whether the call has a timeout
and where it is: ``poll`` and ``epoll_wait`` carry it as a value in milliseconds, while
``ppoll``, ``select``, ``pselect6``, ``epoll_pwait2``, ``futex``, ``nanosleep`` and
``clock_nanosleep`` carry a pointer into the worker's memory (NULL for none). A socket read,
write, ``connect`` or ``accept`` has no timeout argument at all: a timeout set with
``SO_RCVTIMEO``/``SO_SNDTIMEO`` lives in the socket and cannot be seen from here (CPython
never sets it; its socket timeouts are a ``poll(fd, 1, ms)`` before the call).

``inspect`` adds what only the worker's memory holds: the timeout structure behind the
pointer and the fds of a poll set or select bitmap, read with ``pread`` on
``/proc/PID/mem``. That needs the same ptrace access as the syscall file itself, neither
stops nor wakes the worker (its voluntary switch count stays put), and costs an open and
one ``pread`` per structure. The syscall line is read again afterwards: if the thread
moved on meanwhile, what memory held no longer belongs to this wait and is dropped.
An ``epoll`` instance's registered fds come from ``/proc/PID/fdinfo/EPFD`` (``tfd:`` lines).

Layouts assumed are the 64-bit little-endian ABIs of x86_64 and aarch64 (``timespec`` and
``timeval`` are two 64-bit integers, ``pollfd`` is int, short, short). A 32-bit process on a
64-bit kernel reports its own syscall numbers and is not decoded.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import struct
import time
from dataclasses import dataclass, replace

from workerwatch.probes import peer
from workerwatch.probes.syscalls import name_of, table_for
from workerwatch.procfs import ProcGone, read_text

MAX_POLL_FDS = 64  # entries of a poll set read from memory at most
MAX_SELECT_FDS = 1024  # FD_SETSIZE: a select bitmap is never longer
MAX_EPOLL_TARGETS = 64
MAX_NAMED_SOCKETS = 4  # socket peers resolved per wait (each walks the fd table)

# Notes a Wait can carry: what the kernel does not let us see about this wait.
SOCKET_TIMEOUT_INVISIBLE = "a socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) would not be visible"
VALUE_UNREADABLE = "timed, but the timeout value could not be read"
MOVED_ON = "the thread left this wait while it was read"

# futex(2) operation numbers (include/uapi/linux/futex.h) and flags.
_FUTEX_PRIVATE = 128
_FUTEX_CLOCK_REALTIME = 256
_FUTEX_WAIT, _FUTEX_LOCK_PI, _FUTEX_WAIT_BITSET = 0, 6, 9
_FUTEX_WAIT_REQUEUE_PI, _FUTEX_LOCK_PI2 = 11, 13
_FUTEX_WAITS = frozenset(
    {_FUTEX_WAIT, _FUTEX_LOCK_PI, _FUTEX_WAIT_BITSET, _FUTEX_WAIT_REQUEUE_PI, _FUTEX_LOCK_PI2}
)
_FUTEX_OPS = {
    0: "FUTEX_WAIT",
    1: "FUTEX_WAKE",
    2: "FUTEX_FD",
    3: "FUTEX_REQUEUE",
    4: "FUTEX_CMP_REQUEUE",
    5: "FUTEX_WAKE_OP",
    6: "FUTEX_LOCK_PI",
    7: "FUTEX_UNLOCK_PI",
    8: "FUTEX_TRYLOCK_PI",
    9: "FUTEX_WAIT_BITSET",
    10: "FUTEX_WAKE_BITSET",
    11: "FUTEX_WAIT_REQUEUE_PI",
    12: "FUTEX_CMP_REQUEUE_PI",
    13: "FUTEX_LOCK_PI2",
}
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1
_TIMER_ABSTIME = 1
_P_PID = 1  # waitid idtype

# How each wait gives its timeout: (argument index, form). "ms" is an int in milliseconds,
# negative for none; "ts"/"tv" point to a struct timespec/timeval, NULL for none.
_TIMEOUT_ARG: dict[str, tuple[int, str]] = {
    "poll": (2, "ms"),
    "epoll_wait": (3, "ms"),
    "epoll_pwait": (3, "ms"),
    "ppoll": (2, "ts"),
    "epoll_pwait2": (3, "ts"),
    "select": (4, "tv"),
    "pselect6": (4, "ts"),
    "rt_sigtimedwait": (2, "ts"),
    "io_getevents": (4, "ts"),
}
# Blocking calls on an fd (first argument) that have no timeout argument.
_UNTIMED_ON_FD = frozenset(
    {
        "read",
        "readv",
        "write",
        "recvfrom",
        "recvmsg",
        "recvmmsg",  # its timeout is checked only after a datagram arrives (recvmmsg(2) BUGS)
        "sendto",
        "sendmsg",
        "connect",
        "accept",
        "accept4",
        "flock",
    }
)
# Socket calls: untimed as far as we can see, but SO_RCVTIMEO would bound them.
_SOCKET_CALLS = frozenset(
    {"recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "connect", "accept", "accept4"}
)
# Waits for a child, a signal, a System V object or a FIFO's other end: no timeout.
_UNTIMED = frozenset({"wait4", "waitid", "pause", "rt_sigsuspend", "semop", "msgrcv", "openat"})
# Storage calls on an fd: they end when the device answers; not a wait on a peer.
_DISK_ON_FD = frozenset({"pread64", "fsync", "fdatasync"})


@dataclass(frozen=True)
class Wait:
    """One thread's system call, judged as a wait.

    ``timed`` is True for a wait that ends by itself, False for one that can last forever,
    None when the call is not a wait this module knows (or the thread is running).
    ``timeout`` is in seconds: the length asked for, or for a deadline (``absolute``) the
    time that was left when it was read; None when untimed or not known.
    """

    syscall: str  # name, "running", "none" (blocked outside a syscall) or "syscall_<nr>"
    nr: int | None = None
    args: tuple[int, ...] = ()  # the six argument registers, as the kernel shows them
    timed: bool | None = None
    timeout: float | None = None
    absolute: bool = False
    fds: tuple[int, ...] = ()  # the fds it waits on (poll set, select bitmaps, epoll targets)
    epoll_fd: int | None = None
    child: int | None = None  # wait4/waitid: the pid waited for; None for any child
    detail: str = ""  # e.g. the futex operation, "FUTEX_WAIT_BITSET|FUTEX_PRIVATE_FLAG"
    note: str = ""  # what cannot be seen about this wait

    @property
    def timeout_seconds(self) -> float | None:
        """The value for ``blocked.timeoutSeconds``: -1 for no timeout, None when unknown."""
        if self.timed is False:
            return -1.0
        return self.timeout if self.timed else None


@functools.lru_cache(maxsize=4)
def _names(machine: str) -> dict[int, str]:
    return table_for(machine)


def _int32(value: int) -> int:
    # An int argument in a 64-bit register: only the low half counts, sign included.
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _fd(value: int) -> tuple[int, ...]:
    fd = _int32(value)
    return (fd,) if fd >= 0 else ()


def decode(line: str, machine: str | None = None) -> Wait:
    """Decode a ``syscall`` file's text without touching the worker; ValueError if malformed.

    Timeouts given by value are final here; those behind a pointer are only known to
    exist (``timed`` True, ``timeout`` None) until ``inspect`` reads them.
    """
    parts = line.split()
    if not parts:
        raise ValueError("empty syscall line")
    if parts[0] == "running":
        return Wait("running")
    nr = int(parts[0])
    if nr < 0:
        return Wait("none", nr)  # blocked, but not in a system call (a page fault)
    if len(parts) < 7:
        raise ValueError(f"syscall line with {len(parts) - 1} arguments")
    args = tuple(int(p, 16) for p in parts[1:7])
    name = name_of(nr, _names(machine or platform.machine()))
    base = Wait(name, nr, args)
    if name in _TIMEOUT_ARG:
        index, form = _TIMEOUT_ARG[name]
        epoll_fd = _int32(args[0]) if name.startswith("epoll") else None
        if form == "ms":
            ms = _int32(args[index])
            timeout = ms / 1000 if ms >= 0 else None
            return replace(base, timed=ms >= 0, timeout=timeout, epoll_fd=epoll_fd)
        return replace(base, timed=args[index] != 0, epoll_fd=epoll_fd)
    if name == "futex":
        return _futex(base)
    if name in ("nanosleep", "clock_nanosleep"):
        absolute = name == "clock_nanosleep" and bool(args[1] & _TIMER_ABSTIME)
        return replace(base, timed=True, absolute=absolute)
    if name in _UNTIMED_ON_FD:
        note = SOCKET_TIMEOUT_INVISIBLE if name in _SOCKET_CALLS else ""
        return replace(base, timed=False, fds=_fd(args[0]), note=note)
    if name in _DISK_ON_FD:
        return replace(base, fds=_fd(args[0]))
    if name == "wait4":
        pid = _int32(args[0])
        return replace(base, timed=False, child=pid if pid > 0 else None)
    if name == "waitid":
        pid = _int32(args[1])
        return replace(base, timed=False, child=pid if args[0] == _P_PID and pid > 0 else None)
    if name in _UNTIMED:
        return replace(base, timed=False)
    return base


def _futex(base: Wait) -> Wait:
    op = _int32(base.args[1])
    cmd = op & ~(_FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME)
    detail = _FUTEX_OPS.get(cmd, f"op {cmd}")
    if op & _FUTEX_PRIVATE:
        detail += "|FUTEX_PRIVATE_FLAG"
    if op & _FUTEX_CLOCK_REALTIME:
        detail += "|FUTEX_CLOCK_REALTIME"
    if cmd not in _FUTEX_WAITS:
        return replace(base, detail=detail)  # a wake or a requeue: not a wait
    # FUTEX_WAIT's timeout is relative; every other wait op's is an absolute deadline.
    timed = base.args[3] != 0
    return replace(base, timed=timed, absolute=timed and cmd != _FUTEX_WAIT, detail=detail)


def _clock_of(wait: Wait) -> int:
    """The clock an absolute deadline is measured on."""
    if wait.syscall == "clock_nanosleep":
        return _int32(wait.args[0])
    cmd = _int32(wait.args[1]) & ~(_FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME)
    realtime = cmd == _FUTEX_LOCK_PI or bool(wait.args[1] & _FUTEX_CLOCK_REALTIME)
    return _CLOCK_REALTIME if realtime else _CLOCK_MONOTONIC


def _timeout_pointer(wait: Wait) -> tuple[int, str]:
    """(address, "ts" or "tv") of the timeout structure; address 0 when none."""
    if wait.syscall in _TIMEOUT_ARG:
        index, form = _TIMEOUT_ARG[wait.syscall]
        return (wait.args[index], form) if form != "ms" else (0, form)
    if wait.syscall == "futex" and wait.timed:
        return wait.args[3], "ts"
    if wait.syscall == "nanosleep":
        return wait.args[0], "ts"
    if wait.syscall == "clock_nanosleep":
        return wait.args[2], "ts"
    return 0, ""


def _seconds(raw: bytes | None, form: str) -> float | None:
    """A timespec or timeval, validated: anything a kernel would refuse is unknown."""
    if raw is None or len(raw) != 16:
        return None
    sec, frac = struct.unpack("<qq", raw)
    scale = 1_000_000_000 if form == "ts" else 1_000_000
    if sec < 0 or not 0 <= frac < scale:
        return None
    return sec + frac / scale


def _poll_fds(raw: bytes | None) -> tuple[int, ...]:
    if not raw:
        return ()
    count = len(raw) // 8
    entries = struct.unpack(f"<{'ihh' * count}", raw[: count * 8])
    # poll(2) ignores entries with a negative fd.
    return tuple(fd for fd in entries[::3] if fd >= 0)


def _select_fds(raw: bytes | None, limit: int) -> tuple[int, ...]:
    # fd_set is an array of unsigned longs, bit fd % 64 of word fd // 64: on a
    # little-endian machine that is bit fd % 8 of byte fd // 8.
    if not raw:
        return ()
    return tuple(fd for fd in range(min(limit, len(raw) * 8)) if raw[fd // 8] >> (fd % 8) & 1)


def _read_memory(pid: int, wants: list[tuple[int, int]]) -> list[bytes | None]:
    """``pread`` each (address, size) from ``/proc/PID/mem``; None for any that fails.

    Denied access, an unmapped address (EIO) or a process gone all mean "not readable":
    the caller then knows the wait is timed but not for how long.
    """
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return [None] * len(wants)
    try:
        out: list[bytes | None] = []
        for address, size in wants:
            try:
                out.append(os.pread(fd, size, address) if address and size else None)
            except (OSError, OverflowError):
                out.append(None)
        return out
    finally:
        os.close(fd)


def _syscall_line(pid: int, tid: int) -> str | None:
    try:
        return read_text(f"/proc/{pid}/task/{tid}/syscall", 256)
    except PermissionError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return None
        raise


def inspect(pid: int, tid: int | None = None, machine: str | None = None) -> Wait | None:
    """Decode thread ``tid`` of ``pid`` (the main thread by default) and read what memory holds.

    None when the syscall file cannot be read (no ptrace access); raises ``ProcGone`` when
    the thread is gone.
    """
    tid = pid if tid is None else tid
    line = _syscall_line(pid, tid)
    if line is None:
        return None
    try:
        wait = decode(line, machine)
    except ValueError:
        return None
    if wait.epoll_fd is not None:
        wait = replace(wait, fds=epoll_targets(pid, wait.epoll_fd) or ())
    # What to read from memory: the timeout structure first, then the fds' structures.
    address, form = _timeout_pointer(wait) if wait.timed and wait.timeout is None else (0, "")
    wants = [(address, 16)]
    if wait.syscall in ("poll", "ppoll"):
        wants.append((wait.args[0], min(wait.args[1], MAX_POLL_FDS) * 8))
    elif wait.syscall in ("select", "pselect6"):
        nfds = min(max(_int32(wait.args[0]), 0), MAX_SELECT_FDS)
        size = (nfds + 63) // 64 * 8  # whole unsigned longs
        wants.extend([(wait.args[1], size), (wait.args[2], size)])
    if not any(a and s for a, s in wants):
        return wait
    raw = _read_memory(pid, wants)
    if _syscall_line(pid, tid) != line:
        return replace(wait, note=MOVED_ON)
    if address:
        wait = _with_timeout(wait, _seconds(raw[0], form))
    if wait.syscall in ("poll", "ppoll"):
        wait = replace(wait, fds=_poll_fds(raw[1]))
    elif wait.syscall in ("select", "pselect6"):
        nfds = _int32(wait.args[0])
        fds = {*_select_fds(raw[1], nfds), *_select_fds(raw[2], nfds)}
        wait = replace(wait, fds=tuple(sorted(fds)))
    return wait


def _with_timeout(wait: Wait, seconds: float | None) -> Wait:
    """The wait with the timeout read from memory: a length, or a deadline made a length."""
    if seconds is None:
        return replace(wait, note=VALUE_UNREADABLE)
    if not wait.absolute:
        return replace(wait, timeout=seconds)
    try:
        # The worker's clock is ours unless it runs in another time namespace
        # (time_namespaces(7)), whose monotonic offset is not applied here.
        left = seconds - time.clock_gettime(_clock_of(wait))
    except OSError:
        return replace(wait, note=VALUE_UNREADABLE)  # a CPU-time clock, say
    return replace(wait, timeout=max(0.0, left))


def epoll_targets(pid: int, epfd: int) -> tuple[int, ...] | None:
    """The fds registered in epoll instance ``epfd`` of ``pid``; None when unreadable.

    They are the fd numbers at registration: an fd closed while a dup of it stays open
    remains listed under its old number (epoll(7), "Questions and answers" 6).
    """
    try:
        text = read_text(f"/proc/{pid}/fdinfo/{epfd}")
    except (ProcGone, OSError):
        return None
    targets = []
    for line in text.splitlines():
        if line.startswith("tfd:"):
            targets.append(int(line.split()[1]))
            if len(targets) >= MAX_EPOLL_TARGETS:
                break
    return tuple(targets)


def fd_target(pid: int, fd: int) -> str | None:
    """What fd ``fd`` of ``pid`` is: "socket:[ino]", "pipe:[ino]", a path; None if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def name_fds(pid: int, fds: tuple[int, ...]) -> dict[int, str]:
    """Each fd's peer for a socket ("10.0.0.5:21"), else what it is ("pipe:[123]", a path).

    Only the first few sockets are resolved: each resolution walks the process's fds.
    """
    named: dict[int, str] = {}
    sockets = 0
    for fd in fds:
        target = fd_target(pid, fd)
        if target is None:
            continue
        if target.startswith("socket:") and sockets < MAX_NAMED_SOCKETS:
            sockets += 1
            target = peer.resolve(pid, fd) or target
        named[fd] = target
    return named
