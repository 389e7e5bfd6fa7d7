"""The built single-file zipapp and the agent-layout tarball, run with a plain interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.v4 import check_line, find, write_config

ROOT = Path(__file__).parent.parent
# Builds the zipapp and tarball with the real Makefile target: slow (make test-fast skips it).
pytestmark = pytest.mark.slow
AGENT_DIR = "var/db/newrelic-infra/newrelic-integrations"
AGENT_CONF = "etc/newrelic-infra/integrations.d"


def _plain_python() -> str:
    """An interpreter outside the venv, of the version the zipapp was built for."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


PLAIN = _plain_python()


@pytest.fixture(scope="session")
def package(tmp_path_factory) -> dict:
    """Build once per session with the real Makefile target."""
    out = tmp_path_factory.mktemp("package")
    dist, build = out / "dist", out / "build"
    started = time.monotonic()
    done = subprocess.run(
        # -o: the venv is already set up; do not reinstall it from inside the test run.
        ["make", "-o", ".venv/.installed", "package", f"DIST={dist}", f"BUILD={build}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (pyz,) = [p for p in dist.glob("nri-workerwatch-*.pyz")]
    (tarball,) = list(dist.glob("nri-workerwatch-*.tar.gz"))
    print(f"zipapp {pyz.name}: {pyz.stat().st_size / 1024:.0f} KiB, built in {took:.1f} s")
    return {
        "dist": dist,
        "pyz": pyz,
        "plain": dist / "nri-workerwatch.pyz",
        "tarball": tarball,
        "shiv_root": out / "shiv",
    }


def _env(package: dict) -> dict[str, str]:
    # Nothing from this test run: no venv, no PYTHONPATH, only what the agent passes
    # (PATH), plus where shiv unpacks the compiled parts (shared: unpacked once).
    return {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(package["shiv_root"])}


def test_zipapp_is_named_for_its_python_and_platform(package):
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert f"-{tag}-linux_" in package["pyz"].name
    assert package["plain"].read_bytes() == package["pyz"].read_bytes()
    assert package["pyz"].read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_zipapp_runs_show_version_and_a_collection_without_the_venv(package, tmp_path, tag, fleet):
    env = _env(package)
    probe = subprocess.run(
        [PLAIN, "-I", "-c", "import workerwatch"], capture_output=True, text=True, env=env
    )
    assert probe.returncode != 0, "the plain interpreter must not see the dev install"

    version = subprocess.run(
        [PLAIN, "-I", str(package["plain"]), "-show_version"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("New Relic nri-workerwatch integration Version: 0.")

    sleeper = fleet.start("sleeper")
    config = write_config(
        tmp_path / "config.yml",
        {
            "state_dir": str(tmp_path / "state"),
            "groups": [{"name": "fleet", "match": {"cmdline": f"worker_kinds\\.py \\w+ {tag}"}}],
        },
    )
    done = subprocess.run(
        [PLAIN, "-I", str(package["plain"])],
        capture_output=True, text=True, timeout=60, env={**env, "CONFIG_PATH": str(config)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = check_line(done.stdout)
    assert find(payload, "workerwatch.worker.up", **{"process.pid": sleeper.pid})


def test_zipapp_bundles_requests_for_push(package, tmp_path, tag, httpserver):
    httpserver.expect_request("/metric/v1", method="POST").respond_with_data("{}", status=202)
    config = write_config(
        tmp_path / "config.yml",
        {"state_dir": str(tmp_path / "state"),
         "groups": [{"name": "g", "match": {"cmdline": f"never-{tag}"}}]},
    )  # fmt: skip
    done = subprocess.run(
        [PLAIN, "-I", str(package["plain"]), "push", "--once", "--config", str(config),
         "--metric-url", httpserver.url_for("/metric/v1")],
        capture_output=True, text=True, timeout=60,
        env={**_env(package), "NEW_RELIC_LICENSE_KEY": "k" * 40},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(httpserver.log) == 1


def test_tarball_lays_files_out_where_the_agent_looks(package):
    with tarfile.open(package["tarball"]) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    program = members[f"{AGENT_DIR}/bin/nri-workerwatch"]
    assert program.isfile() and program.mode & 0o111 == 0o111
    assert program.uid == 0 and program.gid == 0
    assert program.size == package["pyz"].stat().st_size
    for name in (
        f"{AGENT_CONF}/workerwatch-config.yml.sample",
        f"{AGENT_CONF}/workerwatch-long-running-config.yml.sample",
        f"{AGENT_DIR}/workerwatch-definition.yml",
        "usr/share/doc/nri-workerwatch/operating.md",
    ):
        assert members[name].isfile() and members[name].mode & 0o777 == 0o644, name
    # Samples only: the agent reads *.yml and *.yaml, so nothing runs until renamed.
    assert not [n for n in members if n.startswith(AGENT_CONF) and n.endswith((".yml", ".yaml"))]


def test_make_install_into_a_prefix(package, tmp_path):
    prefix = tmp_path / "root"
    done = subprocess.run(
        ["make", "--no-print-directory", "install", f"PREFIX={prefix}", f"DIST={package['dist']}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    program = prefix / AGENT_DIR / "bin" / "nri-workerwatch"
    assert os.access(program, os.X_OK)
    assert (prefix / AGENT_CONF / "workerwatch-config.yml.sample").is_file()
    if Path("/usr/bin/python3").exists():
        same = subprocess.run(
            ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if same == str(tuple(sys.version_info[:2])):
            # Through its shebang, as `exec: [<program>]` would run it.
            run = subprocess.run(
                [str(program), "-show_version"],
                capture_output=True, text=True, timeout=60, env=_env(package),
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            assert "nri-workerwatch" in run.stdout
