"""What the agent's one-shot run loads at start-up.

The agent starts the one-shot every 15-30 s on every host, so its start-up is paid for
ever: the plain global flags are read without building the argparse parser, and modules
only some runs need (argparse for other command lines, OpenSSL through hashlib, the stack
capture with subprocess and threading, the wait and work-tree readers for a worker whose
main thread did not move) are imported only by a run that needs them.
"""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from workerwatch import cli
from workerwatch.config.load import _cache_key

from tests.fleet import wait_for
from tests.v4 import check_line, write_config

READ_QUICKLY = [
    [],
    ["--config", "c.yml"],
    ["-config", "c.yml"],
    ["--config=c.yml"],
    ["-config=c.yml"],
    ["-state_dir", "/s", "--config", "x"],
    ["--state-dir", "/s"],
    ["--state_dir=/s"],
    ["-metrics", "-inventory", "-events", "-pretty", "-verbose"],
    ["--metrics", "--inventory", "--events", "--pretty", "--verbose"],
    ["-show_version"],
    ["--show_version"],
    ["--show-version"],
    ["--config", "a", "--config", "b"],  # the last one wins, as in argparse
    ["--config", "status"],  # a subcommand's name as a flag's value is the value
    ["--config", ""],
]


@pytest.mark.parametrize("argv", READ_QUICKLY, ids=" ".join)
def test_plain_global_flags_are_read_as_argparse_reads_them(argv):
    quick = cli.quick_flags(argv)
    assert quick is not None
    assert vars(quick) == vars(cli.build_parser().parse_args(argv))


LEFT_TO_ARGPARSE = [
    ["-h"],
    ["--help"],
    ["--conf", "x"],  # argparse's abbreviations
    ["--config"],
    ["--config", "-metrics"],
    ["--config="],
    ["-metrics=1"],
    ["--bogus"],
    ["-metrics", "extra"],
    ["status"],
    ["-verbose", "run", "--cycles", "1"],
]


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=" ".join)
def test_anything_else_is_left_to_argparse(argv):
    assert cli.quick_flags(argv) is None


def test_the_config_cache_key_is_the_files_sha256():
    raw = b"state_dir: /x\ngroups: []\n"
    assert _cache_key(raw).endswith(":" + hashlib.sha256(raw).hexdigest())


# Seen in the run's own process; the host-phase child forks from it, so none of these was
# imported before the fork either (host.work, when a worker needs it, is imported there).
HEAVY = (
    "argparse",
    "hashlib",
    "_hashlib",
    "subprocess",
    "threading",
    "workerwatch.host.stack",
    "workerwatch.host.work",
    "workerwatch.host.waits",
    "workerwatch.host.worktree",
    "workerwatch.judge.work",
)

# The one-shot (the CLI's main, as the entry point calls it), then the modules it loaded.
PROBE = (
    "import sys; sys.argv = ['workerwatch', '--config', sys.argv[1]]\n"
    "from workerwatch.cli import main\n"
    "try:\n    main()\n"
    "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
    "sys.stdout.flush()\n"
    f"sys.stderr.write('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def _one_shot(config) -> tuple[dict, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED=" in done.stderr, done.stderr
    loaded = done.stderr.rpartition("LOADED=")[2]
    return check_line(done.stdout), [m for m in loaded.split(",") if m]


def _worker_up(payload: dict) -> list[dict]:
    metrics = [m for d in payload["data"] for m in d["metrics"]]
    return [m for m in metrics if m["name"] == "workerwatch.worker.up"]


def _logging_worker(tmp_path, tag, fleet) -> tuple[subprocess.Popen, Path, Path]:
    """A worker writing its log every 50 ms, and a config whose one group is that worker."""
    log = tmp_path / "worker.log"
    worker = fleet.start("logger", str(log), 0.05)
    wait_for(lambda: log.exists() and log.stat().st_size, what="the worker's first log line")
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": tag}, "logs": [str(tmp_path / "*.log")]}],
        },
    )
    return worker, log, config


def test_a_one_shot_of_a_working_fleet_loads_only_what_it_needs(tmp_path, tag, fleet):
    worker, log, config = _logging_worker(tmp_path, tag, fleet)
    _one_shot(config)  # the first run validates the config and leaves the state
    size = log.stat().st_size
    wait_for(lambda: log.stat().st_size > size, what="a log line after the first run")
    payload, loaded = _one_shot(config)
    up = _worker_up(payload)
    assert [m["attributes"]["process.pid"] for m in up] == [worker.pid], json.dumps(payload)
    assert up[0]["attributes"]["worker.state"] in ("working", "idle")
    assert loaded == [], f"a run that needs none of them loaded {loaded}"


def test_a_worker_whose_main_thread_did_not_move_gets_the_wait_readers(
    tmp_path, tag, fleet, silent_server
):
    """The readers imported late still run when needed: the hung worker's wait is read (in
    the host-phase child) and named with its peer."""
    log = tmp_path / "worker.log"
    worker = fleet.start("hung", str(log), "127.0.0.1", silent_server.port)
    wait_for(lambda: "connected" in (log.read_text() if log.exists() else ""), what="connect")
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": tag}, "logs": [str(log)]}],
        },
    )
    _one_shot(config)
    payload, _ = _one_shot(config)
    up = _worker_up(payload)
    assert [m["attributes"]["process.pid"] for m in up] == [worker.pid]
    reason = up[0]["attributes"]["worker.reason"]
    assert f"recvfrom on 127.0.0.1:{silent_server.port}" in reason, up[0]["attributes"]


# The one-shot (the CLI's main, as the entry point calls it), noting whether the cyclic GC
# was on as each of our modules was imported.
GC_PROBE = (
    "import gc, json, sys\n"
    "seen = {}\n"
    "class Spy:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.startswith('workerwatch'):\n"
    "            seen.setdefault(name, gc.isenabled())\n"
    "sys.meta_path.insert(0, Spy())\n"
    "sys.argv = ['workerwatch', '--config', sys.argv[1]]\n"
    "from workerwatch.cli import main\n"
    "out, sys.stdout = sys.stdout, open('/dev/null', 'w')\n"
    "try:\n    main()\n"
    "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
    "out.write(json.dumps(seen))\n"
)


def test_the_one_shot_imports_its_modules_with_the_cyclic_gc_off(tmp_path):
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "zzz-none"}}],
        },
    )
    for _ in range(2):  # the second run reads the config cache, as the agent's runs do
        done = subprocess.run(
            [sys.executable, "-c", GC_PROBE, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {"workerwatch.records", "workerwatch.collector", "workerwatch.judge.verdict"} <= set(
        seen
    )
    on = sorted(name for name, enabled in seen.items() if enabled)
    assert on == ["workerwatch", "workerwatch.cli"], on


def test_a_subcommand_runs_with_the_cyclic_gc_on(tmp_path):
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "zzz-none"}}],
        },
    )
    assert gc.isenabled()
    try:
        assert cli.main(["check-config", "--config", str(config)]) == 0
        assert gc.isenabled(), "a resident subcommand must keep the usual collector"
    finally:
        gc.enable()


# The program's entry point as the console script, the zipapp and `python -m` call it, with
# an exit handler that says whether the interpreter's teardown ran.
ENTRY_PROBE = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: os.write(2, b'TEARDOWN'))\n"
    "sys.argv = ['nri-workerwatch', *sys.argv[1:]]\n"
    "from workerwatch.cli import entry\n"
    "entry()\n"
)


def _entry(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ENTRY_PROBE, *argv], capture_output=True, text=True, timeout=60
    )


def test_a_one_shot_ends_without_the_interpreters_teardown(tmp_path, tag, fleet):
    worker, _, config = _logging_worker(tmp_path, tag, fleet)
    for _ in range(2):  # the second run judges from the state the first one saved
        done = _entry("--config", str(config))
        assert done.returncode == 0, done.stderr
        assert "TEARDOWN" not in done.stderr
    up = _worker_up(check_line(done.stdout))
    assert [m["attributes"]["process.pid"] for m in up] == [worker.pid]
    assert up[0]["attributes"]["worker.state"] != "unknown", up[0]["attributes"]


def test_other_commands_and_errors_exit_as_usual(tmp_path):
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "g", "match": {"cmdline": "zzz"}}],
        },
    )
    done = _entry("check-config", "--config", str(config))
    assert done.returncode == 0 and "TEARDOWN" in done.stderr, done.stderr
    done = _entry("--config", str(tmp_path / "missing.yml"))
    assert done.returncode == 1 and done.stderr.startswith("[FATAL] config "), done.stderr
    done = _entry("--bogus")
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr
