"""Syscall numbers for reading ``/proc/PID/syscall``, per architecture.

Numbers differ between x86_64 (its own table, arch/x86/entry/syscalls/syscall_64.tbl) and
aarch64 (the generic table, include/uapi/asm-generic/unistd.h). Only calls a worker can
sit in for a long time are listed; anything else is shown as ``syscall_<nr>``.
"""

from __future__ import annotations

import os

# name -> (x86_64 number, aarch64 number or None when the call does not exist there)
_TABLE: dict[str, tuple[int, int | None]] = {
    "read": (0, 63),
    "write": (1, 64),
    "poll": (7, None),
    "readv": (19, 65),
    "pread64": (17, 67),
    "select": (23, None),
    "pause": (34, None),
    "nanosleep": (35, 101),
    "connect": (42, 203),
    "accept": (43, 202),
    "sendto": (44, 206),
    "recvfrom": (45, 207),
    "sendmsg": (46, 211),
    "recvmsg": (47, 212),
    "wait4": (61, 260),
    "semop": (65, 193),
    "msgrcv": (70, 188),
    "flock": (73, 32),
    "fsync": (74, 82),
    "fdatasync": (75, 83),
    "rt_sigtimedwait": (128, 137),
    "rt_sigsuspend": (130, 133),
    "futex": (202, 98),
    "io_getevents": (208, 4),
    "clock_nanosleep": (230, 115),
    "epoll_wait": (232, None),
    "waitid": (247, 95),
    "openat": (257, 56),
    "pselect6": (270, 72),
    "ppoll": (271, 73),
    "epoll_pwait": (281, 22),
    "accept4": (288, 242),
    "recvmmsg": (299, 243),
    "epoll_pwait2": (441, 441),
}

# Calls whose first argument is the file descriptor they wait on.
FD_SYSCALLS = frozenset(
    {
        "read",
        "write",
        "readv",
        "pread64",
        "connect",
        "accept",
        "accept4",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "recvmmsg",
        "flock",
        "fsync",
        "fdatasync",
    }
)

# Calls that wait for something with a timeout argument or a signal: an idle poller sits in
# these and wakes up; a worker blocked forever sits in the others.
WAIT_SYSCALLS = frozenset(
    {
        "poll",
        "select",
        "pselect6",
        "ppoll",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "nanosleep",
        "clock_nanosleep",
        "pause",
        "rt_sigsuspend",
        "rt_sigtimedwait",
    }
)


def table_for(machine: str) -> dict[int, str]:
    column = 1 if machine in ("aarch64", "arm64") else 0
    return {nums[column]: name for name, nums in _TABLE.items() if nums[column] is not None}


# os.uname(), not platform.machine(): the same value without importing platform at start-up.
_NAMES = table_for(os.uname().machine)


def name_of(nr: int, names: dict[int, str] | None = None) -> str:
    return (names or _NAMES).get(nr, f"syscall_{nr}")
