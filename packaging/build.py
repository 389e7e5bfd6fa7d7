"""Build the nri-workerwatch packages (driven by `make package`, `make deb`, `make rpm`).

1. one zipapp per CPython version (``--pythons``), each made with shiv from the wheels pip
   fetches for exactly that version and platform (``pip download --python-version X.Y
   --only-binary=:all: --platform manylinux2014_<arch>``), cached under ``--wheels``;
2. a staged tree in the agent's layout (names in packaging/launcher.py), with the launcher
   that picks the zipapp for the running interpreter and a /usr/bin wrapper;
3. from that tree: a tarball holding only the files and the directories the package owns,
   a .deb built by ``dpkg-deb --root-owner-group`` and an .rpm built by ``rpmbuild``.
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import hashlib
import io
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "packaging"
LAYOUT = runpy.run_path(str(HERE / "launcher.py"))  # PROGRAM, ZIPAPPS, ... (not run)
NAME = "nri-workerwatch"
ENTRY_POINT = "workerwatch.cli:entry"
AGENT_DIR = str(Path(LAYOUT["PROGRAM"]).parent.parent)  # .../newrelic-integrations
AGENT_CONF = "etc/newrelic-infra/integrations.d"
DOC_DIR = f"usr/share/doc/{NAME}"
WRAPPER = f"usr/bin/{NAME}"
# The oldest glibc the compiled wheels may need: manylinux2014 (glibc 2.17, CentOS 7 era);
# pip also accepts the older manylinux2010 and manylinux1 wheels for it.
MANYLINUX = "manylinux2014"
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def log(message: str) -> None:
    print(f"build: {message}", flush=True)


def run(*args: str | Path, quiet: bool = False, **kwargs) -> None:
    """Run a tool; with ``quiet`` its output is shown only when it fails."""
    argv = [str(a) for a in args]
    if not quiet:
        subprocess.run(argv, check=True, **kwargs)
        return
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"build: {' '.join(argv[:4])} ... failed with exit code {done.returncode}")


def pip(*args: str | Path) -> None:
    run(sys.executable, "-m", "pip", "--disable-pip-version-check", *args, quiet=True)


def version() -> str:
    return str(
        runpy.run_path(str(ROOT / "integration" / "workerwatch" / "__init__.py"))["__version__"]
    )


def project_wheel(build: Path) -> Path:
    out = build / "project"
    shutil.rmtree(out, ignore_errors=True)
    # setuptools copies the package into build/lib and never empties it: a module removed or
    # moved since the last build in this checkout would ship in the wheel.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", out, ROOT)
    (wheel,) = out.glob("*.whl")
    return wheel


def requirements(wheel: Path, python: str, machine: str, extras: list[str]) -> list[str]:
    """The project's Requires-Dist for one target Python, read from its wheel (pyproject.toml
    holds the one list). Markers are judged here for the target, not by pip, which would
    judge them by the interpreter running the build."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(name).decode())
    target = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
    }
    wanted = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(
            requirement.marker.evaluate({**target, "extra": extra}) for extra in ["", *extras]
        ):
            requirement.marker = None
            wanted.append(str(requirement))
    return wanted


def target_args(python: str, machine: str) -> list[str]:
    """pip options selecting wheels for another interpreter and platform than the build's."""
    tag = "cp" + python.replace(".", "")
    return [
        "--only-binary=:all:",
        "--implementation=cp",
        f"--python-version={python}",
        f"--abi={tag}",
        f"--platform={MANYLINUX}_{machine}",
    ]


def fetch_wheels(wheels: Path, python: str, machine: str, reqs: list[str]) -> Path:
    """Wheels for one CPython version, downloaded once per requirement set."""
    folder = wheels / f"cp{python.replace('.', '')}-{machine}"
    stamp = folder / ".requirements.json"
    wanted = json.dumps({"requirements": reqs, "platform": MANYLINUX}, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted:
        return folder
    log(f"fetching wheels for CPython {python} ({machine}) into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    pip("download", "-d", folder, *target_args(python, machine), *reqs)
    stamp.write_text(wanted)
    return folder


def build_zipapp(
    build: Path, python: str, machine: str, wheel: Path, wheels: Path, extras: list[str]
) -> Path:
    tag = python.replace(".", "")
    reqs = requirements(wheel, python, machine, extras)
    site = build / "site" / f"cp{tag}"
    shutil.rmtree(site, ignore_errors=True)
    found = fetch_wheels(wheels, python, machine, reqs)
    common = ["install", f"--target={site}", "--no-index", "--no-compile"]
    pip(*common, *target_args(python, machine), f"--find-links={found}", *reqs)
    # The project says what it runs on today (requires-python); the zipapps are built for
    # the launcher's whole range, and the tests run each one.
    pip(*common, "--no-deps", "--ignore-requires-python", wheel)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts for the build host
    out = build / "zipapps" / f"{LAYOUT['ZIPAPP_PREFIX']}{tag}{LAYOUT['ZIPAPP_SUFFIX']}"
    out.parent.mkdir(parents=True, exist_ok=True)
    shiv = [f"--site-packages={site}", "--compressed", "--reproducible", f"--output-file={out}"]
    shiv += [f"--python=/usr/bin/env python{python}", f"--entry-point={ENTRY_POINT}"]
    run(sys.executable, "-m", "shiv", *shiv, quiet=True)
    return out


def bundled(site: Path) -> list[str]:
    """name version of every distribution in a target dir, for the copyright file."""
    names = []
    for info in sorted(site.glob("*.dist-info")):
        dist, _, rest = info.name.removesuffix(".dist-info").partition("-")
        if dist.replace("_", "-") != NAME:
            names.append(f"{dist} {rest}")
    return names


def fill(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise SystemExit(f"build: {template}: unfilled {leftover}")
    return text


def put(stage: Path, dest: str, data: bytes | Path, mode: int = 0o644) -> None:
    path = stage / dest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    path.chmod(mode)


def stage_tree(
    build: Path, zipapps: list[Path], values: dict[str, str], licences: list[str]
) -> tuple[Path, list[str]]:
    """The installed tree under build/root; returns it and the directories the package owns."""
    stage = build / "root"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    put(stage, LAYOUT["PROGRAM"], fill(HERE / "launcher.py", values).encode(), 0o755)
    put(stage, WRAPPER, fill(HERE / "wrapper.sh", values).encode(), 0o755)
    for pyz in zipapps:
        put(stage, f"{LAYOUT['ZIPAPPS']}/{pyz.name}", pyz)
    agent = ROOT / "definitions" / "agent"
    for sample in sorted(agent.glob("*.yml.sample")):
        put(stage, f"{AGENT_CONF}/{sample.name}", sample)
    legacy = agent / "legacy"
    put(stage, f"{AGENT_DIR}/workerwatch-definition.yml", legacy / "workerwatch-definition.yml")
    legacy_config = "workerwatch-config.yml.sample"
    put(stage, f"{DOC_DIR}/legacy-{legacy_config}", legacy / legacy_config)
    definitions = ROOT / "definitions"
    for path in sorted(definitions.rglob("*")):
        relative = path.relative_to(definitions)
        if path.is_file() and relative.parts[0] != "agent":
            put(stage, f"{LAYOUT['DEFINITIONS']}/{relative}", path)
    put(stage, f"{DOC_DIR}/README.md", ROOT / "README.md")
    for doc in sorted((ROOT / "docs").glob("*.md")):
        put(stage, f"{DOC_DIR}/docs/{doc.name}", doc)
    copyright_values = {**values, "BUNDLED": "\n".join(f" {x}" for x in licences)}
    put(stage, f"{DOC_DIR}/copyright", fill(HERE / "copyright", copyright_values).encode())
    owned = []
    for top in (LAYOUT["ZIPAPPS"], str(Path(LAYOUT["DEFINITIONS"]).parent), DOC_DIR):
        owned.append(top)
        owned += [str(p.relative_to(stage)) for p in sorted((stage / top).rglob("*")) if p.is_dir()]
    for path in stage.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    return stage, sorted(owned)


def files_of(stage: Path) -> list[str]:
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if not p.is_dir())


def source_date() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    done = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True)
    stamp = done.stdout.strip() if done.returncode == 0 else b""
    return int(stamp) if stamp else int(time.time())


def dated_env() -> dict[str, str]:
    """dpkg-deb and rpmbuild clamp file times to SOURCE_DATE_EPOCH: same input, same package."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(source_date())}


def build_tarball(stage: Path, owned: list[str], out: Path) -> None:
    """Only what the package owns: `tar -C / -x` must not touch /, /etc, /var, /usr/bin."""
    mtime = source_date()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(owned + files_of(stage)):
            info = tar.gettarinfo(str(stage / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = mtime
            if info.isfile():
                with open(stage / name, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz:
        gz.write(buffer.getvalue())


def build_deb(build: Path, stage: Path, values: dict[str, str], out: Path) -> None:
    pkg = build / "deb" / "root"
    shutil.rmtree(pkg.parent, ignore_errors=True)
    shutil.copytree(stage, pkg, symlinks=True)
    control = pkg / "DEBIAN"
    control.mkdir(mode=0o755)
    control.chmod(0o755)
    files = files_of(stage)
    size = sum((stage / f).stat().st_size for f in files) // 1024 + 1
    (control / "control").write_text(
        fill(HERE / "debian" / "control.in", {**values, "INSTALLED_SIZE": str(size)})
    )
    # Files under /etc are configuration: dpkg keeps local edits on upgrade.
    (control / "conffiles").write_text("".join(f"/{f}\n" for f in files if f.startswith("etc/")))
    (control / "md5sums").write_text(
        "".join(f"{hashlib.md5((stage / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    )
    (control / "postrm").write_text(fill(HERE / "debian" / "postrm", values))
    (control / "postrm").chmod(0o755)
    for name in ("control", "conffiles", "md5sums"):
        (control / name).chmod(0o644)
    run(
        "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", pkg, out, quiet=True, env=dated_env()
    )


def build_rpm(
    build: Path, stage: Path, owned: list[str], values: dict[str, str], out: Path
) -> None:
    top = build / "rpm"
    shutil.rmtree(top, ignore_errors=True)
    listing = ["%defattr(-,root,root,-)"]
    listing += [f"%dir /{d}" for d in owned]
    for name in files_of(stage):
        listing.append(f"%config(noreplace) /{name}" if name.startswith("etc/") else f"/{name}")
    spec = top / "SPECS" / f"{NAME}.spec"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        fill(
            HERE / "rpm" / f"{NAME}.spec.in",
            {**values, "STAGE": str(stage), "RPM_FILES": "\n".join(listing)},
        )
    )
    defines = {
        "_topdir": top,
        "_binary_payload": "w9.gzdio",  # the zipapps are compressed already
        "clamp_mtime_to_source_date_epoch": 1,
        "use_source_date_epoch_as_buildtime": 1,
    }
    options = [arg for key, value in defines.items() for arg in ("--define", f"{key} {value}")]
    run("rpmbuild", "-bb", "--quiet", *options, f"--target={values['MACHINE']}", spec,
        quiet=True, env=dated_env())  # fmt: skip
    (built,) = (top / "RPMS").rglob("*.rpm")
    shutil.move(str(built), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", choices=["tarball", "deb", "rpm"])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels")
    parser.add_argument("--pythons", default="3.9 3.10 3.11 3.12 3.13")
    parser.add_argument("--extras", default="", help="optional extras to bundle, e.g. aws")
    parser.add_argument(
        "--maintainer", default=f"{NAME} maintainers <{NAME}@users.noreply.github.com>"
    )
    ns = parser.parse_args(argv)
    pythons = sorted(ns.pythons.split(), key=lambda v: tuple(int(x) for x in v.split(".")))
    machine = platform.machine()
    if machine not in DEB_ARCH:
        raise SystemExit(f"build: no package architecture known for {machine}")
    ver = version()
    started = time.monotonic()
    ns.dist.mkdir(parents=True, exist_ok=True)
    ns.build.mkdir(parents=True, exist_ok=True)

    wheel = project_wheel(ns.build)
    extras = ns.extras.replace(",", " ").split()
    zipapps = [build_zipapp(ns.build, py, machine, wheel, ns.wheels, extras) for py in pythons]
    newest = pythons[::-1]
    values = {
        "VERSION": ver,
        "MACHINE": machine,
        "DEB_ARCH": DEB_ARCH[machine],
        "RPM_ARCH": machine,
        "MAINTAINER": ns.maintainer,
        "PROGRAM": LAYOUT["PROGRAM"],
        "ZIPAPPS": LAYOUT["ZIPAPPS"],
        "AGENT_DATA": LAYOUT["AGENT_DATA"],
        "ZIPAPP_PREFIX": LAYOUT["ZIPAPP_PREFIX"],
        "ZIPAPP_SUFFIX": LAYOUT["ZIPAPP_SUFFIX"],
        "PYTHONS": " ".join(f"python{v}" for v in newest),
        "PYTHONS_TEXT": ", ".join(pythons),
        # The distribution's python3 when new enough, else any versioned interpreter.
        "DEB_DEPENDS": " | ".join([f"python3 (>= {pythons[0]})"] + [f"python{v}" for v in newest]),
        "RPM_REQUIRES": "("
        + " or ".join([f"python3 >= {pythons[0]}"] + [f"python{v}" for v in newest])
        + ")",
    }
    sites = [ns.build / "site" / f"cp{py.replace('.', '')}" for py in pythons]
    licences = sorted(set().union(*(bundled(site) for site in sites)))
    stage, owned = stage_tree(ns.build, zipapps, values, licences)
    arch = DEB_ARCH[machine]
    made = []
    if "tarball" in ns.artifacts:
        made.append(ns.dist / f"{NAME}_linux_{ver}_{arch}.tar.gz")
        build_tarball(stage, owned, made[-1])
    if "deb" in ns.artifacts:
        made.append(ns.dist / f"{NAME}_{ver}_{arch}.deb")
        build_deb(ns.build, stage, values, made[-1])
    if "rpm" in ns.artifacts:
        made.append(ns.dist / f"{NAME}-{ver}-1.{machine}.rpm")
        build_rpm(ns.build, stage, owned, values, made[-1])
    for path in made:
        log(f"{path} ({path.stat().st_size // 1024} KiB)")
    log(f"CPython {', '.join(pythons)}; {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
