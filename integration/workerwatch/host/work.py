"""A waiting worker's evidence: where its main thread waits, and its work tree.

Read only for a worker whose main thread did not move since the previous run (the verdict
needs nothing more for one that plainly progresses). The main thread's wait is read with
its timeout (``waits.inspect``); when it waits on something other than a socket, the other
threads and the descendant processes are read too (``worktree``), since that is where the
work then happens. Socket peers cost a psutil walk of the fd table (~10 ms), so a peer is
resolved once per (pid, fd, socket inode) and kept in the saved state (``known_peers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping

from workerwatch.host import peer, waits, worktree
from workerwatch.host.procfs import ProcGone
from workerwatch.observations import (
    DescendantObservation,
    ThreadObservation,
    WaitObservation,
    WorkTree,
)
from workerwatch.sanitize import clean_text

CMDLINE_SHOWN = 60  # characters of a descendant's command line in a reason
MAX_FD_LOOKUPS = 8  # fds of one poll set / epoll instance looked at
# Calls whose fds, timeout or socket options only the worker's memory or socket show:
# worth ``inspect`` (tens of µs) rather than the pure decode of the line already read.
_NEEDS_INSPECT = frozenset(
    {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2"}
)
_CHILD_WAITS = frozenset({"wait4", "waitid"})


def _wait(
    pid: int,
    wait: waits.Wait | None,
    known_peers: Mapping[str, str],
    child_pipes: Collection[str] = (),
) -> WaitObservation | None:
    """The typed form of ``wait``: sockets or pipes behind its fds, the peer of a socket."""
    if wait is None:
        return None
    targets: dict[int, str] = {}
    for fd in wait.fds[:MAX_FD_LOOKUPS]:
        target = waits.fd_target(pid, fd)
        if target is not None:
            targets[fd] = target
    sockets = [fd for fd, t in targets.items() if t.startswith("socket:")]
    network = bool(sockets) and len(sockets) == len(targets)
    on_children = wait.syscall in _CHILD_WAITS or any(t in child_pipes for t in targets.values())
    found: dict = {}
    # Named only for a wait without a timeout (a stall candidate, a risk): a timed wait
    # ends by itself, and naming costs a psutil walk of the fd table the first time.
    if sockets and wait.timed is False:
        fd = sockets[0]
        key = f"{pid}:{fd}:{targets[fd][len('socket:[') : -1]}"
        name = known_peers.get(key)
        if name is None:
            name = peer.resolve(pid, fd)
        found = {"fd": fd, "peer": name, "peer_key": key if name else None}
    return WaitObservation(
        syscall=wait.syscall,
        timed=wait.timed,
        timeout=wait.timeout,
        network=network,
        child=wait.child,
        on_children=on_children,
        **found,
    )


def _shown(cmdline: str) -> str:
    """A command line for a reason: paths cut to their last part (``python3 convert.py``)."""
    words = (w.rsplit("/", 1)[-1] if "/" in w else w for w in cmdline.split(" "))
    return clean_text(" ".join(words), CMDLINE_SHOWN)


def _unit_wait(
    pid: int, tid: int, line: str | None, known_peers: Mapping[str, str], pipes: Collection[str]
) -> WaitObservation | None:
    """A thread's wait from its syscall line: decoded, and inspected only when needed."""
    if line is None:
        return None
    try:
        wait = waits.decode(line)
    except ValueError:
        return None
    if (wait.timed is False and wait.fds) or wait.syscall in _NEEDS_INSPECT:
        with contextlib.suppress(ProcGone, OSError):
            wait = waits.inspect(pid, tid, sockets=True) or wait
    return _wait(pid, wait, known_peers, pipes)


def observe(
    pid: int, threads: int, exclude: Collection[int], known_peers: Mapping[str, str]
) -> tuple[WaitObservation | None, WorkTree | None]:
    """The main thread's wait, and the work tree when that wait is not on a socket.

    Raises ``ProcGone`` when the process left. The descendants are read only when there
    are any (one small ``children`` read per thread says so), the threads only when there
    is more than one.
    """
    line = waits.syscall_line(pid, pid)
    try:
        decoded = waits.decode(line) if line is not None else None
    except ValueError:
        decoded = None
    if decoded is not None and decoded.timed:
        # A wait with a timeout (an idle long poll, a backoff sleep) ends by itself: neither
        # its fds nor the work tree change that, so only its timeout is read (by value, or
        # with one read of the worker's memory behind the pointer).
        timeout = decoded.timeout
        if timeout is None:
            timeout = waits.timeout_of(pid, decoded)
        return WaitObservation(decoded.syscall, timed=True, timeout=timeout), None
    raw = waits.inspect(pid, sockets=True)
    main = _wait(pid, raw, known_peers)
    if main is None or main.network or main.syscall in ("running", "none"):
        return main, None
    samples = worktree.descendants(pid, exclude) if worktree.children(pid) else ()
    if not samples and threads <= 1:
        return main, None
    pipes = {t for s in samples for t in s.stdio if t and t.startswith("pipe:")}
    if pipes and raw is not None and raw.fds:
        main = _wait(pid, raw, known_peers, pipes)  # a poll on the children's pipes
    found_children = []
    for s in samples:
        io = None
        if s.read_chars is not None and s.write_chars is not None:
            io = s.read_chars + s.write_chars
        found_children.append(
            DescendantObservation(
                pid=s.pid,
                start_ticks=s.start_ticks,
                ppid=s.ppid,
                depth=s.depth,
                cmdline=_shown(s.cmdline),
                state=s.state,
                cpu_seconds=s.cpu_seconds + s.reaped_cpu_seconds,
                voluntary=s.voluntary,
                io_chars=io,
                wait=_unit_wait(s.pid, s.pid, s.syscall, known_peers, ()),
            )
        )
    found_threads = _threads(pid, known_peers, pipes) if threads > 1 else ()
    return main, WorkTree(found_threads, tuple(found_children))


def _threads(
    pid: int, known_peers: Mapping[str, str], pipes: Collection[str] = ()
) -> tuple[ThreadObservation, ...]:
    return tuple(
        ThreadObservation(
            tid=t.tid,
            cpu_seconds=t.cpu_seconds,
            voluntary=t.voluntary,
            state=t.state,
            wait=_unit_wait(pid, t.tid, t.syscall, known_peers, pipes),
        )
        for t in worktree.threads(pid)[1:]
    )


def watch_threads(pid: int, known_peers: Mapping[str, str]) -> tuple[ThreadObservation, ...]:
    """The threads other than the main one, for a worker whose main thread keeps moving.

    Read while the worker's log is silent (``child.enrich``): what a job thread hung
    behind a dispatcher that keeps waking looks like (README "Verdict rules"). A thread
    in a timed wait or on a futex costs its three /proc reads and a decode; one in an
    untimed wait on an fd is inspected too (tens of µs), its socket peer resolved once.
    Raises ``ProcGone`` when the process left.
    """
    return _threads(pid, known_peers)
