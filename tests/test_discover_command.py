"""``nri-workerwatch discover`` on real processes, and its proposal fed to a real collection.

The shapes it must tell apart: a templated worker set sharing one log (in cgroups named
like systemd template units when cgroup v2 is writable here, else by command line), a
different script whose name contains the same word, a one-off process with the same
interpreter, and a shell. A unit is what ``/proc/PID/cgroup`` names, so placing a test
process in a cgroup called ``NAME@N.service`` is what systemd does for ``NAME@N``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from workerwatch.commands.discover.grouping import _key_regex, _script, _stem, _template
from workerwatch.commands.discover.render import _heartbeat_pids

from tests.fleet import run_integration, wait_for
from tests.v4 import check_line, find

CGROUP2 = Path("/sys/fs/cgroup/unified")
if not (CGROUP2 / "cgroup.procs").exists():
    CGROUP2 = Path("/sys/fs/cgroup")

WORKER = textwrap.dedent(
    """
    import sys, time
    log = open(sys.argv[2], "a", buffering=1)
    while True:
        log.write("polled\\n")
        time.sleep(0.3)
    """
)
ONEOFF = "import time\ntime.sleep(120)\n"
# No log at all: a worker only by the heartbeat directory in its environment.
BEATER = textwrap.dedent(
    """
    import time
    from workerwatch.heartbeat import Heartbeat
    hb = Heartbeat.from_env()
    while True:
        hb.beat()
        time.sleep(0.3)
    """
)


def _cgroups_writable() -> bool:
    probe = CGROUP2 / f"wwtest-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return (CGROUP2 / "cgroup.procs").exists()
    except OSError:
        return False


class Host:
    """Real processes in the shapes discover meets, stopped (and cgroups removed) after."""

    def __init__(self, tmp_path: Path, tag: str) -> None:
        self.dir = tmp_path / f"opt-{tag}"
        self.dir.mkdir()
        self.tag = tag
        self.procs: list[subprocess.Popen] = []
        self.cgroups: list[Path] = []
        (self.dir / "worker.py").write_text(WORKER)
        (self.dir / "queue_worker.py").write_text(WORKER)
        (self.dir / "report_once.py").write_text(ONEOFF)
        (self.dir / "beater.py").write_text(BEATER)

    def start(
        self, *args: str, cgroup: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        proc = subprocess.Popen(
            [*args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=self.dir,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        if cgroup is not None:
            path = CGROUP2 / f"wwtest-{self.tag}.slice" / cgroup
            path.mkdir(parents=True, exist_ok=True)
            self.cgroups.append(path)
            (path / "cgroup.procs").write_text(str(proc.pid))
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for path in [*self.cgroups, *{p.parent for p in self.cgroups}]:
            if path.exists():
                path.rmdir()


@pytest.fixture
def host(tmp_path, tag):
    h = Host(tmp_path, tag)
    yield h
    h.stop()


def _discover(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workerwatch", "discover", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _listed(proposal: str) -> dict[str, set[int]]:
    """group name -> the pids discover listed above it (its ``# N process(es) ...`` line)."""
    listed: dict[str, set[int]] = {}
    pids: set[int] = set()
    for line in proposal.splitlines():
        found = re.match(r"\s*# \d+ process\(es\) .*: pids ([\d, ]+)$", line)
        if found:
            pids = {int(p) for p in found.group(1).split(", ")}
        named = re.match(r"\s*- name: '(.*)'$", line)
        if named:
            listed[named.group(1)] = pids
    return listed


@pytest.mark.parametrize("units", [True, False], ids=["systemd-units", "cmdline"])
def test_discover_tells_the_shapes_apart_and_the_collection_agrees(tmp_path, tag, host, units):
    if units and not _cgroups_writable():
        pytest.skip("cgroup v2 is not writable here: the unit path is covered by the fixture test")
    log = host.dir / "worker.log"
    py = sys.executable
    unit = f"wwt{tag.replace('-', '')}"
    workers = [
        host.start(py, str(host.dir / "worker.py"), tag, str(log),
                   cgroup=f"{unit}@{i}.service" if units else None)
        for i in range(3)
    ]  # fmt: skip
    queue_worker = host.start(py, str(host.dir / "queue_worker.py"), tag, str(host.dir / "q.log"))
    oneoff = host.start(py, str(host.dir / "report_once.py"), tag)  # same interpreter, no log
    beats = host.dir / "hb"
    beats.mkdir()
    beater = host.start(py, str(host.dir / "beater.py"), tag,
                        env={"WORKERWATCH_HEARTBEAT_DIR": str(beats)})  # fmt: skip
    shell = host.start("/bin/sh", "-c", f"exec 3>>{host.dir / 'sh.log'}; sleep 120 # {tag}")
    wait_for(lambda: log.exists() and log.read_text().count("polled") >= 6, what="workers logging")
    wait_for(lambda: any(beats.iterdir()), what="heartbeat written")

    out_file = tmp_path / "proposed.yml"
    done = _discover(
        "--match", re.escape(str(host.dir)) + "|" + re.escape(tag),
        "--min-age", "0", "--sample", "1s",
        "--state-dir", str(tmp_path / "state"), "--write", str(out_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    proposal = out_file.read_text()
    config = yaml.safe_load(proposal)
    groups = {g["name"]: g for g in config["groups"]}

    listed = _listed(proposal)
    want = {p.pid for p in workers}
    worker_group = unit if units else "worker"
    assert listed == {
        worker_group: want,
        "queue_worker": {queue_worker.pid},
        "beater": {beater.pid},
    }, proposal
    assert oneoff.pid not in set().union(*listed.values())
    assert shell.pid not in set().union(*listed.values())

    first = groups[worker_group]
    if units:
        assert first["match"] == {"systemd_unit": f"{unit}@*.service"}
    else:
        regex = first["match"]["cmdline"]
        assert regex.startswith("^")
        assert re.search(regex, f"{py} {host.dir}/worker.py {tag} {log}")
        assert not re.search(regex, f"{py} {host.dir}/queue_worker.py {tag} {log}")
    assert first["expected"] == 3
    assert first["logs"] == [str(log)]
    assert "held open for writing by all 3 (one shared file)" in proposal
    assert groups["queue_worker"]["logs"] == [str(host.dir / "q.log")]
    assert groups["queue_worker"]["expected"] == 1
    assert groups["beater"]["heartbeats"] == str(beats / "*.json")
    assert "logs" not in groups["beater"]

    # Never overwritten without --force.
    again = _discover("--match", re.escape(str(host.dir)), "--min-age", "0", "--sample", "0s",
                      "--write", str(out_file))  # fmt: skip
    assert again.returncode == 1 and "--force" in again.stderr
    assert out_file.read_text() == proposal

    # The proposal as is, run by the one-shot: exactly the listed processes, per group.
    payload = check_line(run_integration(out_file)[0])
    seen: dict[str, set[int]] = {}
    for metric in find(payload, "workerwatch.worker.up"):
        attrs = metric["attributes"]
        seen.setdefault(attrs["worker.group"], set()).add(attrs["process.pid"])
    assert seen == listed


def test_template_units_and_scripts_are_read_as_an_operator_would():
    assert _template("worker@3.service") == "worker@*.service"
    assert _template("getty@tty1.service") is None  # the system's own templates
    assert _template("user@1000.service") is None
    assert _template("cron.service") is None
    assert _script(["python3", "-u", "/opt/bot/worker.py", "--env", "prod"]) == "/opt/bot/worker.py"
    assert _script(["python3", "-m", "demo.worker", "--fleet", "x"]) == "-m demo.worker"
    assert _stem("-m demo.cron") == "cron" and _stem("/opt/bot/queue_worker.py") == "queue_worker"
    assert _script(["python3", "-c", "import time"]) is None  # code on the command line: a one-off
    regex = _key_regex("/usr/bin/python3", "worker.py")
    assert re.search(regex, "/usr/bin/python3 -u worker.py --env prod")
    for other in ("queue_worker.py", "era_queue_worker.py", "accepted_submission_queue_worker.py"):
        assert not re.search(regex, f"/usr/bin/python3 {other} --env prod")


def test_heartbeat_files_are_read_as_the_collection_reads_them(tmp_path):
    """A hostile file in the heartbeat directory (JSON nested past the parser's recursion
    limit, a FIFO, a symlink) is skipped; the valid beats still name their writers."""
    beats = tmp_path / "hb[1]"  # a directory name that is a glob pattern too
    beats.mkdir()
    (beats / "a.json").write_text('{"version": 1, "time": 1700000000, "pid": 4242}')
    (beats / "b.json").write_text("[" * 60000)
    (beats / "c.json").write_text('{"version": 2, "time": 1700000000, "pid": 4243}')
    os.mkfifo(beats / "d.json")
    (beats / "e.json").symlink_to(beats / "a.json")
    (beats / "f.json").write_text('{"version": 1, "time": 1700000000, "pid": 4244}')
    assert _heartbeat_pids(str(beats)) == {4242, 4244}


def test_agent_file_loads_in_the_agent_format_and_is_not_overwritten(tmp_path, tag, host):
    log = host.dir / "worker.log"
    host.start(sys.executable, str(host.dir / "worker.py"), tag, str(log))
    wait_for(lambda: log.exists(), what="worker logging")
    target = tmp_path / "workerwatch-config.yml"
    args = ("--match", re.escape(str(host.dir)), "--min-age", "0", "--sample", "0s",
            "--agent", "--write", str(target))  # fmt: skip
    assert _discover(*args).returncode == 0
    data = yaml.safe_load(target.read_text())
    (entry,) = data["integrations"]
    assert entry["name"] == "nri-workerwatch"
    assert entry["config"]["groups"][0]["expected"] == 1
    from workerwatch.config.agent import agent_entries

    assert agent_entries(str(target))
    target.write_text("kept")
    assert _discover(*args).returncode == 1
    assert target.read_text() == "kept"
    assert _discover(*args, "--force").returncode == 0


def test_no_worker_found_writes_nothing(tmp_path, tag, host):
    host.start(sys.executable, str(host.dir / "report_once.py"), tag)  # no log: not a worker
    target = tmp_path / "proposed.yml"
    done = _discover("--match", re.escape(str(host.dir)), "--min-age", "0", "--sample", "0s",
                     "--write", str(target))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("[ERR] discover: no worker found")
    assert not target.exists()
