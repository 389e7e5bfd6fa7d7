"""The heartbeat library as its own distribution, installed where nothing else is."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow

# Imports the library in the fresh venv, beats once, and lists what the import brought in.
_USE = """
import json, sys
before = set(sys.modules)
from workerwatch_heartbeat import Heartbeat
after = set(sys.modules)
hb = Heartbeat(sys.argv[1], worker="w")
hb.beat()
print(json.dumps(sorted(after - before)))
"""


def test_the_wheel_installs_alone_and_imports_only_the_standard_library(tmp_path):
    # A copy: setuptools builds in the source directory.
    source = shutil.copytree(
        ROOT / "heartbeat", tmp_path / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("workerwatch_heartbeat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            ln for ln in archive.read(metadata).decode().splitlines() if "Requires-Dist" in ln
        ]
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"workerwatch_heartbeat"}
    assert requires == [], "no dependencies at all"

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert installed - {"pip", "setuptools"} == {"workerwatch-heartbeat"}

    beat_file = tmp_path / "hb" / "w.json"
    beat_file.parent.mkdir()
    used = subprocess.run(
        [str(python), "-I", "-c", _USE, str(beat_file)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr
    new = json.loads(used.stdout)
    third_party = [
        m for m in new if m.split(".")[0] not in sys.stdlib_module_names
        and m != "workerwatch_heartbeat"
    ]  # fmt: skip
    assert third_party == []
    assert json.loads(beat_file.read_text())["worker"] == "w"
    # The integration is not there: the distribution carries the library only.
    probe = subprocess.run([str(python), "-I", "-c", "import workerwatch"], capture_output=True)
    assert probe.returncode != 0
