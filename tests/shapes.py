"""Helpers for the worker shapes of tests/children/shapes_v2.py."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

from workerwatch.host import waits

from tests.fleet import Fleet, wait_for

SHAPES = Path(__file__).parent / "children" / "shapes_v2.py"
X86_64 = platform.machine() == "x86_64"
# glibc reaches the same waits through other calls on aarch64, which has no poll, select
# or epoll_wait: poll() is ppoll there and epoll_wait() is epoll_pwait.
POLL = "poll" if X86_64 else "ppoll"
EPOLL_WAIT = "epoll_wait" if X86_64 else "epoll_pwait"


def facts_in(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def start_shape(
    fleet: Fleet, where: Path, mode: str, *args: object, python: str | None = None
) -> tuple[subprocess.Popen, dict]:
    """Start a shapes_v2 mode; returns (process, the facts it wrote just before blocking)."""
    info = where / f"{mode}-{len(fleet.procs)}.json"
    proc = fleet.start(mode, info, *args, script=SHAPES, python=python)
    facts = wait_for(lambda: facts_in(info), what=f"{mode} ready")
    return proc, facts  # type: ignore[return-value]


def settled(pid: int, syscall: str | tuple[str, ...], tid: int | None = None) -> waits.Wait:
    """The thread's wait, once /proc shows it inside ``syscall`` (or one of several)."""
    names = (syscall,) if isinstance(syscall, str) else syscall

    def seen() -> waits.Wait | None:
        wait = waits.inspect(pid, tid)
        return wait if wait is not None and wait.syscall in names else None

    return wait_for(seen, what=f"{pid} in {syscall}")  # type: ignore[return-value]
