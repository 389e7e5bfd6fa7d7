"""Run the integration the way the infrastructure agent runs a v4 integration.

One fresh process per interval (``python -m workerwatch --config PATH``), stdout read as
payload lines, stderr as ``[LEVEL]`` log records; intervals counted start to start, as the
agent's runner does. Also the operator's view: ``nri-workerwatch status --json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_TIMEOUT_S = 60.0


@dataclass
class AgentRun:
    """One one-shot run: its payload lines (parsed), stderr and timings."""

    number: int
    started: float  # time.time() when the process was started
    duration: float  # wall seconds until it exited
    lines: list[str]  # raw stdout lines, each with its newline
    stderr: str
    payloads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def now(self) -> float:
        """The run's own clock (the payload timestamp): what its verdicts are measured at."""
        return self.payloads[0]["data"][0]["common"]["timestamp"] / 1000

    def metrics(self, name: str, **attrs: Any) -> list[dict[str, Any]]:
        return [
            m
            for p in self.payloads
            for d in p["data"]
            for m in d["metrics"]
            if m["name"] == name and all(m["attributes"].get(k) == v for k, v in attrs.items())
        ]

    def value(self, name: str, **attrs: Any) -> float | None:
        found = self.metrics(name, **attrs)
        return found[0]["value"] if found else None

    def states(self, group: str = "worker") -> dict[int, str]:
        """pid -> worker.state for one group."""
        return {
            m["attributes"]["process.pid"]: m["attributes"]["worker.state"]
            for m in self.metrics("workerwatch.worker.up", **{"worker.group": group})
        }

    def reasons(self, group: str = "worker") -> dict[int, str]:
        return {
            m["attributes"]["process.pid"]: m["attributes"]["worker.reason"]
            for m in self.metrics("workerwatch.worker.up", **{"worker.group": group})
        }

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for p in self.payloads for d in p["data"] for e in d["events"]]

    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("[ERR]")]


class Agent:
    """Runs the one-shot integration every ``interval`` seconds, start to start."""

    def __init__(self, config: Path, interval: float, env: dict[str, str] | None = None) -> None:
        self.config = Path(config)
        self.interval = interval
        self.env = env
        self.runs: list[AgentRun] = []
        self._next: float | None = None

    def _command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "workerwatch", *extra, "--config", str(self.config)]

    def run_once(self) -> AgentRun:
        """One run now; the next :meth:`run` is due ``interval`` after this one started."""
        started, t0 = time.time(), time.monotonic()
        self._next = t0 + self.interval
        done = self._invoke()
        lines = done.stdout.splitlines(keepends=True)
        run = AgentRun(
            number=len(self.runs) + 1,
            started=started,
            duration=time.monotonic() - t0,
            lines=lines,
            stderr=done.stderr,
            payloads=[json.loads(line) for line in lines],
        )
        self.runs.append(run)
        return run

    def run(self) -> AgentRun:
        """Wait for the next interval (start to start, like the agent), then run once."""
        if self._next is not None:
            time.sleep(max(0.0, self._next - time.monotonic()))
        return self.run_once()

    def status(self) -> dict[str, Any]:
        """``nri-workerwatch status --json``: the operator's table, as data."""
        return json.loads(self._invoke("status", "--json").stdout)

    def _invoke(self, *args: str) -> subprocess.CompletedProcess:
        """The integration, started the way the agent starts it; a failure raises."""
        done = subprocess.run(
            self._command(*args),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            what = args[0] if args else "integration"
            raise RuntimeError(f"{what} exited {done.returncode}: {done.stderr}")
        return done
