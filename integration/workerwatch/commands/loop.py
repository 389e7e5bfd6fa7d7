"""The resident loop shared by ``run`` and ``push``: a cycle every interval, heartbeats
between, and signal handling that never cuts a payload line in half."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from workerwatch import log
from workerwatch.records import record


def cpu_seconds() -> float:
    """CPU of this process and of its reaped children (a one-shot host-probe child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def child_cpu_seconds(pid: int | None) -> float:
    """CPU so far of a child not reaped yet (the kept host-phase child), 0 when unknown."""
    if pid is None:
        return 0.0
    from workerwatch.host.procfs import STIME, UTIME, ProcGone, clock_ticks, stat

    try:
        fields = stat(f"/proc/{pid}/stat")
        return (int(fields[UTIME]) + int(fields[STIME])) / clock_ticks()
    except (ProcGone, OSError, ValueError, IndexError):
        return 0.0


class Stopped(Exception):
    """Raised out of a cycle by SIGTERM/SIGINT so a slow collection cannot delay exit."""


class Stopper:
    """SIGTERM/SIGINT handling that interrupts waits at once and cycles safely.

    The handler only sets a flag and writes a byte to a pipe (a wait is a ``select`` on
    it, so it returns at once); it raises ``Stopped`` only while a collection runs, never
    while a payload line is being written, so the agent never sees half a line.
    """

    def __init__(self) -> None:
        self.stopped = False
        self.signum: int | None = None
        self.interruptible = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        os.set_inheritable(self._r, False)
        os.set_inheritable(self._w, False)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True
        self.signum = signum
        with contextlib.suppress(OSError):
            os.write(self._w, b"x")
        if self.interruptible:
            self.interruptible = False
            raise Stopped()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a stop signal arrived."""
        if self.stopped:
            return True
        if seconds > 0:
            with contextlib.suppress(InterruptedError):
                select.select([self._r], [], [], seconds)
        return self.stopped

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


@record
class CycleStats:
    """Per-cycle cost, reported on exit (and per cycle with -verbose).

    CPU counts the process, its reaped children and the kept host-phase child (``run_loop``).
    """

    cycles: int = 0
    failed: int = 0
    heartbeats: int = 0
    # Running totals, not per-cycle lists: a resident process must not grow with uptime.
    measured: int = 0
    cpu_total: float = 0.0
    cpu_max: float = 0.0
    wall_total: float = 0.0

    def record(self, cpu: float, wall: float) -> None:
        self.measured += 1
        self.cpu_total += cpu
        self.cpu_max = max(self.cpu_max, cpu)
        self.wall_total += wall

    def summary(self) -> str:
        if not self.measured:
            return f"{self.cycles} cycles, {self.failed} failed"
        return (
            f"{self.cycles} cycles ({self.failed} failed), {self.heartbeats} heartbeats; "
            f"cpu per cycle mean {self.cpu_total / self.measured * 1000:.1f} ms, "
            f"max {self.cpu_max * 1000:.1f} ms; "
            f"wall per cycle mean {self.wall_total / self.measured * 1000:.1f} ms"
        )


def write_line(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_loop(
    stopper: Stopper,
    interval: float,
    cycle: Callable[[int], None],
    heartbeat: float | None,
    max_cycles: int = 0,
    stats: CycleStats | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    kept_child: Callable[[], int | None] | None = None,
) -> CycleStats:
    """Call ``cycle(n)`` every ``interval`` (start to start) and heartbeat in between.

    A cycle that raises (other than ``Stopped``) is logged as one [ERR] line and counted;
    the loop goes on, except for a broken stdout and the ``fatal`` exception types, which
    propagate. Returns when stopped or after ``max_cycles`` cycles. ``kept_child`` gives
    the pid of the host-phase child kept across cycles, whose CPU counts in the cycle's.
    """
    stats = stats or CycleStats()
    next_cycle = last_line = time.monotonic()
    while not stopper.stopped:
        now = time.monotonic()
        if now >= next_cycle:
            stats.cycles += 1
            cpu0, wall0 = cpu_seconds(), now
            child0 = kept_child() if kept_child is not None else None
            child_cpu0 = child_cpu_seconds(child0)
            try:
                cycle(stats.cycles)
            except Stopped:
                break
            except (BrokenPipeError, *fatal):
                raise
            except Exception as exc:  # one bad cycle must not end the process
                stats.failed += 1
                log.error(f"cycle {stats.cycles} failed: {type(exc).__name__}: {exc}")
            cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
            child1 = kept_child() if kept_child is not None else None
            # A child forked this cycle counts whole. (One abandoned at a deadline counts
            # again when it is reaped, in a later cycle: rare, and only in these figures.)
            cpu += child_cpu_seconds(child1) - (child_cpu0 if child1 == child0 else 0.0)
            stats.record(cpu, wall)
            log.debug(f"cycle {stats.cycles}: cpu {cpu * 1000:.1f} ms, wall {wall * 1000:.1f} ms")
            if max_cycles and stats.cycles >= max_cycles:
                break
            # Start to start, like the agent's runner; a cycle longer than the interval
            # is followed by the next one at once rather than by a burst of catch-ups.
            next_cycle = max(next_cycle + interval, time.monotonic())
            last_line = time.monotonic()
            continue
        if heartbeat is None:
            stopper.wait(next_cycle - now)
            continue
        beat_at = last_line + heartbeat
        if now >= beat_at:
            write_line("{}\n")
            stats.heartbeats += 1
            last_line = now
            continue
        stopper.wait(min(next_cycle, beat_at) - now)
    return stats
