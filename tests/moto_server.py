"""moto in server mode on loopback, as a subprocess: a real HTTP endpoint speaking AWS.

Usage in a test module (the fixture is session-wide: every module that registers it shares
one server, started on first use and stopped when the test process exits)::

    pytest_plugins = ["tests.moto_server"]     # registers the moto_server fixture

    def test_something(moto_server):
        client = moto_server.client("swf")        # boto3 client with fake credentials
        config = {"swf": {"endpoint_url": moto_server.url, ...}}
        env = moto_server.env()                    # for a subprocess run of the integration

Or without pytest::

    with MotoServer() as server:
        ...

The server keeps its state for the whole session: use names unique to each test, or call
``server.reset()`` (moto's ``/moto-api/reset``) when a test needs an empty account. The
server's own log (a line per request, tracebacks for operations moto does not implement)
goes to a temporary file, shown by ``server.log()``.

Fake credentials only: moto in server mode accepts any SigV4 signature, but routes a request
by the service name in its credential scope, so a client must sign (boto3 does).

PYTEST_DONT_REWRITE: test modules import this module before pytest registers it as a plugin;
the marker keeps pytest from warning that it cannot rewrite its asserts (it has none).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import pytest

FAKE_ACCESS_KEY = "AKIAWORKERWATCHTEST"
FAKE_SECRET_KEY = "moto-fake-secret-not-real"
REGION = "us-east-1"
START_TIMEOUT_S = 30.0

# Werkzeug announces the bound port on stderr: " * Running on http://127.0.0.1:PORT".
_RUNNING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the server goes when whoever started it goes, even on kill -9."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def isolated_aws_env(**extra: str) -> dict[str, str]:
    """Environment entries that keep boto3 away from the developer's real AWS setup."""
    env = {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


class MotoServer:
    """``python -m moto.server`` bound to 127.0.0.1 on a port the OS picks."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        fd, self._log_path = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
        os.close(fd)

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        env = {**os.environ, **isolated_aws_env()}
        # -p 0: the OS picks a free port and werkzeug prints it, so there is no race
        # between choosing a port and binding it.
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}: {self.log()}")
            match = _RUNNING.search(self.log())
            if match and self._accepts(int(match.group(1))):
                self.port = int(match.group(1))
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server not ready within {START_TIMEOUT_S:.0f} s: {self.log()}")

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        with contextlib.suppress(OSError):
            os.unlink(self._log_path)

    def log(self) -> str:
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def reset(self) -> None:
        """Forget every resource (moto's reset API)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def client(self, service: str) -> Any:
        """A boto3 client for this server with the fake credentials."""
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=FAKE_ACCESS_KEY,
            aws_secret_access_key=FAKE_SECRET_KEY,
        )

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (e.g. the integration's CLI) talking to this server."""
        return isolated_aws_env(**extra)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: MotoServer | None = None


def shared_server() -> MotoServer:
    """One server per test process, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        _shared = MotoServer().start()
        atexit.register(_shared.stop)
    return _shared


@pytest.fixture(scope="session")
def moto_server() -> MotoServer:
    """The shared moto server (see the module docstring)."""
    return shared_server()
