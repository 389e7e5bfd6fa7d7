"""Long-running mode: ``nri-workerwatch run``, one resident process instead of one per interval.

The agent's v4 runner starts the process once and reads its stdout line by line
(infrastructure-agent ``internal/integrations/v4/executor/executor.go`` forwardCmdOutput):
every payload line is emitted as it arrives, and a line that is exactly ``{}`` is a
heartbeat that only resets the inactivity ``timeout`` (``runner.go`` handleLines). If no
line arrives within ``timeout`` the agent kills the process and starts it again after
``interval``.

Why resident: the interpreter, pydantic and the config are loaded once instead of every
cycle, the state stays in memory, and the host-phase child is kept across cycles with the
/proc files it reads held open (``host.child.Resident``), so a cycle costs little more
than the /proc reads. The state file (whose flock the store holds for the life of the
process) is written when a worker's verdict state changes, a worker appears or goes, at
least every ``state.RESIDENT_WRITE_EVERY`` seconds and on exit, so a restart keeps
"silent since" and the deltas; a crash loses at most that much of the counters' history.

Heartbeats are written only from this loop, never from a thread: a collection that hangs
must stop the ``{}`` lines so the agent's timeout kills and restarts us. A side-thread
heartbeat would hide exactly the failure this project exists to catch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Sequence

from workerwatch import log
from workerwatch.commands import common
from workerwatch.commands.loop import CycleStats, Stopped, Stopper, run_loop, write_line
from workerwatch.host.procfs import STATE, ProcGone, stat
from workerwatch.units import parse_duration

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
# The collector abandons a probe phase hung past the deadline (a hung mount, a D-state
# /proc read): the host probes in a forked child, the backlog probes in a daemon thread. A
# one-shot run exits and leaves them behind; a resident process would collect one more per
# cycle, so past this many it exits (code 1) and the agent starts a fresh process after
# `interval`.
MAX_HUNG = 3


class TooManyHung(Exception):
    """Too many abandoned probe children or threads are still alive: restart, not pile up."""


def hung_probes(kept: int | None = None) -> int:
    """Live abandoned probe threads plus live (non-zombie) child processes of ours, but
    ``kept``, the host-phase child kept between cycles (it finished its last phase)."""
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
        if kept is not None and pid == str(kept):
            continue
        try:
            if stat(f"/proc/{pid}/stat")[STATE] != "Z":
                children += 1
        except (ProcGone, OSError, ValueError, IndexError):
            continue
    return threads + children


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch run",
        description="Stay resident: one payload line per interval, '{}' heartbeats between.",
    )
    common.add_common_flags(parser)
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
    common.add_data_flags(parser, ("metrics", "inventory", "events"))
    return parser


def main(argv: Sequence[str]) -> int:
    ns = common.resolve_flags(build_parser().parse_args(list(argv)))
    log.set_verbose(bool(ns.verbose))
    interval = interval_from(ns.interval)
    if interval < AGENT_MIN_INTERVAL:
        log.warn(
            f"interval {interval:g}s is below the agent's 15 s minimum: "
            "fine for a test, costly on a real host"
        )
    beat = heartbeat_every(interval, ns.heartbeat)
    config = common.load_config_or_exit(ns.config, ns.state_dir)

    from workerwatch.collector import Collector
    from workerwatch.output.v4 import Sections, to_line
    from workerwatch.state import RESIDENT_WRITE_EVERY, RESIDENT_WRITE_GAP, FileStateStore

    sections = Sections.from_flags(ns.metrics, ns.inventory, ns.events)
    collector = Collector(config, resident=True)
    stopper = Stopper()
    stopper.install()
    fail_on = failing_cycles()
    carried: Counter[str] = Counter()
    failures_in_a_row = [0]
    stats = CycleStats()

    with FileStateStore(
        config.state_dir, write_every=RESIDENT_WRITE_EVERY, write_gap=RESIDENT_WRITE_GAP
    ) as store:
        if not store.writable:
            log.warn("state is kept in memory only this time: a restart loses 'silent since'")

        def cycle(n: int) -> None:
            hung = hung_probes(collector.host_child)
            if hung > MAX_HUNG:
                raise TooManyHung(
                    f"{hung} probe processes/threads are hung past the deadline (hung mount "
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
                    store.reset()
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
            run_loop(stopper, interval, cycle, beat, ns.cycles, stats, fatal=(TooManyHung,),
                     kept_child=lambda: collector.host_child)  # fmt: skip
        except TooManyHung as exc:
            log.error(str(exc))
            return 1
        except BrokenPipeError:
            # The reader (the agent) went away: nobody to report to.
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
            return 0
        finally:
            stopper.close()
            collector.close()
    how = f"signal {stopper.signum}" if stopper.signum else "cycle limit"
    log.info(f"run: stopped by {how} after {stats.summary()}")
    return 0
