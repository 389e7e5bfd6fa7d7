"""The monitor never hangs, never crashes on bad input, and says what went wrong."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fleet import CHILD, main_thread_blocked, wait_for
from tests.v4 import check_line, find, write_config

# Runs a command, then reports the peak RSS of it and its waited-for children only.
RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "sys.stderr.write('MAXRSS=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run(
    config: Path, *, user: int | None = None, timeout: float = 60, measure_rss: bool = False
) -> tuple[list[dict], str, float]:
    """A real one-shot run; returns every payload line (validated), stderr and wall time."""
    started = time.monotonic()
    command = [sys.executable, "-m", "workerwatch", "--config", str(config)]
    if measure_rss:
        command = [sys.executable, "-c", RSS_WRAPPER, *command]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        user=user,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines(keepends=True)
    return [check_line(line) for line in lines], done.stderr, elapsed


def group(tag: str, **extra) -> dict:
    return {
        "name": "g",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        "stall_after": "1s",
        **extra,
    }


def _stuck_probe_children(config: Path) -> list[int]:
    """Our probe children left in the kernel by runs with this config."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if (
                entry.isdigit()
                and str(config).encode() in Path(f"/proc/{entry}/cmdline").read_bytes()
            ):
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.slow  # a FUSE mount that never answers
def test_a_hung_file_system_cannot_hang_the_run(tmp_path, tag, fleet, hung_fs):
    """Heartbeats on a dead 'NFS' mount: the run ends at its deadline with a full payload."""
    sleepers = [fleet.start("sleeper"), fleet.start("sleeper")]
    wait_for(lambda: all(main_thread_blocked(p.pid) for p in sleepers))
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "deadline": "2s",
            "groups": [group(tag, expected=2, heartbeats=f"{hung_fs}/*.json")],
        },
    )
    (payload,), stderr, elapsed = run(config)
    assert elapsed < 6, f"the run took {elapsed:.1f} s"
    assert find(payload, "workerwatch.integration.errors", probe="deadline")[0]["value"] == 1
    assert "deadline 2 s reached while probing heartbeat files of group g" in stderr
    assert stderr.count("[ERR]") == 1
    # /proc evidence comes first: every worker is judged although the heartbeats hang.
    assert find(payload, "workerwatch.group.running")[0]["value"] == 2
    assert {m["attributes"]["process.pid"] for m in find(payload, "workerwatch.worker.up")} == {
        p.pid for p in sleepers
    }
    assert len(_stuck_probe_children(config)) == 1

    # The next runs do not try the hung step again while its prober is stuck: no pile-up.
    for _ in range(2):
        (payload,), stderr, elapsed = run(config)
        assert elapsed < 2, f"a skipped step costs nothing, took {elapsed:.1f} s"
        assert "skipped heartbeats:g: a probe from an earlier run is still hung in it" in stderr
        assert find(payload, "workerwatch.integration.errors", probe="heartbeat")[0]["value"] == 1
        reasons = [m["attributes"]["worker.reason"] for m in find(payload, "workerwatch.worker.up")]
        assert all("heartbeat files unreadable this run" in r for r in reasons), reasons
    assert len(_stuck_probe_children(config)) == 1


def test_hostile_heartbeat_directory_never_leaks_content(tmp_path, tag, fleet):
    beats = tmp_path / "hb"
    beats.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("PLANTED-SECRET-7f3a")
    os.symlink(secret, beats / "link.json")
    os.symlink("/dev/zero", beats / "zero.json")
    os.mkfifo(beats / "fifo.json")
    (beats / "dir.json").mkdir()
    (beats / "huge.json").write_bytes(b"{" * 10_000_000)
    (beats / "binary.json").write_bytes(os.urandom(4096))
    (beats / "nested.json").write_text("[" * 50_000 + "]" * 50_000)
    (beats / "torn.json").write_text('{"version": 1, "pid": 12, "worker": "PLANTED-SECRET-7f3a')
    (beats / "evil\nname\x1b[31m.json").write_text("")
    (beats / "other-user.json").write_text(
        '{"version": 1, "pid": 1, "time": 1, "seq": 1, "state": "idle"}'
    )
    os.chown(beats / "other-user.json", 65534, 65534)
    worker = fleet.start("sleeper")
    me = os.getpid()
    for name, pid in {"neg": -5, "zero": 0, "huge": 2**63, "self": me, "mine": worker.pid}.items():
        body = '{"version": 1, "pid": %d, "worker": "%s", "time": %f, "seq": 1, "state": "busy", "task": {"name": "%s", "started": 1}}'
        (beats / f"pid-{name}.json").write_text(
            body % (pid, "w\\u0000" * 3000, time.time(), "T" * 20_000)
        )
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [group(tag, heartbeats=f"{beats}/*.json")],
        },
    )
    payloads, stderr, elapsed = run(config)
    run(config)
    payloads, stderr, elapsed = run(config)
    text = (
        "".join(str(p) for p in payloads) + stderr + (tmp_path / "state" / "state.json").read_text()
    )
    assert "PLANTED-SECRET" not in text
    assert elapsed < 10
    assert "\x1b" not in text
    for line in stderr.splitlines():
        assert line.startswith(("[WARN]", "[ERR]", "[INFO]")), line
    (payload,) = payloads
    task = find(payload, "workerwatch.worker.task.runningSeconds")
    assert len(task) == 1 and len(task[0]["attributes"]["task.name"]) <= 255


def _without_root_powers() -> None:
    """Keep uid 0 but drop what lets root read other users' /proc entries (before exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 19):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


@pytest.mark.slow  # real workers over several stall windows
def test_other_users_workers_give_unknown_evidence_not_an_error_storm(tag, fleet, silent_server):
    """Workers of another user: their fd tables and syscalls are unreadable to us."""
    system_python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(system_python, os.X_OK):
        pytest.skip("needs root and a system python3 that another user can run")
    shared_dir = Path(tempfile.mkdtemp(prefix="ww-other-user-"))
    try:
        shared_dir.chmod(0o777)
        shared = shared_dir / "worker.log"
        # The checkout may sit in a directory the other user cannot enter: run a copy.
        script = shared_dir / CHILD.name
        shutil.copy(CHILD, script)
        script.chmod(0o644)
        other = {"user": 65534, "python": system_python, "script": script}
        fleet.start("logger", shared, 0.2, **other)
        hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port, **other)
        wait_for(lambda: len(silent_server.accepted) >= 1 and shared.exists())
        config = write_config(
            shared_dir / "c.yml",
            {
                "state_dir": str(shared_dir / "state"),
                "groups": [group(tag, logs=[f"{shared_dir}/*.log"])],
            },
        )
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "workerwatch", "--config", str(config)],
                capture_output=True, text=True, timeout=60, preexec_fn=_without_root_powers,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            runs.append(done)
            time.sleep(1.2)
        payload = check_line(runs[-1].stdout)
        assert "[ERR]" not in runs[-1].stderr and "[WARN]" not in runs[-1].stderr, runs[-1].stderr
        errors = {
            m["attributes"]["probe"]: m["value"]
            for m in find(payload, "workerwatch.integration.errors")
        }
        assert set(errors) == {"none"}
        reasons = {
            m["attributes"]["process.pid"]: m["attributes"]["worker.reason"]
            for m in find(payload, "workerwatch.worker.up")
        }
        assert "only the shared files' mtime" in reasons[hung.pid], reasons[hung.pid]
        stalled = {
            m["attributes"]["process.pid"]: m["value"]
            for m in find(payload, "workerwatch.worker.stalled")
        }
        assert stalled[hung.pid] == 1, "no main-thread progress: stalled even without fd access"
        assert sum(stalled.values()) == 1
        assert "fd table unreadable" in reasons[hung.pid]
        blocked = find(payload, "workerwatch.worker.blocked.seconds", **{"process.pid": hung.pid})
        assert blocked == [], "no syscall evidence without ptrace access, and no guess either"
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)


@pytest.mark.slow  # 1,000 real processes
def test_a_thousand_workers_with_ten_thousand_logs(tmp_path, tag, fleet):
    """Scale: the run stays within its deadline and memory, and the payload within limits."""
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet.start("forkfleet", 1000, 10, logs)
    wait_for(lambda: (logs / "ready").exists(), timeout=60, what="1000 forked workers")
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "deadline": "20s",
            "groups": [
                {
                    "name": "big",
                    "match": {"cmdline": f"forkfleet {tag}"},
                    "logs": [f"{logs}/*.log"],
                    "stall_after": "1s",
                }
            ],
        },
    )
    run(config)
    time.sleep(1.1)
    payloads, stderr, elapsed = run(config, measure_rss=True)
    peak_kib = int(re.search(r"MAXRSS=(\d+)", stderr).group(1))
    assert elapsed < 20, elapsed
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    assert "deadline" not in stderr
    ups = [m for p in payloads for m in find(p, "workerwatch.worker.up")]
    assert len(ups) == 1001, "every worker is reported (the fork parent matches too)"
    assert len(payloads) > 1, "split across lines of at most 1000 metrics"
    assert all(len(p["data"][0]["metrics"]) <= 1000 for p in payloads)
    running = [m for p in payloads for m in find(p, "workerwatch.group.running")]
    pools = [m for p in payloads for m in find(p, "workerwatch.group.poolProcesses")]
    # The forked copies are the fork parent's pool processes (README "Pools and work horses").
    assert [m["value"] for m in running] == [1]
    assert [m["value"] for m in pools] == [1000]
