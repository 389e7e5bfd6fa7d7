"""Every invalid configuration exits 1 with one [FATAL] line naming the file and the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from workerwatch.config import ConfigError, parse
from workerwatch.units import parse_duration

GOOD = """
groups:
  - name: elife-bot-worker
    match:
      cmdline: 'worker\\.py'
      systemd_unit: 'worker@*.service'
      pidfile: '/run/elife-bot/*.pid'
    expected: 5
    logs: ['/opt/elife-bot/*.log']
    heartbeats: '/run/elife-bot/heartbeat/*.json'
    stall_after: 5m
"""

BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
    for i in range(9)
)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "WORKERWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "workerwatch", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
    )


def test_the_documented_example_is_valid():
    config = parse(GOOD)
    group = config.groups[0]
    assert group.stall_after == 300.0 and group.expected == 5
    assert config.state_dir == "/var/db/newrelic-infra/data/nri-workerwatch"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace("expected:", "expectd:"), "groups.0.expectd: unknown key"),
        (GOOD.replace("'worker\\.py'", "'worker(['"), "groups.0.match.cmdline: invalid regex"),
        (GOOD.replace("/opt/elife-bot/*.log", "relative/*.log"), "must be an absolute path"),
        (GOOD.replace("stall_after: 5m", "stall_after: -5"), "duration must be positive"),
        (GOOD.replace("stall_after: 5m", "stall_after: soon"), "expected a duration"),
        (GOOD.replace("expected: 5", "expected: five"), "groups.0.expected"),
        ("groups: []\n", "groups: List should have at least 1 item"),
        ("groups:\n  - name: x\n    match: {}\n", "give at least one of cmdline"),
        ("groups: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping"),
        ("", "the file is empty"),
        (BOMB, "too many nodes"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        (GOOD + "  - name: elife-bot-worker\n    match: {cmdline: x}\n", "is used twice"),
    ],
)
def test_invalid_configs_give_one_fatal_line(tmp_path, text, words):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        parse(text, str(path))
    assert words in str(caught.value)
    done = cli("--config", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[FATAL] config "), done.stderr
    assert str(path) in lines[0] and words in lines[0]


def test_unreadable_and_missing_files(tmp_path):
    done = cli("--config", str(tmp_path / "absent.yml"))
    assert done.returncode == 1 and "cannot read" in done.stderr
    assert done.stderr.count("\n") == 1
    done = cli()
    assert done.returncode == 1
    assert done.stderr.startswith("[FATAL] no configuration given")


def test_config_path_env_is_how_the_agent_passes_it(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(GOOD)
    done = cli("check-config", env={"CONFIG_PATH": str(path)})
    assert done.returncode == 0, done.stderr
    assert "config OK: 1 group(s): elife-bot-worker" in done.stdout


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(300, 300.0), ("90s", 90.0), ("5m", 300.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_show_version_needs_no_config():
    done = cli("-show_version")
    assert done.returncode == 0 and "nri-workerwatch integration Version: 0.1.0" in done.stdout


PROBE = (
    "import sys; sys.argv = ['workerwatch', '--config', sys.argv[1]]\n"
    "from workerwatch.cli import main\n"
    "try:\n    main()\n"
    "except SystemExit: pass\n"
    "sys.stderr.write('PYDANTIC=%s YAML=%s\\n' % ('pydantic' in sys.modules, 'yaml' in sys.modules))\n"
)


def _pydantic_loaded(path) -> tuple[bool, subprocess.CompletedProcess]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=60
    )
    return "PYDANTIC=True" in done.stderr, done


def test_an_unchanged_config_is_validated_once(tmp_path):
    """The agent's every-30-s runs reuse the validation; a change is validated again."""
    path = tmp_path / "c.yml"
    path.write_text(
        f"state_dir: {tmp_path}/state\ngroups:\n  - name: g\n    match: {{cmdline: zzz-none}}\n    stall_after: 2m\n"
    )
    first, done = _pydantic_loaded(path)
    assert first and done.stdout, done.stderr
    second, done = _pydantic_loaded(path)
    assert not second, "the second run must not build the pydantic models"
    assert "YAML=False" in done.stderr, "nor parse the YAML: the file's hash finds the cache"
    assert '"stall_after":120.0' in done.stdout, "normalised values come back from the cache"
    path.write_text(path.read_text().replace("stall_after: 2m", "stall_after: -2m"))
    _, done = _pydantic_loaded(path)
    assert done.stderr.startswith("[FATAL] config ") and "groups.0.stall_after" in done.stderr


def test_a_cache_others_could_write_is_ignored(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(
        f"state_dir: {tmp_path}/state\ngroups:\n  - name: g\n    match: {{cmdline: zzz-none}}\n"
    )
    _pydantic_loaded(path)
    cache = tmp_path / "state" / "config.cache.json"
    cache.chmod(0o666)
    loaded, _ = _pydantic_loaded(path)
    assert loaded, "a group/world-writable cache is not trusted"


def test_a_json_config_finds_its_cache_too(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "state_dir": f"{tmp_path}/state",
                "groups": [{"name": "g", "match": {"cmdline": "zzz-none"}}],
            }
        )
    )
    assert _pydantic_loaded(path)[0]
    assert not _pydantic_loaded(path)[0]


def test_a_key_holding_a_newline_is_named_on_one_line(tmp_path):
    """A control character in a misspelled key cannot split the [FATAL] line in two."""
    path = tmp_path / "bad.yml"
    path.write_text('groups: [{name: w, match: {cmdline: "^w$"}, "stall\\nafter": 5}]\n')
    with pytest.raises(ConfigError) as exc:
        parse(path.read_text(), str(path))
    assert str(exc.value) == (
        f"config {path}: groups.0.'stall\\nafter': unknown key (did you mean stall_after?)"
    )


def test_nesting_too_deep_for_the_pure_python_loader_is_a_config_error(monkeypatch):
    """Without libyaml the loader recurses once per level: a RecursionError, said in one line."""
    import importlib

    import yaml

    load = importlib.import_module("workerwatch.config.load")  # the package exports load()
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    monkeypatch.setattr(load._LazyLoader, "_cls", None)
    with pytest.raises(ConfigError) as caught:
        load.read_yaml("[" * 5000 + "]" * 5000, "config x.yml")
    assert str(caught.value) == "config x.yml: not valid YAML: nested too deeply"
    assert issubclass(load._LazyLoader._cls, yaml.SafeLoader), "the pure-Python loader ran"
