"""Child processes for tests/test_heartbeat_lib.py: small workers that use the library.

Run as ``python worker.py MODE ...``; each mode is one kind of worker the tests observe
from outside, through the heartbeat files and sockets they produce.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time

from workerwatch.heartbeat import Heartbeat, enable_stack_dump


def idle(args: argparse.Namespace) -> None:
    hb = Heartbeat(args.path, worker="idle@0", min_interval=args.min_interval)
    while True:
        hb.beat()
        time.sleep(0.01)


def fetch_report(sock: socket.socket) -> bytes:
    # No timeout, like ftplib's default: the call the incident was stuck in.
    return sock.recv(1)


def stuck(args: argparse.Namespace) -> None:
    if args.dump:
        enable_stack_dump(file=args.dump)
    hb = Heartbeat(args.path, worker="stuck@0", min_interval=args.min_interval)
    for _ in range(3):
        hb.beat()
        time.sleep(0.01)
    with hb.task("FTPArticle", task_id="a1b2c3"):
        sock = socket.create_connection(("127.0.0.1", args.port))
        hb.beat()
        fetch_report(sock)
    sys.exit("the stuck worker's server answered")


def tasks(args: argparse.Namespace) -> None:
    hb = Heartbeat(args.path, worker="tasks@0", min_interval=args.min_interval)

    @hb.track("ReportTask", task_id=lambda n: f"r{n}")
    def report(n: int) -> None:
        time.sleep(0.02)

    n = 0
    while True:
        hb.beat()
        time.sleep(0.02)
        n += 1
        if n % 2:
            with hb.task("FTPArticle", task_id=f"t{n}"):
                time.sleep(0.02)
        else:
            report(n)


def fast(args: argparse.Namespace) -> None:
    # min_interval=0 writes on every beat; the long task id makes successive files
    # differ in size, so a torn or truncated read would show.
    hb = Heartbeat(args.path, worker="fast@0", min_interval=0)
    n = 0
    while True:
        n += 1
        if n % 3 == 0:
            with hb.task("FTPArticle", task_id="x" * (n % 200)):
                hb.beat()
        else:
            hb.beat()


def fork(args: argparse.Namespace) -> None:
    shared = Heartbeat(args.path, worker="forker", min_interval=60)
    per_pid = Heartbeat(args.template, min_interval=60)
    for hb in (shared, per_pid):
        hb.beat()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            wrote = [shared.beat(), per_pid.beat()]
            print(json.dumps({"child": os.getpid(), "wrote": wrote}), flush=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    print(json.dumps({"parent": os.getpid(), "status": status}), flush=True)
    if args.raw:
        # libc's fork() behind Python's back: no at-fork hooks run in the child. PyDLL
        # keeps the GIL across the call, so the child can go on running Python.
        import ctypes

        raw = ctypes.PyDLL(None).fork()
        if raw == 0:
            code = 1
            try:
                with shared.task("RawFork"):
                    pass
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(raw, 0)
        print(json.dumps({"raw": raw, "status": status}), flush=True)


def notify(args: argparse.Namespace) -> None:
    hb = Heartbeat(args.path, min_interval=args.min_interval)
    if args.ready:
        hb.ready()
    beats = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        hb.beat()
        beats += 1
        time.sleep(0.002)
    with hb.task("FTPArticle", task_id="n1"):
        hb.beat()
    print(json.dumps({"beats": beats, "pid": os.getpid()}), flush=True)


def unwritable(args: argparse.Namespace) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    hb = Heartbeat(args.path, min_interval=0.05)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        hb.beat()
        if os.path.exists(args.path):
            return
        time.sleep(0.01)
    sys.exit("the heartbeat file never appeared")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    for name, func in [
        ("idle", idle),
        ("stuck", stuck),
        ("tasks", tasks),
        ("fast", fast),
        ("fork", fork),
        ("notify", notify),
        ("unwritable", unwritable),
    ]:
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("path", nargs="?")
        p.add_argument("--min-interval", type=float, default=0.05)
        p.add_argument("--port", type=int)
        p.add_argument("--dump")
        p.add_argument("--template")
        p.add_argument("--ready", action="store_true")
        p.add_argument("--raw", action="store_true")
        p.add_argument("--tag", help="ignored: lets a test's cmdline match pick this child")
        p.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
