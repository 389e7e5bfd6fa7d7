"""Waits decoded from real blocked processes: the call, its timeout, the fds and their peer."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from workerwatch.host import waits

from tests.fleet import package_readable_by_others, wait_for
from tests.shapes import EPOLL_WAIT, POLL, SHAPES, facts_in, settled, start_shape

PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


@pytest.fixture
def shape(fleet, tmp_path):
    return lambda mode, *args, **kw: start_shape(fleet, tmp_path, mode, *args, **kw)


def peer_of(server) -> str:
    return f"127.0.0.1:{server.port}"


def test_recv_without_a_timeout_is_untimed_and_names_its_peer(shape, silent_server):
    proc, facts = shape("recv", "127.0.0.1", silent_server.port)
    wait = settled(proc.pid, "recvfrom")
    assert (wait.timed, wait.timeout, wait.fds) == (False, None, (facts["fd"],))
    assert wait.timeout_seconds == -1.0
    assert wait.note == waits.SOCKET_TIMEOUT_INVISIBLE
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: peer_of(silent_server)}


def test_a_socket_timeout_is_a_poll_with_that_timeout(shape, silent_server):
    """CPython's socket timeout: poll(fd, 1, 60000) before each recv."""
    proc, facts = shape("recv_timeout", "127.0.0.1", silent_server.port, 60)
    wait = settled(proc.pid, POLL)
    assert (wait.timed, wait.timeout, wait.fds, wait.note) == (True, 60.0, (facts["fd"],), "")
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: peer_of(silent_server)}


@pytest.mark.parametrize(("ms", "timed", "timeout"), [(60000, True, 60.0), (-1, False, None)])
def test_poll_timeout_is_read_from_its_argument(shape, silent_server, ms, timed, timeout):
    proc, facts = shape("poll", ms, "127.0.0.1", silent_server.port)
    wait = settled(proc.pid, POLL)
    assert (wait.timed, wait.timeout, wait.fds) == (timed, timeout, (facts["fd"],))
    assert wait.timeout_seconds == (60.0 if timed else -1.0)
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: peer_of(silent_server)}


@pytest.mark.parametrize(("seconds", "timeout"), [("none", None), ("60", 60.0), ("2.5", 2.5)])
def test_ppoll_timeout_is_read_from_the_workers_memory(shape, silent_server, seconds, timeout):
    proc, facts = shape("ppoll", seconds, "127.0.0.1", silent_server.port)
    wait = settled(proc.pid, "ppoll")
    assert (wait.timed, wait.timeout, wait.absolute) == (timeout is not None, timeout, False)
    assert wait.fds == (facts["fd"],), "the poll set, read from memory"
    assert wait.note == ""


@pytest.mark.parametrize(("seconds", "timeout"), [("none", None), ("60", 60.0)])
def test_epoll_wait_names_the_registered_socket(shape, silent_server, seconds, timeout):
    proc, facts = shape("epoll", seconds, "127.0.0.1", silent_server.port)
    wait = settled(proc.pid, EPOLL_WAIT)
    assert (wait.timed, wait.timeout) == (timeout is not None, timeout)
    assert (wait.epoll_fd, wait.fds) == (facts["epfd"], (facts["fd"],))
    assert waits.epoll_targets(proc.pid, facts["epfd"]) == (facts["fd"],)
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: peer_of(silent_server)}


@pytest.mark.parametrize(("seconds", "timeout"), [("none", None), ("60", 60.0)])
def test_epoll_pwait2_timeout_is_read_from_memory(shape, silent_server, seconds, timeout):
    proc, facts = shape("epoll_pwait2", seconds, "127.0.0.1", silent_server.port)
    wait = settled(proc.pid, "epoll_pwait2")
    assert (wait.timed, wait.timeout, wait.absolute) == (timeout is not None, timeout, False)
    assert (wait.epoll_fd, wait.fds) == (facts["epfd"], (facts["fd"],))


@pytest.mark.parametrize(("seconds", "timeout"), [("none", None), ("60", 60.0)])
def test_select_timeout_and_fds_are_read_from_memory(shape, silent_server, seconds, timeout):
    proc, facts = shape("select", seconds, "127.0.0.1", silent_server.port)
    # glibc's select() is the select syscall or pselect6 depending on its version; the
    # decoded wait is the same either way.
    wait = settled(proc.pid, ("select", "pselect6"))
    assert (wait.timed, wait.timeout, wait.fds) == (timeout is not None, timeout, (facts["fd"],))
    assert waits.name_fds(proc.pid, wait.fds) == {facts["fd"]: peer_of(silent_server)}


def test_a_backoff_sleep_is_timed_with_the_time_left(shape):
    """time.sleep(60) is clock_nanosleep on an absolute CLOCK_MONOTONIC deadline (3.11+)."""
    proc, _ = shape("sleep", 60)
    began = time.monotonic()
    wait = settled(proc.pid, "clock_nanosleep")
    elapsed = time.monotonic() - began
    assert (wait.timed, wait.absolute, wait.note) == (True, True, "")
    assert 60.0 - elapsed - 5.0 < wait.timeout <= 60.0, wait.timeout


@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_a_backoff_sleep_on_older_pythons_is_a_timed_pselect6(shape, version):
    """CPython before 3.11 sleeps in select(0, NULL, NULL, NULL, &timeout)."""
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not found:
        pytest.skip(f"no CPython {version} under {PYENV}")
    proc, _ = shape("sleep", 60, python=str(found[-1]))
    wait = settled(proc.pid, ("select", "pselect6"))
    assert (wait.timed, wait.timeout, wait.fds, wait.absolute) == (True, 60.0, (), False)


@pytest.mark.parametrize(("seconds", "timed"), [("none", False), ("60", True)])
def test_a_lock_wait_is_a_futex_wait_with_or_without_a_deadline(shape, seconds, timed):
    proc, _ = shape("lock", seconds)
    wait = settled(proc.pid, "futex")
    assert wait.detail.split("|")[0] in ("FUTEX_WAIT", "FUTEX_WAIT_BITSET"), wait.detail
    assert wait.timed is timed
    if timed:
        # CPython waits until an absolute CLOCK_MONOTONIC deadline: the time left is read.
        assert wait.absolute and 50.0 < wait.timeout <= 60.0, wait
    else:
        assert (wait.timeout, wait.timeout_seconds) == (None, -1.0)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="futex by number")
def test_a_futex_wait_with_a_relative_timeout(shape):
    proc, _ = shape("futex_wait", 60)
    wait = settled(proc.pid, "futex")
    assert (wait.detail, wait.timed, wait.timeout, wait.absolute) == (
        "FUTEX_WAIT|FUTEX_PRIVATE_FLAG",
        True,
        60.0,
        False,
    )


def test_a_parent_waiting_for_its_child_names_the_child(shape, silent_server):
    parent, facts = shape("wait_hung_child", "127.0.0.1", silent_server.port)
    wait = settled(parent.pid, "wait4")
    assert (wait.timed, wait.child, wait.fds) == (False, facts["pid"], ())
    assert facts["ppid"] == parent.pid


@pytest.mark.parametrize(
    ("mode", "timeout_first", "syscall", "sockets"),
    [
        ("ppoll", True, "ppoll", False),  # pread of /proc/PID/mem
        ("recv_sockopt", False, "recvfrom", True),  # pidfd_getfd + getsockopt
    ],
)
def test_reading_the_worker_does_not_wake_it(
    shape, silent_server, mode, timeout_first, syscall, sockets
):
    """A thousand reads of its memory or its socket: the worker's wakeup count stays put."""
    address = ("127.0.0.1", silent_server.port)
    proc, _ = shape(mode, *(("60", *address) if timeout_first else (*address, "60")))
    settled(proc.pid, syscall)
    status = Path(f"/proc/{proc.pid}/task/{proc.pid}/status")

    def voluntary() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("voluntary"))
        return int(line.split()[1])

    before = voluntary()
    seen = {waits.inspect(proc.pid, sockets=sockets) for _ in range(1000)}
    assert voluntary() == before
    assert [(w.syscall, w.timeout) for w in seen] == [(syscall, 60.0)]


def test_without_ptrace_access_the_wait_is_unknown_and_with_it_is_read(shape, silent_server):
    """A reader of another user sees nothing; one of the worker's own user reads it all."""
    system_python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(system_python, os.X_OK):
        pytest.skip("needs root and a system python3 that another user can run")
    if not package_readable_by_others():
        pytest.skip("the checkout is under a folder another user cannot enter")
    shared = Path(tempfile.mkdtemp(prefix="ww-waits-"))
    try:
        shared.chmod(0o777)
        script = shared / SHAPES.name
        shutil.copy(SHAPES, script)
        script.chmod(0o644)
        mine, _ = shape("ppoll", 60, "127.0.0.1", silent_server.port)
        settled(mine.pid, "ppoll")
        info = shared / "other.json"
        other = subprocess.Popen(
            [system_python, str(script), "ppoll", "t", str(info), "60", "127.0.0.1", str(silent_server.port)],
            user=65534, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: facts_in(info), what="other user's worker ready")
            settled(other.pid, "ppoll")
            probe = (
                "from workerwatch.host import waits\n"
                f"for pid in ({mine.pid}, {other.pid}):\n"
                "    w = waits.inspect(pid)\n"
                "    print(w and (w.syscall, w.timed, w.timeout, len(w.fds)))\n"
            )
            done = subprocess.run(
                [system_python, "-c", probe],
                user=65534, capture_output=True, text=True, timeout=30, cwd=shared,
                env={"PYTHONPATH": str(Path(waits.__file__).parents[2])},
            )  # fmt: skip
        finally:
            other.kill()
            other.wait()
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["None", "('ppoll', True, 60.0, 1)"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# Lines as the kernel prints them, for the architecture this host is not: the decoder is
# pure, so aarch64's numbering is checked here. (nr, six args, sp, pc)
_SP_PC = "0x7ffd0000 0x7f000000"


@pytest.mark.parametrize(
    ("machine", "line", "expected"),
    [
        # aarch64: ppoll(fds, 1, NULL): glibc's poll(fds, 1, -1)
        ("aarch64", f"73 0xaaaa0000 0x1 0x0 0x0 0x8 0x0 {_SP_PC}", ("ppoll", False, None, ())),
        (
            "aarch64",
            f"22 0x5 0xaaaa0000 0x3ff 0xea60 0x0 0x8 {_SP_PC}",
            ("epoll_pwait", True, 60.0, ()),
        ),
        (
            "aarch64",
            f"22 0x5 0xaaaa0000 0x3ff 0xffffffffffffffff 0x0 0x8 {_SP_PC}",
            ("epoll_pwait", False, None, ()),
        ),
        (
            "aarch64",
            f"207 0x3 0xaaaa0000 0x400 0x0 0x0 0x0 {_SP_PC}",
            ("recvfrom", False, None, (3,)),
        ),
        (
            "aarch64",
            f"203 0x4 0xaaaa0000 0x10 0x0 0x0 0x0 {_SP_PC}",
            ("connect", False, None, (4,)),
        ),
        (
            "aarch64",
            f"115 0x1 0x1 0xffff0000 0x0 0x0 0x0 {_SP_PC}",
            ("clock_nanosleep", True, None, ()),
        ),
        (
            "aarch64",
            f"98 0xaaaa0000 0x189 0x0 0x0 0x0 0xffffffff {_SP_PC}",
            ("futex", False, None, ()),
        ),
        ("aarch64", f"260 0x10f2 0xffff0000 0x0 0x0 0x0 0x0 {_SP_PC}", ("wait4", False, None, ())),
        # x86_64, as seen on this project's test machines
        ("x86_64", f"7 0x7f00 0x1 0xea60 0x1 0x0 0x0 {_SP_PC}", ("poll", True, 60.0, ())),
        ("x86_64", f"7 0x7f00 0x2 0xffffffff 0x2 0x0 0x0 {_SP_PC}", ("poll", False, None, ())),
        ("x86_64", f"7 0x7f00 0x1 0x0 0x0 0x0 0x0 {_SP_PC}", ("poll", True, 0.0, ())),
        (
            "x86_64",
            f"232 0x5 0x55bb0000 0x3ff 0xea60 0x0 0x0 {_SP_PC}",
            ("epoll_wait", True, 60.0, ()),
        ),
        ("x86_64", f"23 0x4 0x7ffd0000 0x0 0x0 0x0 0x0 {_SP_PC}", ("select", False, None, ())),
        ("x86_64", f"35 0x7ffd0000 0x0 0x0 0x0 0x0 0x0 {_SP_PC}", ("nanosleep", True, None, ())),
        ("x86_64", f"288 0x3 0x0 0x0 0x80800 0x0 0x0 {_SP_PC}", ("accept4", False, None, (3,))),
        ("x86_64", f"1 0x1 0x7f00 0x10 0x0 0x0 0x0 {_SP_PC}", ("write", False, None, (1,))),
        ("x86_64", f"74 0x3 0x0 0x0 0x0 0x0 0x0 {_SP_PC}", ("fsync", None, None, (3,))),
        (
            "x86_64",
            f"202 0x7f00 0x81 0x1 0x0 0x0 0x0 {_SP_PC}",
            ("futex", None, None, ()),
        ),  # a wake
        ("x86_64", f"9999 0x0 0x0 0x0 0x0 0x0 0x0 {_SP_PC}", ("syscall_9999", None, None, ())),
        ("x86_64", "running", ("running", None, None, ())),
        ("x86_64", f"-1 {_SP_PC}", ("none", None, None, ())),
    ],
)
def test_decode_per_architecture(machine, line, expected):
    wait = waits.decode(line, machine)
    assert (wait.syscall, wait.timed, wait.timeout, wait.fds) == expected


def test_decode_details():
    wait4 = waits.decode(f"260 0x10f2 0xffff0000 0x0 0x0 0x0 0x0 {_SP_PC}", "aarch64")
    assert wait4.child == 0x10F2
    any_child = waits.decode(f"61 0xffffffffffffffff 0x7ffd 0x0 0x0 0x0 0x0 {_SP_PC}", "x86_64")
    assert any_child.child is None
    futex = waits.decode(f"202 0x7f00 0x80 0x0 0x7ffd 0x0 0x0 {_SP_PC}", "x86_64")
    assert (futex.detail, futex.timed, futex.absolute) == (
        "FUTEX_WAIT|FUTEX_PRIVATE_FLAG",
        True,
        False,
    )
    lock_pi = waits.decode(f"202 0x7f00 0x86 0x0 0x7ffd 0x0 0x0 {_SP_PC}", "x86_64")
    assert (lock_pi.detail, lock_pi.absolute) == ("FUTEX_LOCK_PI|FUTEX_PRIVATE_FLAG", True)
    relative = waits.decode(f"230 0x1 0x0 0x7ffd 0x0 0x0 0x0 {_SP_PC}", "x86_64")
    assert (relative.timed, relative.absolute) == (True, False)
    epoll = waits.decode(f"232 0x9 0x55bb0000 0x3ff 0xea60 0x0 0x0 {_SP_PC}", "x86_64")
    assert epoll.epoll_fd == 9
    for bad in ("", "7 0x1 0x2", "x 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8"):
        with pytest.raises(ValueError):
            waits.decode(bad, "x86_64")


def test_a_socket_timeout_set_with_so_rcvtimeo_is_read_from_the_socket(shape, silent_server):
    proc, facts = shape("recv_sockopt", "127.0.0.1", silent_server.port, 45)
    plain = settled(proc.pid, "recvfrom")
    assert (plain.timed, plain.note) == (False, waits.SOCKET_TIMEOUT_INVISIBLE)
    wait = waits.inspect(proc.pid, sockets=True)
    assert (wait.syscall, wait.timed, wait.timeout, wait.fds, wait.note) == (
        "recvfrom",
        True,
        45.0,
        (facts["fd"],),
        "",
    )
    state = waits.socket_state(proc.pid, facts["fd"])
    assert (state.recv_timeout, state.send_timeout) == (45.0, None)


def test_a_socket_without_a_timeout_and_its_receive_age(shape, silent_server):
    proc, facts = shape("recv", "127.0.0.1", silent_server.port)
    settled(proc.pid, "recvfrom")
    wait = waits.inspect(proc.pid, sockets=True)
    assert (wait.timed, wait.timeout, wait.note) == (False, None, waits.NO_SOCKET_TIMEOUT)
    fdinfo = Path(f"/proc/{proc.pid}/fdinfo/{facts['fd']}")
    flags = fdinfo.read_text().splitlines()[1]
    first = waits.socket_state(proc.pid, facts["fd"])
    assert fdinfo.read_text().splitlines()[1] == flags, "the worker's file flags untouched"
    time.sleep(0.3)
    second = waits.socket_state(proc.pid, facts["fd"])
    assert (first.recv_timeout, first.send_timeout) == (None, None)
    # Nothing ever arrived: the age of the last receive grows with the wall clock.
    assert 0.25 <= second.last_recv - first.last_recv <= 2.0, (first, second)
    assert waits.socket_state(proc.pid, 0) is None, "stdin is /dev/null, not a socket"


def test_a_read_on_a_pipe_is_untimed_with_no_socket_note(shape):
    proc, facts = shape("pipe_read")
    plain = settled(proc.pid, "read")
    assert (plain.timed, plain.fds) == (False, (facts["fd"],))
    wait = waits.inspect(proc.pid, sockets=True)
    assert (wait.timed, wait.fds, wait.note) == (False, (facts["fd"],), "")
    assert waits.fd_target(proc.pid, facts["fd"]).startswith("pipe:[")
