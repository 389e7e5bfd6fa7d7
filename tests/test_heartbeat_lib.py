"""The worker-side heartbeat library, observed the way the integration sees it.

Workers are real child processes (tests/heartbeat_children/worker.py) and every assertion
is made on the files and datagrams they produce. Waits poll a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import workerwatch_heartbeat as hb_module
from workerwatch.heartbeat import Heartbeat
from workerwatch.host.syscalls import name_of

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "heartbeat_children" / "worker.py"
LOGGER = "workerwatch.heartbeat"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.pop("WATCHDOG_PID", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "integration"), env.get("PYTHONPATH")) if p
    )
    env.update(extra)
    return env


class Children:
    """Starts worker children and kills exactly those at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            env=env if env is not None else child_env(),
            text=True,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.stop()


def check_format(doc: Any) -> dict[str, Any]:
    """Version 1 as docs/heartbeat-format.md defines it."""
    assert isinstance(doc, dict)
    assert set(doc) <= {"version", "worker", "pid", "time", "seq", "state", "task"}
    assert doc["version"] == 1
    assert isinstance(doc["pid"], int) and doc["pid"] > 0
    assert isinstance(doc["time"], int | float) and math.isfinite(doc["time"])
    assert abs(doc["time"] - time.time()) < 60
    assert isinstance(doc["seq"], int) and doc["seq"] >= 1
    assert doc["state"] in ("idle", "busy")
    if "worker" in doc:
        assert isinstance(doc["worker"], str) and 0 < len(doc["worker"]) <= 255
    if doc["state"] == "busy":
        task = doc["task"]
        assert set(task) <= {"name", "id", "started"}
        assert isinstance(task["name"], str) and task["name"]
        assert isinstance(task.get("id", ""), str)
        assert isinstance(task["started"], int | float)
        assert task["started"] <= doc["time"] + 0.001
    else:
        assert "task" not in doc
    return doc


def read_hb(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    assert raw.endswith(b"\n") and len(raw) < 65536
    return check_format(json.loads(raw))


# --- the three workers of the incident ----------------------------------------------------


@pytest.fixture(scope="module")
def hb_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An idle worker, one stuck in recv() inside a task, and one finishing tasks."""
    tmp = tmp_path_factory.mktemp("fleet")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    port = server.getsockname()[1]
    kids = Children()
    paths = {name: tmp / f"{name}.json" for name in ("idle", "stuck", "tasks")}
    try:
        procs = {
            "idle": kids.start("idle", str(paths["idle"])),
            "stuck": kids.start(
                "stuck", str(paths["stuck"]), "--port", str(port), "--dump", str(tmp / "dump")
            ),
            "tasks": kids.start("tasks", str(paths["tasks"])),
        }
        # Accepts and never answers: the peer that left the incident's worker in recv().
        conn, _ = server.accept()
        try:
            yield {"paths": paths, "procs": procs, "dump": tmp / "dump"}
        finally:
            conn.close()
    finally:
        kids.stop()
        server.close()


def test_idle_worker_beats_idle_with_growing_seq(hb_fleet: dict[str, Any]) -> None:
    path, proc = hb_fleet["paths"]["idle"], hb_fleet["procs"]["idle"]
    first = wait_for(lambda: read_hb(path), what="idle heartbeat")
    assert first["state"] == "idle" and first["worker"] == "idle@0"
    assert first["pid"] == proc.pid
    later = wait_for(lambda: (d := read_hb(path)) and d["seq"] >= first["seq"] + 3 and d)
    assert later["state"] == "idle" and later["pid"] == proc.pid
    assert later["time"] > first["time"]


def test_stuck_worker_is_busy_with_frozen_seq(hb_fleet: dict[str, Any]) -> None:
    path, proc = hb_fleet["paths"]["stuck"], hb_fleet["procs"]["stuck"]
    idle_path = hb_fleet["paths"]["idle"]

    def idle_beats(n: int) -> None:
        start = wait_for(lambda: read_hb(idle_path), what="idle heartbeat")["seq"]
        wait_for(lambda: read_hb(idle_path)["seq"] >= start + n, what="idle worker beats")

    wait_for(lambda: (d := read_hb(path)) and d["state"] == "busy", what="busy heartbeat")
    idle_beats(3)  # lets the beat right after connect() land before recv() blocks
    stuck = read_hb(path)
    assert stuck["pid"] == proc.pid and stuck["worker"] == "stuck@0"
    assert stuck["task"]["name"] == "FTPArticle" and stuck["task"]["id"] == "a1b2c3"
    assert stuck["task"]["started"] <= stuck["time"]
    # While a live worker writes several more beats, the stuck one writes none.
    idle_beats(4)
    assert read_hb(path) == stuck
    assert proc.poll() is None


RECV_CALLS = ("recvfrom", "recvmsg", "read")


def _in_syscall(pid: int) -> str | None:
    """The syscall the process's main thread sits in, by name (as the integration reads it)."""
    try:
        nr = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return None
    return name_of(int(nr)) if nr.lstrip("-").isdigit() else nr


def test_stuck_worker_stack_dump_names_the_blocking_call(hb_fleet: dict[str, Any]) -> None:
    path, proc, dump = hb_fleet["paths"]["stuck"], hb_fleet["procs"]["stuck"], hb_fleet["dump"]
    wait_for(lambda: (d := read_hb(path)) and d["state"] == "busy", what="busy heartbeat")
    # The beat says busy before the worker connects: signal it once it sits in the read itself.
    wait_for(lambda: _in_syscall(proc.pid) in RECV_CALLS, what="the stuck worker in its read")
    before = read_hb(path)
    os.kill(proc.pid, signal.SIGUSR1)
    # faulthandler writes the dump frame by frame: wait for the outer frame, not just the first.
    text = wait_for(lambda: dump.exists() and "in stuck" in (t := dump.read_text()) and t)
    assert "in stuck" in text and "in fetch_report" in text and "most recent call first" in text
    # The dump does not wake the worker: it is still blocked, still the same beat.
    assert proc.poll() is None
    assert read_hb(path) == before


def test_finishing_worker_alternates_busy_and_idle(hb_fleet: dict[str, Any]) -> None:
    path, proc = hb_fleet["paths"]["tasks"], hb_fleet["procs"]["tasks"]
    seen: dict[str, set[str]] = {"state": set(), "task": set()}
    first = wait_for(lambda: read_hb(path), what="tasks heartbeat")

    def saw_everything() -> bool:
        doc = read_hb(path)
        assert doc is not None and doc["pid"] == proc.pid
        seen["state"].add(doc["state"])
        if doc["state"] == "busy":
            seen["task"].add(doc["task"]["name"])
        return seen["state"] == {"idle", "busy"} and seen["task"] == {"FTPArticle", "ReportTask"}

    wait_for(saw_everything, what=f"both states and both tasks, saw {seen}")
    assert read_hb(path)["seq"] > first["seq"]


@pytest.mark.slow  # real workers over several stall windows
def test_integration_reports_only_the_stuck_worker(tmp_path: Path, children: Children) -> None:
    """The same three workers, judged by the real integration CLI from their heartbeats."""
    from tests.fleet import main_thread_blocked, run_integration
    from tests.v4 import check_line, find, write_config

    stall_after = 1.0
    tag = f"hbtest-{uuid.uuid4().hex[:10]}"
    hb_dir = tmp_path / "hb"
    hb_dir.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        idle = children.start("idle", str(hb_dir / "idle.json"), "--tag", tag)
        stuck = children.start(
            "stuck", str(hb_dir / "stuck.json"), "--port", str(port), "--tag", tag
        )
        tasks = children.start("tasks", str(hb_dir / "tasks.json"), "--tag", tag)
        conn, _ = server.accept()
        with conn:
            wait_for(lambda: main_thread_blocked(stuck.pid), what="stuck worker in recv()")
            wait_for(lambda: all((hb_dir / f"{n}.json").exists() for n in ("idle", "tasks")))
            group = {
                "name": "hb",
                "match": {"cmdline": f"--tag {tag}"},
                "stall_after": f"{stall_after}s",
                "heartbeats": str(hb_dir / "*.json"),
            }
            config = write_config(
                tmp_path / "config.yml",
                {"state_dir": str(tmp_path / "state"), "groups": [group]},
            )
            first = check_line(run_integration(config)[0])
            first_run = time.monotonic()
            wait_for(lambda: time.monotonic() - first_run > stall_after + 0.3, what="the window")
            second = check_line(run_integration(config)[0])

    stalled = {
        m["attributes"]["process.pid"]: m["value"]
        for m in find(second, "workerwatch.worker.stalled", **{"worker.group": "hb"})
    }
    assert set(stalled) == {idle.pid, stuck.pid, tasks.pid}
    assert [pid for pid, value in stalled.items() if value == 1] == [stuck.pid]
    reason = find(second, "workerwatch.worker.stalled", **{"process.pid": stuck.pid})[0][
        "attributes"
    ]["worker.reason"]
    assert "busy on FTPArticle" in reason, reason

    def running(payload: dict[str, Any]) -> float:
        (metric,) = find(
            payload, "workerwatch.worker.task.runningSeconds", **{"process.pid": stuck.pid}
        )
        assert metric["attributes"]["task.name"] == "FTPArticle"
        return metric["value"]

    assert running(second) >= running(first) + stall_after


# --- writes -------------------------------------------------------------------------------


def test_reader_never_sees_a_torn_or_empty_file(tmp_path: Path, children: Children) -> None:
    path = tmp_path / "fast.json"
    proc = children.start("fast", str(path))
    wait_for(lambda: path.exists(), what="first write")
    seqs, reads, deadline = set(), 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        doc = read_hb(path)  # fails on an empty, torn or half-written file
        assert doc is not None and doc["pid"] == proc.pid
        seqs.add(doc["seq"])
        reads += 1
        # The temp files are hidden and not *.json: a heartbeat glob never sees them.
        assert [p.name for p in tmp_path.glob("*.json")] == ["fast.json"]
    assert reads > 100 and len(seqs) > 20
    assert proc.poll() is None


def test_many_beats_within_min_interval_write_once(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path, worker="w@1", min_interval=60)
    assert [hb.beat() for _ in range(1000)].count(True) == 1
    doc = read_hb(path)
    assert doc["seq"] == 1 and doc["state"] == "idle" and doc["pid"] == os.getpid()
    assert hb.seq == 1


def test_state_and_task_changes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path, min_interval=60)
    hb.beat()
    with hb.task("Outer", task_id=7) as outer:
        doc = read_hb(path)
        assert doc["seq"] == 2 and doc["state"] == "busy" and "worker" not in doc
        assert doc["task"] == {"name": "Outer", "id": "7", "started": round(outer.started, 3)}
        assert hb.beat() is False  # throttled: same state, same task
        with hb.task("Inner"):
            doc = read_hb(path)
            assert doc["seq"] == 3 and doc["task"]["name"] == "Inner" and "id" not in doc["task"]
        doc = read_hb(path)
        # Back to the enclosing task, with its own start time.
        assert doc["seq"] == 4 and doc["task"]["name"] == "Outer"
        assert doc["task"]["started"] == round(outer.started, 3)
    doc = read_hb(path)
    assert doc["seq"] == 5 and doc["state"] == "idle"
    assert hb.beat() is False and read_hb(path)["seq"] == 5


def test_beat_writes_again_after_min_interval(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path, min_interval=0.05)
    assert hb.beat() is True
    assert hb.beat() is False
    wait_for(hb.beat, timeout=2, what="a write after min_interval")
    assert read_hb(path)["seq"] == 2


def test_task_ends_idle_when_the_task_raises(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path)
    with pytest.raises(ZeroDivisionError), hb.task("Broken"):
        assert read_hb(path)["state"] == "busy"
        1 / 0  # noqa: B018
    assert read_hb(path)["state"] == "idle" and hb.state == "idle"


def test_track_decorator(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path)
    seen: list[dict[str, Any]] = []

    @hb.track("ReportTask", task_id=lambda article, **_: f"article-{article}")
    def report(article: int, *, retries: int = 0) -> int:
        seen.append(read_hb(path))
        return article + retries

    @hb.track
    def bare() -> None:
        seen.append(read_hb(path))

    @hb.track("NoId", task_id=lambda: 1 / 0)
    def bad_id() -> None:
        seen.append(read_hb(path))

    assert report(5, retries=1) == 6
    bare()
    bad_id()
    assert report.__name__ == "report"
    assert seen[0]["task"]["name"] == "ReportTask" and seen[0]["task"]["id"] == "article-5"
    assert seen[1]["task"]["name"].endswith("test_track_decorator.<locals>.bare")
    assert seen[2]["task"]["name"] == "NoId" and "id" not in seen[2]["task"]
    assert read_hb(path)["state"] == "idle"


def test_long_strings_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path, worker="w" * 1000)
    with hb.task("T" * 1000, task_id="i" * 100_000):
        doc = read_hb(path)
    assert len(doc["worker"]) == len(doc["task"]["name"]) == len(doc["task"]["id"]) == 255


def test_close_removes_own_file(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    with Heartbeat(path) as hb:
        hb.beat()
        assert path.exists()
    assert not path.exists()
    assert hb.beat() is False and not path.exists()


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKERWATCH_HEARTBEAT_DIR", str(tmp_path))
    monkeypatch.setenv("WORKERWATCH_WORKER_NAME", "worker@0")
    hb = Heartbeat.from_env(min_interval=5)
    assert hb.path == str(tmp_path / "worker@0.json")
    hb.beat()
    assert read_hb(tmp_path / "worker@0.json")["worker"] == "worker@0"

    assert Heartbeat.from_env("decider/1").path == str(tmp_path / "decider_1.json")

    monkeypatch.delenv("WORKERWATCH_WORKER_NAME")
    hb = Heartbeat.from_env()
    assert hb.worker == f"worker-{os.getpid()}"
    assert hb.path == str(tmp_path / f"worker-{os.getpid()}.json")


def test_from_env_without_directory_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WORKERWATCH_HEARTBEAT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger=LOGGER)
    hb = Heartbeat.from_env("w@0")
    assert hb.path is None
    assert hb.beat() is False
    with hb.task("T"):
        pass
    assert list(tmp_path.iterdir()) == []
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# --- errors never reach the worker --------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("blocker", ["missing", "file"])
def test_unusable_directory_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, blocker: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    directory = tmp_path / "hb"
    if blocker == "file":
        directory.write_text("not a directory")
    hb = Heartbeat(directory / "w.json", min_interval=60)
    for _ in range(5):
        assert hb.beat() is False
    with hb.task("FTPArticle"):
        assert hb.beat() is False
    assert len(_warnings(caplog)) == 1
    assert "cannot write" in _warnings(caplog)[0].getMessage()
    if blocker == "file":
        directory.unlink()
    directory.mkdir()
    assert hb.beat() is True  # retried at once, not after min_interval
    assert read_hb(directory / "w.json")["seq"] == 1
    assert len(_warnings(caplog)) == 1
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_path_that_is_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "w.json"
    target.mkdir()
    hb = Heartbeat(target)
    for _ in range(3):
        assert hb.beat() is False
    assert len(_warnings(caplog)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]  # no temp file left behind
    target.rmdir()
    assert hb.beat() is True


def _drop_dac_override() -> None:
    # Root ignores directory modes; without CAP_DAC_OVERRIDE in the bounding set the
    # exec'd child is a root that a 0555 directory stops, like any worker user.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override = 24, 1
    if libc.prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unwritable_directory_in_a_worker(children: Children) -> None:
    base = Path(tempfile.mkdtemp(prefix="hb-ro-"))
    try:
        directory = base / "hb"
        directory.mkdir(mode=0o555)
        directory.chmod(0o555)
        stderr_path = base / "stderr"
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            kw["preexec_fn"] = _drop_dac_override
        with open(stderr_path, "w") as err:
            try:
                proc = children.start(
                    "unwritable", str(directory / "w.json"), stderr=err, stdout=None, **kw
                )
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"cannot start an unprivileged child here: {exc}")
        wait_for(lambda: "cannot write" in stderr_path.read_text(), what="the warning")
        directory.chmod(0o755)
        assert proc.wait(timeout=10) == 0
        lines = stderr_path.read_text().splitlines()
        assert len([line for line in lines if "cannot write" in line]) == 1, lines
        assert any(line.startswith("INFO") and "again" in line for line in lines), lines
        doc = read_hb(directory / "w.json")
        assert doc["pid"] == proc.pid
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- fork ---------------------------------------------------------------------------------


def test_forked_child_writes_its_own_pid(tmp_path: Path, children: Children) -> None:
    shared = tmp_path / "shared.json"
    template = tmp_path / "w-{pid}.json"
    proc = children.start("fork", str(shared), "--template", str(template))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    child_line, parent_line = (json.loads(line) for line in out.splitlines())
    child, parent = child_line["child"], parent_line["parent"]
    assert parent == proc.pid and parent_line["status"] == 0
    # The child's first beat writes at once, under its own pid, despite min_interval=60.
    assert child_line["wrote"] == [True, True]
    doc = read_hb(shared)
    assert doc["pid"] == child and doc["seq"] == 1 and doc["worker"] == "forker"
    assert read_hb(tmp_path / f"w-{parent}.json")["pid"] == parent
    assert read_hb(tmp_path / f"w-{child}.json")["pid"] == child
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["shared.json", f"w-{parent}.json", f"w-{child}.json"]
    )


def test_fork_behind_pythons_back_still_writes_the_right_pid(
    tmp_path: Path, children: Children
) -> None:
    shared = tmp_path / "shared.json"
    proc = children.start("fork", str(shared), "--template", str(tmp_path / "w-{pid}"), "--raw")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    raw_line = json.loads(out.splitlines()[-1])
    assert raw_line["status"] == 0
    doc = read_hb(shared)
    assert doc["pid"] == raw_line["raw"] != proc.pid
    assert doc["seq"] == 2 and doc["state"] == "idle"


def test_in_process_fork_resets_seq_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    hb = Heartbeat(path, min_interval=60)
    for _ in range(3):
        with hb.task("T"):
            pass
    assert hb.seq == 6
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = False
        try:
            ok = hb.beat() and hb.seq == 1 and json.loads(path.read_text())["pid"] == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert read_hb(path)["pid"] == pid
    assert hb.seq == 6 and hb.beat() is False


# --- systemd watchdog ---------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmp = None
    if request.param == "path":
        # sun_path holds 108 bytes: pytest's tmp_path can be longer than that.
        tmp = tempfile.mkdtemp(prefix="hb-")
        address = os.path.join(tmp, "notify")
        sock.bind(address)
    else:
        name = f"workerwatch-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    try:
        yield sock, address
    finally:
        sock.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _datagrams(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(4096).decode())
    return out


def test_watchdog_pings_from_the_loop(
    notify_socket: tuple[socket.socket, str], tmp_path: Path, children: Children
) -> None:
    sock, address = notify_socket
    env = child_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
    proc = children.start("notify", str(tmp_path / "w.json"), "--ready", env=env)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    beats = json.loads(out)["beats"]
    messages = _datagrams(sock)
    assert messages[0] == "READY=1\nSTATUS=idle"
    assert "STATUS=busy on FTPArticle n1" in messages
    assert messages[-1] == "STATUS=idle"
    pings = messages.count("WATCHDOG=1")
    # 0.3 s of beats at a quarter of 200 ms: a handful of pings out of ~100 beats.
    assert 2 <= pings <= 12, messages
    assert beats > 5 * pings
    assert set(messages) == {
        "READY=1\nSTATUS=idle",
        "WATCHDOG=1",
        "STATUS=busy on FTPArticle n1",
        "STATUS=idle",
    }


def test_no_ping_when_watchdog_pid_names_another_process(
    notify_socket: tuple[socket.socket, str], children: Children
) -> None:
    sock, address = notify_socket
    env = child_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    proc = children.start("notify", "--ready", env=env)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert _datagrams(sock) == []


def test_ping_when_watchdog_pid_is_the_worker(
    notify_socket: tuple[socket.socket, str], children: Children
) -> None:
    sock, address = notify_socket
    env = child_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
    # exec keeps the shell's pid, so $$ is the worker's own pid.
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', sys.executable, str(CHILD), "notify"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.procs.append(proc)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out)["pid"] == proc.pid
    assert _datagrams(sock).count("WATCHDOG=1") >= 2


def test_unreachable_notify_socket_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    monkeypatch.setenv("WATCHDOG_USEC", "1")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    hb = Heartbeat(tmp_path / "w.json", min_interval=0)
    for _ in range(5):
        assert hb.beat() is True
    assert hb.ready() is False
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "notify systemd" in warnings[0].getMessage()


# --- New Relic agent hook -----------------------------------------------------------------


def test_agent_hook_is_a_silent_noop_without_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "newrelic" not in sys.modules
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    hb = Heartbeat(tmp_path / "w.json", min_interval=0, slow_task_seconds=0)
    with hb.task("FTPArticle"):
        hb.beat()
    assert caplog.records == []
    assert not [m for m in sys.modules if m == "newrelic" or m.startswith("newrelic.")]


class _FakeApplication:
    def __init__(self, active: bool) -> None:
        self.active = active


def _fake_agent(active: bool) -> tuple[ModuleType, list[tuple[Any, ...]]]:
    """A stand-in for newrelic.agent, which is not installed in the test environment."""
    calls: list[tuple[Any, ...]] = []
    agent = ModuleType("newrelic.agent")
    app = _FakeApplication(active)

    def application(name: str | None = None, activate: bool = True) -> _FakeApplication:
        assert activate is False, "the hook must not create or activate an application"
        return app

    def initialize(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the hook must never initialize the agent")

    agent.application = application  # type: ignore[attr-defined]
    agent.initialize = initialize  # type: ignore[attr-defined]
    agent.record_custom_metric = lambda *a, **k: calls.append(("metric", a, k))  # type: ignore[attr-defined]
    agent.record_custom_event = lambda *a, **k: calls.append(("event", a, k))  # type: ignore[attr-defined]
    return agent, calls


def test_agent_hook_does_nothing_while_the_application_is_inactive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, calls = _fake_agent(active=False)
    monkeypatch.setitem(sys.modules, "newrelic.agent", agent)
    hb = Heartbeat(tmp_path / "w.json", min_interval=0, slow_task_seconds=0)
    with hb.task("FTPArticle"):
        hb.beat()
    assert calls == []


def test_agent_hook_records_beats_durations_and_slow_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, calls = _fake_agent(active=True)
    monkeypatch.setitem(sys.modules, "newrelic.agent", agent)
    hb = Heartbeat(tmp_path / "w.json", worker="w@0", min_interval=0, slow_task_seconds=0.05)
    hb.beat()
    with hb.task("Quick", task_id="q"):
        pass
    with hb.task("FTPArticle", task_id="a1"):
        t0 = time.monotonic()
        wait_for(lambda: time.monotonic() - t0 > 0.06)
        hb.beat()  # a long task's progress beat reports it while it still runs
        hb.beat()
    app = agent.application(activate=False)
    assert all(kw == {"application": app} for _, _, kw in calls)
    metrics = [a for kind, a, _ in calls if kind == "metric"]
    assert {name for name, _ in metrics} == {
        "Custom/WorkerWatch/Beat",
        "Custom/WorkerWatch/Task/Quick",
        "Custom/WorkerWatch/Task/FTPArticle",
    }
    assert dict(metrics)["Custom/WorkerWatch/Task/FTPArticle"] > 0.06
    events = [a for kind, a, _ in calls if kind == "event"]
    assert len(events) == 1
    event_type, attrs = events[0]
    assert event_type == "WorkerWatchSlowTask"
    assert attrs["taskName"] == "FTPArticle" and attrs["taskId"] == "a1"
    assert attrs["finished"] is False and attrs["worker"] == "w@0"
    assert attrs["runningSeconds"] >= 0.05 and attrs["thresholdSeconds"] == 0.05


def test_agent_errors_never_reach_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent, _ = _fake_agent(active=True)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("agent exploded")

    agent.record_custom_metric = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "newrelic.agent", agent)
    hb = Heartbeat(tmp_path / "w.json", min_interval=0)
    for _ in range(3):
        with hb.task("T"):
            assert hb.beat() is True
    assert len(_warnings(caplog)) == 1


# --- import hygiene and diagnosis aid -----------------------------------------------------


def test_import_pulls_in_only_the_standard_library() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import workerwatch.heartbeat\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    ).stdout
    new = json.loads(out)
    ours = sorted(m for m in new if m.split(".")[0] in ("workerwatch", "workerwatch_heartbeat"))
    # The integration's name for it re-exports the library; nothing else of ours comes along.
    assert ours == ["workerwatch", "workerwatch.heartbeat", "workerwatch_heartbeat"]
    foreign = [m for m in new if m.split(".")[0] not in sys.stdlib_module_names and m not in ours]
    assert foreign == []
    for heavy in ("pydantic", "psutil", "yaml", "requests", "socket", "typing", "newrelic"):
        assert heavy not in new


def test_enable_stack_dump_rejects_a_bad_signal(caplog: pytest.LogCaptureFixture) -> None:
    assert hb_module.enable_stack_dump(signal.SIGKILL) is False
    assert len(_warnings(caplog)) == 1
