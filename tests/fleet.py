"""Real worker processes and a silent TCP server for the tests (no mocks of /proc)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

CHILD = Path(__file__).parent / "children" / "worker_kinds.py"


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll a condition instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


class SilentServer:
    """Accepts TCP connections and never answers: the incident's FTP server."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class Fleet:
    """Starts worker-kind children with a per-test tag; kills them all on close."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        mode: str,
        *args: object,
        user: int | None = None,
        python: str | None = None,
        script: Path = CHILD,
    ) -> subprocess.Popen:
        proc = subprocess.Popen(
            [python or sys.executable, str(script), mode, self.tag, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(timeout=5)


def main_thread_blocked(pid: int) -> bool:
    """The child's main thread sleeps in a syscall (read from /proc, as an operator would)."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        syscall = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
    except OSError:
        return False
    state = stat[stat.rindex(")") + 2]
    return state == "S" and syscall[0] not in ("running", "-1")


def run_integration(config: Path, *flags: str, env: dict | None = None) -> tuple[str, str]:
    """One one-shot run of the real CLI, as the agent runs it; returns (stdout, stderr)."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", "--config", str(config), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done.stdout, done.stderr


def python_without_py_spy(tmp_path: Path) -> str:
    """This venv under another directory with no py-spy in its bin/ (diagnose and the stall
    capture look beside their interpreter first): its pyvenv.cfg and lib/, and the base
    interpreter."""
    venv = Path(sys.prefix)
    mirror = tmp_path / "venv-without-py-spy"
    if not mirror.exists():
        (mirror / "bin").mkdir(parents=True)
        shutil.copy(venv / "pyvenv.cfg", mirror / "pyvenv.cfg")
        (mirror / "lib").symlink_to(venv / "lib")
        (mirror / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    return str(mirror / "bin" / "python")


def package_readable_by_others() -> bool:
    """Another user can import the checkout's package (every folder above it searchable by
    all): a checkout under a 0700 folder (e.g. made by mktemp -d) cannot run as nobody."""
    import workerwatch

    folder = Path(workerwatch.__file__).resolve().parent
    return all(p.stat().st_mode & 0o001 for p in (folder, *folder.parents))
