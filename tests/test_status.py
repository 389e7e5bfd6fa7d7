"""``nri-workerwatch status`` on a real spawned fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workerwatch.commands.status import render, use_colour

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.v4 import write_config

STALL_AFTER = 1.5
SAMPLE = Path(__file__).parent.parent / "definitions" / "agent" / "workerwatch-config.yml.sample"


def _group(tmp_path: Path, tag: str) -> dict:
    return {
        "name": "fleet",
        "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
        "expected": 4,
        "logs": [str(tmp_path / "*.log")],
        "stall_after": f"{STALL_AFTER}s",
    }


def _config(tmp_path: Path, tag: str) -> Path:
    return write_config(
        tmp_path / "config.yml",
        {"state_dir": str(tmp_path / "state"), "groups": [_group(tmp_path, tag)]},
    )


def _status(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "WORKERWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "workerwatch", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def _workers(doc: dict) -> dict[int, dict]:
    return {w["pid"]: w for g in doc["groups"] for w in g["workers"]}


def _start(fleet, silent_server, shared: Path):
    logger = fleet.start("logger", shared, 0.2)
    hung = fleet.start("hung", shared, "127.0.0.1", silent_server.port)
    busy = fleet.start("busy")
    wait_for(lambda: main_thread_blocked(hung.pid), what="hung worker blocked in recv")
    return logger, hung, busy


@pytest.mark.slow  # real workers over several stall windows
def test_status_json_watch_shows_the_hung_worker_stalled_on_its_own_history(
    tmp_path, tag, fleet, silent_server
):
    logger, hung, busy = _start(fleet, silent_server, tmp_path / "worker.log")
    config = _config(tmp_path, tag)
    done = _status("--config", str(config), "--json", "--watch", f"{STALL_AFTER + 0.4}s",
                   "--count", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["state_file"]["read"] is False, "no agent run yet"
    assert _workers(first)[hung.pid]["state"] == "unknown", "first sample never says stalled"

    workers = _workers(second)
    assert workers[hung.pid]["state"] == "stalled", workers[hung.pid]
    assert workers[hung.pid]["blocked_syscall"] == "recvfrom"
    assert workers[hung.pid]["blocked_peer"] == f"127.0.0.1:{silent_server.port}"
    assert workers[hung.pid]["silent_seconds"] >= STALL_AFTER
    assert workers[hung.pid]["uptime_seconds"] > 0
    assert workers[logger.pid]["state"] == "working"
    assert workers[busy.pid]["state"] == "working"
    (group,) = second["groups"]
    assert group["running"] == 3 and group["expected"] == 4 and group["missing"] == 1
    assert group["stalled"] == 1
    # Status never wrote the state: the agent's history is untouched.
    assert not (tmp_path / "state" / "state.json").exists()


@pytest.mark.slow  # real workers over several stall windows
def test_status_reads_the_agent_state_without_changing_it(tmp_path, tag, fleet, silent_server):
    _, hung, _ = _start(fleet, silent_server, tmp_path / "worker.log")
    config = _config(tmp_path, tag)
    run_integration(config)  # the agent's run leaves its history in the state file
    state = tmp_path / "state" / "state.json"
    before = (state.read_bytes(), state.stat().st_mtime_ns)
    time.sleep(STALL_AFTER + 0.3)

    done = _status("--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["state_file"]["read"] is True
    assert _workers(doc)[hung.pid]["state"] == "stalled", "one status run after one agent run"
    assert (state.read_bytes(), state.stat().st_mtime_ns) == before

    table = _status("--config", str(config))
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "\x1b[" not in text, "no colour when stdout is not a terminal"
    assert "group fleet: 3 running of 4 expected; 1 stalled" in text
    header = next(ln for ln in text.splitlines() if ln.strip().startswith("WORKER"))
    for column in ("STATE", "PID", "UPTIME", "LOG SILENT", "HEARTBEAT", "TASK", "BLOCKED", "CPU"):
        assert column in header
    row = next(ln for ln in text.splitlines() if f" {hung.pid} " in ln and "stalled" in ln)
    assert f"recvfrom 127.0.0.1:{silent_server.port}" in row
    assert "blocked in recvfrom" in text, "the reason is shown under the row"


def test_status_finds_the_inline_config_in_the_agent_config(tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    agent = yaml.safe_load(SAMPLE.read_text())
    entry = agent["integrations"][0]
    entry["config"]["state_dir"] = str(tmp_path / "state")
    entry["config"]["groups"] = [_group(tmp_path, tag)]
    agent_dir = tmp_path / "integrations.d"
    agent_dir.mkdir()
    (agent_dir / "other.yml").write_text(yaml.safe_dump({"integrations": [{"name": "nri-docker"}]}))
    (agent_dir / "workerwatch-config.yml").write_text(yaml.safe_dump(agent))

    done = _status("--agent-config", str(agent_dir), "--json")
    assert done.returncode == 0, done.stderr
    assert sleeper.pid in _workers(json.loads(done.stdout))

    nothing = _status("--agent-config", str(tmp_path / "empty"))
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("[FATAL] no configuration")


def test_colour_only_on_a_terminal(monkeypatch):
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Tty()) is True
    assert use_colour(sys.stdout if not sys.stdout.isatty() else None) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Tty()) is False
    doc = {
        "host": "h", "time": 0.0, "duration_seconds": 0.01,
        "state_file": {"path": "/x", "read": True},
        "groups": [{"group": "g", "running": 1, "expected": None, "stalled": 1, "missing": 0,
                    "reason": "1 running; 1 stalled: w", "workers": [{
                        "name": "w", "state": "stalled", "pid": 7, "up": True,
                        "uptime_seconds": 7200.0, "silent_seconds": 600.0, "heartbeat_age": None,
                        "task_name": "FTPArticle", "task_seconds": 610.0,
                        "blocked_syscall": "recvfrom", "blocked_peer": "10.0.0.5:21",
                        "blocked_seconds": 600.0, "cpu_delta": 0.0, "reason": "why"}]}],
        "backlog": [{"name": "workerwatch.sqs.visibleMessages", "value": 42.0,
                     "attributes": {"sqs.queue": "q"}}],
        "errors": {"none": 0},
    }  # fmt: skip
    painted = render(doc, colour=True)
    assert "\x1b[1;31m" in painted and "\x1b[0m" in painted
    plain = render(doc, colour=False)
    assert "\x1b[" not in plain
    assert "FTPArticle 10 min" in plain and "recvfrom 10.0.0.5:21 10 min" in plain
    assert "workerwatch.sqs.visibleMessages = 42  sqs.queue=q" in plain
