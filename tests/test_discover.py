"""Discovery on the real process table: groups, pidfiles, units, exclusions."""

from __future__ import annotations

from pathlib import Path

from workerwatch.config import from_data
from workerwatch.host.discover import discover, unit_from_cgroup

from tests.fleet import wait_for


def group(tag, **match):
    return from_data({"groups": [{"name": "g", "match": match}]}).groups[0]


def test_unit_from_cgroup_v2_and_v1():
    assert unit_from_cgroup("0::/system.slice/system-worker.slice/worker@3.service\n") == (
        "worker@3.service"
    )
    v1 = "12:pids:/x\n1:name=systemd:/system.slice/worker@1.service/sub\n"
    assert unit_from_cgroup(v1) == "worker@1.service"
    assert unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") is None


def test_cmdline_and_pidfile_rules_combine(tmp_path, tag, fleet):
    a = fleet.start("sleeper")
    b = fleet.start("sleeper")
    (tmp_path / "a.pid").write_text(f"{a.pid}\n")
    (tmp_path / "junk.pid").write_text("not a pid")
    wait_for(lambda: tag in Path(f"/proc/{b.pid}/cmdline").read_text().replace("\0", " "))
    found = discover([group(tag, cmdline=tag)])
    assert sorted(w.pid for w in found.workers) == sorted([a.pid, b.pid])
    assert all(w.group == "g" and w.create_time > 0 for w in found.workers)
    both = discover([group(tag, cmdline=tag, pidfile=str(tmp_path / "*.pid"))])
    assert [w.pid for w in both.workers] == [a.pid]
    assert any("junk.pid" in message for _, message in both.problems)


def test_own_process_and_non_matching_children_are_not_workers(tag, fleet):
    import os

    found = discover([group(tag, cmdline="python")])
    assert os.getpid() not in {w.pid for w in found.workers}
