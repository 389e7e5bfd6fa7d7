"""Planted secrets never reach stdout, stderr, inventory, events, exceptions or the state file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug import Request, Response

from tests.v4 import check_line, write_config

SECRETS = {
    "NEW_RELIC_API_KEY": "NRAK-PLANTEDAPIKEY0001XYZ",
    "NEW_RELIC_LICENSE_KEY": "PLANTEDLICENSE0002XYZNRAL",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED0003XYZ",
    "AWS_SECRET_ACCESS_KEY": "PLANTEDSECRET0004XYZ",
    "AWS_SESSION_TOKEN": "PLANTEDTOKEN0005XYZ",
}


def _echo(request: Request) -> Response:
    """A hostile server: refuses everything and echoes the request, headers included."""
    echoed = {"headers": dict(request.headers), "body": request.get_data()[:2000].decode("latin-1")}
    return Response(
        json.dumps({"message": json.dumps(echoed), "errors": [{"message": str(echoed)}]}),
        status=403,
        content_type="application/json",
    )


def _run(
    *args: str, env_extra: dict | None = None, timeout: float = 90
) -> subprocess.CompletedProcess:
    env = {**os.environ, **SECRETS, "NEW_RELIC_ACCOUNT_ID": "1234567", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "workerwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _assert_clean(text: str, where: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked into {where}"
        assert value[4:16] not in text, f"part of {name} leaked into {where}"


@pytest.fixture
def echo_server(httpserver):
    httpserver.expect_request("").respond_with_handler(_echo)
    return httpserver


def test_collection_failure_paths_leak_nothing(tmp_path, echo_server):
    url = echo_server.url_for("/")
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "no-such-process-zzz"}}],
            "swf": {
                "endpoint_url": url,
                "timeout": "2s",
                "domains": [{"name": "Publish", "activity_task_lists": ["Default"]}],
            },
            "sqs": {
                "endpoint_url": url.replace(
                    "http://", f"http://user:{SECRETS['AWS_SECRET_ACCESS_KEY']}@"
                ),
                "timeout": "2s",
                "queues": ["q"],
            },
        },
    )
    done = _run("--config", str(config), "-verbose")
    assert done.returncode == 0, done.stderr
    payload = check_line(done.stdout)
    errors = {
        m["attributes"]["probe"]
        for m in payload["data"][0]["metrics"]
        if m["name"] == "workerwatch.integration.errors"
    }
    assert {"swf", "sqs"} <= errors, (errors, done.stderr)
    state = "".join(p.read_text() for p in (tmp_path / "state").glob("*.json"))
    for text, where in ((done.stdout, "stdout"), (done.stderr, "stderr"), (state, "state file")):
        _assert_clean(text, where)


def test_push_and_alert_failure_paths_leak_nothing(tmp_path, echo_server):
    url = echo_server.url_for("/")
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "no-such-process-zzz"}}],
        },
    )
    runs = [
        _run(
            "push",
            "--once",
            "--config",
            str(config),
            "--metric-url",
            url + "metric",
            "--event-url",
            url + "events",
        ),
        _run("alerts", "plan", "--endpoint", url + "graphql", "--verbose"),
        _run("alerts", "apply", "--endpoint", url + "graphql"),
        _run("dashboards", "apply", "--endpoint", url + "graphql"),
    ]
    assert all(r.returncode != 0 for r in runs[1:]), [r.stderr for r in runs]
    assert any(
        "403" in r.stderr or "denied" in r.stderr.lower() or "key" in r.stderr.lower() for r in runs
    )
    for run in runs:
        _assert_clean(run.stdout + run.stderr, " ".join(run.args[3:5]))


def test_inventory_strips_credentials_from_endpoint_urls(tmp_path):
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "no-such-process-zzz"}}],
            "sqs": {
                "endpoint_url": f"http://AKIA:{SECRETS['AWS_SECRET_ACCESS_KEY']}@127.0.0.1:9/",
                "timeout": "1s",
                "sample_every": "1h",
                "queues": ["q"],
            },
        },
    )
    done = _run("--config", str(config), "-inventory")
    inventory = check_line(done.stdout)["data"][0]["inventory"]
    assert inventory["sqs"]["endpoint_url"] == "http://127.0.0.1:9/"
    _assert_clean(done.stdout + done.stderr, "inventory run")
    assert Path(tmp_path / "state").exists()
