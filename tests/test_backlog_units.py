"""Backlog pieces without a fake endpoint: lazy imports, config rules, the pure computations."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from workerwatch.config import ConfigError, parse
from workerwatch.observations import MetricSample
from workerwatch.output import catalogue as names
from workerwatch.output.catalogue import CATALOGUE
from workerwatch.queues import sqs as sqs_probe
from workerwatch.queues import swf as swf_probe
from workerwatch.queues.notes import group_notes
from workerwatch.queues.stuck import stuck_update

from tests.moto_server import isolated_aws_env
from tests.v4 import check_line, find, write_config

# Runs the CLI's one-shot path in-process, then reports which AWS modules got imported.
_PROBE_IMPORTS = """
import json, sys
from workerwatch.cli import main
main(["--config", sys.argv[1]])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"boto3", "botocore", "s3transfer"})
sys.stderr.write("LOADED " + json.dumps(loaded) + "\\n")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _imports_after_run(config: Path) -> tuple[list[str], dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE_IMPORTS, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**isolated_aws_env(), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    return json.loads(marker[0][len("LOADED ") :]), check_line(done.stdout), done.stderr


def test_no_swf_or_sqs_section_never_imports_boto3(tmp_path):
    base = {
        "state_dir": str(tmp_path / "state"),
        "groups": [
            {
                "name": "g",
                "match": {"cmdline": "never-matches-anything-xyz"},
                # consumes alone must not pull the probes in
                "consumes": {"swf_domain": "Publish", "task_list": "DefaultTaskList"},
            }
        ],
    }
    loaded, payload, _ = _imports_after_run(write_config(tmp_path / "plain.yml", base))
    assert loaded == []
    assert find(payload, "workerwatch.group.running")

    # The control: the same check sees boto3 once a section asks for it. The endpoint
    # refuses connections, which must cost the run nothing but the backlog metrics.
    port = _free_port()
    swf = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "timeout": 1,
        "domains": [{"name": "Publish", "activity_task_lists": ["DefaultTaskList"]}],
    }
    config = write_config(tmp_path / "swf.yml", {**base, "swf": swf})
    loaded, payload, stderr = _imports_after_run(config)
    assert "boto3" in loaded and "botocore" in loaded
    errs = [line for line in stderr.splitlines() if line.startswith("[ERR]")]
    assert len(errs) == 1 and "endpoint unreachable" in errs[0], stderr
    assert find(payload, "workerwatch.integration.errors", probe="swf")[0]["value"] == 1
    assert find(payload, "workerwatch.group.running")


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"groups": [{"consumes": {"swf_domain": "Publish"}}]}, "go together"),
        ({"groups": [{"consumes": {}}]}, "give swf_domain with task_list, or sqs_queue"),
        (
            {"groups": [{"consumes": {"sqs_queue": "q", "task_kind": "both"}}]},
            "task_kind",
        ),
        ({"sqs": {"queues": ["bad name!"]}}, "neither a queue URL nor a valid queue name"),
        ({"sqs": {"queues": ["https://sqs.example/only-one-part"]}}, "not .../ACCOUNT/NAME"),
        ({"sqs": {"queues": ["q", "https://h/123/q"]}}, "queue 'q' is listed twice"),
        ({"sqs": {"queues": ["q"], "endpoint_url": "127.0.0.1:5000"}}, "http(s) URL"),
        ({"swf": {"domains": [{"name": "P"}, {"name": "P"}]}}, "domain 'P' is listed twice"),
        (
            {"swf": {"domains": [{"name": "P", "activity_task_lists": ["A", "A"]}]}},
            "activity task list 'A' is listed twice",
        ),
        ({"swf": {"domains": []}}, "swf.domains"),
        ({"swf": {"domains": [{"name": "P"}], "sample_every": 0}}, "positive"),
    ],
)
def test_config_mistakes_are_one_clear_line(section, problem):
    data = {"groups": [{"name": "g", "match": {"cmdline": "x"}}]}
    for key, value in section.items():
        if key == "groups":
            data["groups"] = [{**data["groups"][0], **value[0]}]
        else:
            data[key] = value
    with pytest.raises(ConfigError) as err:
        parse(json.dumps(data))
    assert problem in str(err.value)


def test_config_example_from_the_docs_parses():
    text = (Path(__file__).resolve().parents[1] / "docs" / "backlog.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse(example)
    assert config.swf is not None and config.sqs is not None
    # The budget table in the docs is for this config.
    assert swf_probe.planned(config.swf) == 5
    assert sqs_probe.planned(config.sqs, {}) == 3
    assert sqs_probe.planned(config.sqs, {"queue_workflow_starter": "https://x/1/q"}) == 2


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([(0, 5)], [0]),
        ([(0, 5), (60, 5), (120, 6)], [0, 60, 120]),
        ([(0, 5), (60, 4), (120, 4)], [0, 0, 60]),
        ([(0, 5), (60, 0), (120, 5)], [0, 0, 0]),
        ([(60, 5), (0, 5), (30, 5)], [0, 0, 30]),  # clock went back: start over
    ],
)
def test_stuck_seconds_rules(steps, expected):
    record = None
    got = []
    for at, count in steps:
        record, stuck = stuck_update(record, count, float(at))
        got.append(stuck)
    assert got == expected


def _info(wid: str, status: str, closed: float) -> dict:
    return {
        "execution": {"workflowId": wid, "runId": "r"},
        "closeStatus": status,
        "closeTimestamp": datetime.fromtimestamp(closed, tz=timezone.utc),
    }


@pytest.mark.parametrize(
    ("infos", "token", "expected"),
    [
        ([_info("c", "TIMED_OUT", 990), _info("c", "COMPLETED", 700)], None, 300),
        ([_info("x", "COMPLETED", 999), _info("c", "COMPLETED", 400)], None, 600),
        ([_info("c", "TIMED_OUT", 990), _info("c", "FAILED", 800)], "more", 200),
        ([_info("c", "TIMED_OUT", 990)], None, 86400),
        ([], None, 86400),
    ],
)
def test_canary_age(infos, token, expected):
    response = {"executionInfos": infos, **({"nextPageToken": token} if token else {})}
    assert swf_probe.canary_age(response, "c", 1000.0, 86400.0) == expected


@pytest.mark.parametrize(
    "response",
    [
        {"message": "<html>"},  # what botocore makes of a body that is not JSON
        {"executionInfos": "nope"},
        {"executionInfos": [{"execution": {"workflowId": "c"}, "closeTimestamp": "yesterday"}]},
    ],
)
def test_canary_age_rejects_malformed_answers(response):
    with pytest.raises((KeyError, TypeError, ValueError)):
        swf_probe.canary_age(response, "c", 1000.0, 86400.0)


@pytest.mark.parametrize(
    "response",
    [
        {"message": "x"},
        {"count": -1},
        {"count": "3"},
        {"count": True},
        {"count": 1, "truncated": 1},
    ],
)
def test_counts_reject_malformed_answers(response):
    with pytest.raises((KeyError, ValueError)):
        swf_probe._count(response)


def test_group_notes_text():
    config = parse(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "deciders",
                        "match": {"cmdline": "x"},
                        "consumes": {
                            "swf_domain": "Publish",
                            "task_list": "DefaultTaskList",
                            "task_kind": "decision",
                        },
                    },
                    {
                        "name": "workers",
                        "match": {"cmdline": "y"},
                        "consumes": {"swf_domain": "Publish", "task_list": "DefaultTaskList"},
                    },
                    {
                        "name": "starters",
                        "match": {"cmdline": "z"},
                        "consumes": {"sqs_queue": "https://sqs.example/1/starter"},
                    },
                ],
                "swf": {
                    "domains": [
                        {
                            "name": "Publish",
                            "activity_task_lists": ["DefaultTaskList"],
                            "decision_task_lists": ["DefaultTaskList"],
                        }
                    ]
                },
                "sqs": {"queues": ["starter"]},
            }
        )
    )
    tl = {"swf.domain": "Publish", "swf.taskList": "DefaultTaskList"}
    samples = [
        MetricSample(names.SWF_PENDING_ACTIVITY, 0, tl),
        MetricSample(names.SWF_STUCK, 0, {**tl, "swf.taskKind": "activity"}),
        MetricSample(names.SWF_PENDING_DECISION, 1000, {**tl, "swf.truncated": True}),
        MetricSample(names.SWF_STUCK, 1500, {**tl, "swf.taskKind": "decision"}),
        MetricSample(names.SQS_VISIBLE, 1, {"sqs.queue": "starter"}),
    ]
    notes = group_notes(config, samples)
    assert notes == {
        "deciders": "backlog: at least 1000 decision tasks pending in Publish/DefaultTaskList, "
        "not decreasing for 25 min",
        "starters": "backlog: 1 message visible in starter",
    }


def test_catalogue_entries_the_probes_emit():
    assert "swf.taskKind" in CATALOGUE[names.SWF_STUCK].attributes
    for name in (names.SWF_PENDING_ACTIVITY, names.SWF_PENDING_DECISION, names.SWF_OPEN):
        assert "swf.truncated" in CATALOGUE[name].attributes
    for name in (*sqs_probe.ATTRIBUTES.values(), names.SQS_STUCK, names.SQS_AGE):
        assert CATALOGUE[name].attributes == ("sqs.queue",)
