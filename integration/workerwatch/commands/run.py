"""Long-running mode: ``nri-workerwatch run``, one resident process instead of one per interval.

The agent's v4 runner starts the process once and reads its stdout line by line
(infrastructure-agent ``internal/integrations/v4/executor/executor.go`` forwardCmdOutput):
every payload line is emitted as it arrives, and a line that is exactly ``{}`` is a
heartbeat that only resets the inactivity ``timeout`` (``runner.go`` handleLines). If no
line arrives within ``timeout`` the agent kills the process and starts it again after
``interval``.

Why resident: the interpreter, pydantic and the config are loaded once instead of every
cycle, and the state stays in memory, so a cycle costs only the /proc reads. The state
file is still written after every cycle (the store holds its flock for the life of the
process), so a restart keeps "silent since" and the deltas.

Heartbeats are written only from this loop, never from a thread: a collection that hangs
must stop the ``{}`` lines so the agent's timeout kills and restarts us. A side-thread
heartbeat would hide exactly the failure this project exists to catch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from workerwatch import cli, log
from workerwatch.config import parse_duration

DEFAULT_INTERVAL = 15.0
AGENT_MIN_INTERVAL = 15.0  # the agent clamps config intervals below this (section 2.1)
MAX_HEARTBEAT_EVERY = 5.0  # nri-winservices prints "{}" every 5 s (src/winservices.go)
# Consecutive failed cycles after which the in-memory state is dropped: a failure that
# repeats may come from the remembered state itself, and we would rather lose history once
# than report nothing forever. A single failure keeps the history ("silent since").
RESET_AFTER_FAILURES = 3
# Test hook, documented in docs/operating.md: a comma-separated list of cycle numbers
# (1-based) that raise on purpose, to check that one failed cycle does not end the process.
FAIL_HOOK_ENV = "WORKERWATCH_TEST_FAIL_CYCLES"
# The collector abandons a probe phase stuck past the deadline (a hung mount, a D-state
# /proc read): the host probes in a forked child, the backlog probes in a daemon thread. A
# one-shot run exits and leaves them behind; a resident process would collect one more per
# cycle, so past this many it exits (code 1) and the agent starts a fresh process after
# `interval`.
MAX_STUCK = 3


class TooManyStuck(Exception):
    """Too many abandoned probe children or threads are still alive: restart, not pile up."""


def stuck_probes() -> int:
    """Live abandoned probe threads plus live (non-zombie) child processes of ours."""
    threads = sum(
        1 for t in threading.enumerate() if t.name.startswith("workerwatch-") and t.is_alive()
    )
    children = 0
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", encoding="ascii") as handle:
            pids = handle.read().split()
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                raw = handle.read()
        except OSError:
            continue
        if raw[raw.rindex(")") + 2 :].split()[0] != "Z":
            children += 1
    return threads + children


def cpu_seconds() -> float:
    """CPU of this process and of its reaped children (the forked host-probe phase)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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


@dataclass
class CycleStats:
    """Per-cycle cost, reported on exit (and per cycle with -verbose).

    CPU counts the process and its reaped children, so the forked host-probe phase is in.
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


def interval_from(value: str | None, env: dict[str, str] | None = None) -> float:
    """The cycle interval: the flag, else the agent's ``NRI_CONFIG_INTERVAL``, else 15 s."""
    env = dict(os.environ) if env is None else env
    raw = value or env.get("NRI_CONFIG_INTERVAL") or f"{DEFAULT_INTERVAL:g}s"
    try:
        return parse_duration(raw)
    except ValueError as exc:
        log.fatal(f"--interval: {exc}")
        raise SystemExit(1) from None


def heartbeat_every(interval: float, override: str | None) -> float:
    if override:
        try:
            return parse_duration(override)
        except ValueError as exc:
            log.fatal(f"--heartbeat: {exc}")
            raise SystemExit(1) from None
    # Several heartbeats per interval, so even a short agent timeout never fires between
    # two payload lines.
    return min(MAX_HEARTBEAT_EVERY, interval / 3)


def failing_cycles(env: dict[str, str] | None = None) -> set[int]:
    env = dict(os.environ) if env is None else env
    out: set[int] = set()
    for part in env.get(FAIL_HOOK_ENV, "").split(","):
        with contextlib.suppress(ValueError):
            out.add(int(part))
    return out


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
) -> CycleStats:
    """Call ``cycle(n)`` every ``interval`` (start to start) and heartbeat in between.

    A cycle that raises (other than ``Stopped``) is logged as one [ERR] line and counted;
    the loop goes on, except for a broken stdout and the ``fatal`` exception types, which
    propagate. Returns when stopped or after ``max_cycles`` cycles.
    """
    stats = stats or CycleStats()
    next_cycle = last_line = time.monotonic()
    while not stopper.stopped:
        now = time.monotonic()
        if now >= next_cycle:
            stats.cycles += 1
            cpu0, wall0 = cpu_seconds(), now
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch run",
        description="Stay resident: one payload line per interval, '{}' heartbeats between.",
    )
    cli.add_common_flags(parser)
    parser.add_argument(
        "-interval", "--interval", default=None,
        help="time between collections (default: NRI_CONFIG_INTERVAL, else 15s); "
        "below 15s only for tests",
    )  # fmt: skip
    parser.add_argument(
        "--heartbeat", default=None,
        help="time between '{}' heartbeat lines (default: a third of the interval, at most 5s)",
    )  # fmt: skip
    parser.add_argument(
        "--cycles", type=int, default=0, help="stop after this many cycles (default: never)"
    )
    for name in ("metrics", "inventory", "events"):
        parser.add_argument(f"-{name}", f"--{name}", dest=name, action="store_true", default=None)
    return parser


def main(argv: Sequence[str]) -> int:
    ns = cli.resolve_flags(build_parser().parse_args(list(argv)))
    log.set_verbose(bool(ns.verbose))
    interval = interval_from(ns.interval)
    if interval < AGENT_MIN_INTERVAL:
        log.warn(
            f"interval {interval:g}s is below the agent's 15 s minimum: "
            "fine for a test, costly on a real host"
        )
    beat = heartbeat_every(interval, ns.heartbeat)
    config = cli.load_config_or_exit(ns.config, ns.state_dir)

    from workerwatch.collect import Collector
    from workerwatch.emit import Sections, to_line
    from workerwatch.state import FileStateStore, empty_state

    sections = Sections.from_flags(ns.metrics, ns.inventory, ns.events)
    collector = Collector(config)
    stopper = Stopper()
    stopper.install()
    fail_on = failing_cycles()
    carried: Counter[str] = Counter()
    failures_in_a_row = [0]
    stats = CycleStats()

    with FileStateStore(config.state_dir) as store:
        if not store.writable:
            log.warn("state is kept in memory only this time: a restart loses 'silent since'")

        def cycle(n: int) -> None:
            stuck = stuck_probes()
            if stuck > MAX_STUCK:
                raise TooManyStuck(
                    f"{stuck} probe processes/threads are stuck past the deadline (hung mount "
                    "or D-state process?); exiting so the agent starts a fresh process"
                )
            stopper.interruptible = True
            try:
                if n in fail_on:
                    raise RuntimeError(f"{FAIL_HOOK_ENV}: cycle {n} fails on purpose")
                result = collector.collect(store)
            except Stopped:
                raise
            except Exception:
                carried["cycle"] += 1
                failures_in_a_row[0] += 1
                if failures_in_a_row[0] >= RESET_AFTER_FAILURES:
                    log.warn(
                        f"{failures_in_a_row[0]} cycles failed in a row; "
                        "starting again with empty state"
                    )
                    store.data = empty_state()
                    failures_in_a_row[0] = 0
                raise
            finally:
                stopper.interruptible = False
            failures_in_a_row[0] = 0
            result.errors.update(carried)
            carried.clear()
            if result.interval_s is None:
                result.interval_s = interval  # first cycle: the interval we are about to keep
            write_line(to_line(result, config, sections))

        try:
            run_loop(stopper, interval, cycle, beat, ns.cycles, stats, fatal=(TooManyStuck,))
        except TooManyStuck as exc:
            log.error(str(exc))
            return 1
        except BrokenPipeError:
            # The reader (the agent) went away: nobody to report to.
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
            return 0
        finally:
            stopper.close()
    how = f"signal {stopper.signum}" if stopper.signum else "cycle limit"
    log.info(f"run: stopped by {how} after {stats.summary()}")
    return 0


__all__ = [
    "CycleStats",
    "Stopped",
    "Stopper",
    "interval_from",
    "main",
    "run_loop",
    "write_line",
]
