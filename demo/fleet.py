"""Start, watch and stop the simulated fleet: SWF on moto, decider, cron, workers, a dead FTP peer.

Every program is a real process started with ``python -m demo.<program>``, in its own
session (a Ctrl-C in the terminal reaches the orchestrator only, which then stops them in
order) and with ``PR_SET_PDEATHSIG`` (if the orchestrator is killed outright, the kernel
kills them). Their working directory is the run directory, so, as under elife-bot's systemd
units, they all append to the same ``worker.log`` there.

Typical use (the demo and the end-to-end test do exactly this)::

    with SimFleet(run_dir, moto.url, workers=4, env=moto.env()) as fleet:
        fleet.wait_ready()
        write_config(path, fleet.integration_config(stall_after=5))
        fleet.inject_ftp()                   # one FTPArticle workflow
        pid = fleet.wait_hung(1)[0]          # the worker that took it, blocked in recv
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo import REPO_ROOT
from demo.common import (
    ACTIVITIES,
    CANARY_WORKFLOW_ID,
    PARENT_ENV,
    TASK_LIST,
    WORKFLOWS,
    swf_client,
)

_HUNG_LINE = re.compile(r" INFO worker_(\d+) FTPArticle: connecting to ftp://")


class SilentFTPServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: the incident's FTP peer.

    An FTP client first waits for the server's ``220`` greeting; it never comes, so a client
    without a timeout blocks in ``recv`` forever. The accepted sockets are kept open (a
    close would send EOF and free the client) until :meth:`close`.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[tuple[float, socket.socket]] = []  # (time.time(), connection)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-ftp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append((time.time(), conn))

    @property
    def accept_times(self) -> list[float]:
        return [t for t, _ in self.accepted]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for _, conn in self.accepted:
            conn.close()
        self.sock.close()


@dataclass
class Member:
    """One process of the fleet."""

    role: str  # "worker", "decider", "cron"
    popen: subprocess.Popen[bytes]
    heartbeat: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def label(self) -> str:
        return f"{self.role}_{self.pid}"


@dataclass
class StopReport:
    terminated: list[str] = field(default_factory=list)  # stopped on SIGTERM
    killed: list[str] = field(default_factory=list)  # ignored SIGTERM, needed SIGKILL
    survivors: list[int] = field(default_factory=list)  # should always stay empty


def main_thread_syscall(pid: int) -> str | None:
    """The main thread's state and syscall line from /proc, e.g. ``S 45 0x5 ...``."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        syscall = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().strip()
    except OSError:
        return None
    return f"{stat[stat.rindex(')') + 2]} {syscall}"


def blocked_in_syscall(pid: int) -> bool:
    """Sleeping inside a system call (not running, not a page fault)."""
    line = main_thread_syscall(pid)
    if not line:
        return False
    state, _, rest = line.partition(" ")
    return state == "S" and rest.split()[0] not in ("running", "-1")


class SimFleet:
    """The fleet of one run directory; see the module docstring."""

    def __init__(
        self,
        run_dir: Path,
        endpoint: str,
        *,
        workers: int = 4,
        domain: str = "Publish",
        ping_every: float = 4.0,
        articles_every: float = 5.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a fleet needs at least one worker")
        self.run_dir = Path(run_dir)
        self.endpoint = endpoint
        self.n_workers = workers
        self.domain = domain
        self.ping_every = ping_every
        self.articles_every = articles_every
        self.tag = f"wwfleet-{uuid.uuid4().hex[:8]}"
        self.heartbeat_dir = self.run_dir / "heartbeats"
        self.log_path = self.run_dir / "worker.log"
        self.members: list[Member] = []
        self.ftp: SilentFTPServer | None = None
        self._env = {
            **os.environ,
            **(env or {}),
            # The programs import `demo` from the checkout and run in the run directory.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            PARENT_ENV: str(os.getpid()),
        }
        self._client: Any = None
        self._injected = 0

    # --- start ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = swf_client(self.endpoint, read_timeout=10, env=self._env)
        return self._client

    def register(self) -> None:
        """The domain, the task list's workflow types and activity types (elife-bot's shapes)."""
        c = self.client
        c.register_domain(name=self.domain, workflowExecutionRetentionPeriodInDays="1")
        for name in WORKFLOWS:
            c.register_workflow_type(
                domain=self.domain,
                name=name,
                version="1",
                defaultTaskList={"name": TASK_LIST},
                # workflow_Ping.py: 5 min; the others long enough never to matter here.
                defaultExecutionStartToCloseTimeout="300" if name == "Ping" else "7200",
                defaultTaskStartToCloseTimeout="300",
                defaultChildPolicy="TERMINATE",
            )
        for name, t in ACTIVITIES.items():
            c.register_activity_type(
                domain=self.domain,
                name=name,
                version="1",
                defaultTaskList={"name": TASK_LIST},
                defaultTaskHeartbeatTimeout=t["heartbeat"],
                defaultTaskScheduleToStartTimeout=t["schedule_to_start"],
                defaultTaskScheduleToCloseTimeout=str(
                    int(t["schedule_to_start"]) + int(t["start_to_close"])
                ),
                defaultTaskStartToCloseTimeout=t["start_to_close"],
            )

    def _spawn(self, role: str, *args: str, heartbeat: bool = False) -> Member:
        out = open(self.run_dir / f"{role}.stderr", "ab")  # noqa: SIM115 - the child keeps it
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", f"demo.{role}", "--fleet", self.tag,
                 "--endpoint", self.endpoint, "--domain", self.domain, *args],
                cwd=self.run_dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )  # fmt: skip
        finally:
            out.close()
        member = Member(role, popen, heartbeat)
        self.members.append(member)
        return member

    def start(self) -> SimFleet:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat_dir.mkdir(exist_ok=True)
        self.register()
        self.ftp = SilentFTPServer()
        self._spawn("decider")
        self._spawn(
            "cron",
            "--ping-every", f"{self.ping_every:g}",
            "--articles-every", f"{self.articles_every:g}",
        )  # fmt: skip
        for i in range(self.n_workers):
            # Every other worker uses the heartbeat library; the rest are log-only.
            if i % 2 == 0:
                self._spawn("worker", "--heartbeat", str(self.heartbeat_dir), heartbeat=True)
            else:
                self._spawn("worker")
        return self

    def __enter__(self) -> SimFleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- watch ------------------------------------------------------------------------

    @property
    def workers(self) -> list[Member]:
        return [m for m in self.members if m.role == "worker"]

    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    def log_text(self, name: str = "worker.log") -> str:
        try:
            return (self.run_dir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _check_alive(self) -> None:
        dead = [
            f"{m.label} (exit {m.popen.returncode})"
            for m in self.members
            if m.popen.poll() is not None
        ]
        if dead:
            stderr = {m.role: self.log_text(f"{m.role}.stderr")[-2000:] for m in self.members}
            raise RuntimeError(f"fleet process(es) exited: {', '.join(dead)}; stderr: {stderr}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every worker has polled at least once, the decider polls, a Ping has completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            text = self.log_text()
            polled = all(f"worker_{m.pid} polling" in text for m in self.workers)
            if polled and "polling" in self.log_text("decider.log") and self.canary_completed():
                return
            time.sleep(0.2)
        raise TimeoutError(f"fleet not ready within {timeout:.0f} s")

    def canary_completed(self) -> bool:
        """At least one Ping (cron_FiveMinute) closed as COMPLETED."""
        closed = self.client.list_closed_workflow_executions(
            domain=self.domain,
            closeTimeFilter={"oldestDate": time.time() - 3600},
            executionFilter={"workflowId": CANARY_WORKFLOW_ID},
        )["executionInfos"]
        return any(
            i["execution"]["workflowId"] == CANARY_WORKFLOW_ID
            and i.get("closeStatus") == "COMPLETED"
            for i in closed
        )

    def closed_executions(self) -> int:
        """Closed executions in the domain (moto lists them all, oldest first)."""
        return len(
            self.client.list_closed_workflow_executions(
                domain=self.domain, closeTimeFilter={"oldestDate": time.time() - 86400}
            )["executionInfos"]
        )

    def inject_ftp(self) -> str:
        """Start one FTPArticle workflow whose FTP endpoint is the server that never answers."""
        assert self.ftp is not None, "fleet not started"
        self._injected += 1
        article = f"{10000 + self._injected}"
        workflow_id = f"FTPArticle-{article}-{uuid.uuid4().hex[:6]}"
        self.client.start_workflow_execution(
            domain=self.domain,
            workflowId=workflow_id,
            workflowType={"name": "FTPArticle", "version": "1"},
            taskList={"name": TASK_LIST},
            input=json.dumps({"article": article, "ftp_host": "127.0.0.1",
                              "ftp_port": self.ftp.port}),
        )  # fmt: skip
        return workflow_id

    def hung_pids(self) -> list[int]:
        """Workers whose log says they connected to the FTP peer, in the order they did."""
        seen: list[int] = []
        for match in _HUNG_LINE.finditer(self.log_text()):
            pid = int(match.group(1))
            if pid not in seen:
                seen.append(pid)
        return seen

    def wait_hung(self, count: int, timeout: float = 30.0) -> list[int]:
        """Wait until ``count`` workers are blocked on the FTP peer; their pids, in order."""
        assert self.ftp is not None, "fleet not started"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            pids = self.hung_pids()
            if (
                len(pids) >= count
                and len(self.ftp.accepted) >= count
                and all(blocked_in_syscall(pid) for pid in pids)
            ):
                return pids
            time.sleep(0.05)
        raise TimeoutError(
            f"{count} worker(s) not blocked on the FTP peer within {timeout:.0f} s "
            f"(log says {self.hung_pids()}, {len(self.ftp.accepted)} accepted)"
        )

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, resident bytes) summed over the fleet's processes."""
        import psutil

        cpu, rss = 0.0, 0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
        return cpu, rss

    def integration_config(
        self,
        *,
        stall_after: float,
        state_dir: Path | None = None,
        sample_every: float = 1.0,
        canary_every: float = 60.0,
    ) -> dict[str, Any]:
        """The integration's config for this fleet, as an operator would write it."""
        consumes = {"swf_domain": self.domain, "task_list": TASK_LIST}
        return {
            "state_dir": str(state_dir or self.run_dir / "state"),
            "deadline": 10,
            "groups": [
                {
                    "name": "worker",
                    "match": {"cmdline": rf"demo\.worker --fleet {self.tag}\b"},
                    "expected": self.n_workers,
                    "logs": [str(self.log_path)],
                    "heartbeats": str(self.heartbeat_dir / "*.json"),
                    "stall_after": f"{stall_after:g}s",
                    "consumes": consumes,
                },
                {
                    "name": "decider",
                    "match": {"cmdline": rf"demo\.decider --fleet {self.tag}\b"},
                    "expected": 1,
                    "logs": [str(self.run_dir / "decider.log")],
                    "stall_after": f"{stall_after:g}s",
                    "consumes": {**consumes, "task_kind": "decision"},
                },
            ],
            "swf": {
                "endpoint_url": self.endpoint,
                # Every run samples (on a real host: 60 s, and on one host per account).
                "sample_every": f"{sample_every:g}s",
                "timeout": 3,
                "domains": [
                    {
                        "name": self.domain,
                        "activity_task_lists": [TASK_LIST],
                        "decision_task_lists": [TASK_LIST],
                        "canaries": [
                            {
                                "workflow_id": CANARY_WORKFLOW_ID,
                                "expect_every": f"{canary_every:g}s",
                            }
                        ],
                    }
                ],
            },
        }

    # --- stop -------------------------------------------------------------------------

    def stop(self, grace: float = 2.0) -> StopReport:
        """SIGTERM everyone (elife-bot's loops stop after the current turn), SIGKILL the rest.

        A worker blocked in recv never gets back to its loop: it is the one that needs the
        SIGKILL, as systemd gives it after ``TimeoutStopSec``.
        """
        report = StopReport()
        for m in self.members:
            if m.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for m in self.members:
            try:
                m.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                report.terminated.append(m.label)
            except subprocess.TimeoutExpired:
                m.popen.kill()
                m.popen.wait(timeout=10)
                report.killed.append(m.label)
        if self.ftp is not None:
            self.ftp.close()
            self.ftp = None
        report.survivors = [m.pid for m in self.members if os.path.exists(f"/proc/{m.pid}")]
        return report
