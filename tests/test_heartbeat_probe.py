"""The integration's heartbeat reader on real files: good, plain, torn, hostile."""

from __future__ import annotations

import json
import os
import time

import pytest
from workerwatch.host.heartbeat_files import FUTURE_SKEW, MAX_BYTES, observe, parse
from workerwatch.judge.naming import match_heartbeat, stem
from workerwatch.observations import HeartbeatObservation, Worker

NOW = time.time()


def beat(**overrides):
    body = {"version": 1, "worker": "worker@0", "pid": 4242, "time": NOW - 3, "seq": 7,
            "state": "busy", "task": {"name": "FTPArticle", "id": "a1", "started": NOW - 60}}  # fmt: skip
    body.update(overrides)
    return json.dumps(body).encode()


def test_a_valid_busy_beat():
    hb = parse("/hb/w.json", beat(), NOW - 100, NOW)
    assert (hb.pid, hb.worker, hb.seq, hb.state) == (4242, "worker@0", 7, "busy")
    assert hb.beat_time == NOW - 3 and hb.task.name == "FTPArticle" and hb.problem is None


def test_plain_and_empty_files_use_mtime():
    for body in (b"", b"   \n"):
        hb = parse("/hb/worker@1", body, NOW - 9, NOW)
        assert hb.beat_time == NOW - 9 and hb.problem is None and hb.pid is None
    assert stem("/hb/worker@1.json") == "worker@1" and stem("/hb/worker@1") == "worker@1"


def test_bad_bodies_fall_back_to_mtime_and_say_why():
    cases = {
        b'{"version": 1, "pid": 4': "not valid JSON",
        b"\x00\xff\xfe": "not valid JSON",
        b"[" * 100_000 + b"]" * 100_000: "larger than",
        b"[" * 30_000 + b"]" * 30_000: "not valid JSON",
        b"[1, 2]": "not a JSON object",
        json.dumps({"version": 2}).encode(): "unknown format version",
        beat(time=NOW + 3600): "in the future",
        beat(time="yesterday"): "no valid time",
        beat(time=float("nan")).replace(b"NaN", b"NaN"): "no valid time",
    }
    for body, words in cases.items():
        hb = parse("/hb/w.json", body, NOW - 50, NOW)
        assert words in (hb.problem or ""), (body[:40], hb.problem)
        assert hb.beat_time == NOW - 50


def test_a_beat_written_while_the_run_reads_is_not_from_the_future():
    """The run's clock is read when it starts; a worker may beat a moment after that."""
    for ahead in (0.5, FUTURE_SKEW - 0.5):
        hb = parse("/hb/w.json", beat(time=NOW + ahead), NOW - 50, NOW)
        assert hb.problem is None and hb.beat_time == NOW + ahead, ahead
    late = parse("/hb/w.json", beat(time=NOW + FUTURE_SKEW + 1), NOW - 50, NOW)
    assert "in the future" in late.problem and late.beat_time == NOW - 50


def test_fields_are_validated_and_sanitised():
    hb = parse("/hb/w.json", beat(pid=-5, seq=True, worker="w\nx" * 200,
               task={"name": "T\x1b[31m" + "x" * 5000, "started": NOW - 1}), NOW, NOW)  # fmt: skip
    assert hb.pid is None and hb.seq is None
    assert "\n" not in hb.worker and len(hb.worker) <= 255
    assert "\x1b" not in hb.task.name and len(hb.task.name) <= 255


def test_hostile_files_on_disk(tmp_path):
    (tmp_path / "good.json").write_bytes(beat())
    os.symlink("/etc/shadow", tmp_path / "shadow.json")
    os.symlink("/dev/zero", tmp_path / "zero.json")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "huge.json").write_bytes(b"x" * (MAX_BYTES * 4))
    (tmp_path / "bad\nname.json").write_bytes(b"")
    started = time.monotonic()
    found, problems = observe(str(tmp_path / "*.json"), NOW)
    assert time.monotonic() - started < 2, "a FIFO must not block the reader"
    by_name = {stem(h.path): h for h in found}
    assert by_name["good"].pid == 4242
    assert "huge" in by_name and "larger than" in by_name["huge"].problem
    assert "bad?name" in by_name, "control characters in names are replaced"
    text = "\n".join(problems)
    for name in ("shadow", "zero", "fifo", "dir"):
        assert name not in by_name, name
        assert f"{name}.json" in text, name


# ----------------------------------------------------------------------------- matching

UNIT_WORKER = Worker(group="g", pid=4242, create_time=NOW - 100, unit="worker@3.service")
BARE_WORKER = Worker(group="g", pid=4242, create_time=NOW - 100)


def hb(path: str, pid: int | None = None, worker: str | None = None) -> HeartbeatObservation:
    return HeartbeatObservation(path=path, beat_time=NOW, pid=pid, worker=worker)


@pytest.mark.parametrize(
    ("worker", "beats", "expected"),
    [
        # 1. the pid it declares, before any name, wherever the file is in the list
        (UNIT_WORKER, [hb("/a.json", None, "worker@3"), hb("/b.json", 4242, "other")], 1),
        (UNIT_WORKER, [hb("/worker@3.json"), hb("/b.json", 4242)], 1),
        (BARE_WORKER, [hb("/b.json", 4242, "worker@3")], 0),
        # 2. the worker name, only when the file declares no pid
        (UNIT_WORKER, [hb("/a.json", None, "worker@3")], 0),
        (UNIT_WORKER, [hb("/a.json", None, "worker@3.service")], 0),
        (UNIT_WORKER, [hb("/a.json", None, "4242")], 0),
        (UNIT_WORKER, [hb("/a.json", 999, "worker@3")], None),
        (UNIT_WORKER, [hb("/a.json", 999, "worker@3"), hb("/b.json", None, "worker@3")], 1),
        (UNIT_WORKER, [hb("/a.json", None, "worker@9")], None),
        (BARE_WORKER, [hb("/a.json", None, "worker@3")], None),
        # 3. a plain file (no pid, no name) named after the unit or the pid
        (UNIT_WORKER, [hb("/hb/worker@3.json")], 0),
        (UNIT_WORKER, [hb("/hb/worker@3")], 0),
        (UNIT_WORKER, [hb("/hb/worker@3.service")], 0),
        (BARE_WORKER, [hb("/hb/4242.json")], 0),
        (UNIT_WORKER, [hb("/hb/worker@9.json")], None),
        (BARE_WORKER, [hb("/hb/worker@3.json")], None),
        # a file that declares a pid or a name is never matched by its file name
        (UNIT_WORKER, [hb("/hb/worker@3.json", 999)], None),
        (UNIT_WORKER, [hb("/hb/worker@3.json", None, "worker@9")], None),
        (UNIT_WORKER, [], None),
    ],
)
def test_heartbeat_matching_order(worker: Worker, beats: list, expected: int | None) -> None:
    found = match_heartbeat(worker, beats)
    assert found is (None if expected is None else beats[expected])
