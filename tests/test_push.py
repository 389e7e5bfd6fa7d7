"""Agentless push against a real HTTP server standing in for the Metric and Event APIs."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from werkzeug import Request, Response
from workerwatch.output.catalogue import CATALOGUE
from workerwatch.output.ingest_api import MAX_BODY, Sender, event_records, retry_after

from tests.v4 import write_config

KEY = "eu01xxTESTLICENSEKEY0123456789abcdefNRAL"
ACCOUNT = "1234567"
METRIC_PATH = "/metric/v1"
EVENT_PATH = f"/v1/accounts/{ACCOUNT}/events"


class Recorder:
    """Answers with a scripted list of statuses and keeps every request."""

    def __init__(self, statuses: list[int] | None = None, headers: dict | None = None) -> None:
        self.statuses = list(statuses or [])
        self.headers = headers or {}
        self.requests: list[tuple[float, dict, bytes]] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append((time.monotonic(), dict(request.headers), request.get_data()))
        status = self.statuses.pop(0) if self.statuses else 202
        headers = self.headers if status == 429 else {}
        return Response(json.dumps({"requestId": "r"}), status=status, headers=headers)

    def bodies(self) -> list:
        return [json.loads(gzip.decompress(body)) for _, _, body in self.requests]


def _config(tmp_path: Path, tag: str) -> Path:
    return write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "fleet", "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}}],
        },
    )


def _push(config: Path, httpserver, *args: str, env: dict | None = None, **kw):
    full_env = {**os.environ, "NEW_RELIC_LICENSE_KEY": KEY, "NEW_RELIC_ACCOUNT_ID": ACCOUNT}
    full_env.update(env or {})
    command = [
        sys.executable, "-m", "workerwatch", "push", "--config", str(config),
        "--metric-url", httpserver.url_for(METRIC_PATH),
        "--event-url", httpserver.url_for("/v1/accounts/{account_id}/events"),
        *args,
    ]  # fmt: skip
    if kw.get("popen"):
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env
        )
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=full_env)


def test_once_sends_gzip_metric_api_shape_and_events(tmp_path, tag, fleet, httpserver):
    metrics, events = Recorder(), Recorder()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    httpserver.expect_request(EVENT_PATH, method="POST").respond_with_handler(events)
    doomed = fleet.start("sleeper")
    survivor = fleet.start("sleeper")
    config = _config(tmp_path, tag)

    first = _push(config, httpserver, "--once", "--label", "env=test")
    assert first.returncode == 0, first.stderr
    doomed.kill()
    doomed.wait()
    second = _push(config, httpserver, "--once", "--label", "env=test")
    assert second.returncode == 0, second.stderr

    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert KEY not in output
    assert first.stdout == second.stdout == "", "push prints nothing on stdout"

    assert len(metrics.requests) == 2
    for _, headers, raw in metrics.requests:
        assert headers["Api-Key"] == KEY
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Content-Type"] == "application/json"
        assert len(raw) < MAX_BODY
    body = metrics.bodies()[1]
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"common", "metrics"}
    common = body[0]["common"]
    assert (
        isinstance(common["timestamp"], int) and abs(common["timestamp"] / 1000 - time.time()) < 60
    )
    assert isinstance(common["interval.ms"], int) and common["interval.ms"] > 0
    attrs = common["attributes"]
    assert attrs["host.name"] and attrs["instrumentation.name"] == "nri-workerwatch"
    assert attrs["label.env"] == "test"
    counts = 0
    for m in body[0]["metrics"]:
        assert set(m) <= {"name", "type", "value", "attributes", "interval.ms"}
        assert CATALOGUE[m["name"]].type == m["type"]
        assert isinstance(m["value"], int | float)
        if m["type"] == "count":
            counts += 1
            assert isinstance(m["interval.ms"], int) and m["interval.ms"] > 0, m
    assert counts, "the errors count at least"
    ups = {
        m["attributes"]["process.pid"]: m["value"]
        for m in body[0]["metrics"]
        if m["name"] == "workerwatch.worker.up"
    }
    assert ups[survivor.pid] == 1 and ups[doomed.pid] == 0

    assert len(events.requests) == 1, "the first run has no transition to report"
    _, headers, _ = events.requests[0]
    assert headers["Api-Key"] == KEY
    (event,) = events.bodies()[0]
    assert event["eventType"] == "WorkerWatchEvent"
    assert "disappeared" in event["summary"] and event["process.pid"] == doomed.pid
    assert all(isinstance(v, str | int | float | bool) for v in event.values())


def test_429_is_retried_after_retry_after(tmp_path, tag, fleet, httpserver):
    metrics = Recorder([429, 202], headers={"Retry-After": "1"})
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    fleet.start("sleeper")
    done = _push(_config(tmp_path, tag), httpserver, "--once")
    assert done.returncode == 0, done.stderr
    assert len(metrics.requests) == 2
    waited = metrics.requests[1][0] - metrics.requests[0][0]
    assert 0.9 <= waited < 5, waited
    assert metrics.requests[0][2] == metrics.requests[1][2], "the same batch is sent again"
    assert "HTTP 429" in done.stderr and "retrying after 1 s" in done.stderr


def test_403_stops_with_a_clear_message_and_never_shows_the_key(tmp_path, tag, fleet, httpserver):
    metrics = Recorder([403])
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    fleet.start("sleeper")
    done = _push(_config(tmp_path, tag), httpserver, "--once")
    assert done.returncode == 1
    assert len(metrics.requests) == 1, "a refused key is not retried"
    fatal = [ln for ln in done.stderr.splitlines() if ln.startswith("[FATAL]")]
    assert fatal and "HTTP 403" in fatal[0] and "NEW_RELIC_LICENSE_KEY was refused" in fatal[0]
    assert KEY not in done.stderr + done.stdout


def test_resident_push_repeats_and_stops_on_sigterm(tmp_path, tag, fleet, httpserver):
    metrics = Recorder()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    fleet.start("sleeper")
    proc = _push(_config(tmp_path, tag), httpserver, "--interval", "0.3s", popen=True)
    try:
        deadline = time.monotonic() + 10
        while len(metrics.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
    stderr = proc.stderr.read()
    assert len(metrics.requests) >= 3, stderr
    assert code == 0, stderr
    assert KEY not in stderr
    intervals = [b["common"]["interval.ms"] for b in (x[0] for x in metrics.bodies())]
    assert all(100 <= ms <= 3000 for ms in intervals[1:]), intervals


def test_missing_license_key_is_fatal(tmp_path, tag, httpserver):
    env = {k: v for k, v in os.environ.items() if k != "NEW_RELIC_LICENSE_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "workerwatch", "push", "--once", "--config",
         str(_config(tmp_path, tag))],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "[FATAL] set NEW_RELIC_LICENSE_KEY" in done.stderr


def test_events_need_an_account_id(tmp_path, tag, fleet, httpserver):
    metrics = Recorder()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    fleet.start("sleeper")
    done = _push(_config(tmp_path, tag), httpserver, "--once", env={"NEW_RELIC_ACCOUNT_ID": ""})
    assert done.returncode == 0
    assert "events are not sent" in done.stderr and "NEW_RELIC_ACCOUNT_ID" in done.stderr
    assert len(metrics.requests) == 1


# --- the sender on its own: splitting, retries, the bounded queue ----------------------


def _incompressible_metrics(total_bytes: int) -> list[dict]:
    """Gauges whose attributes are random text, so gzip cannot shrink them much."""
    out = []
    size = 0
    while size < total_bytes:
        blob = base64.b64encode(os.urandom(3000)).decode()
        out.append({"name": "workerwatch.worker.up", "type": "gauge", "value": 1,
                    "attributes": {"worker.reason": blob}})  # fmt: skip
        size += len(blob) + 80
    return out


def test_a_2mb_batch_is_split_under_the_body_limit(httpserver):
    metrics = Recorder()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    items = _incompressible_metrics(2_000_000)
    raw = len(json.dumps(items))
    assert raw >= 2_000_000
    assert len(gzip.compress(json.dumps(items).encode())) > MAX_BODY, "needs splitting"
    sender = Sender(KEY, httpserver.url_for(METRIC_PATH), None)
    sender.add_metrics(items, {"timestamp": 1, "interval.ms": 1000, "attributes": {}})
    report = sender.flush(final=True)
    assert report.dropped == 0 and report.pending == 0
    assert report.sent == len(metrics.requests) >= 2
    assert all(len(body) < MAX_BODY for _, _, body in metrics.requests)
    received = [m for body in metrics.bodies() for m in body[0]["metrics"]]
    assert received == items, "every metric arrives once, in order"


def test_413_splits_the_batch_and_retries(httpserver):
    metrics = Recorder([413])
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    items = _incompressible_metrics(20_000)
    sender = Sender(KEY, httpserver.url_for(METRIC_PATH), None)
    sender.add_metrics(items, {"timestamp": 1, "interval.ms": 1000, "attributes": {}})
    report = sender.flush(final=True)
    assert report.sent == 2 and report.dropped == 0
    halves = [body[0]["metrics"] for body in metrics.bodies()[1:]]
    assert halves[0] + halves[1] == items


def test_5xx_is_retried_with_bounded_backoff(httpserver):
    metrics = Recorder([503, 500, 202])
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    waits: list[float] = []
    sender = Sender(
        KEY, httpserver.url_for(METRIC_PATH), None, sleep=lambda s: waits.append(s) or False
    )
    sender.add_metrics([{"name": "workerwatch.worker.up", "type": "gauge", "value": 1}], {})
    assert sender.flush().sent == 1
    assert waits == [1.0, 2.0], "exponential backoff between attempts"

    down = Recorder([503] * 20)
    httpserver.clear()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(down)
    sender = Sender(
        KEY, httpserver.url_for(METRIC_PATH), None, sleep=lambda s: False, max_attempts=3
    )
    sender.add_metrics([{"name": "workerwatch.worker.up", "type": "gauge", "value": 1}], {})
    report = sender.flush()
    assert len(down.requests) == 3, "attempts are bounded"
    assert report.pending == 1 and report.dropped == 0, "kept for the next flush"


def test_endpoint_down_keeps_a_bounded_queue_and_counts_drops(httpserver):
    # A port with nothing listening: connection refused, as when the endpoint is down.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}{METRIC_PATH}"
    sender = Sender(KEY, dead, None, queue_size=3, sleep=lambda s: False, max_attempts=1)
    for i in range(10):
        sender.add_metrics([{"name": "workerwatch.worker.up", "type": "gauge", "value": i}], {})
        sender.flush()
    assert len(sender.pending) == 3
    assert sender.errors["push"] == 7
    assert [b.items[0]["value"] for b in sender.pending] == [7, 8, 9], "the oldest went first"

    # Endpoint back: the queue drains in order.
    metrics = Recorder()
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    for batch in sender.pending:
        batch.url = httpserver.url_for(METRIC_PATH)
    assert sender.flush().sent == 3
    assert [b[0]["metrics"][0]["value"] for b in metrics.bodies()] == [7, 8, 9]


def test_400_drops_the_batch_with_an_error(httpserver, capsys):
    metrics = Recorder([400])
    httpserver.expect_request(METRIC_PATH, method="POST").respond_with_handler(metrics)
    sender = Sender(KEY, httpserver.url_for(METRIC_PATH), None)
    sender.add_metrics([{"name": "workerwatch.worker.up", "type": "gauge", "value": 1}], {})
    report = sender.flush()
    assert report.dropped == 1 and report.pending == 0 and len(metrics.requests) == 1
    assert "HTTP 400" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 10.0), ("3", 3.0), ("0", 0.0), ("9999", 60.0), ("soon", 10.0)],
)
def test_retry_after_parsing(header, expected):
    assert retry_after(header) == expected


def test_retry_after_http_date():
    when = time.time() + 5
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    assert 3 <= retry_after(header) <= 6


def test_events_are_flat_records():
    (record,) = event_records(
        [{"summary": "w stalled", "category": "workerwatch",
          "attributes": {"worker.name": "w", "process.pid": 4, "summary": "clash"}}],
        1700000000.0, {"host.name": "h"},
    )  # fmt: skip
    assert record["eventType"] == "WorkerWatchEvent" and record["timestamp"] == 1700000000000
    assert record["summary"] == "w stalled" and record["attr.summary"] == "clash"
    assert record["host.name"] == "h" and record["process.pid"] == 4


def test_one_shot_path_never_imports_requests(tmp_path, tag, fleet):
    """The agent's one-shot run must not pay for requests (or urllib3)."""
    fleet.start("sleeper")
    config = _config(tmp_path, tag)
    code = (
        "import sys, io, contextlib\n"
        "from workerwatch.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    main(['--config', {str(config)!r}])\n"
        "assert out.getvalue().startswith('{\"protocol_version\"'), out.getvalue()[:80]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
