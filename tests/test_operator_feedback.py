"""What an operator is told about a configuration and a state directory, message by message.

Every case runs the real program (``python -m workerwatch``) against real files and, where
the message is about processes, real child processes (tests/children/worker_kinds.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet import package_readable_by_others, wait_for
from tests.v4 import check_line, find, write_config


def cli(*args: str, env: dict | None = None, user: int | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "WORKERWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "workerwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        user=user,
    )


def sleeper_pattern(tag: str) -> str:
    """Anchored on the interpreter and the script, as the README advises."""
    return rf"^{sys.executable} \S*worker_kinds\.py sleeper {tag}( |$)"


def group(tag: str, **extra: object) -> dict:
    return {"name": "fleet", "match": {"cmdline": sleeper_pattern(tag)}, **extra}


# --------------------------------------------------------------------- unknown keys, files


def test_a_misspelled_top_level_key_is_named_with_the_key_it_meant(tmp_path):
    path = write_config(tmp_path / "c.yml", {"group": [group("x")]})
    done = cli("check-config", "--config", str(path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"[FATAL] config {path}: group: unknown key (did you mean groups?)\n"


def test_a_misspelled_nested_key_is_named_with_the_key_it_meant(tmp_path):
    path = write_config(tmp_path / "c.yml", {"groups": [group("x", expectd=5)]})
    done = cli("check-config", "--config", str(path))
    assert done.returncode == 1
    assert done.stderr == f"[FATAL] config {path}: groups.0.expectd: unknown key (did you mean expected?)\n"  # fmt: skip


def test_an_unknown_key_with_no_near_name_still_comes_first(tmp_path):
    path = write_config(tmp_path / "c.yml", {"zzz": 1})
    done = cli("check-config", "--config", str(path))
    assert done.returncode == 1
    assert done.stderr == f"[FATAL] config {path}: zzz: unknown key (check the spelling) (and 1 more)\n"  # fmt: skip


def agent_file(path: Path, *entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"integrations": list(entries)}, sort_keys=False))
    return path


def test_an_integrations_d_file_given_as_config_says_to_use_agent_config(tmp_path):
    path = agent_file(tmp_path / "workerwatch-config.yml", {"name": "nri-workerwatch", "config": {"groups": [group("x")]}})  # fmt: skip
    for command in (["check-config"], ["status"], []):
        done = cli(*command, "--config", str(path))
        assert (done.returncode, done.stdout) == (1, ""), command
        assert done.stderr == (
            f"[FATAL] config {path}: this is an agent integrations.d file (top-level "
            f"integrations:), not an nri-workerwatch config; pass it with --agent-config {path}\n"
        ), command


def test_a_tab_in_the_yaml_is_called_a_tab(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("groups:\n  - name: fleet\n    match:\n\tcmdline: worker\n")
    done = cli("check-config", "--config", str(path))
    assert done.returncode == 1
    assert done.stderr == f"[FATAL] config {path}: not valid YAML at line 4, column 1: a tab character; YAML indents with spaces only\n"  # fmt: skip


# ---------------------------------------------------------------- check-config --agent-config


def test_agent_config_checks_every_inline_config(tmp_path, tag, fleet):
    fleet.start("sleeper")
    wait_for(lambda: cli("check-config", "--config", str(write_config(tmp_path / "probe.yml", {"groups": [group(tag)]}))).stderr == "", what="the sleeper to start")  # fmt: skip
    path = agent_file(
        tmp_path / "workerwatch-config.yml",
        {
            "name": "nri-workerwatch",
            "exec": ["/usr/bin/python3", "/x/bin/nri-workerwatch"],
            "config": {"groups": [group(tag)]},
        },
        {"name": "nri-other", "config": {"anything": 1}},
        {"name": "nri-workerwatch", "config": {"group": [group(tag)]}},
        {
            "name": "workerwatch-text",
            "exec": "/x/bin/nri-workerwatch",
            "config": "groups:\n\t- name: x\n",
        },
    )
    done = cli("check-config", "--agent-config", str(path))
    assert done.returncode == 1
    assert done.stdout == f"config OK: {path} (inline config of integrations entry 1, nri-workerwatch): 1 group(s): fleet\n"  # fmt: skip
    assert done.stderr.splitlines() == [
        f"[FATAL] config {path} (inline config of integrations entry 3, nri-workerwatch): group: unknown key (did you mean groups?)",
        f"[FATAL] config {path} (inline config of integrations entry 4, workerwatch-text): not valid YAML at line 2, column 1: a tab character; YAML indents with spaces only",
    ]
    # A directory: each file, as the agent reads them.
    (tmp_path / "d").mkdir()
    good = agent_file(tmp_path / "d" / "a.yml", {"name": "nri-workerwatch", "config": {"groups": [group(tag)]}})  # fmt: skip
    done = cli("check-config", "--agent-config", str(good.parent))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"config OK: {good} (inline config of integrations entry 1, nri-workerwatch): 1 group(s): fleet\n"  # fmt: skip


def test_agent_config_without_our_entry_is_one_fatal_line(tmp_path):
    path = agent_file(tmp_path / "other.yml", {"name": "nri-other", "config": {"a": 1}})
    done = cli("check-config", "--agent-config", str(path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"[FATAL] no nri-workerwatch entry with an inline config: in {path}\n"


# Nine levels of nine aliases each: 9**9 nodes once expanded, indented as an inline config.
ALIAS_BOMB = "".join(
    f"k{i}: &k{i} [" + ", ".join([f"*k{i - 1}" if i else "x"] * 9) + "]\n      " for i in range(9)
)


@pytest.mark.parametrize(
    ("inline", "words"),
    [
        ("[" * 20000 + "]" * 20000, "not valid YAML"),
        (ALIAS_BOMB, "document expands to too many nodes"),
    ],
    ids=["nested", "aliases"],
)
def test_an_agent_file_nested_too_deep_or_an_alias_bomb_is_one_fatal_line(tmp_path, inline, words):  # fmt: skip
    """The agent file is parsed as the config is: bounded, and every failure one line."""
    path = tmp_path / "workerwatch-config.yml"
    path.write_text(f"integrations:\n  - name: nri-workerwatch\n    config:\n      {inline}\n")
    done = cli("check-config", "--agent-config", str(path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"[FATAL] agent config {path}: {words}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    # status finds no usable entry there: one line too, never a traceback.
    done = cli("status", "--agent-config", str(path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("[FATAL] no configuration: "), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


# ----------------------------------------------------------------------- nothing matches


def test_rules_and_globs_that_find_nothing_are_warned_one_line_each(tmp_path, tag, fleet):
    """A real worker runs under another name than the one configured: the config is valid,
    so exit 0, and each rule and glob that finds nothing is one [WARN] line."""
    worker = fleet.start("sleeper")
    other = subprocess.Popen(["sleep", "600"])  # a process the cmdline does not match
    fleet.procs.append(other)
    pidfile = tmp_path / "other.pid"
    pidfile.write_text(f"{other.pid}\n")
    wrong = rf"^{sys.executable} \S*worker_kinds\.py logger {tag}( |$)"
    config = write_config(
        tmp_path / "c.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [
                {"name": "typo", "match": {"cmdline": wrong}, "logs": [str(tmp_path / "logs/*.log")],
                 "heartbeats": str(tmp_path / "hb/*.json")},
                {"name": "unit", "match": {"systemd_unit": "nosuch-worker@*.service"}},
                {"name": "both", "match": {"cmdline": sleeper_pattern(tag), "pidfile": str(pidfile)}},
                {"name": "right", "match": {"cmdline": sleeper_pattern(tag)}},
            ],
        },
    )  # fmt: skip
    wait_for(lambda: Path(f"/proc/{worker.pid}/cmdline").read_bytes().count(b"\0") >= 3)
    done = cli("check-config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "config OK: 4 group(s): typo, unit, both, right\n"
    assert done.stderr.splitlines() == [
        f"[WARN] group typo: match.cmdline '{wrong}' matches no running process",
        f"[WARN] group typo: logs '{tmp_path}/logs/*.log' matches no file",
        f"[WARN] group typo: heartbeats '{tmp_path}/hb/*.json' matches no file",
        "[WARN] group unit: match.systemd_unit 'nosuch-worker@*.service' matches no running process",
        "[WARN] group both: no running process satisfies match.cmdline and match.pidfile together",
    ]
    # The same file once the worker, its log and heartbeat are there: nothing to say.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/w.log").write_text("")
    (tmp_path / "hb").mkdir()
    (tmp_path / "hb/w.json").write_text("")
    fleet.start("logger", tmp_path / "logs/w.log", 0.5)
    wait_for(lambda: "typo: match" not in cli("check-config", "--config", str(config)).stderr, what="the logger")  # fmt: skip
    pidfile.write_text(f"{worker.pid}\n")
    done = cli("check-config", "--config", str(config))
    assert done.stderr.splitlines() == [
        "[WARN] group unit: match.systemd_unit 'nosuch-worker@*.service' matches no running process"
    ]


def test_a_pidfile_naming_a_dead_process_is_warned(tmp_path, tag, fleet):
    dead = fleet.start("sleeper")
    dead.kill()
    dead.wait()
    pidfile = tmp_path / "w.pid"
    pidfile.write_text(f"{dead.pid}\n")
    config = write_config(tmp_path / "c.yml", {"groups": [{"name": "p", "match": {"pidfile": str(pidfile)}}]})  # fmt: skip
    done = cli("check-config", "--config", str(config))
    assert (done.returncode, done.stdout) == (0, "config OK: 1 group(s): p\n")
    assert done.stderr == f"[WARN] group p: match.pidfile '{pidfile}' matches no running process\n"


# ------------------------------------------------------------------------- global flags


def test_global_flags_work_before_or_after_the_subcommand(tmp_path, tag, fleet):
    config = str(write_config(tmp_path / "c.yml", {"groups": [group(tag)]}))
    fleet.start("sleeper")
    for argv in (
        ["-verbose", "check-config", "--config", config],
        ["check-config", "-verbose", "--config", config],
        ["-config", config, "check-config"],
        ["--config=" + config, "-verbose", "check-config"],
    ):
        done = cli(*argv)
        assert (done.returncode, done.stdout) == (0, "config OK: 1 group(s): fleet\n"), (argv, done.stderr)  # fmt: skip
    # A flag the subcommand does not take is refused by its own parser, by name.
    done = cli("-pretty", "check-config", "--config", config)
    assert done.returncode == 2
    assert "nri-workerwatch check-config: error: unrecognized arguments: --pretty" in done.stderr
    # A subcommand's name as a flag's value is the value.
    done = cli("-config", "status", "-pretty")
    assert done.returncode == 1
    assert done.stderr == "[FATAL] config status: cannot read: No such file or directory\n"


# ------------------------------------------------------------------------ status width


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        try:
            chunk = os.read(fd, 65536) if ready else b""
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_status_cuts_reasons_on_a_terminal_only(tmp_path, tag, fleet):
    worker = fleet.start("sleeper")
    task = "ReprocessArticleWithAVeryLongTaskNameThatNoTerminalColumnCanHoldWhole" * 2
    (tmp_path / "hb").mkdir()
    beat = {"version": 1, "pid": worker.pid, "time": time.time(), "seq": 1, "state": "busy",
            "task": {"name": task, "started": time.time() - 5}}  # fmt: skip
    (tmp_path / "hb" / f"{worker.pid}.json").write_text(json.dumps(beat))
    config = write_config(tmp_path / "c.yml", {"state_dir": str(tmp_path / "state"), "groups": [group(tag, heartbeats=str(tmp_path / "hb/*.json"))]})  # fmt: skip
    argv = [sys.executable, "-m", "workerwatch", "status", "--config", str(config), "--color", "never"]  # fmt: skip

    def reasons(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("      busy on ")]

    (piped,) = reasons(subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout)
    assert piped.startswith(f"      busy on {task} for ") and piped.endswith(
        " ago; no log file open"
    )
    assert "…" not in piped

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    out = _read_all(leader).decode().replace("\r\n", "\n")
    proc.wait(timeout=60)
    os.close(leader)
    (on_tty,) = reasons(out)
    assert len(on_tty) == 80 and on_tty.endswith("…")
    assert on_tty == f"      busy on {task}"[:79] + "…"


# --------------------------------------------------------------------------- state_dir


def test_an_unusable_state_dir_is_an_error_and_the_verdicts_say_why(tmp_path, tag, fleet):
    worker = fleet.start("sleeper")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state_dir = blocker / "state"
    config = write_config(tmp_path / "c.yml", {"state_dir": str(state_dir), "groups": [group(tag)]})
    wait_for(lambda: Path(f"/proc/{worker.pid}/cmdline").read_bytes().count(b"\0") >= 3)
    for _ in range(2):  # every run, not only the first: nothing is ever compared
        done = cli("--config", str(config))
        assert done.returncode == 0
        assert done.stderr == (
            f"[ERR] state_dir {state_dir} not writable: Not a directory; nothing is kept "
            "between runs, so a worker's verdict stays unknown (make it writable for this "
            "user, or set state_dir)\n"
        )
        payload = check_line(done.stdout)
        (up,) = find(payload, "workerwatch.worker.up", **{"process.pid": worker.pid})
        assert up["attributes"]["worker.state"] == "unknown"
        assert up["attributes"]["worker.reason"] == "no saved state: cannot compare runs"
        (errors,) = find(payload, "workerwatch.integration.errors", probe="state")
        assert errors["value"] == 1


def test_the_full_reason_names_the_state_dir_and_the_error(tmp_path, tag, fleet):
    """As another user (the agent's own user, or an operator): a root-only directory."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the integration as another user")
    if not package_readable_by_others():
        pytest.skip("the checkout is under a folder another user cannot enter")
    worker = fleet.start("sleeper")
    # pytest's tmp_path sits under a 0700 directory: a place the other user can read.
    here = Path(tempfile.mkdtemp(prefix="workerwatch-state-"))
    here.chmod(0o755)
    state_dir = here / "state"
    state_dir.mkdir(mode=0o700)
    config = write_config(here / "c.yml", {"state_dir": str(state_dir), "groups": [group(tag)]})
    config.chmod(0o644)
    wait_for(lambda: Path(f"/proc/{worker.pid}/cmdline").read_bytes().count(b"\0") >= 3)
    script = (
        "import sys\n"
        "from workerwatch.collector import Collector\n"
        "from workerwatch.config import load\n"
        "from workerwatch.state import FileStateStore\n"
        "config = load(sys.argv[1])\n"
        "with FileStateStore(config.state_dir) as store:\n"
        "    result = Collector(config).collect(store)\n"
        "print(result.workers[0].reason)\n"
        "print(result.errors['state'])\n"
    )
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"no saved state (state_dir {state_dir} not writable: Permission denied): cannot compare runs",
        "1",
    ]
    assert done.stderr.startswith(f"[ERR] state_dir {state_dir} not writable: Permission denied;")
    assert done.stderr.count("\n") == 1
    shutil.rmtree(here)
