"""What a blocked thread waits for, and whether that wait ends by itself.

``decode`` reads one ``/proc/PID/task/TID/syscall`` line (number, six argument registers,
stack pointer, program counter) and says, per system call, whether the call has a timeout
and where it is: ``poll`` and ``epoll_wait`` carry it as a value in milliseconds, while
``ppoll``, ``select``, ``pselect6``, ``epoll_pwait2``, ``futex``, ``nanosleep`` and
``clock_nanosleep`` carry a pointer into the worker's memory (NULL for none). A socket read,
write, ``connect`` or ``accept`` has no timeout argument at all: a timeout set with
``SO_RCVTIMEO``/``SO_SNDTIMEO`` lives in the socket, not in the call (CPython never sets
it; its socket timeouts are a ``poll(fd, 1, ms)`` before the call). ``socket_state`` reads
it, and the TCP ages of the last data sent and received, from a duplicate of the worker's
socket (``pidfd_getfd``, Linux 5.6+): ``inspect(..., sockets=True)`` folds it in.

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

import functools
import os
import struct
import time
from dataclasses import replace

from workerwatch.host import peer
from workerwatch.host.process import _optional
from workerwatch.host.procfs import ProcGone, read_text
from workerwatch.host.syscalls import name_of, table_for
from workerwatch.records import record

_MACHINE = os.uname().machine  # as host/syscalls.py: no platform import at start-up
MAX_POLL_FDS = 64  # entries of a poll set read from memory at most
MAX_SELECT_FDS = 1024  # FD_SETSIZE: a select bitmap is never longer
MAX_EPOLL_TARGETS = 64
MAX_NAMED_SOCKETS = 4  # socket peers resolved per wait (each walks the fd table)

# Notes a Wait can carry: what the kernel does not let us see about this wait.
SOCKET_TIMEOUT_INVISIBLE = "a socket timeout (SO_RCVTIMEO/SO_SNDTIMEO) would not be visible"
NO_SOCKET_TIMEOUT = "no SO_RCVTIMEO/SO_SNDTIMEO on the socket either"
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
# Socket calls: untimed as far as the call shows, but SO_RCVTIMEO would bound these...
_RECEIVING = frozenset({"recvfrom", "recvmsg", "recvmmsg", "accept", "accept4"})
# ...and SO_SNDTIMEO these (connect included: net/ipv4/af_inet.c waits sk_sndtimeo).
_SENDING = frozenset({"sendto", "sendmsg", "connect"})
_SOCKET_CALLS = _RECEIVING | _SENDING
_PIDFD_GETFD = 438  # the same number on every architecture (asm-generic/unistd.h)
# Waits for a child, a signal, a System V object or a FIFO's other end: no timeout.
_UNTIMED = frozenset({"wait4", "waitid", "pause", "rt_sigsuspend", "semop", "msgrcv", "openat"})
# Storage calls on an fd: they end when the device answers; not a wait on a peer.
_DISK_ON_FD = frozenset({"pread64", "fsync", "fdatasync"})


@record(frozen=True)
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


@record(frozen=True)
class SocketState:
    """What a worker's socket holds that its blocked call does not show."""

    recv_timeout: float | None  # SO_RCVTIMEO in seconds; None when not set
    send_timeout: float | None  # SO_SNDTIMEO
    last_recv: float | None = None  # seconds since data last arrived (TCP only)
    last_send: float | None = None  # seconds since data was last sent (TCP only)


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
    name = name_of(nr, _names(machine or _MACHINE))
    # One constructor call at the end: this runs per blocked thread, and a frozen
    # dataclass's replace() costs as much as the parsing.
    found: dict = {}
    if name in _TIMEOUT_ARG:
        index, form = _TIMEOUT_ARG[name]
        if name.startswith("epoll"):
            found["epoll_fd"] = _int32(args[0])
        if form == "ms":
            ms = _int32(args[index])
            found["timed"] = ms >= 0
            found["timeout"] = ms / 1000 if ms >= 0 else None
        else:
            found["timed"] = args[index] != 0
    elif name == "futex":
        found = _futex(args)
    elif name in ("nanosleep", "clock_nanosleep"):
        found["timed"] = True
        found["absolute"] = name == "clock_nanosleep" and bool(args[1] & _TIMER_ABSTIME)
    elif name in _UNTIMED_ON_FD:
        found["timed"] = False
        found["fds"] = _fd(args[0])
        if name in _SOCKET_CALLS:
            found["note"] = SOCKET_TIMEOUT_INVISIBLE
    elif name in _DISK_ON_FD:
        found["fds"] = _fd(args[0])
    elif name in ("wait4", "waitid"):
        # wait4(pid, ...) and waitid(P_PID, pid, ...) name one child; others any child.
        pid = _int32(args[0] if name == "wait4" else args[1])
        specific = name == "wait4" or args[0] == _P_PID
        found["timed"] = False
        found["child"] = pid if specific and pid > 0 else None
    elif name in _UNTIMED:
        found["timed"] = False
    return Wait(name, nr, args, **found)


def _futex(args: tuple[int, ...]) -> dict:
    op = _int32(args[1])
    cmd = op & ~(_FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME)
    detail = _FUTEX_OPS.get(cmd, f"op {cmd}")
    if op & _FUTEX_PRIVATE:
        detail += "|FUTEX_PRIVATE_FLAG"
    if op & _FUTEX_CLOCK_REALTIME:
        detail += "|FUTEX_CLOCK_REALTIME"
    if cmd not in _FUTEX_WAITS:
        return {"detail": detail}  # a wake or a requeue: not a wait
    # FUTEX_WAIT's timeout is relative; every other wait op's is an absolute deadline.
    timed = args[3] != 0
    return {"timed": timed, "absolute": timed and cmd != _FUTEX_WAIT, "detail": detail}


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


def syscall_line(pid: int, tid: int) -> str | None:
    """The raw ``syscall`` line of thread ``tid`` of ``pid``; None without ptrace access."""
    return _optional(f"/proc/{pid}/task/{tid}/syscall")


def inspect(
    pid: int, tid: int | None = None, machine: str | None = None, sockets: bool = False
) -> Wait | None:
    """Decode thread ``tid`` of ``pid`` (the main thread by default) and read what memory holds.

    ``sockets=True`` also reads the socket of a blocking socket call for a timeout set on
    it (``socket_state``). None when the syscall file cannot be read (no ptrace access);
    raises ``ProcGone`` when the thread is gone.
    """
    tid = pid if tid is None else tid
    line = syscall_line(pid, tid)
    if line is None:
        return None
    try:
        wait = decode(line, machine)
    except ValueError:
        return None
    if wait.epoll_fd is not None:
        wait = replace(wait, fds=epoll_targets(pid, wait.epoll_fd) or ())
    if sockets and wait.note == SOCKET_TIMEOUT_INVISIBLE and wait.fds:
        target = fd_target(pid, wait.fds[0])
        if target is not None and not target.startswith("socket:"):
            return replace(wait, note="")  # a pipe, a tty, a file: no socket options
        return with_socket_timeout(wait, socket_state(pid, wait.fds[0]))
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
    if syscall_line(pid, tid) != line:
        return replace(wait, note=MOVED_ON)
    found = _timeout_found(wait, _seconds(raw[0], form)) if address else {}
    if wait.syscall in ("poll", "ppoll"):
        found["fds"] = _poll_fds(raw[1])
    elif wait.syscall in ("select", "pselect6"):
        nfds = _int32(wait.args[0])
        found["fds"] = tuple(sorted({*_select_fds(raw[1], nfds), *_select_fds(raw[2], nfds)}))
    return replace(wait, **found)


def timeout_of(pid: int, wait: Wait) -> float | None:
    """The timeout behind a timed wait's pointer, with one read of the worker's memory.

    The cheap form of ``inspect`` for a wait already known to end by itself: no fd sets,
    no second look at the syscall line (a thread that moved on meanwhile gives a value
    that is validated, and only shown).
    """
    address, form = _timeout_pointer(wait)
    if not address:
        return wait.timeout
    (raw,) = _read_memory(pid, [(address, 16)])
    return _timeout_found(wait, _seconds(raw, form)).get("timeout")


def _timeout_found(wait: Wait, seconds: float | None) -> dict:
    """The timeout read from memory: a length, or a deadline made the time left."""
    if seconds is None:
        return {"note": VALUE_UNREADABLE}
    if not wait.absolute:
        return {"timeout": seconds}
    try:
        # The worker's clock is ours unless it runs in another time namespace
        # (time_namespaces(7)), whose monotonic offset is not applied here.
        left = seconds - time.clock_gettime(_clock_of(wait))
    except OSError:
        return {"note": VALUE_UNREADABLE}  # a CPU-time clock, say
    return {"timeout": max(0.0, left)}


def epoll_targets(pid: int, epfd: int) -> tuple[int, ...] | None:
    """The fds registered in epoll instance ``epfd`` of ``pid``; None when unreadable.

    They are the fd numbers at registration: an fd closed while a dup of it stays open
    remains listed under its old number (epoll(7), "Questions and answers" 6).
    """
    try:
        # ~80 bytes per target: 8 KiB hold the header and more than MAX_EPOLL_TARGETS.
        text = read_text(f"/proc/{pid}/fdinfo/{epfd}", 8192)
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


def socket_state(pid: int, fd: int) -> SocketState | None:
    """Socket options and TCP ages of fd ``fd`` of ``pid``, read from a duplicate of it.

    ``pidfd_getfd`` copies the worker's open socket into this process (it needs the same
    ptrace access as ``/proc/PID/mem``); ``getsockopt`` on the copy reads the shared
    socket without waking the thread blocked on it, and the copy is closed at once. None
    when the fd is not a socket, access is denied, or the kernel is older than 5.6.
    """
    # Imported here: only runs for a worker blocked in a socket call, and ctypes costs
    # import time that every other run would pay for nothing.
    import ctypes
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    try:
        copy = libc.syscall(
            ctypes.c_long(_PIDFD_GETFD), ctypes.c_long(pidfd), ctypes.c_long(fd), ctypes.c_long(0)
        )
    finally:
        os.close(pidfd)
    if copy < 0:
        return None

    def option(level: int, name: int, size: int) -> bytes | None:
        # libc's getsockopt on the bare fd, not a socket.socket: wrapping the copy in a
        # Python socket could set O_NONBLOCK (with a default timeout set), and file
        # status flags are shared with the worker's own fd.
        buf = ctypes.create_string_buffer(size)
        length = ctypes.c_uint32(size)
        if libc.getsockopt(copy, level, name, buf, ctypes.byref(length)) != 0:
            return None
        return buf.raw[: length.value]

    try:
        rcv = option(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        snd = option(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16)
        if rcv is None or snd is None or len(rcv) != 16 or len(snd) != 16:
            return None  # ENOTSOCK: a pipe, a file
        state = SocketState(_timeval(rcv), _timeval(snd))
        kind = option(socket.SOL_SOCKET, socket.SO_TYPE, 4)
        family = option(socket.SOL_SOCKET, socket.SO_DOMAIN, 4)
        tcp = (
            kind is not None
            and family is not None
            and struct.unpack("<i", kind)[0] == socket.SOCK_STREAM
            and struct.unpack("<i", family)[0] in (socket.AF_INET, socket.AF_INET6)
        )
        info = option(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES) if tcp else None
    finally:
        os.close(copy)
    if info is None or len(info) < _TCP_INFO_BYTES:
        return state
    # struct tcp_info (include/uapi/linux/tcp.h): 8 one-byte fields, then __u32s of which
    # the 10th is tcpi_last_data_sent and the 12th tcpi_last_data_recv, in milliseconds.
    times = struct.unpack_from("<13I", info, 8)
    return replace(state, last_send=times[9] / 1000, last_recv=times[11] / 1000)


_TCP_INFO_BYTES = 8 + 13 * 4


def _timeval(raw: bytes) -> float | None:
    sec, usec = struct.unpack("<qq", raw)
    seconds = sec + usec / 1_000_000
    return seconds if seconds > 0 else None


def with_socket_timeout(wait: Wait, state: SocketState | None) -> Wait:
    """A socket wait with what its socket says: timed by SO_RCVTIMEO/SO_SNDTIMEO, or not."""
    if state is None:
        return wait  # not a socket, or not readable: the note stays
    sending = wait.syscall in _SENDING or wait.syscall == "write"
    timeout = state.send_timeout if sending else state.recv_timeout
    if timeout is None:
        return replace(wait, note=NO_SOCKET_TIMEOUT)
    return replace(wait, timed=True, timeout=timeout, note="")
