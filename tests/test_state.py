"""The state file survives garbage, foreign versions, locks and unwritable directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from workerwatch.state import FORMAT_VERSION, FileStateStore, empty_state


def _save(state_dir, data):
    with FileStateStore(str(state_dir)) as store:
        store.save(data)


def test_round_trip_and_atomic_replace(tmp_path):
    data = empty_state()
    data["workers"]["1:2.00"] = {"name": "w", "first_seen": 1.0}
    _save(tmp_path, data)
    with FileStateStore(str(tmp_path)) as store:
        assert store.load() == data and store.problems == []
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".state.")], "no temp left"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"version": 1, "workers": {', "truncated or not JSON"),
        (b"\x00\xff garbage", "truncated or not JSON"),
        (b'{"version": 99, "workers": {}, "names": {}, "probes": {}}', "format version 99"),
        (b'{"version": 1, "workers": []}', "format version 1"),
        (b"[1, 2]", "format version None"),
    ],
)
def test_bad_state_files_start_fresh_with_one_warning(tmp_path, capsys, content, words):
    (tmp_path / "state.json").write_bytes(content)
    with FileStateStore(str(tmp_path)) as store:
        assert store.load() == empty_state()
        assert len(store.problems) == 1 and words in store.problems[0]
    err = capsys.readouterr().err
    assert err.count("[WARN]") == 1 and words in err


def test_unwritable_directory_still_runs(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    with FileStateStore(str(target / "state")) as store:
        store.save(empty_state())  # must not raise
        assert store.problems and "unusable" in store.problems[0]


def test_a_second_run_waits_for_the_lock_then_goes_read_only(tmp_path):
    _save(tmp_path, empty_state())
    with FileStateStore(str(tmp_path)) as holder:
        with FileStateStore(str(tmp_path), lock_wait=0.2) as second:
            assert not second.writable
            assert "locked by another run" in second.problems[0]
            second.save(
                {"version": FORMAT_VERSION, "workers": {"x": {}}, "names": {}, "probes": {}}
            )
        holder.save(empty_state())
    assert json.loads((tmp_path / "state.json").read_text())["workers"] == {}


def test_overlapping_real_runs_never_corrupt_the_file(tmp_path):
    """Two processes hammering the store: the file is always valid JSON of our format."""
    script = (
        "import sys; from workerwatch.state import FileStateStore\n"
        "for i in range(40):\n"
        "    with FileStateStore(sys.argv[1]) as s:\n"
        "        d = s.load(); d['workers'][sys.argv[2] + str(i)] = {'n': i}; s.save(d)\n"
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
    from workerwatch.collect import Collector
    from workerwatch.config import Config

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
    config = Config.model_validate(
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
            big = empty_state()
            big["workers"] = {str(i): {"name": "w" * 200} for i in range(200)}
            store.save(big)  # must not raise
            assert len(store.problems) == 1 and "not saved" in store.problems[0]
        assert not [p for p in os.listdir(mountpoint) if p.startswith(".state.")], "no temp left"
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_vanished_worker_is_reported_gone_until_forget_after_then_forgotten(tag, fleet):
    """README: gone (up = 0) for ``forget_after`` after it was last seen, then forgotten."""
    from workerwatch.collect import Collector
    from workerwatch.config import Config
    from workerwatch.state import StateStore

    from tests.fleet import wait_for

    worker = fleet.start("sleeper")
    cmdline = Path(f"/proc/{worker.pid}/cmdline")
    wait_for(lambda: tag.encode() in cmdline.read_bytes())
    config = Config.model_validate(
        {"forget_after": "1h", "groups": [{"name": "g", "match": {"cmdline": tag}}]}
    )
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
    assert store.data["workers"] == {} and store.data["names"] == {}
