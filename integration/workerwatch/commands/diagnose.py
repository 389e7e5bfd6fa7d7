"""``nri-workerwatch diagnose WORKER``: the evidence for one worker, and its stack if possible.

Opt-in and read-only unless asked: it never sends a signal without ``--signal``. Stack
sources, in order:

1. ``py-spy dump --pid`` when py-spy is installed and permitted (ptrace; root or
   CAP_SYS_PTRACE), bounded by a timeout; looked for beside the interpreter running us
   first (``pip install py-spy`` into the same venv or prefix), then on PATH. It reads
   the stack from outside without stopping the worker for long.
2. With ``--signal`` only: SIGUSR1, and only when ``/proc/PID/status`` shows SIGUSR1 is
   caught (``SigCgt``), i.e. the worker called the heartbeat library's
   ``enable_stack_dump()`` (``faulthandler.register``). SIGUSR1's default action ends the
   process, so an uncaught one is never sent. The stack goes to the worker's own stderr
   (its journal or log); when that is a regular file, the new lines are shown here.
3. As root: the main thread's kernel stack, ``/proc/PID/task/PID/stack``: where in the
   kernel it sleeps (e.g. ``tcp_recvmsg``), which is often enough for a hung ``recv``.

Plus the open sockets (psutil), with ``ss -tinp``'s ``lastrcv``/``lastsnd`` for TCP when
``ss`` is there: "nothing received for 14 minutes" is the incident in one number.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from workerwatch import log
from workerwatch.commands.common import add_operator_flags, load_operator_config, read_only_store
from workerwatch.host import log_offsets, process
from workerwatch.host.procfs import ProcGone
from workerwatch.host.stack import kernel_stack, py_spy
from workerwatch.sanitize import clean_text
from workerwatch.units import human_duration, parse_duration

_SS_USER = re.compile(r"pid=(\d+),fd=(\d+)")
_SS_LAST = re.compile(r"\b(lastsnd|lastrcv|lastack):(\d+)")


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else human_duration(seconds)


def signal_caught(pid: int, signum: int) -> bool | None:
    """Whether ``pid`` has a handler for ``signum`` (SigCgt), None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _find(result: Any, target: str) -> Any:
    if target.isdigit():
        for v in result.workers:
            if v.pid == int(target) and v.up:
                return v
        return None
    exact = [v for v in result.workers if v.name == target]
    if not exact:
        exact = [v for v in result.workers if v.name.removesuffix(".service") == target]
    live = [v for v in exact if v.up] or exact
    return live[0] if live else None


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def evidence(pid: int, verdict: Any, now: float) -> list[str]:
    lines = []
    if verdict is not None:
        lines.append(f"worker {verdict.name} (group {verdict.group}), pid {pid}")
        lines.append(f"  state      {verdict.state}")
        lines.append(f"  reason     {verdict.reason}")
    else:
        lines.append(f"pid {pid} (not a member of any configured group)")
    cmdline = _read(f"/proc/{pid}/cmdline", 4096)
    if cmdline:
        words = " ".join(cmdline.replace("\0", " ").split())
        lines.append(f"  command    {clean_text(words, 1024)}")
    if verdict is not None and verdict.started:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(verdict.started))
        lines.append(f"  uptime     {_dur(now - verdict.started)} (started {started})")
    proc = None
    try:
        proc = process.observe(pid)
    except ProcGone:
        lines.append("  process    gone")
        return lines
    except (OSError, ValueError, IndexError) as exc:
        lines.append(f"  process    unreadable: {exc}")
    if proc is not None:
        where = proc.syscall or "unknown (needs root)"
        if proc.syscall_fd is not None:
            where += f"(fd {proc.syscall_fd})"
        wchan = f", wchan {proc.wchan}" if proc.wchan else ""
        lines.append(
            f"  threads    {proc.threads}; main thread state {proc.state}, in {where}{wchan}"
        )
        lines.append(
            f"  cpu        {proc.cpu_seconds:.2f} s total, main thread "
            f"{proc.main_cpu_seconds:.2f} s, {proc.main_voluntary} wakeups"
        )
    if verdict is not None:
        if verdict.cpu_delta is not None:
            lines.append(
                f"  since last {'+'}{verdict.cpu_delta:.2f} s cpu, {verdict.wakeups} wakeups "
                f"in {_dur(verdict.interval_s)}"
            )
        lines.append(f"  log        silent for {_dur(verdict.silent_seconds)}")
        if verdict.heartbeat_age is not None:
            lines.append(f"  heartbeat  last beat {_dur(verdict.heartbeat_age)} ago")
        if verdict.task_name:
            lines.append(f"  task       {verdict.task_name}, running {_dur(verdict.task_seconds)}")
        if verdict.blocked_syscall and verdict.blocked_seconds:
            peer = f" on {verdict.blocked_peer}" if verdict.blocked_peer else ""
            lines.append(
                f"  blocked    {verdict.blocked_syscall}{peer} for {_dur(verdict.blocked_seconds)}"
            )
    try:
        logs = log_offsets.observe(pid, None)
        for fd in logs.fds:
            lines.append(f"  writes     fd {fd.fd} {fd.path} (offset {fd.pos})")
    except (ProcGone, OSError, ValueError):
        pass
    return lines


def _ss_times(pid: int) -> dict[int, str]:
    """fd -> "lastrcv 840000 ms, lastsnd ..." from ``ss -tinp`` (TCP only; optional)."""
    ss = shutil.which("ss")
    if not ss:
        return {}
    try:
        out = subprocess.run(
            [ss, "-tinpH"], capture_output=True, text=True, timeout=3, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    times: dict[int, str] = {}
    current: list[int] = []
    for line in out.splitlines():
        users = [(int(p), int(f)) for p, f in _SS_USER.findall(line)]
        if users:
            current = [f for p, f in users if p == pid]
        found = _SS_LAST.findall(line)
        if found and current:
            text = ", ".join(f"{k} {human_duration(int(v) / 1000)} ago" for k, v in found)
            for fd in current:
                times[fd] = text
            current = []
    return times


def sockets(pid: int, blocked_fd: int | None) -> list[str]:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="all")
    except psutil.AccessDenied:
        return ["  (not permitted: run as root or as the worker's user)"]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ["  (process gone)"]
    if not conns:
        return ["  (none)"]
    times = _ss_times(pid)
    lines = []
    kinds = {1: "tcp", 2: "udp"}
    for c in sorted(conns, key=lambda c: c.fd):
        family = {2: "ipv4", 10: "ipv6", 1: "unix"}.get(int(c.family), str(c.family))
        kind = "unix" if family == "unix" else kinds.get(int(c.type), "sock")
        local = _addr(c.laddr) or "-"
        remote = _addr(c.raddr) or "-"
        status = c.status if c.status and c.status != "NONE" else ""
        extra = f"  {times[c.fd]}" if c.fd in times else ""
        mark = (
            "  <- main thread blocked here" if blocked_fd is not None and c.fd == blocked_fd else ""
        )
        lines.append(f"  fd {c.fd:<4} {kind:<4} {local} -> {remote} {status}{extra}{mark}".rstrip())
    return lines


def _addr(addr: Any) -> str | None:
    if not addr:
        return None
    if isinstance(addr, str):
        return addr
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _stderr_target(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/fd/2")
    return None


def signal_dump(pid: int, wait: float) -> tuple[bool, list[str]]:
    caught = signal_caught(pid, signal.SIGUSR1)
    if caught is None:
        return False, [f"cannot read /proc/{pid}/status: SIGUSR1 not sent"]
    if not caught:
        return False, [
            f"SIGUSR1 not sent: pid {pid} has no handler for it, and its default action "
            "would kill the worker. Call workerwatch.heartbeat.enable_stack_dump() in the "
            "worker to make this possible."
        ]
    target = _stderr_target(pid)
    before = None
    if target and os.path.isfile(target):
        with contextlib.suppress(OSError):
            before = os.path.getsize(target)
    try:
        os.kill(pid, signal.SIGUSR1)
    except OSError as exc:
        return False, [f"SIGUSR1 could not be sent: {exc.strerror or exc}"]
    lines = [
        f"sent SIGUSR1 to pid {pid}: its faulthandler writes every thread's stack to the "
        f"worker's own stderr ({target or 'unknown'}), not here"
    ]
    if before is None or not target:
        lines.append("read it in the worker's journal or log, e.g. journalctl -u UNIT -n 60")
        return True, lines
    deadline = time.monotonic() + wait
    text = ""
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            with open(target, "rb") as handle:
                handle.seek(before)
                text = handle.read(256 * 1024).decode("utf-8", "replace")
        except OSError:
            break
        if text and "File " in text and text.endswith("\n"):
            time.sleep(0.1)  # let the dump of the remaining threads land
            with contextlib.suppress(OSError), open(target, "rb") as handle:
                handle.seek(before)
                text = handle.read(256 * 1024).decode("utf-8", "replace")
            break
    if text:
        lines.append(f"new lines in {target}:")
        lines.extend(text.rstrip().splitlines())
    return True, lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch diagnose",
        description="Evidence, sockets and (where possible) the stack of one worker.",
    )
    add_operator_flags(parser)
    parser.add_argument("worker", help="worker name (e.g. worker@3) or pid")
    parser.add_argument(
        "--signal", action="store_true",
        help="if py-spy is unavailable, send SIGUSR1 to a worker that handles it "
        "(enable_stack_dump); never sent without this flag",
    )  # fmt: skip
    parser.add_argument("--no-stack", action="store_true", help="evidence and sockets only")
    parser.add_argument("--timeout", default="10s", help="py-spy time limit (default 10s)")
    parser.add_argument(
        "--wait", default="2s", help="how long to wait for a signalled dump (default 2s)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(list(argv))
    log.set_verbose(bool(ns.verbose))
    try:
        timeout, wait = parse_duration(ns.timeout), parse_duration(ns.wait)
    except ValueError as exc:
        log.fatal(f"diagnose: {exc}")
        return 1
    config = load_operator_config(ns)

    from workerwatch.collector import Collector

    with read_only_store(config.state_dir) as store:
        result = Collector(config).collect(store)
    verdict = _find(result, ns.worker)
    if verdict is None and not ns.worker.isdigit():
        names = ", ".join(sorted({v.name for v in result.workers if v.up})) or "none"
        log.fatal(f"no worker named {ns.worker!r}; workers now: {names}")
        return 1
    pid = verdict.pid if verdict is not None else int(ns.worker)
    if not os.path.exists(f"/proc/{pid}"):
        log.fatal(f"pid {pid} is not running")
        return 1

    out = evidence(pid, verdict, result.now)
    blocked_fd = None
    with contextlib.suppress(Exception):
        blocked_fd = process.observe(pid).syscall_fd
    out.append("")
    out.append("sockets:")
    out.extend(sockets(pid, blocked_fd))
    if not ns.no_stack:
        out.append("")
        out.append("stack:")
        ok, lines = py_spy(pid, timeout)
        out.extend("  " + ln for ln in lines)
        if not ok and ns.signal:
            ok, lines = signal_dump(pid, wait)
            out.extend("  " + ln for ln in lines)
        elif not ok and signal_caught(pid, signal.SIGUSR1):
            out.append(
                "  the worker handles SIGUSR1: rerun with --signal to have it dump its stack"
            )
        if not ok:
            out.extend("  " + ln for ln in kernel_stack(pid))
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return 0
