import uuid

import pytest

from tests.fleet import Fleet, SilentServer


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


def pytest_sessionfinish(session, exitstatus):
    """On a whole-suite run: every catalogued metric was emitted by some real run."""
    from pathlib import Path

    from workerwatch.output.catalogue import CATALOGUE

    from tests.v4 import EMITTED

    option = session.config.option
    collected = {Path(str(item.fspath)).name for item in session.items}
    every_file = {p.name for p in Path(__file__).parent.glob("test_*.py")}
    whole = collected == every_file and not option.keyword and not option.markexpr
    if not whole or session.testsfailed or session.shouldstop:
        return
    never = sorted(set(CATALOGUE) - EMITTED)
    writer = session.config.get_terminal_writer()
    writer.line()
    if never:
        writer.line(f"catalogue lists metrics no test run emitted: {never}", red=True)
        session.exitstatus = 1
    else:
        writer.line(f"catalogue: all {len(CATALOGUE)} metrics were emitted by real runs")
