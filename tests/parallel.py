"""How `make test` spreads the suite over pytest-xdist workers, and how a scene that needs
the machine to itself gets it.

Most tests wait on real workers through their stall windows rather than compute, so the
suite runs on more processes than cores (the Makefile's ``-n``), with ``--dist loadfile``:
the tests of one file run on one worker, in order, so a module or session fixture (the
Celery/RQ scene, a moto server) is set up once. Refinements:

* The files in ``SPREAD`` hold slow tests that share nothing costly: each of their tests
  goes to whichever worker is free.
* The packages are built once per run (tests/test_package.py, ``built``, in ``shared_dir``
  under ``locked``): the first test of that file is handed out first, the others, spread,
  after every other file but ``LAST``, so that no worker waits for the build.
* The files in ``FIRST`` take longest: they start early, so none starts last alone.
* A scene that replays real time while filling both cores itself (tests/test_frameworks.py:
  collector runs every 3 s next to CPU-bound jobs) cannot keep its cadence when other tests
  compete for the CPU. It runs inside ``alone()``: no other test starts until it ends, and
  it starts once the tests running on the other workers have ended. Its file is ``LAST``:
  then the tests it waits for are short ones, and the others have nothing left to wait for.

``alone()`` uses two flock(2) locks in the run's shared temporary directory: every test
holds ``busy`` shared while it runs (``running_test``, from tests/conftest.py) after passing
through ``gate``; ``alone()`` closes the gate, then waits for ``busy`` exclusively. Without
pytest-xdist there is one process and nothing to wait for.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SPREAD = frozenset(
    {"test_work_tree_fleet.py", "test_shapes.py", "test_supervision.py", "test_package.py"}
)
BUILD = "test_package.py"
FIRST = ("test_e2e.py", "test_alerts_simulate.py")
LAST = ("test_frameworks.py",)

_FILES: dict[str, int] = {}
_dir: Path | None = None


def _name(item: Any) -> str:
    return Path(str(item.fspath)).name


def order(items: list[Any]) -> None:
    """The build, ``FIRST``, the other files, the rest of ``BUILD``, ``LAST``; each file's
    tests keep their order."""
    builder = next((item for item in items if _name(item) == BUILD), None)

    def rank(item: Any) -> tuple[int, int]:
        name = _name(item)
        if item is builder:
            return (0, 0)
        if name in FIRST:
            return (1, FIRST.index(name))
        if name == BUILD:
            return (3, 0)
        if name in LAST:
            return (4, LAST.index(name))
        return (2, 0)

    items.sort(key=rank)


def make_scheduler(config: Any, log: Any) -> Any:
    """``--dist loadfile``, with the ``SPREAD`` files' tests handed out one by one."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if Path(file).name in SPREAD else file

    # The work goes out in collection order (``order``), not by test count.
    config.option.loadscopereorder = False
    return Scheduling(config, log)


def configure(shared_dir: Path | None) -> None:
    """Called once per worker with the directory all workers of the run share."""
    global _dir
    _dir = shared_dir


def shared_dir(own: Path) -> Path:
    """The directory every worker of this run shares (``own``, the basetemp, without xdist)."""
    return _dir or own


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """``path`` locked exclusively against the other workers for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fd(name: str) -> int:
    assert _dir is not None
    if name not in _FILES:
        _FILES[name] = os.open(_dir / f"machine-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return _FILES[name]


@contextmanager
def running_test() -> Iterator[None]:
    """Held around each test: waits while a scene has the machine alone."""
    if _dir is None:
        yield
        return
    gate, busy = _fd("gate"), _fd("busy")
    fcntl.flock(gate, fcntl.LOCK_SH)
    fcntl.flock(gate, fcntl.LOCK_UN)
    fcntl.flock(busy, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(busy, fcntl.LOCK_UN)


@contextmanager
def alone() -> Iterator[None]:
    """The machine to this test alone for the block (called inside a running test)."""
    if _dir is None:
        yield
        return
    gate, busy = _fd("gate"), _fd("busy")
    # Our own shared hold goes first: two workers asking at once must not wait on each other.
    fcntl.flock(busy, fcntl.LOCK_UN)
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(busy, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(busy, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
