"""The packages `make package` builds, installed the way an operator installs them (dpkg into a
scratch root with its own admin directory, tar, rpm) and run the way the agent runs them
(`env -i PATH=... PYTHON PROGRAM`) under every CPython the launcher bundles, and under the
unsupported ones it must turn away with one [FATAL] line."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests import parallel
from tests.nerdgraph.fake import FakeNerdGraph
from tests.v4 import check_line, find, tagged_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
PROGRAM = "var/db/newrelic-infra/newrelic-integrations/bin/nri-workerwatch"
WRAPPER = "usr/bin/nri-workerwatch"
ZIPAPPS = "usr/lib/nri-workerwatch"
AGENT_CONF = "etc/newrelic-infra/integrations.d"
AGENT_DATA = "var/db/newrelic-infra/data"
DEFINITIONS = "usr/share/nri-workerwatch/definitions"
DOC_DIR = "usr/share/doc/nri-workerwatch"
SUPPORTED = ["3.9", "3.10", "3.11", "3.12", "3.13"]
UNSUPPORTED = ["2.7", "3.6", "3.7", "3.8"]
NAMED = "3.9, 3.10, 3.11, 3.12 or 3.13"
# The packages may hold these directories only: everything above them is the system's.
OWNED = (ZIPAPPS, "usr/share/nri-workerwatch", DOC_DIR)
KEY = "NRAK-PACKAGETEST0123456789ABCDEFGH"
ACCOUNT = 7654321
# What the agent passes on Linux, and nothing else (no HOME, no LANG, no venv).
AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def interpreter(version: str) -> str | None:
    """A CPython of this minor version: pyenv's builds first (this machine and CI), then
    the distribution's."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for candidate in sorted(versions.glob(f"{version}.*"), reverse=True):
        exe = candidate / "bin" / f"python{version}"
        if exe.is_file() and re.fullmatch(rf"{re.escape(version)}\.\d+", candidate.name):
            return str(exe)
    for folder in ("/usr/bin", "/usr/local/bin"):
        if os.access(f"{folder}/python{version}", os.X_OK):
            return f"{folder}/python{version}"
    return None


def needs(version: str) -> str:
    exe = interpreter(version)
    if exe is None:
        pytest.skip(
            f"CPython {version} is not installed here (looked in pyenv's versions and "
            f"/usr/bin, /usr/local/bin); `pyenv install {version}` provides it"
        )
    return exe


def run(argv: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:  # fmt: skip
    """Run with exactly ``env`` (the agent's `env -i` discipline)."""
    kwargs.setdefault("timeout", 120)
    return subprocess.run(argv, capture_output=True, text=True, env=env or {"PATH": AGENT_PATH}, **kwargs)  # fmt: skip


def scratch_root(prefix: str) -> Path:
    """A root any user can traverse (the tests also run as nobody), with a dpkg admin dir and
    some of the agent's directories already there with modes the package must not touch."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    admin = root / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "status").touch()
    (root / "var/db/newrelic-infra").mkdir(parents=True)
    (root / AGENT_DATA).mkdir(mode=0o755)
    (root / AGENT_DATA).chmod(0o755)
    (root / "var/db/newrelic-infra").chmod(0o711)
    (root / "etc/newrelic-infra/logging.d").mkdir(parents=True)  # the agent's own files
    (root / "etc/newrelic-infra/logging.d/file.yml").write_text("logs: []\n")
    (root / "etc/newrelic-infra").chmod(0o750)
    if os.geteuid() == 0:
        os.chown(root / "etc/newrelic-infra", 0, 65534)
    (root / AGENT_DATA / "agent-state").write_text("")
    return root


PRE_EXISTING = ["var/db/newrelic-infra", AGENT_DATA, "etc/newrelic-infra", "var", "etc"]


def modes(root: Path, names: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name in names:
        info = (root / name).lstat()
        out[name] = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return out


def package_files(root: Path) -> dict[str, int]:
    """Path -> mode of every file dpkg installed under this root for the package."""
    listed = run(["dpkg", f"--root={root}", "-L", "nri-workerwatch"]).stdout.split()
    return {
        name.lstrip("/"): stat.S_IMODE((root / name.lstrip("/")).lstat().st_mode)
        for name in listed
        if (root / name.lstrip("/")).is_file()
    }


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess:
    # Maintainer scripts run without chroot (the root has no shell), told the root by
    # DPKG_ROOT; dependencies (python3) are not in the scratch root's database.
    return run(
        ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args],
        env={"PATH": AGENT_PATH},
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """Build once per run with the real Makefile target (wheels cached in build/wheels): the
    first of the pytest-xdist workers to need the packages builds them, the others wait for
    that build and share it (tests/parallel.py)."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed (Debian's dpkg package)")
    out = parallel.shared_dir(tmp_path_factory.getbasetemp()) / "package"
    with parallel.locked(out.parent / "package.lock"):
        if not (out / "complete").exists():
            shutil.rmtree(out, ignore_errors=True)  # what a failed build on another worker left
            out.mkdir()
            started = time.monotonic()
            done = subprocess.run(
                # -o: the venv is already set up; do not reinstall it from inside the test run.
                ["make", "-o", ".venv/.installed", "package", f"DIST={out / 'dist'}", f"BUILD={out / 'build'}"],
                cwd=ROOT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            print(f"make package: {time.monotonic() - started:.1f} s")
            (out / "complete").touch()
    dist = out / "dist"
    (deb,) = dist.glob("nri-workerwatch_*_amd64.deb")
    (tarball,) = dist.glob("nri-workerwatch_linux_*_amd64.tar.gz")
    rpms = list(dist.glob("nri-workerwatch-*.rpm"))
    return {"dist": dist, "deb": deb, "tarball": tarball, "rpm": rpms[0] if rpms else None}


@pytest.fixture(scope="session")
def installed(built) -> Path:
    """The .deb installed with dpkg into a scratch root."""
    root = scratch_root("nri-workerwatch-deb-")
    try:
        before = modes(root, PRE_EXISTING)
        done = dpkg(root, "-i", str(built["deb"]))
        assert done.returncode == 0, done.stdout + done.stderr
        assert modes(root, PRE_EXISTING) == before, "dpkg changed an existing directory"
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def nerdgraph(httpserver):
    fake = FakeNerdGraph(KEY, ACCOUNT)
    httpserver.expect_request("/graphql", method="POST").respond_with_handler(fake.handle)
    fake.endpoint = httpserver.url_for("/graphql")  # type: ignore[attr-defined]
    yield fake
    assert fake.invalid == [], "a request did not validate against the NerdGraph schema"


def fleet_config(tmp_path: Path, tag: str) -> Path:
    # logs: a list, flattened into the inventory
    return tagged_config(tmp_path, tag, logs=[str(tmp_path / "*.log")])


# ----------------------------------------------------------------------------- contents


def test_deb_control_and_contents(built):
    fields = run(["dpkg-deb", "-f", str(built["deb"]), "Package", "Architecture", "Depends"])
    assert fields.returncode == 0, fields.stderr
    assert "Package: nri-workerwatch" in fields.stdout
    assert "Depends: python3 (>= 3.9) | python3.13 | python3.12 | python3.11 | python3.10 | python3.9" in fields.stdout  # fmt: skip
    listing = run(["dpkg-deb", "-c", str(built["deb"])]).stdout.splitlines()
    assert listing and all(" root/root " in line for line in listing), "--root-owner-group"
    conffiles = run(["dpkg-deb", "-I", str(built["deb"]), "conffiles"]).stdout.split()
    assert conffiles == [
        f"/{AGENT_CONF}/workerwatch-config.yml.sample",
        f"/{AGENT_CONF}/workerwatch-long-running-config.yml.sample",
    ]


def test_deb_installs_into_the_agent_layout(installed, built):
    expected = {
        PROGRAM: 0o755,
        WRAPPER: 0o755,
        f"{AGENT_CONF}/workerwatch-config.yml.sample": 0o644,
        f"{AGENT_CONF}/workerwatch-long-running-config.yml.sample": 0o644,
        "var/db/newrelic-infra/newrelic-integrations/workerwatch-definition.yml": 0o644,
        f"{DEFINITIONS}/alerts/stalled-workers.yml": 0o644,
        f"{DEFINITIONS}/dashboards/nri-workerwatch.yml": 0o644,
        f"{DEFINITIONS}/metrics.yml": 0o644,
        f"{DOC_DIR}/README.md": 0o644,
        f"{DOC_DIR}/docs/operating.md": 0o644,
        f"{DOC_DIR}/copyright": 0o644,
        f"{DOC_DIR}/legacy-workerwatch-config.yml.sample": 0o644,
        **{f"{ZIPAPPS}/nri-workerwatch-cp{v.replace('.', '')}.pyz": 0o644 for v in SUPPORTED},
    }
    for name, mode in expected.items():
        info = (installed / name).lstat()
        assert stat.S_ISREG(info.st_mode), name
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, 0), name
    for folder in OWNED:
        assert stat.S_IMODE((installed / folder).stat().st_mode) == 0o755, folder
    listed = run(["dpkg", f"--root={installed}", "-L", "nri-workerwatch"]).stdout.split()
    assert {f"/{name}" for name in expected} <= set(listed)
    # The agent reads only *.yml and *.yaml: nothing runs until a sample is copied.
    assert not [p for p in (installed / AGENT_CONF).iterdir() if p.suffix in (".yml", ".yaml")]
    wrapper = (installed / WRAPPER).read_text()
    assert wrapper.startswith("#!/bin/sh\n")
    assert "python3.13 python3.12 python3.11 python3.10 python3.9" in wrapper


def test_tarball_holds_only_the_package_files_and_its_own_directories(built, installed, tmp_path):
    with tarfile.open(built["tarball"]) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and all(not n.startswith(("/", "./")) for n in names)
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
        if member.isdir():
            assert member.name.startswith(OWNED), f"{member.name}: a directory it does not own"
    files = {m.name: m.mode for m in members if m.isfile()}
    in_deb = package_files(installed)
    assert files == in_deb, "the tarball and the .deb install the same files with the same modes"

    root = scratch_root("nri-workerwatch-tar-")
    try:
        before = modes(root, PRE_EXISTING)
        done = run(["tar", "-C", str(root), "-xzf", str(built["tarball"])])
        assert done.returncode == 0, done.stderr
        assert modes(root, PRE_EXISTING) == before, "tar changed an existing directory"
        version = run([needs(SUPPORTED[-1]), str(root / PROGRAM), "-show_version"])
        assert version.returncode == 0, version.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_rpm_holds_the_same_files_and_only_its_own_directories(built, installed):
    if built["rpm"] is None:
        pytest.skip("rpmbuild is not installed here (apt-get install rpm), so no .rpm was built")
    query = run(["rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]", str(built["rpm"])])  # fmt: skip
    assert query.returncode == 0, query.stderr
    entries = [line.split(" ", 2) for line in query.stdout.splitlines()]
    assert entries and all(owner == "root:root" for _, owner, _ in entries)
    dirs = [name for perms, _, name in entries if perms.startswith("d")]
    assert dirs and all(d.lstrip("/").startswith(OWNED) for d in dirs), dirs
    files = {name.lstrip("/"): perms for perms, _, name in entries if not perms.startswith("d")}
    assert files[PROGRAM] == "-rwxr-xr-x" and files[WRAPPER] == "-rwxr-xr-x"
    assert set(files) == set(package_files(installed))
    configs = run(["rpm", "-qcp", str(built["rpm"])]).stdout.split()
    assert configs == [f"/{AGENT_CONF}/workerwatch-config.yml.sample", f"/{AGENT_CONF}/workerwatch-long-running-config.yml.sample"]  # fmt: skip
    requires = run(["rpm", "-qRp", str(built["rpm"])]).stdout
    assert "(python3 >= 3.9 or python3.13 or python3.12 or python3.11 or python3.10 or python3.9)" in requires  # fmt: skip
    # Installed by rpm into a scratch root (its own database there): existing directories
    # keep their modes, and the program runs. (%postun needs a shell inside the root: not run.)
    root = scratch_root("nri-workerwatch-rpm-")
    try:
        before = modes(root, PRE_EXISTING)
        for args in (["--initdb"], ["--nodeps", "-i", str(built["rpm"])]):
            done = run(["rpm", f"--root={root}", *args])
            assert done.returncode == 0, done.stderr
        assert modes(root, PRE_EXISTING) == before, "rpm changed an existing directory"
        done = run([needs(SUPPORTED[-1]), str(root / PROGRAM), "-show_version"])
        assert done.returncode == 0, done.stderr
        erased = run(["rpm", f"--root={root}", "--nodeps", "--noscripts", "-e", "nri-workerwatch"])
        assert erased.returncode == 0, erased.stderr
        assert not (root / PROGRAM).exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_remove_and_purge_take_the_unpacked_code_then_the_state(built):
    root = scratch_root("nri-workerwatch-purge-")
    try:
        assert dpkg(root, "-i", str(built["deb"])).returncode == 0
        before = modes(root, PRE_EXISTING)
        python = needs(SUPPORTED[-1])
        assert run([python, str(root / PROGRAM), "-show_version"]).returncode == 0
        ours = root / AGENT_DATA / "nri-workerwatch"
        (ours / "state.json").write_text("{}")  # as a collection would leave it
        assert (ours / "unpacked").is_dir()
        removed = dpkg(root, "-r", "nri-workerwatch")
        assert removed.returncode == 0, removed.stderr
        assert not (ours / "unpacked").exists() and (ours / "state.json").exists()
        assert not (root / PROGRAM).exists() and not (root / ZIPAPPS).exists()
        purged = dpkg(root, "-P", "nri-workerwatch")
        assert purged.returncode == 0, purged.stderr
        assert not ours.exists()
        assert modes(root, PRE_EXISTING) == before, "removal touched the agent's directories"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- running


@pytest.mark.parametrize("version", SUPPORTED)
def test_show_version_loads_the_compiled_dependencies(installed, version, tmp_path):
    python = needs(version)
    direct = run([python, str(installed / PROGRAM), "-show_version"])
    # The wrapper on PATH, with this interpreter as the only python3.
    wrapped = run([str(installed / WRAPPER), "-show_version"], env={"PATH": _bin_with(tmp_path, {"python3": python})})  # fmt: skip
    for done in (direct, wrapped):
        assert done.returncode == 0, done.stderr
        line = done.stdout.strip()
        assert line.startswith("New Relic nri-workerwatch integration Version: 0.")
        assert re.search(rf"Python: {re.escape(version)}\.\d+, psutil: \d+\.\S+, pydantic-core: \d+\.", line), line  # fmt: skip
    unpacked = installed / AGENT_DATA / "nri-workerwatch" / "unpacked"
    info = unpacked.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 0)
    assert list(unpacked.glob(f"nri-workerwatch-cp{version.replace('.', '')}.pyz_*/site-packages"))


IMPORT_ALL = """
import importlib, pkgutil, workerwatch
names = [m.name for m in pkgutil.walk_packages(workerwatch.__path__, "workerwatch.")
         if m.name != "workerwatch.__main__"]  # that one runs the program
for name in names:
    importlib.import_module(name)
print(len(names))
"""


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_module_imports(installed, version):
    """Every module of the bundled build imports under this CPython: a ``|`` between types
    evaluated at import (a module-level alias) fails here on 3.9 even where no command of
    the tests reaches it."""
    python = needs(version)
    assert run([python, str(installed / PROGRAM), "-show_version"]).returncode == 0
    unpacked = installed / AGENT_DATA / "nri-workerwatch" / "unpacked"
    (site,) = unpacked.glob(f"nri-workerwatch-cp{version.replace('.', '')}.pyz_*/site-packages")
    done = run([python, "-c", IMPORT_ALL], env={"PATH": AGENT_PATH, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 50, done.stdout


def test_show_version_catches_a_build_for_another_python(built, tmp_path):
    """The install check the README gives: a zipapp made for 3.11 in 3.12's place (what the
    single-version package used to amount to) fails at once, in one line."""
    python = needs("3.12")
    assert run(["tar", "-C", str(tmp_path), "-xzf", str(built["tarball"])]).returncode == 0
    zipapps = tmp_path / ZIPAPPS
    shutil.copy(zipapps / "nri-workerwatch-cp311.pyz", zipapps / "nri-workerwatch-cp312.pyz")
    env = {"PATH": AGENT_PATH, "TMPDIR": str(tmp_path)}
    done = run([python, str(tmp_path / PROGRAM), "-show_version"], env=env)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("[FATAL] a compiled dependency does not load under Python 3.12."), line


@pytest.mark.parametrize("version", SUPPORTED)
def test_first_collection_the_way_the_agent_runs_it(installed, version, tmp_path, tag, fleet):
    python = needs(version)
    sleeper = fleet.start("sleeper")
    env = {"PATH": AGENT_PATH, "CONFIG_PATH": str(fleet_config(tmp_path, tag))}
    done = run([python, str(installed / PROGRAM)], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    payload = check_line(done.stdout)
    assert find(payload, "workerwatch.worker.up", **{"process.pid": sleeper.pid})[0]["value"] == 1


@pytest.mark.parametrize("version", SUPPORTED)
def test_check_config(installed, version, tmp_path, tag):
    python = needs(version)
    config = str(fleet_config(tmp_path, tag))
    direct = run([python, str(installed / PROGRAM), "check-config", "--config", config])
    wrapped = run([str(installed / WRAPPER), "check-config", "--config", config], env={"PATH": _bin_with(tmp_path, {"python3": python})})  # fmt: skip
    for done in (direct, wrapped):
        assert done.returncode == 0, done.stderr
        assert done.stdout == "config OK: 1 group(s): fleet\n"


@pytest.mark.parametrize("version", SUPPORTED)
def test_alerts_plan_finds_the_installed_definitions(installed, version, nerdgraph):
    python = needs(version)
    env = {"PATH": AGENT_PATH, "NEW_RELIC_API_KEY": KEY}
    done = run(
        [python, str(installed / PROGRAM), "alerts", "plan", "--account-id", str(ACCOUNT),
         "--endpoint", nerdgraph.endpoint],
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"Plan: \d+ to create", done.stdout), done.stdout
    assert "nri-workerwatch: stalled workers" in done.stdout
    assert nerdgraph.seen and nerdgraph.mutations == [], "plan reads the account, changes nothing"
    assert KEY not in done.stdout + done.stderr


@pytest.mark.parametrize("version", UNSUPPORTED)
def test_unsupported_interpreter_gets_one_fatal_line(installed, version):
    python = needs(version)
    done = run([python, str(installed / PROGRAM), "-show_version"])
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("[FATAL] nri-workerwatch 0.")
    assert f"runs on CPython {NAMED}, not on Python {version}." in line


def _bin_with(tmp_path: Path, pythons: dict[str, str]) -> str:
    """A PATH holding only these interpreter names and what the wrapper itself uses."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, target in pythons.items():
        (folder / name).symlink_to(target)
    for tool in ("readlink", "dirname"):
        (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


def test_wrapper_prefers_python3_then_the_newest_bundled_version(installed, tmp_path):
    old, newer = needs("3.8"), needs("3.12")
    path = _bin_with(tmp_path, {"python3": old, "python3.12": newer})
    done = run([str(installed / WRAPPER), "-show_version"], env={"PATH": path})
    assert done.returncode == 0, done.stderr
    assert "Python: 3.12." in done.stdout

    only_old = tmp_path / "old"
    only_old.mkdir()
    path = _bin_with(only_old, {"python3": old})
    done = run([str(installed / WRAPPER), "-show_version"], env={"PATH": path})
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("[FATAL]") and NAMED in line


def test_wrapper_runs_operator_commands(installed, tmp_path, tag, fleet):
    sleeper = fleet.start("sleeper")
    config = fleet_config(tmp_path, tag)
    status = run([str(installed / WRAPPER), "status", "--config", str(config)])
    assert status.returncode == 0, status.stderr
    assert f"fleet:{sleeper.pid}" in status.stdout
    check = run([str(installed / WRAPPER), "check-config", "--config", str(config)])
    assert check.stdout == "config OK: 1 group(s): fleet\n", check.stderr


def test_dashboards_plan_and_push_through_the_package(installed, nerdgraph, httpserver, tmp_path, tag):  # fmt: skip
    python = needs(SUPPORTED[-1])
    plan = run(
        [python, str(installed / PROGRAM), "dashboards", "plan", "--account-id", str(ACCOUNT),
         "--endpoint", nerdgraph.endpoint],
        env={"PATH": AGENT_PATH, "NEW_RELIC_API_KEY": KEY},
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"Plan: \d+ to create", plan.stdout), plan.stdout
    # requests and certifi are bundled: push reaches the Metric API.
    httpserver.expect_request("/metric/v1", method="POST").respond_with_data("{}", status=202)
    push = run(
        [python, str(installed / PROGRAM), "push", "--once", "--config", str(fleet_config(tmp_path, tag)),
         "--metric-url", httpserver.url_for("/metric/v1")],
        env={"PATH": AGENT_PATH, "NEW_RELIC_LICENSE_KEY": "k" * 40},
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    assert [r.path for r, _ in httpserver.log].count("/metric/v1") == 1


def test_legacy_definition_command_runs_from_its_folder(installed, tmp_path, tag, fleet):
    """The legacy definition runs `./bin/nri-workerwatch` with its folder as working dir."""
    import yaml

    definition = installed / "var/db/newrelic-infra/newrelic-integrations/workerwatch-definition.yml"  # fmt: skip
    argv = yaml.safe_load(definition.read_text())["commands"]["metrics"]["command"]
    sleeper = fleet.start("sleeper")
    env = {"PATH": AGENT_PATH, "CONFIG_PATH": str(fleet_config(tmp_path, tag)), "VERBOSE": "0"}
    done = run([needs(SUPPORTED[-1]), *argv[1:]], env=env, cwd=definition.parent)
    assert done.returncode == 0, done.stderr
    assert find(check_line(done.stdout), "workerwatch.worker.up", **{"process.pid": sleeper.pid})


# ----------------------------------------------------------------------------- no HOME


def _as_nobody() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as nobody")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def _system_python() -> str:
    """nobody cannot enter /root, where pyenv lives: the distribution's python3."""
    python = "/usr/bin/python3"
    tag = run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
    if tag not in SUPPORTED:
        pytest.skip(f"/usr/bin/python3 is {tag or 'missing'}, not one of {SUPPORTED}")
    return python


def test_a_user_without_a_home_unpacks_into_a_private_temp_dir(installed, tmp_path, tag, fleet):
    prefix, python = _as_nobody(), _system_python()
    shared = Path(tempfile.mkdtemp(prefix="nri-ww-nobody-"))
    try:
        shared.chmod(0o777)  # a TMPDIR and a state_dir nobody can write, like /tmp
        sleeper = fleet.start("sleeper")
        config = fleet_config(shared, tag)
        config.chmod(0o644)
        env = {"PATH": AGENT_PATH, "HOME": "/nonexistent", "TMPDIR": str(shared), "CONFIG_PATH": str(config)}  # fmt: skip
        done = run([*prefix, "env", "-i", *[f"{k}={v}" for k, v in env.items()], python, str(installed / PROGRAM)])  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert find(check_line(done.stdout), "workerwatch.worker.up", **{"process.pid": sleeper.pid})  # fmt: skip
        unpacked = shared / "nri-workerwatch-65534"
        info = unpacked.lstat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 65534)
        assert list(unpacked.glob("nri-workerwatch-cp3*.pyz_*/site-packages/workerwatch"))
        assert not Path("/nonexistent").exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_an_unpack_dir_owned_by_someone_else_is_refused(installed):
    prefix, python = _as_nobody(), _system_python()
    shared = Path(tempfile.mkdtemp(prefix="nri-ww-planted-"))
    try:
        shared.chmod(0o1777)
        (shared / "nri-workerwatch-65534").mkdir(mode=0o777)  # planted by root, for nobody
        done = run([*prefix, "env", "-i", f"PATH={AGENT_PATH}", f"TMPDIR={shared}", python, str(installed / PROGRAM), "-show_version"])  # fmt: skip
        assert done.returncode == 1 and done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert line.startswith("[FATAL] nri-workerwatch 0.")
        assert "no private directory to unpack into (tried " in line
        assert f"{shared}/nri-workerwatch-65534: not writable, owned by another user" in line
        assert not list((shared / "nri-workerwatch-65534").iterdir()), "nothing unpacked there"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ----------------------------------------------------------------------------- make install


def test_make_install_into_a_prefix_keeps_existing_directories(built):
    prefix = scratch_root("nri-workerwatch-prefix-")
    try:
        before = modes(prefix, PRE_EXISTING)
        done = subprocess.run(
            ["make", "--no-print-directory", "install", f"PREFIX={prefix}", f"DIST={built['dist']}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert os.access(prefix / PROGRAM, os.X_OK) and os.access(prefix / WRAPPER, os.X_OK)
        assert (prefix / AGENT_CONF / "workerwatch-config.yml.sample").is_file()
        assert modes(prefix, PRE_EXISTING) == before
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


# ----------------------------------------------------------------------------- the README


def readme_install_commands() -> list[str]:
    """Every command in README's "Install on a host" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Install on a host")[1].split("\n## ")[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


# What an operator does in $EDITOR: point the groups at the workers (here: a test child).
EDITOR = """
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
config = doc["integrations"][0]["config"]
config["state_dir"] = state
config["groups"] = [{"name": "fleet", "match": {"cmdline": pattern}}]
yaml.safe_dump(doc, open(path, "w"))
"""


def test_readme_install_section_works_on_a_scratch_root(built, tmp_path, tag, fleet, httpserver):
    """Each command as printed, with / meaning a scratch root and /tmp a scratch dir; the
    package managers get their root-aware form (apt's resolution is checked on this host)."""
    commands = readme_install_commands()
    assert commands[0] == "make package"  # what the `built` fixture ran
    rpm_root = None
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    sleeper = fleet.start("sleeper")
    editor = tmp_path / "editor.py"
    state, pattern = str(tmp_path / "state"), f"worker_kinds\\.py \\w+ {tag}"
    editor.write_text(f"state, pattern = {state!r}, {pattern!r}\n{EDITOR}")
    fake = FakeNerdGraph(KEY, 1234567)
    httpserver.expect_request("/graphql", method="POST").respond_with_handler(fake.handle)
    root = scratch_root("nri-workerwatch-readme-")  # removed in the finally below
    env = {"PATH": f"{root}/usr/bin:{AGENT_PATH}", "EDITOR": f"{sys.executable} {editor}"}
    cwd = tmp_path

    def shell(command: str) -> subprocess.CompletedProcess:
        done = run(["sh", "-c", command], env=env, cwd=cwd)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done

    try:
        for command in commands[1:]:
            here = command.replace("/tmp/", f"{host_tmp}/")
            if command.startswith("scp dist/"):
                for path in built["dist"].iterdir():
                    shutil.copy(path, host_tmp)
                assert len(list(built["dist"].glob(command.split()[1].removeprefix("dist/")))) == 1
            elif command.startswith("cd /tmp && apt install ./"):
                (deb,) = host_tmp.glob(command.rsplit("./", 1)[1])
                simulated = run(["apt-get", "install", "--simulate", f"./{deb.name}"], cwd=host_tmp)
                assert "Inst nri-workerwatch" in simulated.stdout, (
                    simulated.stdout + simulated.stderr
                )
                done = dpkg(root, "-i", str(deb))
                assert done.returncode == 0, done.stderr
            elif command.startswith("cd /"):
                cwd = root / command.split()[1].lstrip("/")
            elif command.startswith("tar -C / "):
                other = scratch_root("nri-workerwatch-readme-tar-")
                try:
                    shell(here.replace("tar -C / ", f"tar -C {other} "))
                    assert os.access(other / PROGRAM, os.X_OK)
                finally:
                    shutil.rmtree(other, ignore_errors=True)
            elif command.startswith("rpm -Uvh "):
                if built["rpm"] is None:
                    continue
                rpm_root = scratch_root("nri-workerwatch-readme-rpm-")
                shell(f"rpm --root={rpm_root} --initdb")
                shell(here.replace("rpm -Uvh ", f"rpm --root={rpm_root} --nodeps -Uvh "))
                assert os.access(rpm_root / WRAPPER, os.X_OK)
            elif command.startswith("export NEW_RELIC_API_KEY="):
                env["NEW_RELIC_API_KEY"] = KEY
            elif command.startswith(("nri-workerwatch alerts apply", "nri-workerwatch dashboards apply")):  # fmt: skip
                done = shell(f"{command} --endpoint {httpserver.url_for('/graphql')}")
                assert "Apply complete" in done.stdout, done.stdout
            elif command.startswith(("nri-workerwatch ", "cp ")):
                done = shell(command)
                if " status " in command:
                    assert f"fleet:{sleeper.pid}" in done.stdout, done.stdout
                if " check-config " in command:
                    assert done.stdout == "config OK: workerwatch-config.yml (inline config of integrations entry 1, nri-workerwatch): 1 group(s): fleet\n"  # fmt: skip
                    assert done.stderr == "", "the group's rule matches the running sleeper"
                if "-show_version" in command:
                    assert "pydantic-core" in done.stdout
            else:
                raise AssertionError(f"README shows a command this test does not follow: {command}")  # fmt: skip
        assert fake.policy_named("nri-workerwatch: stalled workers")
        assert fake.mutation_fields().count("dashboardCreate") == 1
        assert fake.invalid == []
    finally:
        for folder in (root, rpm_root):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
