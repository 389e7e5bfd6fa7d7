import uuid
from pathlib import Path

import pytest

from tests import parallel
from tests.fleet import Fleet, SilentServer

# What the pytest-xdist workers collected and emitted (pytest_testnodedown).
_FROM_WORKERS = pytest.StashKey[dict]()


@pytest.fixture
def tag() -> str:
    """A token unique to one test, put in children's command lines so groups match only them."""
    return f"wwtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fleet(tag):
    f = Fleet(tag)
    yield f
    f.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def hung_fs(tmp_path):
    """A mount point whose file system never answers (tests/hungfs.py), like a dead NFS."""
    from tests.hungfs import HungFS

    mountpoint = tmp_path / "nfs"
    mountpoint.mkdir()
    try:
        fs = HungFS(str(mountpoint))
    except OSError as exc:
        pytest.skip(f"cannot mount a FUSE file system here: {exc}")
    yield mountpoint
    fs.close()


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: basetemp is <run's>/popen-gwN
        parallel.configure(Path(config.option.basetemp).parent)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):
        parallel.order(items)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` as tests/parallel.py refines it."""
    if config.getvalue("dist") == "loadfile":
        return parallel.make_scheduler(config, log)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test (its fixtures' setup and teardown included) waits while a scene that needs
    the machine alone runs on another worker (tests/parallel.py)."""
    with parallel.running_test():
        yield


def _files(session) -> set[str]:
    return {Path(str(item.fspath)).name for item in session.items}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist: a worker's collected files and emitted metric names, for the check below
    (each worker runs part of the suite; the controller sees the whole)."""
    output = getattr(node, "workeroutput", None) or {}
    seen = node.config.stash.setdefault(_FROM_WORKERS, {"files": set(), "emitted": set()})
    seen["files"].update(output.get("collected_files", ()))
    seen["emitted"].update(output.get("emitted", ()))


def pytest_sessionfinish(session, exitstatus):
    """On a whole-suite run: every catalogued metric was emitted by some real run."""
    from workerwatch.output.catalogue import CATALOGUE

    from tests.v4 import EMITTED

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller checks the union
        workeroutput["collected_files"] = sorted(_files(session))
        workeroutput["emitted"] = sorted(EMITTED)
        return
    collected, emitted = _files(session), set(EMITTED)
    from_workers = session.config.stash.get(_FROM_WORKERS, None)
    if from_workers is not None:
        collected |= from_workers["files"]
        emitted |= from_workers["emitted"]
    option = session.config.option
    every_file = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    whole = collected == every_file and not option.keyword and not option.markexpr
    if not whole or option.collectonly or session.testsfailed or session.shouldstop:
        return
    never = sorted(set(CATALOGUE) - emitted)
    writer = session.config.get_terminal_writer()
    writer.line()
    if never:
        writer.line(f"catalogue lists metrics no test run emitted: {never}", red=True)
        session.exitstatus = 1
    else:
        writer.line(f"catalogue: all {len(CATALOGUE)} metrics were emitted by real runs")
