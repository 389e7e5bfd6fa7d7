"""What the stall evidence costs: one capture of a blocked worker's stack (``make bench``).

A worker blocked in ``recv()`` on a silent loopback server (the incident's shape) is
captured ``--repeat`` times with ``host.stack.capture``, the call the collection makes
once per stall: py-spy ``dump --nonblocking`` when it is installed, and the fallback it
takes without py-spy (the kernel stack and the socket table), measured on its own. Wall
time, CPU (ours plus py-spy's, a child process) and the worker's main-thread wakeups
across all captures (0: the capture neither stops nor wakes it) go into bench/RESULTS.md
between the ``capture:`` markers.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from workerwatch.host import stack  # noqa: E402

RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- capture:begin -->", "<!-- capture:end -->"
WORKER = (
    "import socket, sys\n"
    "def fetch_article(conn):\n"
    "    return conn.recv(1024)\n"
    "fetch_article(socket.create_connection(('127.0.0.1', int(sys.argv[1]))))\n"
)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _wakeups(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/status") as handle:
        for line in handle:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise RuntimeError("no voluntary_ctxt_switches")


def _measure(fn, repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        c, w = _cpu(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(_cpu() - c)
    return walls, cpus


def _ms(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} "
        f"({min(values) * 1000:.0f}–{max(values) * 1000:.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_capture.py", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="captures measured per path")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(server.getsockname()[1])])
    try:
        deadline = time.monotonic() + 10
        while not held or stack.kernel_stack_text(worker.pid) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not block")
            time.sleep(0.05)
        time.sleep(0.3)
        before = _wakeups(worker.pid)
        rows = []
        spy = stack.find_py_spy()
        if spy:
            found = stack.capture(worker.pid, 5.0)
            walls, cpus = _measure(lambda: stack.capture(worker.pid, 5.0), args.repeat)
            rows.append(
                f"| py-spy dump --nonblocking (`{found.source}`, {len(found.stack)} frames, "
                f"innermost `{found.stack[0] if found.stack else '-'}`) "
                f"| {_ms(walls)} | {_ms(cpus)} |"
            )
        else:
            rows.append("| py-spy dump --nonblocking | not installed | |")

        def fallback() -> None:
            stack.kernel_stack_text(worker.pid)
            stack.socket_table(worker.pid)

        walls, cpus = _measure(fallback, args.repeat)
        rows.append(
            f"| kernel stack + socket table (without py-spy) | {_ms(walls)} | {_ms(cpus)} |"
        )
        woken = _wakeups(worker.pid) - before
    finally:
        worker.kill()
        worker.wait()
        server.close()
    section = "\n".join(
        [
            BEGIN,
            "",
            f"## Stall evidence: one capture of a worker blocked in recv() (median of "
            f"{args.repeat}, min–max)",
            "",
            f"Python {sys.version.split()[0]}, py-spy {'at ' + spy if spy else 'absent'}, "
            f"euid {os.geteuid()}; `bench/bench_capture.py`.",
            "",
            "| capture | wall ms | CPU ms (ours + py-spy) |",
            "|---|---:|---:|",
            *rows,
            "",
            f"The worker's main thread woke {woken} time(s) across all "
            f"{args.repeat * (2 if spy else 1) + (1 if spy else 0)} captures. The collection "
            "makes at most 2 captures a run, once per stall.",
            "",
            END,
        ]
    )
    print(section)
    if not args.no_write:
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
