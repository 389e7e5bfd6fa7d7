"""``nri-workerwatch diagnose`` on real processes: evidence, sockets, stacks, and no stray signals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fleet import main_thread_blocked, python_without_py_spy, wait_for
from tests.v4 import write_config

# A worker that registered a SIGUSR1 stack dump the way the heartbeat library's
# enable_stack_dump() does (faulthandler.register to stderr), then hangs in recv().
DUMPING_WORKER = textwrap.dedent(
    """
    import faulthandler, signal, socket, sys
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)
    def fetch_article(conn):
        return conn.recv(1024)
    conn = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    fetch_article(conn)
    """
)


def _config(tmp_path: Path, tag: str) -> Path:
    return write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [
                {"name": "fleet", "match": {"cmdline": f"(worker_kinds\\.py \\w+|-c .*) {tag}"}}
            ],
        },
    )


def _diagnose(
    config: Path, *args: str, path: str | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [python, "-m", "workerwatch", "diagnose", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _no_py_spy_path(tmp_path: Path) -> str:
    """PATH without py-spy, with ss kept."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("ss",):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.fixture
def dumping_worker(tmp_path, tag, silent_server):
    stderr = open(tmp_path / "worker.stderr", "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-c", DUMPING_WORKER, tag, str(silent_server.port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    wait_for(lambda: main_thread_blocked(proc.pid), what="worker blocked in recv")
    yield proc
    proc.kill()
    proc.wait()
    stderr.close()


def test_evidence_and_sockets_of_a_hung_worker_without_any_signal(
    tmp_path, tag, fleet, silent_server
):
    shared = tmp_path / "worker.log"
    hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked in recv")
    done = _diagnose(
        _config(tmp_path, tag), str(hung.pid),
        path=_no_py_spy_path(tmp_path), python=python_without_py_spy(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"worker fleet:{hung.pid} (group fleet), pid {hung.pid}" in out
    assert "in recvfrom(fd" in out
    assert f"writes     fd 3 {shared}" in out or f"{shared} (offset" in out
    sockets = out.split("\nsockets:\n")[1].split("\nstack:\n")[0]
    assert f"-> 127.0.0.1:{silent_server.port} ESTABLISHED" in sockets
    assert "<- main thread blocked here" in sockets
    stack = out.split("\nstack:\n")[1]
    assert "py-spy is not beside" in stack and "nor on PATH" in stack
    if os.geteuid() == 0:
        assert "main thread kernel stack:" in stack and "recv" in stack
    # The worker has no SIGUSR1 handler: nothing was sent, and --signal refuses too.
    assert hung.poll() is None
    refused = _diagnose(
        _config(tmp_path, tag), str(hung.pid), "--signal",
        path=_no_py_spy_path(tmp_path), python=python_without_py_spy(tmp_path),
    )  # fmt: skip
    assert refused.returncode == 0, refused.stderr
    assert "SIGUSR1 not sent" in refused.stdout and "would kill the worker" in refused.stdout
    assert hung.poll() is None, "diagnose never kills a worker"


def test_signal_dump_only_when_asked(tmp_path, tag, dumping_worker):
    config = _config(tmp_path, tag)
    path = _no_py_spy_path(tmp_path)
    python = python_without_py_spy(tmp_path)
    stderr_file = tmp_path / "worker.stderr"

    quiet = _diagnose(config, str(dumping_worker.pid), path=path, python=python)
    assert quiet.returncode == 0, quiet.stderr
    assert "rerun with --signal" in quiet.stdout
    assert stderr_file.read_text() == "", "no signal without --signal"

    done = _diagnose(config, str(dumping_worker.pid), "--signal", path=path, python=python)
    assert done.returncode == 0, done.stderr
    assert f"sent SIGUSR1 to pid {dumping_worker.pid}" in done.stdout
    assert str(stderr_file) in done.stdout
    assert "fetch_article" in done.stdout, "the dump is read back from the worker's stderr"
    assert "fetch_article" in stderr_file.read_text()
    assert dumping_worker.poll() is None, "the worker goes on (blocked in recv again)"


def test_unknown_worker_name_lists_the_workers(tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    done = _diagnose(_config(tmp_path, tag), "no-such-worker", "--no-stack")
    assert done.returncode == 1
    assert "[FATAL] no worker named 'no-such-worker'" in done.stderr
    assert f"fleet:{sleeper.pid}" in done.stderr


def test_by_name_and_outside_any_group(tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    config = _config(tmp_path, tag)
    by_name = _diagnose(config, f"fleet:{sleeper.pid}", "--no-stack")
    assert by_name.returncode == 0, by_name.stderr
    assert f"pid {sleeper.pid}" in by_name.stdout and "stack:" not in by_name.stdout

    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        done = _diagnose(config, str(outsider.pid), "--no-stack")
    finally:
        outsider.kill()
        outsider.wait()
    assert done.returncode == 0, done.stderr
    assert "not a member of any configured group" in done.stdout


@pytest.mark.skipif(
    not shutil.which("py-spy", path=os.path.dirname(sys.executable)),
    reason="py-spy not installed in this venv (it comes with the test extras)",
)
def test_py_spy_beside_the_interpreter_is_used_without_it_on_path(tmp_path, tag, dumping_worker):
    # The venv's bin/ is not on this PATH, as under the agent or sudo.
    path = _no_py_spy_path(tmp_path)
    assert not shutil.which("py-spy", path=path)
    done = _diagnose(_config(tmp_path, tag), str(dumping_worker.pid), path=path)
    assert done.returncode == 0, done.stderr
    stack = done.stdout.split("\nstack:\n")[1]
    assert "fetch_article (<string>:5)" in stack, (
        "py-spy's frame line (the cmdline has the name too)"
    )
