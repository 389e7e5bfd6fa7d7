"""Real queue frameworks for the tests: a private redis-server, Celery and RQ workers.

Everything here is the real thing: Debian's ``redis-server`` on a free loopback port, the
``celery`` and ``rq`` command-line programs from PyPI running the apps in tests/children.
Workers are laid out the way docs/frameworks.md describes a deployment, under a root that
stands for ``/srv``: ``<root>/shop/venv/bin/celery`` (a copy of the virtualenv's entry
script), logs in ``<root>/shop/log``, heartbeats in ``<root>/shop/run/heartbeat``. The guide's
configurations then apply with ``/srv`` replaced by that root (``guide_config``).

Every process started here dies with the test: it is killed with its whole process tree
(pool children and work horses included, found through ``/proc``) at teardown, and the
directly started ones also carry PR_SET_PDEATHSIG, so even a killed test run leaves nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet import wait_for
from tests.moto_server import _die_with_parent

CHILDREN = Path(__file__).parent / "children"
GUIDE = Path(__file__).parent.parent / "docs" / "frameworks.md"
DOC_ROOT = "/srv"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 40.0  # a Celery worker takes 2-5 s to start on a loaded 2-core machine

NO_REDIS = "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason=NO_REDIS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from the kernel's per-thread children lists."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop the process first (no new fork can start), then kill it and everything below it.

    RQ's work horses call setpgrp(), so a process-group kill would miss them: the tree is
    read from /proc instead.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _start(argv: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # like systemd's StandardOutput=append:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


class RedisServer:
    """A private ``redis-server``: loopback, a free port, no persistence, its own directory."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.proc: subprocess.Popen | None = None
        for _ in range(5):  # the free port may be taken between the probe and the bind
            self.port = free_port()
            self.proc = _start(
                [
                    "redis-server",
                    "--bind", "127.0.0.1",
                    "--port", str(self.port),
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--dir", str(directory),
                ],
                log=directory / "redis.log",
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd=directory,
            )  # fmt: skip
            if self._answers():
                return
            kill_tree(self.proc)
        raise AssertionError(f"redis-server did not start: {(directory / 'redis.log').read_text()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return True
            time.sleep(0.05)
        return False

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc)


class Deployment:
    """One application deployed under ``<root>/<app>`` as the guide lays it out."""

    def __init__(self, root: Path, app: str, redis: RedisServer) -> None:
        self.root = root
        self.home = root / app
        self.bin = self.home / "venv" / "bin"
        self.logs = self.home / "log"
        self.heartbeats = self.home / "run" / "heartbeat"
        self.journal = self.home / "journal.jsonl"
        for path in (self.bin, self.logs, self.heartbeats):
            path.mkdir(parents=True, exist_ok=True)
        for program in ("celery", "rq"):
            shutil.copy2(VENV_BIN / program, self.bin / program)
        self.redis = redis
        self.workers: list[Worker] = []

    def env(self, heartbeats: bool) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(CHILDREN),
            "CELERY_BROKER_URL": self.redis.url,
            "FRAMEWORK_JOURNAL": str(self.journal),
            "LANG": "C.UTF-8",
        }
        if heartbeats:
            env["WORKERWATCH_HEARTBEAT_DIR"] = str(self.heartbeats)
        return env

    def celery(
        self,
        pool: str,
        queue: str,
        concurrency: int = 2,
        heartbeats: bool = True,
        gossip: bool = True,
    ) -> Worker:
        """``celery -A celery_app worker --pool POOL`` consuming one queue, logging to a file.

        ``gossip=False``: ``--without-gossip``, so the worker's log holds no lines about its
        neighbours (``missed heartbeat from solo@…``, written when a scene worker hangs).
        """
        log = self.logs / f"celery-{queue}.log"
        argv = [str(self.bin / "celery"), "-A", "celery_app", "worker", "--pool", pool]
        if pool != "solo":
            argv += ["--concurrency", str(concurrency)]
        if not gossip:
            argv.append("--without-gossip")
        argv += ["--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO"]
        argv += ["--logfile", str(log)]
        proc = _start(
            argv, log=self.logs / f"celery-{queue}.out", env=self.env(heartbeats), cwd=self.home
        )
        worker = Worker("celery", pool, queue, proc, log, self)
        self.workers.append(worker)
        return worker

    def rq(self, worker_class: str, queue: str, heartbeats: bool = True) -> Worker:
        """``rq worker -w CLASS QUEUE``; RQ logs to stderr, which goes to a file."""
        log = self.logs / f"rq-{queue}.log"
        argv = [str(self.bin / "rq"), "worker", "--url", self.redis.url, "-w", worker_class]
        argv += ["--name", f"{queue}-{os.getpid()}", queue]
        proc = _start(argv, log=log, env=self.env(heartbeats), cwd=self.home)
        worker = Worker("rq", worker_class, queue, proc, log, self)
        self.workers.append(worker)
        return worker

    def jobs(self) -> list[dict[str, Any]]:
        """What the tasks wrote when they started: task name, pid, and per task its facts."""
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line]

    def stop(self) -> None:
        for worker in self.workers:
            kill_tree(worker.proc)


READY = {"celery": re.compile(r"\bready\.$", re.M), "rq": re.compile(r"\*\*\* Listening on ")}


class Worker:
    """A started worker: its main process, its log, and how to give it jobs."""

    def __init__(
        self,
        framework: str,
        shape: str,
        queue: str,
        proc: subprocess.Popen,
        log: Path,
        app: Deployment,
    ) -> None:
        self.framework, self.shape, self.queue = framework, shape, queue
        self.proc, self.log, self.app = proc, log, app
        self._celery: Any = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Worker:
        def ready() -> bool:
            assert self.proc.poll() is None, f"{self} exited: {self.output()}"
            return self.log.exists() and bool(READY[self.framework].search(self.log.read_text()))

        wait_for(ready, timeout, f"{self} ready")
        return self

    def output(self) -> str:
        out = self.app.logs / f"celery-{self.queue}.out"
        text = self.log.read_text() if self.log.exists() else ""
        return text + (out.read_text() if out.exists() else "")

    def children(self) -> list[int]:
        return descendants(self.pid)

    def enqueue(self, job: str, *args: object) -> None:
        """Queue one job by name (``quick``, ``cpu``, ``hang``, ``child``) for this worker."""
        if self.framework == "celery":
            if self._celery is None:
                from celery import Celery

                self._celery = Celery("client", broker=self.app.redis.url)
                self._celery.conf.broker_connection_retry_on_startup = True
            self._celery.send_task(f"celery_app.{job}", args=list(args), queue=self.queue)
        else:
            from rq import Queue

            Queue(self.queue, connection=self.app.redis.client()).enqueue(
                f"jobs.{job}", *args, job_timeout=600
            )

    def started(self, job: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The journal entries of the first ``count`` runs of ``job`` in this worker's processes.

        A job runs in the worker itself (solo, threads, SimpleWorker) or in one of its children
        (a prefork pool process, a work horse).
        """

        def entries() -> list[dict[str, Any]]:
            found = [
                j for j in self.app.jobs() if j["task"] == job and self.pid in (j["pid"], j["ppid"])
            ]
            return found if len(found) >= count else []

        return wait_for(entries, timeout, f"{job} started on {self}")[:count]

    def close_clients(self) -> None:
        if self._celery is not None:
            self._celery.close()
            self._celery = None

    def __repr__(self) -> str:
        return f"<{self.framework} {self.shape} {self.queue} pid {self.pid}>"


def guide_configs(text: str | None = None) -> dict[str, dict[str, Any]]:
    """The guide's example configurations, by the name in the comment that opens each block.

    A block is a ```yaml fence whose first line is ``# config: NAME``.
    """
    text = GUIDE.read_text() if text is None else text
    found: dict[str, dict[str, Any]] = {}
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# config: (\S+)", first)
        if match:
            found[match.group(1)] = yaml.safe_load(block)
    return found


def guide_config(name: str, root: Path, state_dir: Path, stall_after: str | None = None) -> dict:
    """One guide configuration as the tests run it: ``/srv`` moved to ``root``, own state.

    Only two things change: where the deployment lives (regexes get the root escaped, globs
    get it as is) and, when a test needs a shorter window, ``stall_after``.
    """
    config = guide_configs()[name]

    def move(value: str, regex: bool) -> str:
        new = re.escape(str(root)) if regex else str(root)
        old = re.escape(DOC_ROOT) if regex else DOC_ROOT
        assert old in value, f"{name}: {value!r} does not live under {DOC_ROOT}"
        return value.replace(old, new)

    for group in config["groups"]:
        match = group["match"]
        if "cmdline" in match:
            match["cmdline"] = move(match["cmdline"], regex=True)
        if "logs" in group:
            group["logs"] = [move(p, regex=False) for p in group["logs"]]
        if "heartbeats" in group:
            group["heartbeats"] = move(group["heartbeats"], regex=False)
        if stall_after is not None:
            group["stall_after"] = stall_after
    config["state_dir"] = str(state_dir)
    return config


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    try:
        yield server
    finally:
        server.stop()
