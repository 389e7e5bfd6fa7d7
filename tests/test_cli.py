"""Go SDK style flags and their environment equivalents."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.v4 import check_line, write_config


def _run(config, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("METRICS", "INVENTORY", "EVENTS", "PRETTY", "VERBOSE")
    }
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", "--config", str(config), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def config(tmp_path):
    return write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "zzz-no-such"}}],
        },
    )


@pytest.mark.parametrize(
    ("flags", "env", "metrics", "inventory"),
    [
        ((), {}, True, True),
        (("-metrics",), {}, True, False),
        (("--inventory",), {}, False, True),
        (("-metrics", "-inventory", "-events"), {}, True, True),
        ((), {"METRICS": "true"}, True, False),
        ((), {"INVENTORY": "1"}, False, True),
    ],
)
def test_data_flags_select_sections(config, flags, env, metrics, inventory):
    dataset = check_line(_run(config, *flags, env=env).stdout)["data"][0]
    assert bool(dataset["metrics"]) is metrics
    assert bool(dataset["inventory"]) is inventory
    if inventory:
        assert dataset["inventory"]["integration"]["version"] == "0.1.0"
        assert dataset["inventory"]["group/g"]["match.cmdline"] == "zzz-no-such"


def test_pretty_is_for_people_and_verbose_logs_debug(config):
    done = _run(config, "-pretty", "-verbose")
    assert done.stdout.count("\n") > 10
    assert json.loads(done.stdout)["protocol_version"] == "4"
    compact = _run(config, env={"PRETTY": "false"})
    assert compact.stdout.count("\n") == 1


def test_common_attributes_name_the_host(config):
    common = check_line(_run(config).stdout)["data"][0]["common"]
    assert common["attributes"]["host.name"] == os.uname().nodename


def _one_shot_with_stdout(config, stdout) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", "--config", str(config)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr


def test_a_payload_that_cannot_be_written_is_one_error_line_not_a_traceback(config, tmp_path):
    """stdout a pipe its reader closed (the agent gone), a full device, or no stdout at all:
    the run still saves its state and says in one [ERR] line that the payload is lost."""
    state = tmp_path / "state" / "state.json"
    read_end, write_end = os.pipe()
    os.close(read_end)
    outcomes = [_one_shot_with_stdout(config, write_end)]
    os.close(write_end)
    with open("/dev/full", "w") as full:
        outcomes.append(_one_shot_with_stdout(config, full))
    done = subprocess.run(
        f"exec {sys.executable} -m workerwatch --config {config} >&-",
        shell=True,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    outcomes.append((done.returncode, done.stderr))
    for code, stderr in outcomes:
        assert "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("[ERR] ")]
        assert len(errors) == 1 and "payload" in errors[0], stderr
        assert code == 1, (code, stderr)
    assert json.loads(state.read_text())["probes"]["run"]["last"] > 0
