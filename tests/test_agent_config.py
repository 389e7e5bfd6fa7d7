"""The shipped agent config samples: checked against the agent's schema, then run the way the
agent runs them (only the environment the agent gives, the inline config in a temp file).

Schema facts from nr_integration_protocol.md section 2 (infrastructure-agent
pkg/integrations/v4/config/config.go ConfigEntry, internal/integrations/v4/executor,
internal/integrations/v4/v3legacy/definitions_repo.go).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from workerwatch.config import parse
from workerwatch.units import parse_duration

from tests.fleet import wait_for
from tests.test_longrun import LineReader
from tests.v4 import check_line, find

ROOT = Path(__file__).parent.parent
AGENT = ROOT / "definitions" / "agent"
SAMPLES = ["workerwatch-config.yml.sample", "workerwatch-long-running-config.yml.sample"]
BIN = "/var/db/newrelic-infra/newrelic-integrations/bin/nri-workerwatch"

ENTRY_KEYS = {
    "name", "exec", "cli_args", "env", "config", "config_template_path", "interval", "timeout",
    "integration_user", "working_dir", "labels", "tags", "when", "inventory_source",
    "logs_queue_size", "integration_name", "command", "arguments",
}  # fmt: skip
# Go's time.ParseDuration units; a bare number is not a duration to the agent.
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
INVENTORY_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def go_seconds(value: Any, key: str) -> float:
    assert isinstance(value, str) and GO_DURATION.match(value), (
        f"{key}: {value!r} needs a unit (e.g. 30s): the agent reads a bare number as "
        "nanoseconds (timeout) or falls back to the default (interval)"
    )
    return sum(
        float(n) * _GO_UNITS[u]
        for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    )


def env_value(value: Any) -> str:
    """How a YAML scalar reaches the process: the agent's env is map[string]string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    assert isinstance(value, str | int | float), f"env values are scalars, got {value!r}"
    return str(value)


def check_entry(entry: dict[str, Any]) -> None:
    assert set(entry) <= ENTRY_KEYS, f"keys the agent does not know: {set(entry) - ENTRY_KEYS}"
    assert isinstance(entry.get("name"), str) and entry["name"], "name is required"
    assert not ("exec" in entry and "cli_args" in entry), "exec or cli_args, not both"
    assert not ("config" in entry and "config_template_path" in entry)
    assert "instances" not in entry
    interval = go_seconds(entry["interval"], "interval")
    assert interval >= 15, "the agent clamps intervals below 15 s"
    timeout = go_seconds(entry["timeout"], "timeout")
    assert timeout >= 0.1, "the agent clamps timeouts below 100 ms"
    for key, value in (entry.get("labels") or {}).items():
        assert isinstance(key, str) and isinstance(value, str)
    for key, value in (entry.get("env") or {}).items():
        assert isinstance(key, str)
        env_value(value)
    if "inventory_source" in entry:
        assert INVENTORY_SOURCE.match(entry["inventory_source"])
    if "config" in entry:
        config = parse(yaml.safe_dump(entry["config"]), "inline config")
        # A run is bounded by the config's deadline; the agent's timeout must be longer.
        assert timeout > config.deadline + 5, (timeout, config.deadline)


def agent_env(entry: dict[str, Any], tmp_path: Path, config_path: Path | None) -> dict[str, str]:
    """Exactly what the v4 runner passes (executor.go buildCommand + config.go BuildEnv)."""
    env = {key.upper(): env_value(value) for key, value in (entry.get("env") or {}).items()}
    env.update(
        {
            "PATH": os.environ["PATH"],  # the default passthrough_environment on Linux
            "NRI_CONFIG_INTERVAL": entry["interval"],
            "VERBOSE": "0",
            "TEMP_DIR": str(tmp_path / "nr-integrations"),
            "NRI_HOST_ID": "test-host",
        }
    )
    if config_path is not None:
        env["CONFIG_PATH"] = str(config_path)
    return env


def test_command(exec_: list[str]) -> list[str]:
    """The sample's interpreter + installed program, replaced by this test's interpreter."""
    assert Path(exec_[0]).is_absolute() and Path(exec_[1]).is_absolute(), (
        "absolute paths: the agent passes no PATH-based venv or PYTHONPATH"
    )
    assert exec_[0].endswith("python3") and exec_[1] == BIN
    return [sys.executable, "-m", "workerwatch", *exec_[2:]]


test_command.__test__ = False  # a helper, not a test


def adapted_config(entry: dict[str, Any], tmp_path: Path, tag: str) -> Path:
    """The inline config, pointed at this test's children and state dir, in a temp file."""
    config = dict(entry["config"])
    config["state_dir"] = str(tmp_path / "state")
    config["groups"] = [
        {
            "name": "fleet",
            "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"},
            "logs": [str(tmp_path / "*.log")],
            "stall_after": "2s",
        }
    ]
    path = tmp_path / "nri-config-123.yml"  # the agent's temp file
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("sample", SAMPLES)
def test_samples_follow_the_agent_schema(sample):
    data = yaml.safe_load((AGENT / sample).read_text())
    assert set(data) == {"integrations"}
    (entry,) = data["integrations"]
    check_entry(entry)
    assert entry["name"] == "nri-workerwatch"
    assert isinstance(entry["exec"], list)
    test_command(entry["exec"])


def test_one_shot_sample_runs_with_only_the_agent_environment(tmp_path, tag, fleet):
    (entry,) = yaml.safe_load((AGENT / SAMPLES[0]).read_text())["integrations"]
    sleeper = fleet.start("sleeper")
    logger = fleet.start("logger", tmp_path / "worker.log", 0.2)
    config = adapted_config(entry, tmp_path, tag)
    env = agent_env(entry, tmp_path, config)
    log = tmp_path / "worker.log"
    # The logger holds its log open before the first run (else that run has no offset to
    # compare), and writes again after the first run read it (two quick runs on a loaded
    # machine can fall between two of its lines).
    wait_for(lambda: log.exists() and log.stat().st_size > 0, what="the logger's first line")
    for run in range(2):  # the second run reads the state the first one left
        if run:
            written = log.stat().st_size
            wait_for(lambda n=written: log.stat().st_size > n, what="a log line between runs")
        done = subprocess.run(
            test_command(entry["exec"]),
            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not [ln for ln in done.stderr.splitlines() if ln.startswith(("[ERR]", "[FATAL]"))]
        payload = check_line(done.stdout)
    for proc in (sleeper, logger):
        assert find(payload, "workerwatch.worker.up", **{"process.pid": proc.pid})[0]["value"] == 1
    working = find(payload, "workerwatch.worker.up", **{"process.pid": logger.pid})[0]
    assert working["attributes"]["worker.state"] == "working"
    dataset = payload["data"][0]
    assert dataset["inventory"] and dataset["metrics"], "METRICS/INVENTORY/EVENTS from env:"


def test_long_running_sample_runs_with_only_the_agent_environment(tmp_path, tag, fleet):
    (entry,) = yaml.safe_load((AGENT / SAMPLES[1]).read_text())["integrations"]
    assert entry["exec"][2] == "run", "the long-running sample starts `run`"
    interval = parse_duration(entry["exec"][entry["exec"].index("--interval") + 1])
    assert interval >= 15
    sleeper = fleet.start("sleeper")
    config = adapted_config(entry, tmp_path, tag)
    proc = subprocess.Popen(
        test_command(entry["exec"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=agent_env(entry, tmp_path, config), cwd=tmp_path,
    )  # fmt: skip
    try:
        _, line = LineReader(proc).until_payloads(1)[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
    assert code == 0, proc.stderr.read()
    payload = check_line(line)
    assert find(payload, "workerwatch.worker.up", **{"process.pid": sleeper.pid})
    heartbeat = min(5.0, interval / 3)
    assert heartbeat * 2 < go_seconds(entry["timeout"], "timeout"), "heartbeats beat the timeout"


def test_legacy_definition_and_config(tmp_path, tag, fleet):
    definition = yaml.safe_load((AGENT / "legacy" / "workerwatch-definition.yml").read_text())
    assert set(definition) <= {"name", "description", "protocol_version", "os", "commands"}
    assert definition["name"] and definition["os"] == "linux"
    assert isinstance(definition["protocol_version"], int)
    command = definition["commands"]["metrics"]
    assert set(command) <= {"command", "interval", "prefix"}
    # The agent reads a definition's interval only when the config entry says `interval: 0`
    # (v3legacy/definitions_repo.go): one here would look like a setting and do nothing.
    assert "interval" not in command
    assert INVENTORY_SOURCE.match(command["prefix"])
    argv = command["command"]
    assert argv[0].endswith("python3") and Path(argv[0]).is_absolute()
    assert argv[1] == "./bin/nri-workerwatch", "relative to the definition's folder"

    config = yaml.safe_load((AGENT / "legacy" / "workerwatch-config.yml.sample").read_text())
    (entry,) = config["integrations"]
    check_entry(entry)
    assert "instances" not in config, "the instances: form cannot carry protocol v4"
    assert entry["integration_name"] == definition["name"]
    assert entry["command"] in definition["commands"]
    assert "env" not in entry and "exec" not in entry, "arguments replace env in this form"
    arguments = entry["arguments"]

    fleet_proc = fleet.start("sleeper")
    sample = yaml.safe_load((AGENT / SAMPLES[0]).read_text())["integrations"][0]
    integration_config = adapted_config(sample, tmp_path, tag)
    arguments = {**arguments, "config_path": str(integration_config)}
    # legacy.ArgumentsToEnvVars: VERBOSE, TEMP_DIR and the upper-cased arguments, plus PATH.
    env = {key.upper(): env_value(value) for key, value in arguments.items()}
    env.update({"VERBOSE": "0", "TEMP_DIR": str(tmp_path), "PATH": os.environ["PATH"]})
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", *argv[2:]],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = check_line(done.stdout)
    assert find(payload, "workerwatch.worker.up", **{"process.pid": fleet_proc.pid})
