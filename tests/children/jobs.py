"""The jobs a worker fleet meets, for the framework tests (Celery tasks and RQ jobs alike).

A quick job, a silent CPU-bound job, a job hung in ``recv`` on a server that never answers,
and a job that does its work in a child process. Every job writes a JSON line to
``$FRAMEWORK_JOURNAL`` when it starts (job, pid, ppid, time and its own facts), so a test
knows which process carries it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time


def journal(job: str, **facts: object) -> None:
    path = os.environ.get("FRAMEWORK_JOURNAL")
    if not path:
        return
    entry = {"task": job, "pid": os.getpid(), "ppid": os.getppid(), "time": time.time(), **facts}
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def quick() -> str:
    journal("quick")
    return "done"


def cpu(seconds: float) -> int:
    """Computes silently: no log line, no I/O, only CPU."""
    journal("cpu")
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return count


def hang(host: str, port: int) -> bytes:
    """Connects without a timeout and waits for an answer that never comes (the incident)."""
    conn = socket.create_connection((host, port))
    journal("hang", port=conn.getsockname()[1])
    return conn.recv(1024)


def child(seconds: float) -> int:
    """Runs its work in a child process that computes silently, and waits for it."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    journal("child", child=proc.pid)
    return proc.wait()
