"""``make demo``: the 2021-01-29 elife-bot incident, replayed and caught, in under a minute.

1. moto serves SWF on 127.0.0.1; a decider, a cron (the ``Ping`` canary and an article
   feed) and N workers run against it, all logging to one shared ``worker.log``; half the
   workers use the heartbeat library, half are log-only.
2. The integration runs the way the agent runs it: a fresh one-shot process every interval.
   The operator's table (``nri-workerwatch status``) shows every worker idle or working.
3. An ``FTPArticle`` workflow is started whose FTP server accepts and never answers; the
   worker that takes it blocks in ``recv`` for good, like the five workers of the incident.
4. Within ``stall_after`` plus an interval the table names that worker as stalled, with the
   peer it waits on, while the fleet's CPU and memory stay flat and the shared log keeps
   growing from the other workers: everything the incident's dashboards showed.
5. The last payload line (what the agent receives) is printed, every process is stopped
   (also on Ctrl-C) and the run directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from demo.agent import Agent, AgentRun
from demo.fleet import SimFleet

INTERVAL_S = 3.0
STALL_AFTER_S = 5.0
MAX_RUNS_AFTER_INJECTION = 6


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __str__(self) -> str:
        return f"[{time.monotonic() - self.t0:5.1f}s]"


def _paint(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on else text


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _states(run: AgentRun, group: str) -> str:
    counts = Counter(run.states(group).values())
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none found"


class Replay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clock = Clock()
        self.colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.last_usage: tuple[float, float, int] | None = None  # (wall, cpu, log bytes)

    def say(self, text: str = "") -> None:
        print(f"{self.clock} {text}" if text else "", flush=True)

    def summary(self, fleet: SimFleet, run: AgentRun) -> None:
        """One line per run: verdicts next to what a host dashboard would show."""
        cpu, rss = fleet.usage()
        size = fleet.log_path.stat().st_size
        wall = time.monotonic()
        if self.last_usage is None:
            usage = f"fleet RSS {rss / 2**20:.0f} MiB | worker.log {_kib(size)}"
        else:
            w0, c0, s0 = self.last_usage
            share = 100 * (cpu - c0) / max(1e-6, wall - w0)
            usage = (
                f"fleet CPU {share:4.1f}% of a core, RSS {rss / 2**20:.0f} MiB | "
                f"worker.log {_kib(size)} (+{_kib(size - s0)})"
            )
        self.last_usage = (wall, cpu, size)
        pending = run.value("workerwatch.swf.pendingActivityTasks")
        canary = run.value("workerwatch.swf.canary.secondsSinceCompleted")
        backlog = f"SWF pending activity tasks {pending:g}" if pending is not None else ""
        if canary is not None:
            backlog += f", Ping canary completed {canary:.0f} s ago"
        workers = _states(run, "worker")
        if "stalled" in workers:
            workers = _paint(workers, "1;31", self.colour)
        self.say(f"run {run.number}: workers {workers} | {usage} | {backlog}")

    def table(self, agent: Agent) -> None:
        from workerwatch.commands.status import render

        self.say(f"$ nri-workerwatch status --config {agent.config}")
        doc = agent.status()
        # On a terminal, fit it; piped into a file or CI log, keep the reasons whole.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 1000
        print(render(doc, colour=self.colour, width=width), flush=True)

    def play(self) -> int:
        from tests.moto_server import MotoServer

        args = self.args
        run_dir = Path(tempfile.mkdtemp(prefix="workerwatch-demo-"))
        moto = MotoServer()
        fleet: SimFleet | None = None
        code = 1
        try:
            self.say("nri-workerwatch demo: the elife-bot incident of 2021-01-29, on this machine")
            self.say(f"run directory {run_dir}")
            moto.start()
            self.say(f"moto serves SWF on {moto.url} (server mode: a real HTTP endpoint)")
            fleet = SimFleet(run_dir, moto.url, workers=args.workers, env=moto.env())
            fleet.start()
            hb = [m.pid for m in fleet.workers if m.heartbeat]
            plain = [m.pid for m in fleet.workers if not m.heartbeat]
            assert fleet.ftp is not None
            self.say(
                f"started a decider, a cron (Ping as cron_FiveMinute every "
                f"{fleet.ping_every:g} s, a PublishArticle every {fleet.articles_every:g} s) "
                f"and {args.workers} workers polling domain {fleet.domain}: "
                f"heartbeat library {hb}, log-only {plain}"
            )
            self.say(
                f'an "FTP server" listens on 127.0.0.1:{fleet.ftp.port}: it accepts, never answers'
            )
            fleet.wait_ready()
            self.say("fleet ready: every worker polls and logs to the shared worker.log")

            config = run_dir / "config.yml"
            config.write_text(
                yaml.safe_dump(fleet.integration_config(stall_after=args.stall_after))
            )
            env = {**os.environ, **moto.env()}
            agent = Agent(config, args.interval, env)
            self.say(
                f"the agent runs `python -m workerwatch --config {config}` every "
                f"{args.interval:g} s (stall_after {args.stall_after:g} s)"
            )
            first = agent.run()
            self.summary(fleet, first)
            for line in first.errors():
                self.say(f"  stderr: {line[:150]}…" if len(line) > 150 else f"  stderr: {line}")
            if first.errors():
                self.say(
                    "  (moto lacks CountOpen/CountClosedWorkflowExecutions: the probe says so "
                    "once and does not ask again)"
                )
            self.summary(fleet, agent.run())
            self.table(agent)

            self.say(
                _paint(
                    ">>> the incident: an FTPArticle workflow for an FTP server that never answers",
                    "1",
                    self.colour,
                )
            )
            fleet.inject_ftp()
            hung = fleet.wait_hung(1)[0]
            kind = "heartbeat library" if hung in hb else "log-only"
            self.say(
                f"worker_{hung} ({kind}) took the FTPArticle task and is blocked in ftplib's "
                "connect(), waiting for a greeting that never comes"
            )

            detected: AgentRun | None = None
            for _ in range(MAX_RUNS_AFTER_INJECTION):
                run = agent.run()
                self.summary(fleet, run)
                if run.states().get(hung) == "stalled":
                    detected = run
                    break
            if detected is None:
                self.say("the hung worker was not reported stalled: something is wrong")
                return 1
            silent = time.time() - fleet.ftp.accept_times[0]
            self.say(
                _paint(
                    f"worker_{hung} reported stalled, {silent:.0f} s after it went silent; "
                    "the other workers carry on",
                    "1;31",
                    self.colour,
                )
            )
            for event in detected.events:
                self.say(f"event: {event['summary']}")
            self.table(agent)
            last_line = [ln for ln in fleet.log_text().splitlines() if f"worker_{hung} " in ln][-1]
            self.say(f"its last line in worker.log: {last_line}")

            self.summary(fleet, agent.run())
            self.say(
                "CPU and memory flat, the shared log still growing, the canary still "
                "completing: nothing on a host dashboard says one worker is gone"
            )
            self.say(
                f"the v4 payload line of run {detected.number}, which reported it, as the "
                "agent reads it on stdout:"
            )
            sys.stdout.write("".join(detected.lines))
            sys.stdout.flush()
            code = 0
        except KeyboardInterrupt:
            print(flush=True)
            self.say("interrupted: stopping everything")
            code = 130
        finally:
            if fleet is not None:
                report = fleet.stop()
                for label in report.killed:
                    self.say(
                        f"{label} ignored SIGTERM (blocked in recv, never back in its loop): "
                        "SIGKILL, as systemd does after TimeoutStopSec"
                    )
                survivors = report.survivors
                self.say(
                    f"stopped {len(report.terminated) + len(report.killed)} fleet processes"
                    + (f"; STILL RUNNING: {survivors}" if survivors else "")
                )
                if survivors:
                    code = 1
            moto.stop()
            if args.keep:
                self.say(f"kept {run_dir} (config.yml, worker.log, state/, heartbeats/)")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
            self.say(f"done in {time.monotonic() - self.clock.t0:.1f} s")
        return code


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make demo ARGS=...",
        description="Replay the elife-bot stalled-worker incident; watch nri-workerwatch catch it.",
    )
    parser.add_argument("--workers", type=int, default=4, help="workers in the fleet (default 4)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, config, state)"
    )
    parser.add_argument(
        "--interval", type=float, default=INTERVAL_S, help="seconds between integration runs"
    )
    parser.add_argument(
        "--stall-after", type=float, default=STALL_AFTER_S, help="the groups' stall_after, seconds"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 2:
        build_parser().error("--workers must be at least 2 (one hangs, the others carry on)")
    # SIGTERM (a CI runner, `timeout`) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with contextlib.suppress(BrokenPipeError):
        return Replay(args).play()
    return 0
