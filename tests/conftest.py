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
