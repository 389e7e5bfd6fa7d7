"""Property tests: parsers and the verdict hold their promises for any input."""

from __future__ import annotations

import json
import math
import tempfile

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workerwatch.config import Config, ConfigError, parse
from workerwatch.host.heartbeat_files import parse as parse_heartbeat
from workerwatch.judge.memory import SavedState, WorkerMemory, from_json, to_json
from workerwatch.judge.states import STALLED
from workerwatch.judge.verdict import judge
from workerwatch.observations import (
    HeartbeatObservation,
    LogFd,
    LogObservation,
    ProcessObservation,
    Task,
    Worker,
    WorkerObservation,
)
from workerwatch.output.v4 import worker_metrics
from workerwatch.sanitize import MAX_TEXT
from workerwatch.state import FileStateStore

NOW = 1_800_000_000.0
# The suite shares two cores with real worker processes: no per-example deadline.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _heartbeat_invariants(hb: HeartbeatObservation) -> None:
    assert math.isfinite(hb.beat_time)
    for text in (hb.worker, hb.task.name if hb.task else None, hb.task.id if hb.task else None):
        if text is not None:
            assert len(text) <= MAX_TEXT
            assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert hb.state in (None, "idle", "busy")
    assert hb.pid is None or hb.pid > 0


@relaxed
@given(st.binary(max_size=2000))
def test_heartbeat_parser_never_raises_on_bytes(body):
    _heartbeat_invariants(parse_heartbeat("/hb", body, NOW - 5, NOW))


@relaxed
@given(
    st.dictionaries(
        st.sampled_from(["version", "pid", "time", "seq", "state", "task", "worker"]), json_values
    )
)
def test_heartbeat_parser_on_json_shaped_bodies(body):
    body.setdefault("version", 1)
    hb = parse_heartbeat("/hb", json.dumps(body).encode(), NOW - 5, NOW)
    _heartbeat_invariants(hb)
    assert hb.beat_time <= NOW + 5, "never a beat time in the future"


@relaxed
@given(st.text(max_size=500))
def test_config_loader_only_raises_config_errors_on_text(text):
    try:
        assert isinstance(parse(text), Config)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("config ")


@relaxed
@given(
    st.dictionaries(
        st.sampled_from(["state_dir", "groups", "deadline", "swf", "extra"]), json_values
    )
)
def test_config_loader_on_yaml_shaped_documents(doc):
    try:
        parse(yaml.safe_dump(doc))
    except ConfigError as exc:
        assert "\n" not in str(exc)


# A sample: seconds since the previous one, CPU and wakeups gained, log bytes, a beat or not.
samples = st.lists(
    st.tuples(
        st.floats(min_value=0.5, max_value=400),
        st.sampled_from([0.0, 0.0, 0.01, 2.0]),
        st.sampled_from([0, 0, 1, 30]),
        st.sampled_from([0, 0, 0, 120]),
        st.booleans(),
        st.sampled_from(["recvfrom", "poll", "running", None]),
    ),
    min_size=1,
    max_size=12,
)


@relaxed
@given(samples, st.floats(min_value=1, max_value=600), st.booleans())
def test_a_worker_whose_log_advanced_within_stall_after_is_never_stalled(seq, stall_after, with_hb):
    worker = Worker(group="g", pid=7, create_time=NOW - 10)
    t, cpu, vol, pos, seqno, memory, wchar = NOW, 1.0, 5, 100, 0, None, 1000
    last_write = None
    for gap, dcpu, dvol, dpos, beat, syscall in seq:
        t += gap
        cpu, vol, pos, wchar = cpu + dcpu, vol + dvol, pos + dpos, wchar + dpos
        if dpos:
            last_write = t
        seqno += beat
        hb = None
        if with_hb:
            task = Task(name="T", id=None, started=NOW - 50)
            hb = HeartbeatObservation(
                path="/hb", beat_time=NOW - 20, seq=seqno, state="busy", task=task, pid=7
            )
        proc = ProcessObservation(
            cpu_seconds=cpu, main_cpu_seconds=cpu, main_voluntary=vol, main_involuntary=0, state="S",
            syscall=syscall, syscall_nr=45, syscall_fd=4 if syscall == "recvfrom" else None, write_chars=wchar,
        )  # fmt: skip
        obs = WorkerObservation(
            worker=worker,
            log=LogObservation(fds=(LogFd(3, "/l", pos),)),
            heartbeat=hb,
            process=proc,
        )
        verdict, memory = judge(obs, "w", memory, t, stall_after)
        if last_write is not None and t - last_write < stall_after:
            assert verdict.state != STALLED, (verdict.reason, t - last_write)
        metrics = worker_metrics(verdict)
        line = json.dumps(metrics, allow_nan=False)
        assert len(line) < 64_000
        assert all(len(str(v)) <= 4095 for m in metrics for v in m["attributes"].values())
        restored = _round_trip(memory, t)
        assert restored == memory, "the state file round-trips the memory exactly"


def _round_trip(memory: WorkerMemory, now: float) -> WorkerMemory | None:
    """Through JSON and the saved-state checks, as the state file does between runs."""
    saved = json.loads(json.dumps(to_json(SavedState(workers={"k": memory}))))
    state, dropped = from_json(saved, now)
    assert dropped == []
    return state.workers.get("k")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40)
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.integers(0, 2**40), max_size=5))
def test_state_file_round_trip(log_pos_by_key):
    state = SavedState(
        workers={
            key: WorkerMemory(
                name="w",
                group="g",
                pid=7,
                first_seen=NOW - 5,
                last_seen=NOW,
                log_pos={3: pos},
                main_voluntary=pos,
            )
            for key, pos in log_pos_by_key.items()
        }
    )
    with tempfile.TemporaryDirectory() as directory:
        with FileStateStore(directory) as store:
            store.save(state)
        with FileStateStore(directory) as store:
            assert store.load(NOW) == state and store.problems == []


def test_foreign_worker_entries_are_dropped():
    good = WorkerMemory(
        name="w", group="g", pid=1, first_seen=NOW - 2, last_seen=NOW - 1, log_pos={3: 10}
    )
    saved = to_json(SavedState(workers={"good": good}))
    saved["workers"].update({"a": {"name": 3}, "b": "garbage"})
    state, dropped = from_json(json.loads(json.dumps(saved)), NOW)
    assert state.workers == {"good": good}
    assert len(dropped) == 2 and all(d.startswith("workers[") for d in dropped)
