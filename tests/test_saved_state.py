"""A poisoned state file costs the poisoned entries, never the run.

The state file is input: a wrong type or an impossible value in any field of any saved
record is dropped when loading, said in one warning, and the run ends with a complete,
valid payload. Real runs here: the CLI as the agent starts it, and the collector with its
forked host probes on a live worker.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workerwatch import records
from workerwatch.collector import Collector
from workerwatch.config import from_data
from workerwatch.judge.memory import FORMAT_VERSION, SavedState, from_json
from workerwatch.output.v4 import Sections, to_line
from workerwatch.state import FileStateStore

from tests.fleet import main_thread_blocked, run_integration, wait_for
from tests.v4 import check_line, find, write_config


def _config(tmp_path: Path, tag: str) -> Path:
    return write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}}],
        },
    )


def _poison(tmp_path: Path, pid: int, **fields: Any) -> None:
    """Set ``fields`` in the saved record of the live worker ``pid`` (the key holds the pid)."""
    path = tmp_path / "state" / "state.json"
    saved = json.loads(path.read_text())
    (key,) = [k for k in saved["workers"] if k.startswith(f"{pid}:")]
    saved["workers"][key].update(fields)
    path.write_text(json.dumps(saved))


def _complete(stdout: str, pid: int) -> dict[str, Any]:
    (line,) = stdout.splitlines(keepends=True)
    payload = check_line(line)
    assert find(payload, "workerwatch.worker.up", **{"process.pid": pid})[0]["value"] == 1
    assert find(payload, "workerwatch.worker.stalled", **{"process.pid": pid})
    assert find(payload, "workerwatch.group.running", **{"worker.group": "g"})[0]["value"] == 1
    assert find(payload, "workerwatch.integration.durationSeconds")
    return payload


def test_a_wrongly_typed_wake_runs_is_dropped_through_the_real_cli(
    tmp_path, tag, fleet, silent_server
):
    """``wake_runs: "x"`` on a stalled worker that wakes: the recovery count would add to it."""
    poller = fleet.start("poller", "127.0.0.1", silent_server.port)
    wait_for(lambda: main_thread_blocked(poller.pid), what="poller polling")
    config = _config(tmp_path, tag)
    run_integration(config)
    # A stalled worker that woke since: the verdict counts wakeup runs toward recovery.
    _poison(tmp_path, poller.pid, state="stalled", wake_runs="x")
    time.sleep(0.5)  # the poller wakes every 0.2 s
    stdout, stderr = run_integration(config)
    payload = _complete(stdout, poller.pid)
    assert find(payload, "workerwatch.integration.errors", probe="state")[0]["value"] == 1
    warnings = [ln for ln in stderr.splitlines() if ln.startswith("[WARN]")]
    assert len(warnings) == 1 and "wake_runs: 'x' is not an integer" in warnings[0], stderr
    assert "Traceback" not in stderr and "[ERR]" not in stderr
    # The next run starts from what this one saved: nothing left to drop.
    stdout, stderr = run_integration(config)
    _complete(stdout, poller.pid)
    assert "[WARN]" not in stderr


def test_a_last_seen_of_minus_1e308_is_dropped_through_the_real_cli(tmp_path, tag, fleet):
    """Finite but absurd: the interval from it overflowed when the metrics were built."""
    sleeper = fleet.start("sleeper")
    wait_for(lambda: main_thread_blocked(sleeper.pid), what="sleeper asleep")
    config = _config(tmp_path, tag)
    run_integration(config)
    _poison(tmp_path, sleeper.pid, last_seen=-1e308)
    stdout, stderr = run_integration(config)
    payload = _complete(stdout, sleeper.pid)
    (up,) = find(payload, "workerwatch.worker.up", **{"process.pid": sleeper.pid})
    assert up["attributes"]["worker.reason"].startswith("first sample"), "its history is gone"
    warnings = [ln for ln in stderr.splitlines() if ln.startswith("[WARN]")]
    assert len(warnings) == 1 and "last_seen: -1e+308 is not a time near now" in warnings[0]
    assert "Traceback" not in stderr and "[ERR]" not in stderr


@pytest.mark.parametrize("fd", ["\u00b2", "\u0663\u0663", "x", "-1", "3 "])
def test_a_log_fd_key_that_is_no_decimal_number_drops_the_worker_not_the_run(fd):
    """JSON keys are text: ``'²'`` passes ``str.isdigit`` and still fails ``int()``."""
    now = time.time()
    worker = {"name": "g:5", "group": "g", "pid": 5, "first_seen": now, "last_seen": now}
    doc = {"version": FORMAT_VERSION, "workers": {"5:1": {**worker, "log_pos": {fd: 3}}}}
    state, dropped = from_json(doc, now)
    if fd == "\u0663\u0663":  # Arabic-Indic digits: decimal, and int() reads them as 33
        assert (state.workers["5:1"].log_pos, dropped) == ({33: 3}, [])
        return
    assert state.workers == {}
    assert dropped == [f"workers['5:1'].log_pos[{fd!r}]: {fd!r} is not an integer"]


# --- every field of every saved record ----------------------------------------------------


def _targets(doc: dict[str, Any]) -> list[tuple[tuple[Any, ...], str | None]]:
    """(path to a record in ``doc``, field name or None for the whole record), for every
    record the document holds and every field its definition declares."""
    out: list[tuple[tuple[Any, ...], str | None]] = []

    def walk(value: Any, kinds: tuple[Any, ...], path: tuple[Any, ...]) -> None:
        for kind in kinds:
            if records.is_record(kind) and isinstance(value, dict):
                out.append((path, None))
                for spec in records.fields_of(kind):
                    out.append((path, spec.name))
                    if spec.name in value:
                        walk(value[spec.name], spec.kinds, (*path, spec.name))
            origin = typing.get_origin(kind)
            if origin is dict and isinstance(value, dict):
                (item,) = typing.get_args(kind)[1:]
                for key, entry in value.items():
                    walk(entry, (item,), (*path, key))
            elif origin is list and isinstance(value, list):
                (item,) = typing.get_args(kind)
                for index, entry in enumerate(value):
                    walk(entry, (item,), (*path, index))

    walk(doc, (SavedState,), ())
    return [t for t in out if t != ((), None)]  # a document that is garbage: test_state.py


def _baseline(now: float, worker_key: str, pid: int) -> dict[str, Any]:
    """A valid saved document with one record of every kind, keyed to a live worker."""
    level = {"count": 3.0, "since": now - 60, "seen": now - 30}
    sample = {
        "name": "workerwatch.swf.pendingActivityTasks",
        "value": 3.0,
        "attributes": {"swf.domain": "D", "swf.taskList": "T"},
    }
    probe = {
        "endpoint": "e",
        "config": "c",
        "levels": {"k": level},
        "urls": {"q": "https://sqs.example/1/q"},
        "unsupported": {"CountOpenWorkflowExecutions": now + 60},
        "sampled_at": now - 30,
        "values": [sample],
        "units": ["D"],
    }
    worker = {
        "name": "g:1", "group": "g", "pid": pid, "first_seen": now - 120, "last_seen": now - 30,
        "state": "stalled", "log_pos": {"3": 100}, "last_log_activity": now - 100,
        "log_mtime": now - 100, "hb_seq": 4, "hb_time": now - 40, "cpu": 1.5, "main_cpu": 1.0,
        "main_voluntary": 10, "write_chars": 500, "last_progress": now - 90,
        "blocked_syscall": "recvfrom", "blocked_fd": 3, "blocked_since": now - 90,
        "stalled_since": now - 60, "others_voluntary": 5, "wake_runs": 1,
    }  # fmt: skip
    return {
        "version": 2,
        "workers": {worker_key: worker},
        "names": {"g:1": {"key": worker_key, "pid": pid, "last_seen": now - 30}},
        "probes": {
            "run": {"last": now - 30},
            # A hung step of a process that is not ours: skipped only while it lives as is.
            "hung": {"heartbeats:g": {"pid": 1, "start": 0, "since": now - 30}},
            "swf": probe,
            "sqs": probe,
        },
    }


BAD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1e308, 1e308, -1, -1.5, 0, 2**64, 10**400, -(10**400), -0.0, 1e-300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _set(doc: dict[str, Any], path: tuple[Any, ...], field: str | None, value: Any) -> None:
    """Put ``value`` there; nothing when an earlier poisoning already replaced the way there."""
    target: Any = doc
    try:
        for part in path[:-1] if field is None else path:
            target = target[part]
        if not isinstance(target, (dict, list)):
            return
        target[path[-1] if field is None else field] = value
    except (KeyError, IndexError, TypeError):
        return


@pytest.fixture(scope="module")
def live_worker(tmp_path_factory):
    from tests.fleet import Fleet, SilentServer

    tag = f"wwtest-saved-{uuid.uuid4().hex[:10]}"  # no prefix of another process's tag
    fleet, server = Fleet(tag), SilentServer()
    worker = fleet.start("poller", "127.0.0.1", server.port)
    wait_for(lambda: main_thread_blocked(worker.pid), what="poller polling")
    yield tag, worker
    fleet.close()
    server.close()


@pytest.mark.slow
@settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_field_of_any_saved_record_poisoned_still_gives_a_complete_run(data, live_worker):
    tag, worker = live_worker
    now = time.time()
    with tempfile.TemporaryDirectory() as directory:
        config = from_data(
            {
                "state_dir": directory,
                "groups": [{"name": "g", "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}}],
            }
        )
        # The live worker's real key, from a first run.
        with FileStateStore(directory) as store:
            first = Collector(config).collect(store, now=now - 30)
        (key,) = json.loads((Path(directory) / "state.json").read_text())["workers"]
        doc = _baseline(now - 30, key, worker.pid)
        targets = _targets(doc)
        for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="poisoned")):
            path, field = data.draw(st.sampled_from(targets), label="where")
            _set(doc, path, field, data.draw(BAD, label="value"))
        (Path(directory) / "state.json").write_text(json.dumps(doc, allow_nan=True))

        with FileStateStore(directory) as store:
            result = Collector(config).collect(store, now=now)
        assert result.errors.get("state", 0) <= 1, "one warning for whatever was dropped"
        lines = to_line(result, config, Sections()).splitlines(keepends=True)
        payloads = [check_line(line) for line in lines]
        ups = [m for p in payloads for m in find(p, "workerwatch.worker.up")]
        assert [m["attributes"]["process.pid"] for m in ups if m["value"] == 1] == [worker.pid]
        for m in (m for p in payloads for m in p["data"][0]["metrics"]):
            assert math.isfinite(m["value"]) and abs(m["value"]) < 1e15, m
        # What this run saved is exactly what it can read back.
        with FileStateStore(directory) as store:
            store.load(now + 1)
            assert store.problems == []
    assert first.workers
