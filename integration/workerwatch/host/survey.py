"""What ``discover`` reads about the host's processes: one look, nothing changed.

A first pass reads every process's command line, parent, start time and unit (the same
``/proc`` files the collection's discovery reads, through ``procfs`` and
``discover.unit_from_cgroup``); the details (files held open for writing, a few
environment variables, established TCP peers, the main thread's timed wait) are read only
for the processes that may be workers.
"""

from __future__ import annotations

import os
import re
import struct
import time
from dataclasses import field

from workerwatch.host import log_offsets, procfs
from workerwatch.host.discover import is_integration, unit_from_cgroup
from workerwatch.host.procfs import PPID, STARTTIME, STATE, ProcGone, read_bytes, read_text
from workerwatch.host.syscalls import name_of
from workerwatch.records import record

# The only environment variables kept: where heartbeats go, and where AWS calls go. Other
# values (credentials among them) are scanned for queue and endpoint URLs, never kept.
ENV_KEYS = (
    "WORKERWATCH_HEARTBEAT_DIR",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SWF",
    "AWS_ENDPOINT_URL_SQS",
)
_URL = re.compile(r"https?://[^\s'\"<>,;]+")
MAX_ENVIRON = 1 << 16


@record
class Seen:
    pid: int
    ppid: int
    argv: list[str]
    unit: str | None
    age: float  # seconds since the process started
    logs: list[str] = field(default_factory=list)  # regular files held open for writing
    env: dict[str, str] = field(default_factory=dict)  # ENV_KEYS present
    urls: list[str] = field(default_factory=list)  # in the command line or environment
    peers: list[tuple[str, int]] = field(default_factory=list)  # established TCP
    env_readable: bool = True
    detailed: bool = False  # fill_details ran

    @property
    def cmdline(self) -> str:
        """As the collection's discovery sees it: arguments joined by single spaces."""
        return " ".join(self.argv).strip()


def processes() -> list[Seen]:
    """Every live user-space process (no kernel threads, zombies, ourselves or another
    nri-workerwatch), with its command line, parent, age and unit."""
    ticks, boot, now = procfs.clock_ticks(), procfs.boot_time(), time.time()
    mine = {os.getpid(), os.getppid()}
    seen = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        pid = int(entry)
        try:
            raw = read_bytes(f"/proc/{pid}/cmdline", 8192)
            if not raw:
                continue  # kernel thread
            argv = [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]
            fields = procfs.stat(f"/proc/{pid}/stat")
            if fields[STATE] in ("Z", "X"):
                continue
            unit = unit_from_cgroup(read_text(f"/proc/{pid}/cgroup"))
        except (ProcGone, PermissionError, ValueError, IndexError):
            continue
        started = boot + int(fields[STARTTIME]) / ticks
        item = Seen(pid, int(fields[PPID]), argv, unit, max(0.0, now - started))
        if not is_integration(item.cmdline):
            seen.append(item)
    return sorted(seen, key=lambda s: s.pid)


def fill_details(item: Seen) -> None:
    """Open files for writing, environment, URLs and peers of one candidate (in place)."""
    item.detailed = True
    try:
        item.logs = sorted({fd.path for fd in log_offsets.observe(item.pid, None).fds})
    except (ProcGone, OSError, ValueError):
        item.logs = []
    texts = list(item.argv)
    try:
        raw = read_bytes(f"/proc/{item.pid}/environ", MAX_ENVIRON)
        for entry in raw.split(b"\0"):
            key, _, value = entry.decode("utf-8", "replace").partition("=")
            if key in ENV_KEYS:
                item.env[key] = value
            if "://" in value:
                texts.append(value)
    except (ProcGone, OSError):
        item.env_readable = False
    item.urls = sorted({m.rstrip("/") for t in texts for m in _URL.findall(t)})
    item.peers = established_peers(item.pid)


def established_peers(pid: int) -> list[tuple[str, int]]:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
    return sorted(
        {(c.raddr.ip, c.raddr.port) for c in conns if c.raddr and c.status == "ESTABLISHED"}
    )


# Where the timeout of each timed wait is, by syscall name: ("ms", n) an int argument in
# milliseconds; ("timespec"/"timeval", n) a pointer argument to the struct (read from the
# process's memory: root or the same user, and it does not stop the process).
_TIMEOUT_ARG = {
    "poll": ("ms", 2),
    "epoll_wait": ("ms", 3),
    "epoll_pwait": ("ms", 3),
    "ppoll": ("timespec", 2),
    "pselect6": ("timespec", 4),
    "select": ("timeval", 4),
    "nanosleep": ("timespec", 0),
    "clock_nanosleep": ("timespec", 2),
}
TIMER_ABSTIME = 1


def timed_wait(pid: int) -> tuple[str, float] | None:
    """(syscall, seconds) of the main thread's current wait when it has a finite timeout.

    The timeout as requested: a poll(..., 70000) is 70 s whenever it is read. For an
    absolute ``clock_nanosleep`` (CPython 3.11's ``time.sleep``) it is the time left.
    """
    try:
        words = read_text(f"/proc/{pid}/task/{pid}/syscall", 512).split()
    except (ProcGone, OSError):
        return None
    if len(words) < 7 or not words[0].lstrip("-").isdigit():
        return None  # "running" or not permitted
    name = name_of(int(words[0]))
    spec = _TIMEOUT_ARG.get(name or "")
    if spec is None:
        return None
    args = [int(w, 16) for w in words[1:7]]
    kind, index = spec
    if kind == "ms":
        ms = struct.unpack("i", struct.pack("I", args[index] & 0xFFFFFFFF))[0]
        return (name, ms / 1000) if ms > 0 else None  # type: ignore[return-value]
    if args[index] == 0:
        return None  # no timeout: waits forever
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            raw = os.pread(mem.fileno(), 16, args[index])
    except OSError:
        return None
    if len(raw) < 16:
        return None
    sec, frac = struct.unpack("qq", raw)
    seconds = sec + frac / (1e6 if kind == "timeval" else 1e9)
    if name == "clock_nanosleep" and args[1] & TIMER_ABSTIME:
        try:
            seconds -= time.clock_gettime(args[0])
        except OSError:
            return None
    return (name, seconds) if seconds > 0 else None  # type: ignore[return-value]
