"""Where a worker's main thread is stuck: its Python stack read from outside, or the kernel's.

Used by ``diagnose`` (on demand) and by the collection (once per stall, see
``capture``). Nothing here stops, signals or wakes the worker: ``py-spy dump
--nonblocking`` reads the interpreter's memory without pausing it (a pause would wake the
main thread and count as the very progress being judged); ``/proc/PID/task/PID/stack`` is
a plain read (root only).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

from workerwatch.records import record

MAX_FRAMES = 20  # innermost first; the blocking call and the code that made it
_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \(([^)]*)\)(?:: "(.*)")?')
_FRAME = re.compile(r"^\s+(\S.*?) \((.+:\d+)\)\s*$")


def find_py_spy() -> str | None:
    """py-spy beside our interpreter (a venv's bin/, where pip put it), else on PATH: the
    agent and sudo run us with a PATH that rarely holds a venv."""
    return shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")


def py_spy(pid: int, timeout: float) -> tuple[bool, list[str]]:
    """``py-spy dump --nonblocking`` of ``pid``: (True, its lines) or (False, why not)."""
    exe = find_py_spy()
    if not exe:
        return False, [
            f"py-spy is not beside {sys.executable} nor on PATH "
            "(pip install py-spy gives the Python stack)"
        ]
    try:
        done = subprocess.run(
            [exe, "dump", "--nonblocking", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False, [f"py-spy dump did not finish within {timeout:g} s"]
    except OSError as exc:
        return False, [f"py-spy could not run: {exc}"]
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return False, ["py-spy dump failed (needs root or CAP_SYS_PTRACE):", *why]
    return True, done.stdout.rstrip().splitlines()


def kernel_stack_text(pid: int) -> str | None:
    """The main thread's kernel stack (``/proc/PID/task/PID/stack``), None if unreadable."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stack", "rb") as handle:
            return handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return None


def kernel_stack(pid: int) -> list[str]:
    text = kernel_stack_text(pid)
    if text is None:
        return [f"/proc/{pid}/task/{pid}/stack not readable (root only)"]
    return ["main thread kernel stack:", *("  " + ln for ln in text.rstrip().splitlines())]


def main_thread_frames(pid: int, dump: list[str]) -> list[str]:
    """The main thread's frames from a py-spy dump, innermost first, as ``func (file:line)``.

    The main thread is the one whose id is the pid (py-spy prints native thread ids when it
    can) or, failing that, the one named ``MainThread``.
    """
    threads: list[tuple[str, str, list[str]]] = []
    for line in dump:
        head = _THREAD.match(line)
        if head:
            threads.append((head.group(1), head.group(3) or "", []))
            continue
        frame = _FRAME.match(line)
        if frame and threads:
            threads[-1][2].append(f"{frame.group(1)} ({frame.group(2)})")
    for tid, _name, frames in threads:
        if tid == str(pid):
            return frames
    for _tid, name, frames in threads:
        if name == "MainThread":
            return frames
    return threads[0][2] if threads else []


def _kernel_frames(text: str) -> list[str]:
    # "[<0>] tcp_recvmsg+0x7c/0x1a0": the symbol without addresses and offsets.
    frames = []
    for line in text.splitlines():
        symbol = line.split("] ", 1)[-1].split("+", 1)[0].strip()
        if symbol:
            frames.append(symbol)
    return frames


@record
class Evidence:
    """What one capture found; ``stack`` innermost frame first."""

    source: str  # "py-spy", "kernel" or "none"
    stack: list[str]
    skipped: str | None = None  # why there is no Python stack
    sockets: list[str] | None = None  # the socket table, when the Python stack is missing
    seconds: float = 0.0  # what the capture cost


def capture(pid: int, budget: float) -> Evidence:
    """The main thread's Python stack, else its kernel stack and sockets, within ``budget`` s.

    py-spy gets the budget as its time limit and is killed past it; the fallback reads
    ``/proc`` only, plus psutil's socket table.
    """
    started = time.monotonic()
    ok, lines = py_spy(pid, max(0.1, budget))
    if ok:
        frames = main_thread_frames(pid, lines)[:MAX_FRAMES]
        if frames:
            return Evidence("py-spy", frames, seconds=time.monotonic() - started)
        skipped = "py-spy found no Python frames in the main thread"
    else:
        skipped = " ".join(part.strip() for part in lines)
    text = kernel_stack_text(pid)
    kernel = _kernel_frames(text)[:MAX_FRAMES] if text else []
    if not kernel:
        skipped += f"; /proc/{pid}/task/{pid}/stack not readable (root only)"
    return Evidence(
        "kernel" if kernel else "none",
        kernel,
        skipped=skipped,
        sockets=socket_table(pid),
        seconds=time.monotonic() - started,
    )


def socket_table(pid: int) -> list[str]:
    """``fd N tcp local -> remote STATUS`` for the worker's inet sockets (psutil)."""
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
    rows = []
    for c in sorted(conns, key=lambda c: c.fd):
        kind = "tcp" if int(c.type) == 1 else "udp"
        local = _addr(c.laddr)
        remote = _addr(c.raddr)
        rows.append(f"fd {c.fd} {kind} {local} -> {remote} {c.status}".rstrip())
    return rows


def _addr(addr: object) -> str:
    if not addr:
        return "-"
    ip, port = addr  # type: ignore[misc]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
