"""Micro-benchmark of Heartbeat.beat(): what the three lines cost a worker loop.

Not a test: run it by hand and copy the table into docs/heartbeat.md.

    .venv/bin/python bench/bench_heartbeat.py [--dir DIR ...] [--repeat N]

Each case is timed over many calls and repeated; the table shows the median of the
repeats per call. Directories default to /dev/shm (tmpfs, like /run where heartbeats
normally live) and the system temp directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from workerwatch.heartbeat import Heartbeat


def per_call(func: Callable[[], object], calls: int, repeat: int) -> float:
    """Median seconds per call of ``func`` over ``repeat`` runs of ``calls`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    return f"{seconds * 1e6:.1f} µs"


def filesystem(path: str) -> str:
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount = fields[1]
                if path.startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def cases(directory: str, repeat: int) -> list[tuple[str, float]]:
    work = tempfile.mkdtemp(prefix="hb-bench-", dir=directory)
    rows = []
    try:
        target = os.path.join(work, "w.json")

        def nothing() -> None:
            pass

        rows.append(("empty function call (reference)", per_call(nothing, 200_000, repeat)))

        throttled = Heartbeat(target, worker="bench@0", min_interval=3600)
        throttled.beat()
        rows.append(("beat(), throttled (no write)", per_call(throttled.beat, 200_000, repeat)))

        unthrottled = Heartbeat(target, worker="bench@0", min_interval=0)
        rows.append(("beat(), unthrottled (one write)", per_call(unthrottled.beat, 5_000, repeat)))

        def task() -> None:
            with throttled.task("FTPArticle", task_id="a1b2c3"):
                pass

        rows.append(("`with task():` enter + exit (two writes)", per_call(task, 3_000, repeat)))

        sock_dir = tempfile.mkdtemp(prefix="hb-notify-")
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            listener.bind(os.path.join(sock_dir, "notify"))
            saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
            os.environ["NOTIFY_SOCKET"] = os.path.join(sock_dir, "notify")
            try:
                os.environ["WATCHDOG_USEC"] = "30000000"
                watched = Heartbeat(target, min_interval=3600)
                watched.beat()
                rows.append(
                    ("beat(), throttled, watchdog armed", per_call(watched.beat, 200_000, repeat))
                )
                # A 1 µs watchdog makes every beat send a datagram: the ping's own cost.
                os.environ["WATCHDOG_USEC"] = "1"
                pinging = Heartbeat(None)
                pinging.beat()

                def ping_and_drain() -> None:
                    pinging.beat()
                    listener.recv(64)

                rows.append(
                    ("beat() sending WATCHDOG=1 (+ test recv)", per_call(ping_and_drain, 5_000, 3))
                )
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                listener.close()
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", action="append", help="directory to write in (repeatable)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    dirs = args.dir or [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    print()
    results = {d: dict(cases(d, args.repeat)) for d in dirs}
    header = " | ".join(f"`{d}` ({filesystem(d + '/')})" for d in dirs)
    print(f"| case | {header} |")
    print("|---|" + "---|" * len(dirs))
    for name in results[dirs[0]]:
        print(f"| {name} | " + " | ".join(fmt(results[d][name]) for d in dirs) + " |")


if __name__ == "__main__":
    main()
