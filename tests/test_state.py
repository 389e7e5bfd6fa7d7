"""The state file survives garbage, foreign versions, locks and unwritable directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from workerwatch.judge.memory import FORMAT_VERSION, SavedState, WorkerMemory
from workerwatch.state import FileStateStore

NOW = time.time()


def _memory(name: str = "w") -> WorkerMemory:
    return WorkerMemory(name=name, group="g", pid=1, first_seen=NOW - 10, last_seen=NOW - 5)


def _save(state_dir, state):
    with FileStateStore(str(state_dir)) as store:
        store.save(state)


def test_round_trip_and_atomic_replace(tmp_path):
    state = SavedState(workers={"1:2.00": _memory()})
    _save(tmp_path, state)
    with FileStateStore(str(tmp_path)) as store:
        assert store.load(NOW) == state and store.problems == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".state.")], "no temp left"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"version": 1, "workers": {', "truncated or not JSON"),
        (b"\x00\xff garbage", "truncated or not JSON"),
        (b'{"version": 99, "workers": {}, "names": {}, "probes": {}}', "format version 99"),
        (b'{"version": 2, "workers": []}', "format version 2"),
        (b'{"version": 3, "workers": []}', "format version 3"),
        (b'{"version": 1, "workers": []}', "format version 1"),
        (b"[1, 2]", "format version None"),
    ],
)
def test_bad_state_files_start_fresh_with_one_warning(tmp_path, capsys, content, words):
    (tmp_path / "state.json").write_bytes(content)
    with FileStateStore(str(tmp_path)) as store:
        assert store.load(NOW) == SavedState()
        assert len(store.problems) == 1 and words in store.problems[0]
    err = capsys.readouterr().err
    assert err.count("[WARN]") == 1 and words in err


def test_a_format_1_file_is_read_in_format_2_names(tmp_path, capsys):
    """Version 1 called the main thread's counter "voluntary" and hung steps "stuck"."""
    entry = {"name": "w", "group": "g", "pid": 1, "first_seen": NOW - 10, "last_seen": NOW - 5}
    hung = {"pid": 1, "start": 7, "since": NOW - 5}
    old = {
        "version": 1,
        "workers": {"1:7": {**entry, "voluntary": 12}},
        "names": {},
        "probes": {"stuck": {"heartbeats:g": hung}},
    }
    (tmp_path / "state.json").write_text(json.dumps(old))
    with FileStateStore(str(tmp_path)) as store:
        state = store.load(NOW)
        assert store.problems == []
        assert state.workers["1:7"].main_voluntary == 12
        assert state.probes.hung["heartbeats:g"].start == 7
        store.save(state)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["version"] == FORMAT_VERSION == 4
    assert "[WARN]" not in capsys.readouterr().err


def test_a_format_3_file_keeps_its_work_tree_and_is_rewritten_as_format_4(tmp_path):
    """Version 4 added optional fields only: a version-3 unit has no entry time (unknown)."""
    unit = {"cpu": 1.5, "voluntary": 7, "wait": "recvfrom 10.0.0.5:21", "since": NOW - 5}
    entry = {"name": "w", "group": "g", "pid": 1, "first_seen": NOW - 10, "last_seen": NOW - 5}
    workers = {"1:7": {**entry, "units": {"t44": unit}}}
    old = {"version": 3, "workers": workers, "names": {}, "probes": {}}
    (tmp_path / "state.json").write_text(json.dumps(old))
    with FileStateStore(str(tmp_path)) as store:
        state = store.load(NOW)
        assert store.problems == []
        (kept,) = state.workers["1:7"].units.values()
        assert (kept.wait, kept.since, kept.entered) == ("recvfrom 10.0.0.5:21", NOW - 5, None)
        assert state.workers["1:7"].units_at is None
        store.save(state)
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 4


def test_the_readme_names_the_formats_read_and_the_one_written():
    from workerwatch.judge.memory import MIGRATES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    older = " or ".join(f"format-{v}" for v in MIGRATES)
    assert f"a {older} file is read and rewritten as format {FORMAT_VERSION} |" in readme


def test_unwritable_directory_still_runs(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    with FileStateStore(str(target / "state")) as store:
        store.save(SavedState())  # must not raise
        assert store.problems and "not writable: Not a directory" in store.problems[0]
        assert store.unusable == f"state_dir {target / 'state'} not writable: Not a directory"


def test_a_second_run_waits_for_the_lock_then_goes_read_only(tmp_path):
    _save(tmp_path, SavedState())
    with FileStateStore(str(tmp_path)) as holder:
        with FileStateStore(str(tmp_path), lock_wait=0.2) as second:
            assert not second.writable
            assert "locked by another run" in second.problems[0]
            second.save(SavedState(workers={"x": _memory()}))
        holder.save(SavedState())
    assert json.loads((tmp_path / "state.json").read_text())["workers"] == {}


def test_overlapping_real_runs_never_corrupt_the_file(tmp_path):
    """Two processes hammering the store: the file is always valid JSON of our format."""
    script = (
        "import sys, time\n"
        "from workerwatch.judge.memory import WorkerMemory\n"
        "from workerwatch.state import FileStateStore\n"
        "for i in range(40):\n"
        "    with FileStateStore(sys.argv[1]) as s:\n"
        "        now = time.time(); d = s.load(now)\n"
        "        d.workers[sys.argv[2] + str(i)] = WorkerMemory('w', 'g', 1, now, now)\n"
        "        s.save(d)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag]) for tag in "ab"]
    errors = []

    def read_loop():
        while any(p.poll() is None for p in procs):
            try:
                data = json.loads((tmp_path / "state.json").read_text())
                assert data["version"] == FORMAT_VERSION
            except FileNotFoundError:
                continue
            except Exception as exc:
                errors.append(exc)

    reader = threading.Thread(target=read_loop)
    reader.start()
    for p in procs:
        assert p.wait(timeout=60) == 0
    reader.join()
    assert errors == []
    final = json.loads((tmp_path / "state.json").read_text())
    assert len(final["workers"]) == 80, "every locked read-modify-write kept the other's entries"


def test_a_poisoned_state_of_the_right_format_is_survived(tmp_path, tag, fleet):
    """Right version, wrong types inside: entries are dropped, the run completes."""
    from workerwatch.collector import Collector
    from workerwatch.config import from_data

    from tests.fleet import wait_for

    worker = fleet.start("sleeper")
    wait_for(lambda: os.path.exists(f"/proc/{worker.pid}"))
    poisoned = {
        "version": FORMAT_VERSION,
        "workers": {
            "1:2.00": {"name": "w", "group": "g", "pid": "1", "first_seen": "x", "last_seen": []}
        },
        "names": {"w": {"key": "1:2.00", "last_seen": "yesterday"}, "v": "not a dict"},
        "probes": {"run": {"last": "never"}},
    }
    (tmp_path / "state.json").write_text(json.dumps(poisoned))
    config = from_data(
        {"state_dir": str(tmp_path), "groups": [{"name": "g", "match": {"cmdline": tag}}]}
    )
    for _ in range(2):
        with FileStateStore(str(tmp_path)) as store:
            result = Collector(config).collect(store)
    assert [v.pid for v in result.workers] == [worker.pid]
    assert result.errors == {}
    saved = json.loads((tmp_path / "state.json").read_text())
    assert set(saved["names"]) == {f"g:{worker.pid}"}


def test_a_full_disk_loses_one_save_not_the_run(tmp_path):
    """A real full file system: a tiny tmpfs, filled up before the run saves."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        with FileStateStore(str(mountpoint)) as store:
            (mountpoint / "filler").write_bytes(b"x" * 60_000)
            big = SavedState(workers={str(i): _memory("w" * 200) for i in range(200)})
            store.save(big)  # must not raise
            assert len(store.problems) == 1 and "not saved" in store.problems[0]
        assert not [p for p in os.listdir(mountpoint) if p.startswith(".state.")], "no temp left"
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_vanished_worker_is_reported_gone_until_forget_after_then_forgotten(tag, fleet):
    """README: gone (up = 0) for ``forget_after`` after it was last seen, then forgotten."""
    from workerwatch.collector import Collector
    from workerwatch.config import from_data
    from workerwatch.state import StateStore

    from tests.fleet import wait_for

    worker = fleet.start("sleeper")
    cmdline = Path(f"/proc/{worker.pid}/cmdline")
    wait_for(lambda: tag.encode() in cmdline.read_bytes())
    config = from_data({"forget_after": "1h", "groups": [{"name": "g", "match": {"cmdline": tag}}]})
    store, t0 = StateStore(), time.time()
    seen = Collector(config).collect(store, now=t0)
    assert [(v.pid, v.state) for v in seen.workers] == [(worker.pid, "unknown")]
    worker.kill()
    worker.wait()

    def gone_at(offset: float) -> list[tuple[int, bool, str]]:
        result = Collector(config).collect(store, now=t0 + offset)
        return [(v.pid, v.up, v.state) for v in result.workers]

    assert gone_at(30) == [(worker.pid, False, "gone")]
    assert gone_at(3590) == [(worker.pid, False, "gone")]
    assert gone_at(3610) == []
    saved = store.load(t0 + 3610)
    assert saved.workers == {} and saved.names == {}


def test_the_file_leaves_out_fields_that_are_none_by_default(tmp_path):
    """A None that is the field's default is not written; reading it back gives it again."""
    memory = WorkerMemory(
        name="w", group="g", pid=1, first_seen=NOW - 10, last_seen=NOW - 5, log_pos={3: 7}
    )
    _save(tmp_path, SavedState(workers={"1:2": memory}))
    written = json.loads((tmp_path / "state.json").read_text())["workers"]["1:2"]
    assert written["log_pos"] == {"3": 7} and written["name"] == "w"
    assert "stalled_since" not in written and "cpu" not in written
    assert None not in written.values()
    with FileStateStore(str(tmp_path)) as store:
        assert store.load(NOW).workers == {"1:2": memory} and store.problems == []


def test_a_resident_store_writes_on_a_verdict_change_every_interval_and_on_exit(tmp_path):
    path = tmp_path / "state.json"

    def on_disk() -> dict:
        return json.loads(path.read_text())["workers"]

    def run(state: SavedState, at: float, **workers: WorkerMemory) -> None:
        """One run as the collector saves it: new records on the same state object."""
        state.workers = {
            key: replace(m, last_seen=at, last_progress=m.last_progress or at)
            for key, m in workers.items()
        }
        store.save(state)

    state = SavedState()
    w, v = _memory(), _memory("v")
    with FileStateStore(str(tmp_path), write_every=0.5) as store:
        run(state, NOW, a=w)  # the first save is written
        assert on_disk()["a"]["last_seen"] == NOW
        run(state, NOW + 1, a=replace(w, last_progress=NOW + 1))
        run(state, NOW + 2, a=replace(w, last_progress=NOW + 2))
        # It keeps progressing: only counters moved, kept in memory.
        assert on_disk()["a"]["last_seen"] == NOW
        run(state, NOW + 3, a=replace(w, last_progress=NOW + 2))
        # It stopped progressing: written at once, so a restart knows since when.
        assert on_disk()["a"]["last_progress"] == NOW + 2
        assert on_disk()["a"]["last_seen"] == NOW + 3
        run(state, NOW + 4, a=replace(w, last_progress=NOW + 2))
        assert on_disk()["a"]["last_seen"] == NOW + 3  # still not progressing: kept
        run(state, NOW + 5, a=replace(w, last_progress=NOW + 2, state="stalled"))
        assert on_disk()["a"]["state"] == "stalled"  # a verdict changed: written at once
        stalled = replace(w, last_progress=NOW + 2, state="stalled")
        run(state, NOW + 6, a=stalled, b=v)
        assert set(on_disk()) == {"a", "b"}  # a new worker: written at once
        run(state, NOW + 7, b=v)
        assert set(on_disk()) == {"b"}  # one gone from the state: written at once
        run(state, NOW + 8, b=v)
        assert on_disk()["b"]["last_seen"] == NOW + 7
        time.sleep(0.6)
        run(state, NOW + 9, b=v)
        assert on_disk()["b"]["last_seen"] == NOW + 9  # write_every passed
        run(state, NOW + 10, b=v)
        assert on_disk()["b"]["last_seen"] == NOW + 9
    assert on_disk()["b"]["last_seen"] == NOW + 10  # written on exit


def test_a_resident_store_writes_a_change_at_most_every_write_gap(tmp_path):
    path = tmp_path / "state.json"
    state = SavedState(workers={"a": _memory()})
    with FileStateStore(str(tmp_path), write_every=60, write_gap=0.5) as store:
        store.save(state)
        state.workers = {"a": replace(_memory(), state="stalled")}
        store.save(state)  # changed, but within write_gap of the last write
        assert json.loads(path.read_text())["workers"]["a"]["state"] == "unknown"
        time.sleep(0.6)
        state.workers = {"a": replace(_memory(), state="stalled", last_seen=NOW)}
        store.save(state)  # still differs from what was written: written now
        assert json.loads(path.read_text())["workers"]["a"]["state"] == "stalled"
